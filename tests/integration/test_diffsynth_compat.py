"""A DiffSynth-Studio user's LTX-2 inference scripts, as they are but for the import lines and the device: their
``from_pretrained(model_configs=...)`` lists over files laid out as DiffSynth downloads them
(``$DIFFSYNTH_MODEL_BASE_PATH/<model_id>/...``), ``pipe.load_lora(pipe.dit, ModelConfig(...))``,
``clear_lora_before_state_two``, ``VideoData`` and ``write_video_audio_ltx2``: each writes an mp4 with audio."""

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from test_inference_pipeline import _stage2_lora

# the import lines a user changes: ``from diffsynth.pipelines.ltx2_audio_video import ...`` and
# ``from diffsynth.utils.data.media_io_ltx2 import ...`` / ``from diffsynth.utils.data import VideoData``
from ltx2train.compat.diffsynth import LTX2AudioVideoPipeline, ModelConfig, VideoData, write_video_audio_ltx2

REPACKAGE = "DiffSynth-Studio/LTX-2-Repackage"
GEMMA = "google/gemma-3-12b-it-qat-q4_0-unquantized"
# DiffSynth's scripts pass these to every ModelConfig (the device changed to the CPU)
VRAM = {
    "offload_dtype": torch.float32,
    "offload_device": "cpu",
    "onload_dtype": torch.float32,
    "onload_device": "cpu",
    "preparing_dtype": torch.float32,
    "preparing_device": "cpu",
    "computation_dtype": torch.float32,
    "computation_device": "cpu",
}
DECODERS = [
    "text_encoder_post_modules.safetensors",
    "video_vae_decoder.safetensors",
    "audio_vae_decoder.safetensors",
    "audio_vocoder.safetensors",
]
CALL = dict(
    negative_prompt="blurry, jittery", seed=43, height=64, width=64, num_frames=9, num_inference_steps=2, tiled=True
)


@pytest.fixture(scope="module")
def models(tiny_workspace, tmp_path_factory):
    """DiffSynth's download layout of the tiny model: the repackage without its VAE encoders (the quick start never
    fetches them; the i2av / IC-LoRA scripts fetch the video one), Gemma, Lightricks' upscaler and distilled LoRA,
    a camera-control LoRA and an IC-LoRA."""
    from ltx2train.models.loading import load_component

    cfg = tiny_config(tiny_workspace, tiny_workspace / "unused")
    checkpoint, gemma = Path(cfg.model.checkpoint), Path(cfg.model.text_encoder)
    base = tmp_path_factory.mktemp("diffsynth_models")
    repackage = base / REPACKAGE
    repackage.mkdir(parents=True)
    for name in ["transformer.safetensors", *DECODERS]:
        (repackage / name).symlink_to(checkpoint / name)
    (repackage / "transformer_distilled.safetensors").symlink_to(checkpoint / "transformer.safetensors")
    (base / "google").mkdir()
    (base / GEMMA).symlink_to(gemma)
    lightricks = base / "Lightricks" / "LTX-2"
    lightricks.mkdir(parents=True)
    (lightricks / "ltx-2-spatial-upscaler-x2-1.0.safetensors").symlink_to(
        checkpoint / "ltx-2-spatial-upscaler-x2-1.0.safetensors"
    )
    transformer = load_component("tiny", "transformer", checkpoint)
    _stage2_lora(transformer, lightricks / "ltx-2-19b-distilled-lora-384.safetensors")
    for repo, name in (
        ("LTX-2-19b-LoRA-Camera-Control-Dolly-In", "ltx-2-19b-lora-camera-control-dolly-in"),
        ("LTX-2-19b-IC-LoRA-Union-Control", "ltx-2-19b-ic-lora-union-control-ref0.5"),
    ):
        (base / "Lightricks" / repo).mkdir()
        _stage2_lora(transformer, base / "Lightricks" / repo / f"{name}.safetensors")
    return base, checkpoint


@pytest.fixture
def diffsynth_env(models, monkeypatch):
    monkeypatch.setenv("DIFFSYNTH_MODEL_BASE_PATH", str(models[0]))
    return models


@pytest.fixture
def two_stage_pipe(diffsynth_env):
    """The two-stage scripts' pipeline: the video VAE encoder fetched too, the upscaler, the distilled LoRA."""
    base, checkpoint = diffsynth_env
    encoder = base / REPACKAGE / "video_vae_encoder.safetensors"
    encoder.symlink_to(checkpoint / "video_vae_encoder.safetensors")
    try:
        yield _pipe(
            model_configs=_configs(DECODERS, encoder=True, upscaler=True),
            stage2_lora_config=ModelConfig(
                model_id="Lightricks/LTX-2", origin_file_pattern="ltx-2-19b-distilled-lora-384.safetensors"
            ),
        )
    finally:
        encoder.unlink()


def _configs(files, *, encoder=False, upscaler=False, transformer="transformer.safetensors"):
    configs = [
        ModelConfig(model_id=GEMMA, origin_file_pattern="model*.safetensors", **VRAM),
        ModelConfig(model_id=REPACKAGE, origin_file_pattern=transformer, **VRAM),
        *[ModelConfig(model_id=REPACKAGE, origin_file_pattern=f, **VRAM) for f in files],
    ]
    if encoder:
        configs.append(ModelConfig(model_id=REPACKAGE, origin_file_pattern="video_vae_encoder.safetensors", **VRAM))
    if upscaler:
        configs.append(
            ModelConfig(
                model_id="Lightricks/LTX-2", origin_file_pattern="ltx-2-spatial-upscaler-x2-1.0.safetensors", **VRAM
            )
        )
    return configs


def _pipe(**kwargs):
    return LTX2AudioVideoPipeline.from_pretrained(
        torch_dtype=torch.float32, device="cpu", tokenizer_config=ModelConfig(model_id=GEMMA), **kwargs
    )


def _written(path, frames=9, size=(64, 64)):
    with av.open(str(path)) as container:
        video = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        assert container.streams.audio, path
    assert video.shape == (frames, size[1], size[0], 3)
    return video


def test_the_quick_start_runs_without_any_vae_encoder(diffsynth_env, tmp_path):
    """The one-stage script: its list has the decoders only, and nothing asks for an encoder."""
    pipe = _pipe(model_configs=_configs(DECODERS))
    video, audio = pipe(prompt="a red circle moves right", **CALL)
    out = write_video_audio_ltx2(
        video=video, audio=audio, output_path=str(tmp_path / "ltx2_onestage.mp4"), fps=24, audio_sample_rate=24000
    )
    _written(out)
    inferred = write_video_audio_ltx2(video=video, audio=audio, output_path=str(tmp_path / "inferred.mp4"), fps=24)
    spanned = audio.shape[-1] / (9 / 24)  # no rate given: the AAC rate nearest to the audio spanning the video
    with av.open(str(inferred)) as container:
        rate = container.streams.audio[0].rate
    assert all(abs(rate - spanned) <= abs(other - spanned) for other in (8000, 16000, 22050, 24000, 44100, 48000))


def test_an_image_without_the_encoder_names_the_file(diffsynth_env):
    pipe = _pipe(model_configs=_configs(DECODERS))
    with pytest.raises(ValueError, match="video_vae: loaded without its encoder .*video_vae_encoder.safetensors"):
        pipe(prompt="a red circle", input_images=[Image.new("RGB", (64, 64), "red")], input_images_indexes=[0], **CALL)


def test_two_stage_i2av_and_distilled_scripts(two_stage_pipe, tmp_path):
    image = Image.new("RGB", (128, 128), "red")
    video, audio = two_stage_pipe(
        prompt="a red circle",
        **{**CALL, "height": 128, "width": 128},
        use_two_stage_pipeline=True,
        input_images=[image],
        input_images_indexes=[0],
        input_images_strength=1.0,
    )
    _written(
        write_video_audio_ltx2(
            video=video, audio=audio, output_path=str(tmp_path / "i2av.mp4"), fps=24, audio_sample_rate=24000
        ),
        size=(128, 128),
    )
    distilled = _pipe(
        model_configs=_configs(DECODERS, encoder=True, upscaler=True, transformer="transformer_distilled.safetensors")
    )
    video, audio = distilled(prompt="a red circle", **CALL, use_distilled_pipeline=True)
    _written(
        write_video_audio_ltx2(
            video=video, audio=audio, output_path=str(tmp_path / "distilled.mp4"), fps=24, audio_sample_rate=24000
        )
    )


def test_a_camera_control_lora_loads_on_pipe_dit_from_its_model_config(diffsynth_env, tmp_path):
    pipe = _pipe(model_configs=_configs(DECODERS))
    base_video, _ = pipe(prompt="a red circle", **CALL)
    name = pipe.load_lora(
        pipe.dit,
        ModelConfig(
            model_id="Lightricks/LTX-2-19b-LoRA-Camera-Control-Dolly-In",
            origin_file_pattern="ltx-2-19b-lora-camera-control-dolly-in.safetensors",
        ),
        alpha=0.5,
    )
    assert pipe.loras.strength(name) == 0.5
    video, audio = pipe(prompt="a red circle", **CALL)
    assert not np.array_equal(np.stack([np.asarray(f) for f in video]), np.stack([np.asarray(f) for f in base_video]))
    _written(
        write_video_audio_ltx2(
            video=video, audio=audio, output_path=str(tmp_path / "dolly.mp4"), fps=24, audio_sample_rate=24000
        )
    )
    with pytest.raises(ValueError, match="pipe.dit"):
        pipe.load_lora(pipe.connectors, ModelConfig(path=str(tmp_path / "dolly.mp4")))


def test_the_ic_lora_two_stage_script_clears_its_lora_before_stage_two(two_stage_pipe, tmp_path, monkeypatch):
    pipe = two_stage_pipe
    pipe.load_lora(
        pipe.dit,
        ModelConfig(
            model_id="Lightricks/LTX-2-19b-IC-LoRA-Union-Control",
            origin_file_pattern="ltx-2-19b-ic-lora-union-control-ref0.5.safetensors",
        ),
    )
    reference = tmp_path / "depth.mp4"
    write_video_audio_ltx2(
        video=[Image.new("RGB", (64, 64), (i * 20, 0, 0)) for i in range(9)],
        audio=None,
        output_path=str(reference),
        fps=24,
    )
    frames = VideoData(str(reference), height=32, width=32).raw_data()
    assert len(frames) == 9 and frames[0].size == (32, 32)
    seen, refine = [], pipe.refine
    monkeypatch.setattr(pipe, "refine", lambda *a, **k: (seen.append(list(pipe.loras.names)), refine(*a, **k))[1])
    video, audio = pipe(
        prompt="two cats",
        **{**CALL, "height": 128, "width": 128},
        frame_rate=24,
        in_context_videos=[frames],
        in_context_downsample_factor=2,
        use_two_stage_pipeline=True,
        clear_lora_before_state_two=True,
    )
    assert seen == [[]] and pipe.loras.names == []  # unloaded before stage 2, as DiffSynth does
    _written(
        write_video_audio_ltx2(
            video=video, audio=audio, output_path=str(tmp_path / "ic.mp4"), fps=24, audio_sample_rate=24000
        ),
        size=(128, 128),
    )


def test_a_full_fine_tune_validates_with_its_transformer_beside_the_repackage(diffsynth_env, tmp_path):
    """DiffSynth validates a full fine-tune with the repackaged files plus the trained ``transformer.safetensors``
    from elsewhere: that file is the transformer (and ``from_pretrained(transformer=...)`` says so directly)."""
    from ltx2train.models.loading import load_component
    from ltx2train.models.writing import save_repackaged

    _, checkpoint = diffsynth_env
    tuned = load_component("tiny", "transformer", checkpoint)
    with torch.no_grad():
        tuned.proj_out.weight.mul_(1.5)
    save_repackaged({"transformer": tuned}, tmp_path / "train" / "full", "2.0")
    trained = ModelConfig(path=str(tmp_path / "train" / "full" / "transformer.safetensors"))
    pipe = _pipe(model_configs=[*_configs(DECODERS), trained])
    assert torch.equal(pipe.transformer.proj_out.weight, tuned.proj_out.weight)
    direct = _pipe(model_configs=_configs(DECODERS), transformer=trained.path)
    assert torch.equal(direct.transformer.proj_out.weight, tuned.proj_out.weight)
    base = _pipe(model_configs=_configs(DECODERS))
    assert not torch.equal(base.transformer.proj_out.weight, tuned.proj_out.weight)


def test_vram_config_sets_the_storage_dtype_and_vram_limit_the_resident_blocks(diffsynth_env):
    """DiffSynth's low-VRAM ``vram_config`` (float8_e5m2 onload dtype, computed in the computation dtype) stores the
    transformer, connectors and Gemma in e5m2; ``vram_limit`` keeps as many transformer blocks on the device as fit
    beside everything else there (the rest in host memory, streamed), and the clip is the same either way."""
    from ltx2train.inference.vram import module_bytes

    fp8 = {**VRAM, "offload_dtype": torch.float8_e5m2, "onload_dtype": torch.float8_e5m2}
    configs = [
        ModelConfig(model_id=GEMMA, origin_file_pattern="model*.safetensors", **fp8),
        ModelConfig(model_id=REPACKAGE, origin_file_pattern="transformer.safetensors", **fp8),
        *[ModelConfig(model_id=REPACKAGE, origin_file_pattern=f, **fp8) for f in DECODERS],
    ]
    pipe = _pipe(model_configs=configs)
    assert pipe.transformer.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e5m2
    assert pipe.connectors.video_connector.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e5m2
    assert pipe.streamed_blocks == 0  # weights where they compute: nothing streams
    blocks = pipe.transformer.transformer_blocks
    per_block = module_bytes(blocks[0])
    rest = sum(
        module_bytes(m)
        for m in (pipe.video_vae, pipe.audio_vae, pipe.vocoder, pipe.connectors, pipe.text_encoder.model)
    )
    rest += module_bytes(pipe.transformer) - sum(module_bytes(b) for b in blocks)
    limited = _pipe(model_configs=configs, vram_limit=(rest + 1.5 * per_block) / 2**30)
    assert limited.streamed_blocks == len(blocks) - 1 and limited.transformer.block_swap is not None
    roomy = _pipe(model_configs=configs, vram_limit=(rest + 10 * len(blocks) * per_block) / 2**30)
    assert roomy.streamed_blocks == 0
    video, _ = pipe(prompt="a red circle", **CALL)
    streamed, _ = limited(prompt="a red circle", **CALL)
    assert np.array_equal(np.stack([np.asarray(f) for f in video]), np.stack([np.asarray(f) for f in streamed]))
