"""Build the inference pipeline from checkpoint files and render one clip: the model layer end to end."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ltx2train.models.loading import load_component
from ltx2train.models.text_encoder import load_text_encoder


def build_pipeline(variant: str, checkpoint: str | Path, text_encoder_dir: str | Path, dtype=torch.float32):
    from ltx2train.inference.live_pipeline import build_pipeline as pipeline_from_modules

    components = {
        name: load_component(variant, name, checkpoint, dtype=dtype)
        for name in ("transformer", "connectors", "video_vae", "audio_vae", "vocoder")
    }
    gemma = load_text_encoder(text_encoder_dir, dtype=dtype)
    return pipeline_from_modules(text_encoder=gemma.model, tokenizer=gemma.tokenizer, **components)


def render_clip(
    pipe,
    prompt: str,
    out_path: str | Path,
    *,
    height=64,
    width=64,
    num_frames=9,
    steps=2,
    frame_rate=24.0,
    seed=0,
    max_sequence_length=32,
) -> Path:
    from ltx2train.inference.live_pipeline import GeneratedClip, write_clip

    video, audio = pipe(
        prompt=prompt,
        height=height,
        width=width,
        num_frames=num_frames,
        frame_rate=frame_rate,
        num_inference_steps=steps,
        guidance_scale=1.0,
        stg_scale=0.0,
        audio_guidance_scale=1.0,
        audio_stg_scale=0.0,
        modality_scale=1.0,
        audio_modality_scale=1.0,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        return_dict=False,
        max_sequence_length=max_sequence_length,
    )
    clip = GeneratedClip(video[0], audio[0].float().cpu(), int(pipe.vocoder.config.output_sampling_rate), frame_rate)
    return write_clip(clip, out_path)


def run_tiny(output: str | Path, seed: int = 0, variant: str = "tiny") -> dict:
    from ltx2train.models.tiny import write_tiny_checkpoint

    output = Path(output)
    t0 = time.perf_counter()
    write_tiny_checkpoint(output / "model", seed=seed, variant=variant)
    t1 = time.perf_counter()
    pipe = build_pipeline(variant, output / "model", output / "model" / "gemma")
    t2 = time.perf_counter()
    mp4 = render_clip(pipe, "a red circle moving left with a rising tone", output / "samples" / "tiny.mp4", seed=seed)
    t3 = time.perf_counter()
    return {"model_dir": output / "model", "sample": mp4, "write_s": t1 - t0, "load_s": t2 - t1, "sample_s": t3 - t2}
