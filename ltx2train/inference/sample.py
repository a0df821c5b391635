"""``ltx2train sample``: base weights from disk + an exported LoRA -> the inference pipeline -> mp4.

It goes through the same ``PromptSampler`` as training, so for the same prompt, seed and settings a
checkpoint's LoRA reproduces the in-training validation output exactly: the proof that checkpoints reload.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ltx2train.config import Config
from ltx2train.inference.live_pipeline import GeneratedClip, write_clip
from ltx2train.utils.progress import progress
from ltx2train.utils.errors import UserError


def sample(
    cfg: Config,
    *,
    lora: str | Path | list | None,
    prompts: list[str] | None = None,
    seed: int | None = None,
    output_dir: str | Path,
    lora_scale: float | list = 1.0,
    transformer: str | Path | None = None,
    image: str | None = None,
    reference_video: str | None = None,
    audio: str | None = None,
    video: str | None = None,
    num_frames: int | str | None = None,
) -> tuple[list[Path], list[GeneratedClip]]:
    """``transformer``: another transformer than ``model.checkpoint``'s (a fully fine-tuned one: a checkpoint
    directory -- with its text connectors too when they were trained -- or its ``transformer.safetensors``);
    ``lora``: LoRA files of any dialect on top (one or a list, with ``lora_scale`` one strength or one per file); ``image`` / ``reference_video``: every prompt's first frame
    (i2av) / reference video (IC-LoRA) instead of the recipe's ``validation.images`` / ``reference_videos``;
    ``audio`` / ``video``: every prompt's given audio (a2v) / video (v2a); ``num_frames``: the clips' length instead of
    ``validation.num_frames``, or ``"auto"``: each prompt's own, from LTX-2.5's duration head."""
    from ltx2train.lora.stacking import LoraStack
    from ltx2train.models.loading import load_component, missing_model_files, require_model_files
    from ltx2train.models.specs import load_variant, torch_dtype
    from ltx2train.models.text_encoder import load_text_encoder
    from ltx2train.inference.prompt_sampler import (
        build_sampler,
        decoder_components,
        encode_prompts,
        read_conditions,
        sampling_parts,
    )

    spec = load_variant(cfg.model.variant)
    validation = _validation(cfg.validation, prompts, seed, image, reference_video, audio, video, num_frames)
    auto = _check_auto_frames(num_frames, spec, validation)
    require_model_files(
        cfg.model.checkpoint,
        ["connectors", *decoder_components(validation)]
        + (["duration_head"] if auto else [])
        + ([] if transformer else ["transformer"]),
        distilled=cfg.model.distilled,
        text_encoder=cfg.model.text_encoder,
        variant=spec,
        parts=sampling_parts(validation),
    )
    dtype = torch_dtype(cfg.model.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    prompts = validation.prompts
    conditions = read_conditions(validation, cfg.data.reference_downscale)
    load = lambda name, d=None, part=None: load_component(  # noqa: E731
        spec, name, cfg.model.checkpoint, dtype=d or dtype, device=device, part=part, distilled=cfg.model.distilled
    )
    override = transformer is not None
    tuned_connectors = override and Path(transformer).is_dir() and not missing_model_files(transformer, ["connectors"])
    connectors = (
        load_component(spec, "connectors", Path(transformer), dtype=dtype, device=device)
        if tuned_connectors
        else load("connectors")
    )  # a full fine-tune of train.trainable [transformer, connectors]
    transformer = (
        load("transformer")
        if transformer is None
        else load_component(spec, "transformer", Path(transformer), dtype=dtype, device=device)
    )
    if not override:  # a fully fine-tuned transformer holds its presets already
        from ltx2train.lora.adapters import merge_presets

        merge_presets(cfg.lora.preset, transformer, connectors)
    stack = LoraStack(transformer, connectors, spec.family)
    for path, scale in _lora_pairs(lora, lora_scale):
        stack.load(path, scale)
    text_encoder = load_text_encoder(
        cfg.model.text_encoder, dtype=dtype, device=device, max_sequence_length=cfg.data.max_sequence_length
    )
    encoded = encode_prompts(text_encoder, prompts, validation.negative_prompt, cfg.data.max_sequence_length)
    del text_encoder
    frames = None
    if auto:
        from ltx2train.inference.duration import predict_num_frames

        frames = predict_num_frames(
            load("duration_head"), connectors, encoded.hidden_states, encoded.attention_mask, validation.fps
        )
    sampler = build_sampler(validation, encoded, load, samples_dir=output_dir, conditions=conditions, num_frames=frames)
    clips = sampler.sample(transformer, connectors)
    paths = [
        write_clip(clip, Path(output_dir) / f"sample_seed{validation.seed}_prompt{i}.mp4")
        for i, clip in enumerate(clips)
    ]
    return paths, clips


def _lora_pairs(lora, lora_scale) -> list[tuple]:
    """(file, strength) per LoRA: ``lora`` one file or a list, ``lora_scale`` one strength or one per file."""
    loras = [] if lora is None else [lora] if isinstance(lora, (str, Path)) else list(lora)
    scales = list(lora_scale) if isinstance(lora_scale, (list, tuple)) else [lora_scale] * len(loras)
    if len(scales) != len(loras):
        raise UserError(f"--lora-scale: one per --lora ({len(loras)}), got {len(scales)}")
    return list(zip(loras, scales))


def _check_auto_frames(num_frames, spec, validation) -> bool:
    """``num_frames="auto"`` asks LTX-2.5's duration head for each prompt's length: where there is one, and the
    length is not fixed by given audio or video."""
    if num_frames != "auto":
        return False
    if not spec.has("duration_head"):
        raise UserError(
            f"--num-frames auto: {spec.name} ({spec.version}) has no duration head (LTX-2.5 has one); "
            "give a number of frames (8k+1)"
        )
    if validation.audios or validation.videos:
        raise UserError("--num-frames auto: the given audio / video fixes the clip's length; drop auto")
    return True


def _validation(validation, prompts, seed, image, reference_video, audio=None, video=None, num_frames=None):
    """The recipe's validation settings with the command line's prompts, seed, conditions and length."""
    prompts = list(prompts or validation.prompts)
    if not prompts:
        raise UserError("no prompt: pass --prompt or set validation.prompts in the recipe")
    changes = {"prompts": prompts}
    if seed is not None:
        changes["seed"] = seed
    if num_frames not in (None, "auto"):
        if int(num_frames) < 1 or (int(num_frames) - 1) % 8:
            raise UserError(f"--num-frames: must be of the form 8k+1 (9, 17, ..., 121) or auto, got {num_frames}")
        changes["num_frames"] = int(num_frames)
    for key, value in (("images", image), ("reference_videos", reference_video), ("audios", audio), ("videos", video)):
        if value is not None:
            changes[key] = [value] * len(prompts)
        elif getattr(validation, key) and len(getattr(validation, key)) != len(prompts):
            changes[key] = []  # the recipe's belong to its own prompts
    return dataclasses.replace(validation, **changes)


def sample_with_pipeline(
    cfg: Config,
    *,
    loras: list,
    lora_scales: list[float],
    prompts: list[str] | None,
    seed: int | None,
    output_dir: str | Path,
    image: str | None = None,
    reference_video: str | None = None,
    two_stage: bool = False,
    distilled: bool = False,
    upscaler: str | None = None,
    stage2_lora: str | None = None,
    low_vram: bool = False,
    num_frames: int | str | None = None,
) -> list[Path]:
    """``sample`` through :class:`~ltx2train.inference.av_pipeline.LTX2AudioVideoPipeline` (DiffSynth's
    surface: two-stage with the upscaler and the stage-2 LoRA, the distilled schedule, low VRAM), with the
    recipe's validation size, steps, guidance scale and negative prompt (``num_frames="auto"``: each prompt's length
    from LTX-2.5's duration head)."""
    from ltx2train.inference.av_pipeline import LTX2AudioVideoPipeline, write_video_audio
    from ltx2train.inference.prompt_sampler import read_image, read_reference
    from ltx2train.models.specs import load_variant, torch_dtype

    v = _validation(cfg.validation, prompts, seed, image, reference_video, num_frames=num_frames)
    _check_auto_frames(num_frames, load_variant(cfg.model.variant), v)
    pairs = _lora_pairs(loras, lora_scales)
    pipe = LTX2AudioVideoPipeline.from_pretrained(
        cfg.model.checkpoint,
        cfg.model.text_encoder,
        variant=cfg.model.variant,
        distilled=cfg.model.distilled,
        torch_dtype=torch_dtype(cfg.model.dtype),
        upscaler=upscaler,
        stage2_lora=stage2_lora,
        low_vram=low_vram,
        max_sequence_length=cfg.data.max_sequence_length,
        video_decoder=v.video_decoder,
    )
    for path, scale in pairs:
        pipe.load_lora(path, scale)
    paths = []
    for i, prompt in enumerate(progress(v.prompts, desc="sample", unit="clip")):
        conditions = {}
        if v.images:
            conditions["input_images"] = [read_image(i, v.images[i])]
        if v.reference_videos:
            conditions["in_context_videos"] = [read_reference(i, v.reference_videos[i], v)]
            conditions["in_context_downsample_factor"] = cfg.data.reference_downscale
        video, audio = pipe(
            prompt,
            negative_prompt=v.negative_prompt,
            cfg_scale=v.guidance_scale,
            seed=v.seed,
            height=v.height,
            width=v.width,
            frame_rate=v.fps,
            num_frames="auto" if num_frames == "auto" else v.num_frames,
            num_inference_steps=v.steps,
            use_two_stage_pipeline=two_stage,
            use_distilled_pipeline=distilled,
            **conditions,
        )
        paths.append(
            write_video_audio(
                video, audio, Path(output_dir) / f"sample_seed{v.seed}_prompt{i}.mp4", v.fps, pipe.audio_sample_rate
            )
        )
    return paths
