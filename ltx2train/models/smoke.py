"""Build the inference pipeline from checkpoint files and render one clip: the model layer end to end."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ltx2train.models.loading import load_component
from ltx2train.models.text_encoder import load_text_encoder


def build_pipeline(variant: str, checkpoint: str | Path, text_encoder_dir: str | Path, dtype=torch.float32):
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2Pipeline

    components = {
        name: load_component(variant, name, checkpoint, dtype=dtype)
        for name in ("transformer", "connectors", "video_vae", "audio_vae", "vocoder")
    }
    gemma = load_text_encoder(text_encoder_dir, dtype=dtype)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, shift_terminal=0.1)
    return LTX2Pipeline(
        scheduler=scheduler,
        vae=components["video_vae"],
        audio_vae=components["audio_vae"],
        text_encoder=gemma.model,
        tokenizer=gemma.tokenizer,
        connectors=components["connectors"],
        transformer=components["transformer"],
        vocoder=components["vocoder"],
    )


def render_clip(pipe, prompt: str, out_path: str | Path, *, height=64, width=64, num_frames=9, steps=2,
                frame_rate=24.0, seed=0, max_sequence_length=32) -> Path:
    from diffusers.utils import encode_video

    video, audio = pipe(
        prompt=prompt, height=height, width=width, num_frames=num_frames, frame_rate=frame_rate,
        num_inference_steps=steps, guidance_scale=1.0, stg_scale=0.0, audio_guidance_scale=1.0,
        audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0,
        generator=torch.Generator().manual_seed(seed), output_type="np", return_dict=False,
        max_sequence_length=max_sequence_length,
    )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp.mp4")
    encode_video(video[0], fps=frame_rate, audio=audio[0].float().cpu(), output_path=str(tmp),
                 audio_sample_rate=pipe.vocoder.config.output_sampling_rate)
    tmp.replace(out_path)
    return out_path


def run_tiny(output: str | Path, seed: int = 0) -> dict:
    from ltx2train.models.tiny import write_tiny_checkpoint

    output = Path(output)
    t0 = time.perf_counter()
    write_tiny_checkpoint(output / "model", seed=seed)
    t1 = time.perf_counter()
    pipe = build_pipeline("tiny", output / "model", output / "model" / "gemma")
    t2 = time.perf_counter()
    mp4 = render_clip(pipe, "a red circle moving left with a rising tone", output / "samples" / "tiny.mp4", seed=seed)
    t3 = time.perf_counter()
    return {"model_dir": output / "model", "sample": mp4, "write_s": t1 - t0, "load_s": t2 - t1, "sample_s": t3 - t2}
