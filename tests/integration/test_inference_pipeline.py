"""The DiffSynth-compatible ``LTX2AudioVideoPipeline`` on the tiny LTX-2 written to disk (real loaders, real
diffusers pipelines, CPU).

What it proves: ``from_pretrained`` finds the variant and the upscaler beside the checkpoint; one-stage
text-to-audio+video gives the asked shapes and the same output for the same seed; the distilled pipeline runs
its fixed sigma schedule without guidance (seen by the transformer itself); image-to-video pins the first latent
frame to the encoded image and appends keyframes for later indexes; two-stage runs stage 2 at exactly twice the
stage-1 size on the stage-2 schedule with the stage-2 LoRA attached only then, leaving the transformer
bit-identical and adapter-free; IC-LoRA reference videos reach the transformer as extra tokens; tiled decode is
switched by the call; ``write_video_audio`` writes h264 + AAC; every bad argument gets a clear ``ValueError``.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import tiny_config, transformer_inputs, transformer_outputs
from ltx2train.inference.av_pipeline import STAGE2_ADAPTER, LTX2AudioVideoPipeline, identify_variant, write_video_audio
from ltx2train.inference.schedules import DISTILLED_SIGMAS, STAGE2_SIGMAS, ltx2_sigmas

QUIET = dict(progress_bar_cmd=lambda steps: steps)
SMALL = dict(height=64, width=64, num_frames=9, num_inference_steps=2, **QUIET)
PROMPT = "a red circle moves right with a rising tone"


def _paths(root):
    cfg = tiny_config(root, root / "unused")
    return Path(cfg.model.checkpoint), Path(cfg.model.text_encoder)


def _stage2_lora(transformer, path):
    """A random official-format LoRA on a few transformer modules (a stand-in for the distilled LoRA)."""
    g, state = torch.Generator().manual_seed(7), {}
    for block in range(transformer.config.num_layers):
        for module in ("attn1.to_q", "attn1.to_v", "audio_attn1.to_k"):
            linear = transformer.get_submodule(f"transformer_blocks.{block}.{module}")
            key = f"diffusion_model.transformer_blocks.{block}.{module}"
            state[f"{key}.lora_A.weight"] = torch.randn(4, linear.in_features, generator=g)
            state[f"{key}.lora_B.weight"] = torch.randn(linear.out_features, 4, generator=g)
    save_file(state, str(path))
    return path


@pytest.fixture(scope="module")
def pipe(tiny_workspace, tmp_path_factory):
    checkpoint, gemma = _paths(tiny_workspace)
    pipe = LTX2AudioVideoPipeline.from_pretrained(
        checkpoint, gemma, torch_dtype=torch.float32, device="cpu", max_sequence_length=32
    )
    pipe.stage2_lora = _stage2_lora(pipe.transformer, tmp_path_factory.mktemp("stage2") / "stage2.safetensors")
    return pipe


@pytest.fixture
def calls(pipe):
    """Every transformer forward of a test: (tokens, batch, max timestep, stage-2 adapter present)."""
    seen = []

    def record(module, args, kwargs):
        hidden, timestep = kwargs["hidden_states"], kwargs["timestep"]
        seen.append(
            (
                hidden.shape[1],
                hidden.shape[0],
                float(timestep.max()),
                STAGE2_ADAPTER in (getattr(module, "peft_config", None) or {}),
            )
        )

    handle = pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)
    yield seen
    handle.remove()


@pytest.fixture
def latents_out(pipe, monkeypatch):
    """The final video latents of each call, observed on the way into the real decoder."""
    seen, decode = [], pipe.decode

    def observe(video_latents, audio_latents, seed=None):
        seen.append(video_latents.clone())
        return decode(video_latents, audio_latents, seed)

    monkeypatch.setattr(pipe, "decode", observe)
    return seen


def test_from_pretrained_identifies_variant_and_finds_upscaler(pipe, tiny_workspace):
    checkpoint, _ = _paths(tiny_workspace)
    assert identify_variant(checkpoint) == "tiny"
    assert pipe.family == "2.0" and pipe.upsampler is not None
    assert next(pipe.vocoder.parameters()).dtype == torch.float32
    assert pipe.audio_sample_rate == pipe.vocoder.config.output_sampling_rate


def test_one_stage_shapes_and_seed(pipe):
    video, audio = pipe(PROMPT, seed=3, height=64, width=96, num_frames=9, num_inference_steps=2, **QUIET)
    assert len(video) == 9 and all(isinstance(f, Image.Image) and f.size == (96, 64) for f in video)
    assert audio.dtype == torch.float32 and audio.device.type == "cpu" and audio.ndim == 2 and audio.shape[0] == 2
    assert audio.shape[1] == pytest.approx(9 / 24 * pipe.audio_sample_rate, rel=0.15)
    again, again_audio = pipe(PROMPT, seed=3, height=64, width=96, num_frames=9, num_inference_steps=2, **QUIET)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(video, again))
    assert torch.equal(audio, again_audio)
    other, _ = pipe(PROMPT, seed=4, height=64, width=96, num_frames=9, num_inference_steps=2, **QUIET)
    assert not np.array_equal(np.asarray(video[4]), np.asarray(other[4]))


def test_regular_schedule_uses_cfg_and_the_seed_shift(pipe, calls):
    pipe(PROMPT, seed=0, cfg_scale=3.0, **SMALL)
    assert [c[1] for c in calls] == [2, 2]  # negative + positive in one batch
    assert [c[2] for c in calls] == pytest.approx([1000 * s for s in ltx2_sigmas(2)], rel=1e-5)


def test_distilled_pipeline_uses_fixed_schedule_without_cfg(pipe, calls):
    pipe(PROMPT, seed=0, cfg_scale=3.0, use_distilled_pipeline=True, **SMALL)
    assert [c[2] for c in calls] == pytest.approx([1000 * s for s in DISTILLED_SIGMAS], rel=1e-5)
    assert all(batch == 1 for _, batch, _, _ in calls)  # cfg_scale ignored: no negative pass


def _ltx_pipelines_constants():
    """ltx-pipelines' ``utils/constants.py`` (test-only install), loaded alone: the package's ``__init__`` imports
    every pipeline, and with them torchaudio."""
    import importlib.util

    found = importlib.util.find_spec("ltx_pipelines")
    if found is None:
        pytest.skip("ltx-pipelines is not installed (scripts/setup.sh installs it)")
    path = Path(found.submodule_search_locations[0]) / "utils" / "constants.py"
    spec = importlib.util.spec_from_file_location("ltx_pipelines_constants", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schedules_are_lightricks_ltx_pipelines_schedules():
    """The regular schedule equals ltx-core's ``LTX2Scheduler`` as ltx-pipelines calls it (no latent: the
    4096-token shift) within float32 rounding (5e-7 measured); the distilled and stage-2 sigmas are its constants."""
    from ltx_core.components.schedulers import LTX2Scheduler

    constants = _ltx_pipelines_constants()
    for steps in (2, 8, 30, 40):
        official = LTX2Scheduler().execute(steps=steps)
        assert float(official[-1]) == 0.0
        torch.testing.assert_close(torch.tensor(ltx2_sigmas(steps)), official[:-1], rtol=0, atol=1e-6)
    assert [*DISTILLED_SIGMAS, 0.0] == constants.DISTILLED_SIGMA_VALUES
    assert [*STAGE2_SIGMAS, 0.0] == constants.STAGE_2_DISTILLED_SIGMA_VALUES


def _encoded_image(pipe, image):
    """The VAE latent of ``image`` as diffusers conditions on it (H.264 CRF 33 re-compression first)."""
    from diffusers.pipelines.ltx2.utils import DEFAULT_IMAGE_CRF, apply_image_conditioning_crf

    pixels = apply_image_conditioning_crf(np.asarray(image), DEFAULT_IMAGE_CRF)
    pixels = torch.from_numpy(pixels).float().permute(2, 0, 1)[None, :, None] / 127.5 - 1.0
    return pipe.video_vae.encode(pixels).latent_dist.mode()  # (1, C, 1, h, w)


def test_image_to_video_pins_first_latent_frame(pipe, latents_out):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    for seed in (1, 2):
        pipe(PROMPT, seed=seed, input_images=[image], **SMALL)
        pipe(PROMPT, seed=seed, **SMALL)
    cond1, free1, cond2, free2 = latents_out
    assert torch.equal(cond1[:, :, 0], cond2[:, :, 0])  # the first frame is the image, whatever the noise
    assert not torch.equal(cond1[:, :, 1], cond2[:, :, 1]) and not torch.equal(free1[:, :, 0], free2[:, :, 0])
    torch.testing.assert_close(cond1[:, :, :1], _encoded_image(pipe, image), rtol=1e-4, atol=1e-4)
    pipe(PROMPT, seed=1, input_images=[image], input_images_strength=0.5, **SMALL)
    assert not torch.equal(latents_out[-1][:, :, 0], cond1[:, :, 0])  # strength < 1: only partly pinned


def test_two_stage_applies_the_image_again_at_full_size(pipe, latents_out):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (128, 128, 3), dtype=np.uint8))
    pipe(
        PROMPT,
        seed=0,
        height=128,
        width=128,
        num_frames=9,
        num_inference_steps=2,
        input_images=[image],
        use_two_stage_pipeline=True,
        **QUIET,
    )
    torch.testing.assert_close(latents_out[0][:, :, :1], _encoded_image(pipe, image), rtol=1e-4, atol=1e-4)


def test_later_input_image_is_an_appended_keyframe(pipe, calls):
    image = Image.new("RGB", (64, 64), (30, 200, 30))
    pipe(PROMPT, seed=0, cfg_scale=1.0, input_images=[image], input_images_indexes=[5], **SMALL)
    assert {c[0] for c in calls} == {2 * 2 * 2 + 2 * 2}  # 8 video tokens + one 2x2 keyframe latent


def test_two_stage_doubles_size_and_leaves_no_lora(pipe, calls, tiny_workspace, tmp_path):
    inputs = transformer_inputs(tiny_workspace, tmp_path)
    before = transformer_outputs(pipe.transformer, inputs)
    keys = list(pipe.transformer.state_dict())
    calls.clear()  # the fixed forward above is not part of the run
    video, audio = pipe(
        PROMPT, seed=0, height=128, width=128, num_frames=9, num_inference_steps=2, use_two_stage_pipeline=True, **QUIET
    )
    assert len(video) == 9 and video[0].size == (128, 128) and audio.shape[0] == 2
    stage1, stage2 = calls[:2], calls[2:]
    assert {c[0] for c in stage1} == {2 * 2 * 2} and {c[0] for c in stage2} == {2 * 4 * 4}  # 2x per side
    assert [c[2] for c in stage2] == pytest.approx([1000 * s for s in STAGE2_SIGMAS], rel=1e-5)
    assert not any(c[3] for c in stage1) and all(c[3] and c[1] == 1 for c in stage2)  # LoRA only in stage 2
    after = transformer_outputs(pipe.transformer, inputs)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert list(pipe.transformer.state_dict()) == keys and not getattr(pipe.transformer, "peft_config", None)


def test_two_stage_keeps_a_users_lora(pipe, calls, tiny_workspace, tmp_path):
    inputs = transformer_inputs(tiny_workspace, tmp_path)
    pipe.load_lora(_stage2_lora(pipe.transformer, tmp_path / "user.safetensors"), scale=0.5, adapter_name="user")
    try:
        before = transformer_outputs(pipe.transformer, inputs)
        calls.clear()
        pipe(
            PROMPT,
            seed=0,
            height=128,
            width=128,
            num_frames=9,
            num_inference_steps=2,
            use_two_stage_pipeline=True,
            **QUIET,
        )
        assert all(c[3] for c in calls[2:])  # stage 2 ran with both adapters
        assert list(pipe.transformer.peft_config) == ["user"] and pipe.transformer.active_adapters() == ["user"]
        after = transformer_outputs(pipe.transformer, inputs)
        assert all(torch.equal(a, b) for a, b in zip(before, after))  # same adapter, same scale
    finally:
        pipe.clear_lora()
    assert not getattr(pipe.transformer, "peft_config", None)


def test_in_context_video_becomes_reference_tokens(pipe, calls, latents_out):
    reference = [Image.new("RGB", (40, 48), (0, 0, 250))] * 5  # resized to 32x32, padded to 9 frames
    pipe(PROMPT, seed=0, in_context_videos=[reference], in_context_downsample_factor=2, **SMALL)
    pipe(PROMPT, seed=0, **SMALL)
    assert [c[0] for c in calls] == [8 + 2 * 1 * 1] * 2 + [8] * 2  # 2 latent frames of 1x1 reference tokens
    assert latents_out[0].shape == latents_out[1].shape and not torch.equal(latents_out[0], latents_out[1])


def test_tiled_decode_follows_the_call(pipe):
    video, _ = pipe(
        PROMPT,
        seed=0,
        tiled=True,
        tile_size_in_pixels=64,
        tile_overlap_in_pixels=32,
        tile_size_in_frames=16,
        tile_overlap_in_frames=8,
        **SMALL,
    )
    vae = pipe.video_vae
    assert vae.use_tiling and (vae.tile_sample_min_height, vae.tile_sample_stride_height) == (64, 32)
    assert (vae.tile_sample_min_num_frames, vae.tile_sample_stride_num_frames) == (16, 8) and len(video) == 9
    pipe(PROMPT, seed=0, tiled=False, **SMALL)
    assert not vae.use_tiling


def test_write_video_audio_h264_aac(pipe, tmp_path):
    video, audio = pipe(PROMPT, seed=0, **SMALL)
    path = write_video_audio(video, audio, tmp_path / "clip.mp4", fps=24, audio_sample_rate=pipe.audio_sample_rate)
    assert path.is_file() and not list(tmp_path.glob("*.tmp*"))
    with av.open(str(path)) as container:
        v, a = container.streams.video[0], container.streams.audio[0]
        assert (v.codec_context.name, a.codec_context.name) == ("h264", "aac")
        assert (v.width, v.height, a.sample_rate, a.channels) == (64, 64, pipe.audio_sample_rate, 2)
        assert sum(1 for _ in container.decode(video=0)) == 9


BAD = [
    (dict(height=48), r"height=48: must be a multiple of 32"),
    (dict(width=64 + 32, use_two_stage_pipeline=True), r"width=96: must be a multiple of 64"),
    (dict(num_frames=10), r"num_frames=10: must be 8k\+1"),
    (dict(input_images_strength=1.5), r"input_images_strength=1.5: must be a number in \[0, 1\]"),
    (dict(denoising_strength=0.0), r"denoising_strength=0.0: must be a number in \(0, 1\]"),
    (dict(input_images=["x"]), r"input_images\[0\]='str': must be a PIL image"),
    (
        dict(input_images=[Image.new("RGB", (8, 8))], input_images_indexes=[9]),
        r"each index must be in \[0, num_frames=9\)",
    ),
    (dict(input_images=[Image.new("RGB", (8, 8))] * 2, input_images_indexes=[0]), r"one frame index per input image"),
    (dict(input_images=[Image.new("RGB", (8, 8))] * 2, input_images_indexes=[1, 1]), r"must be unique"),
    (dict(in_context_videos=[np.zeros((4, 8, 8))]), r"in_context_videos\[0\]='array of shape \(4, 8, 8\)'"),
    (dict(in_context_videos=[[]]), r"in_context_videos\[0\]='list': must be a non-empty list of frames"),
    (
        dict(in_context_videos=[[Image.new("RGB", (8, 8))]], in_context_downsample_factor=3),
        r"in_context_downsample_factor=3: the reference video is height 64/3",
    ),
    (dict(tile_overlap_in_pixels=512), r"tile_overlap_in_pixels=512: must be smaller than tile_size_in_pixels=512"),
    (dict(cfg_scale=0.5), r"cfg_scale=0.5: must be a number >= 1"),
    (dict(prompt=["a", "b"]), r"prompt='list': must be one string"),
]


@pytest.mark.parametrize("kwargs, match", BAD, ids=[m.split(":")[0][:40] for _, m in BAD])
def test_bad_arguments_are_named(pipe, calls, kwargs, match):
    kwargs = {"prompt": PROMPT, **SMALL, **kwargs}
    with pytest.raises(ValueError, match=match):
        pipe(**kwargs)
    assert not calls  # refused before any model ran


def test_two_stage_refused_without_upscaler_or_lora(pipe, tiny_workspace, tmp_path):
    checkpoint, gemma = _paths(tiny_workspace)
    bare = tmp_path / "no_upscaler"
    bare.mkdir()
    for f in checkpoint.glob("*.safetensors"):
        if "upscaler" not in f.name:
            (bare / f.name).symlink_to(f)
    no_up = LTX2AudioVideoPipeline.from_pretrained(
        bare, gemma, torch_dtype=torch.float32, device="cpu", max_sequence_length=32
    )
    assert no_up.upsampler is None
    with pytest.raises(ValueError, match=r"use_two_stage_pipeline=True: needs the x2 spatial upscaler"):
        no_up(PROMPT, height=128, width=128, num_frames=9, use_two_stage_pipeline=True, **QUIET)
    lora, pipe.stage2_lora = pipe.stage2_lora, None
    try:
        with pytest.raises(ValueError, match=r"use_two_stage_pipeline=True: stage 2 needs the distilled LoRA"):
            pipe(PROMPT, height=128, width=128, num_frames=9, use_two_stage_pipeline=True, **QUIET)
    finally:
        pipe.stage2_lora = lora


def test_low_vram_stores_fp8_swaps_every_block_and_stays_close(pipe, tiny_workspace, tmp_path):
    """``low_vram``: the transformer, connectors and Gemma in FP8 and every block swapped from host memory; the
    clip stays close to the full-precision one (FP8 rounding of tiny random weights), a LoRA loads onto it (its
    adapters placed on the device) and unloads back to the exact low-VRAM output."""
    from ltx2train.memory.fp8 import fp8_layers

    checkpoint, gemma = _paths(tiny_workspace)
    low = LTX2AudioVideoPipeline.from_pretrained(
        checkpoint, gemma, torch_dtype=torch.float32, device="cpu", max_sequence_length=32, low_vram=True
    )
    assert fp8_layers(low.transformer) and fp8_layers(low.connectors) and fp8_layers(low.text_encoder.model)
    swap = low.transformer.block_swap
    assert swap.swapped == list(range(low.transformer.config.num_layers))
    video, audio = pipe(PROMPT, seed=0, **SMALL)
    swap.events.clear()
    low_video, low_audio = low(PROMPT, seed=0, **SMALL)
    assert swap.events and not any(swap.is_resident(i) for i in swap.swapped)  # copied per block, all dropped
    frames = lambda v: np.stack([np.asarray(f, dtype=np.float32) / 255 for f in v])  # noqa: E731
    error = np.abs(frames(low_video) - frames(video)).mean()
    assert 0 < error < 0.05, error  # measured 0.01-0.02
    low.load_lora(_stage2_lora(low.transformer, tmp_path / "lora.safetensors"), 1.0)
    with_lora, _ = low(PROMPT, seed=0, **SMALL)
    assert not np.array_equal(frames(with_lora), frames(low_video))
    low.clear_lora()
    again, again_audio = low(PROMPT, seed=0, **SMALL)
    assert np.array_equal(frames(again), frames(low_video)) and torch.equal(again_audio, low_audio)


def test_sample_command_runs_the_diffsynth_pipeline_two_stage(tiny_workspace, tmp_path, capsys):
    """``ltx2train sample --two-stage --stage2-lora``: the recipe's validation size, through
    LTX2AudioVideoPipeline; the mp4 has the asked size (stage 1 ran at half of it). A fine-tuned transformer
    is refused with what to drop."""
    from ltx2train import cli
    from ltx2train.config import save_config
    from ltx2train.models.loading import load_component

    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        ["validation.height=64", "validation.width=128", "validation.num_frames=9", "validation.steps=2"],
    )
    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    lora = _stage2_lora(load_component("tiny", "transformer", cfg.model.checkpoint), tmp_path / "stage2.safetensors")
    code = cli.main(
        [
            "sample",
            str(recipe),
            "--two-stage",
            "--stage2-lora",
            str(lora),
            "--prompt",
            PROMPT,
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    path = Path(capsys.readouterr().out.strip().splitlines()[-1])
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (128, 64) and container.streams.audio
    code = cli.main(["sample", str(recipe), "--distilled-pipeline", "--transformer", str(tmp_path)])
    assert code == 2 and "--transformer" in capsys.readouterr().err


def test_diffsynth_model_configs_load_the_same_pipeline(pipe, tiny_workspace, tmp_path, monkeypatch):
    """DiffSynth's ``from_pretrained(model_configs=..., tokenizer_config=...)`` call, unchanged but for the
    import, on files laid out as DiffSynth downloads them (``$DIFFSYNTH_MODEL_BASE_PATH/<model_id>/``): the same
    pipeline, the same clip. A file that is not there says where it was looked for; nothing is downloaded."""
    from ltx2train.inference.av_pipeline import ModelConfig
    from ltx2train.models.layout import SPLIT_FILES
    from ltx2train.models.specs import load_variant

    checkpoint, gemma = _paths(tiny_workspace)
    base = tmp_path / "models"
    (base / "DiffSynth-Studio").mkdir(parents=True)
    (base / "google").mkdir()
    (base / "DiffSynth-Studio" / "LTX-2-Repackage").symlink_to(checkpoint)
    (base / "google" / "gemma-3").symlink_to(gemma)
    monkeypatch.setenv("DIFFSYNTH_MODEL_BASE_PATH", str(base))
    repackage = "DiffSynth-Studio/LTX-2-Repackage"
    configs = [
        ModelConfig(model_id="google/gemma-3", origin_file_pattern="model*.safetensors"),
        *[
            ModelConfig(model_id=repackage, origin_file_pattern=f.filename)
            for f in SPLIT_FILES
            if f.component in load_variant("tiny").components
        ],  # (LTX-2.5's decoder and duration head: not 2.0's)
        ModelConfig(model_id=repackage, origin_file_pattern="ltx-2-spatial-upscaler-x2-1.0.safetensors"),
    ]
    other = LTX2AudioVideoPipeline.from_pretrained(
        torch_dtype=torch.float32,
        device="cpu",
        model_configs=configs,
        tokenizer_config=ModelConfig(model_id="google/gemma-3"),
        max_sequence_length=32,
    )
    assert other.upsampler is not None
    video, audio = pipe(PROMPT, seed=0, **SMALL)
    again, again_audio = other(PROMPT, seed=0, **SMALL)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(video, again))
    assert torch.equal(audio, again_audio)
    with pytest.raises(FileNotFoundError, match=r"nobody/none.*does not download"):
        LTX2AudioVideoPipeline.from_pretrained(
            model_configs=[ModelConfig(model_id="nobody/none", origin_file_pattern="x.safetensors")]
        )
    with pytest.raises(ValueError, match="found 0 LTX-2 checkpoints"):
        LTX2AudioVideoPipeline.from_pretrained(model_configs=configs[:1])
