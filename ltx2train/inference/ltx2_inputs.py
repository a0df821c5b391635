"""Argument checks and input conversion for :class:`~ltx2train.inference.av_pipeline.LTX2AudioVideoPipeline`.

Every check raises a ``ValueError`` that names the argument, the value and what is allowed, before any
model runs. The rules are those of DiffSynth's ``LTX2AudioVideoPipeline``, made strict: where DiffSynth
silently rounds a size up, we refuse it, so that the output has the size that was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

from ltx2train.utils.errors import UserError

import numpy as np

SPATIAL, TEMPORAL = 32, 8  # the video VAE's compression


@dataclass(frozen=True)
class Mode:
    """What a call asks for, as the pipeline needs it after checking."""

    two_stage: bool
    distilled: bool
    stage1_height: int
    stage1_width: int


def _fail(name: str, value, allowed: str):
    raise UserError(f"{name}={value!r}: {allowed}")


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        _fail(name, value, f"must be an integer >= {minimum}")


def _check_unit(name: str, value, *, open_at_zero: bool = False) -> None:
    low_ok = value > 0 if open_at_zero else value >= 0
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (low_ok and value <= 1):
        _fail(name, value, f"must be a number in {'(0, 1]' if open_at_zero else '[0, 1]'}")


def check_shape(height, width, num_frames, two_stage: bool) -> None:
    multiple = 2 * SPATIAL if two_stage else SPATIAL
    why = " (the two-stage pipeline runs stage 1 at half size, a multiple of 32)" if two_stage else ""
    for name, value in (("height", height), ("width", width)):
        _check_int(name, value)
        if value % multiple:
            _fail(
                name,
                value,
                f"must be a multiple of {multiple}{why}; nearest: {max(multiple, round(value / multiple) * multiple)}",
            )
    _check_int("num_frames", num_frames)
    if (num_frames - 1) % TEMPORAL:
        _fail("num_frames", num_frames, f"must be 8k+1 (1, 9, 17, ..., 121); nearest: {(num_frames - 1) // 8 * 8 + 1}")


def check_images(input_images, input_images_indexes, input_images_strength, num_frames) -> None:
    _check_unit("input_images_strength", input_images_strength)
    if input_images is None:
        return
    if not isinstance(input_images, (list, tuple)) or not input_images:
        _fail("input_images", type(input_images).__name__, "must be None or a non-empty list of images")
    for i, image in enumerate(input_images):
        to_rgb_array(image, f"input_images[{i}]")
    indexes = list(input_images_indexes) if isinstance(input_images_indexes, (list, tuple)) else None
    if indexes is None or len(indexes) != len(input_images):
        _fail(
            "input_images_indexes",
            input_images_indexes,
            f"must be a list with one frame index per input image ({len(input_images)} images)",
        )
    for index in indexes:
        _check_int("input_images_indexes", index, minimum=0)
        if index >= num_frames:
            _fail("input_images_indexes", indexes, f"each index must be in [0, num_frames={num_frames})")
    if len(set(indexes)) != len(indexes):
        _fail("input_images_indexes", indexes, "indexes must be unique")


def check_in_context(in_context_videos, factor, stage1_height, stage1_width) -> None:
    if in_context_videos is None:
        return
    _check_int("in_context_downsample_factor", factor)
    for name, value in (("height", stage1_height), ("width", stage1_width)):
        if (value // factor) % SPATIAL or value % factor:
            _fail(
                "in_context_downsample_factor",
                factor,
                f"the reference video is {name} {value}/{factor}, which must be a whole multiple of 32",
            )
    if not isinstance(in_context_videos, (list, tuple)) or not in_context_videos:
        _fail("in_context_videos", type(in_context_videos).__name__, "must be None or a non-empty list of videos")
    for v, video in enumerate(in_context_videos):
        if isinstance(video, np.ndarray):
            if video.ndim != 4 or video.shape[-1] != 3 or not len(video):
                _fail(f"in_context_videos[{v}]", f"array of shape {video.shape}", "must be (frames, height, width, 3)")
            continue
        if not isinstance(video, (list, tuple)) or not video:
            _fail(
                f"in_context_videos[{v}]",
                type(video).__name__,
                "must be a non-empty list of frames (PIL images or (H, W, 3) arrays) or a (F, H, W, 3) array",
            )
        sizes = {to_rgb_array(frame, f"in_context_videos[{v}][{f}]").shape for f, frame in enumerate(video)}
        if len(sizes) > 1:
            _fail(f"in_context_videos[{v}]", f"frames of sizes {sorted(sizes)}", "all frames must have one size")


def check_decode_tiles(height: int, width: int, tile_size_in_pixels: int, tile_overlap_in_pixels: int) -> None:
    """The tiles can decode a clip of this size (diffusers' tiling can leave a last tile one latent wide)."""
    from ltx2train.memory.tiling import decode_tile_problem, fitting_overlap

    problem = decode_tile_problem(height, width, tile_size_in_pixels, tile_overlap_in_pixels)
    if problem:
        overlap = fitting_overlap(height, width, tile_size_in_pixels, tile_overlap_in_pixels)
        fix = f"use tile_overlap_in_pixels={overlap}" if overlap is not None else "use another tile_size_in_pixels"
        _fail("tile_size_in_pixels", tile_size_in_pixels, f"at {width}x{height}: {problem}; {fix}")


def check_tiles(tile_size_in_pixels, tile_overlap_in_pixels, tile_size_in_frames, tile_overlap_in_frames) -> None:
    for size_name, size, overlap_name, overlap, unit in (
        ("tile_size_in_pixels", tile_size_in_pixels, "tile_overlap_in_pixels", tile_overlap_in_pixels, SPATIAL),
        ("tile_size_in_frames", tile_size_in_frames, "tile_overlap_in_frames", tile_overlap_in_frames, TEMPORAL),
    ):
        _check_int(size_name, size, minimum=unit)
        _check_int(overlap_name, overlap, minimum=0)
        if overlap >= size:
            _fail(overlap_name, overlap, f"must be smaller than {size_name}={size}")


def check_call(
    pipe,
    *,
    prompt,
    cfg_scale,
    height,
    width,
    num_frames,
    frame_rate,
    num_inference_steps,
    denoising_strength,
    input_images,
    input_images_indexes,
    input_images_strength,
    in_context_videos,
    in_context_downsample_factor,
    use_two_stage_pipeline,
    use_distilled_pipeline,
    tiles,
    tiled: bool = True,
) -> Mode:
    """All checks of one call; returns the resolved :class:`Mode`."""
    if not isinstance(prompt, str):
        _fail("prompt", type(prompt).__name__, "must be one string (one clip per call)")
    if not isinstance(cfg_scale, (int, float)) or cfg_scale < 1:
        _fail("cfg_scale", cfg_scale, "must be a number >= 1 (1 disables classifier-free guidance)")
    if not isinstance(frame_rate, (int, float)) or frame_rate <= 0:
        _fail("frame_rate", frame_rate, "must be a positive number of frames per second")
    _check_int("num_inference_steps", num_inference_steps)
    _check_unit("denoising_strength", denoising_strength, open_at_zero=True)
    check_shape(height, width, num_frames, use_two_stage_pipeline)
    check_images(input_images, input_images_indexes, input_images_strength, num_frames)
    factor = 2 if use_two_stage_pipeline else 1
    check_in_context(in_context_videos, in_context_downsample_factor, height // factor, width // factor)
    check_tiles(*tiles)
    if tiled:
        check_decode_tiles(height, width, *tiles[:2])
    if use_two_stage_pipeline and pipe.upsampler is None:
        _fail(
            "use_two_stage_pipeline",
            True,
            "needs the x2 spatial upscaler: pass from_pretrained(..., upscaler=PATH) "
            "(none was found beside the checkpoint)",
        )
    if use_two_stage_pipeline and not use_distilled_pipeline and pipe.stage2_lora is None:
        _fail(
            "use_two_stage_pipeline",
            True,
            "stage 2 needs the distilled LoRA: pass from_pretrained(..., "
            "stage2_lora=PATH), or use_distilled_pipeline=True with a distilled model",
        )
    return Mode(use_two_stage_pipeline, use_distilled_pipeline, height // factor, width // factor)


def to_rgb_array(image, name: str = "image") -> np.ndarray:
    """A PIL image or an (H, W, 3) array (uint8, or float in [0, 1]) -> (H, W, 3) uint8."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] == 3:
        if image.dtype == np.uint8:
            return image
        return (np.clip(image.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
    shape = getattr(image, "shape", None)
    _fail(
        name,
        f"{type(image).__name__}{'' if shape is None else f' of shape {tuple(shape)}'}",
        "must be a PIL image or an (H, W, 3) array",
    )


def to_pil(image):
    from PIL import Image

    return Image.fromarray(to_rgb_array(image))


def in_context_frames(video, num_frames: int) -> list:
    """DiffSynth's treatment of a reference video: at most ``num_frames`` frames, padded with black to 8k+1."""
    from PIL import Image

    frames = [to_pil(frame) for frame in video][:num_frames]
    target = (len(frames) - 1 + TEMPORAL - 1) // TEMPORAL * TEMPORAL + 1
    return frames + [Image.new("RGB", frames[0].size)] * (target - len(frames))
