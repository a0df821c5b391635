"""``ltx2train sample``: base weights from disk + an exported LoRA -> the inference pipeline -> mp4.

It goes through the same ``PromptSampler`` as training, so for the same prompt, seed and settings a
checkpoint's LoRA reproduces the in-training validation output exactly: the proof that checkpoints reload.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ltx2train.inference.pipeline import GeneratedClip, write_clip


def sample(cfg, *, lora: str | Path | None, prompts: list[str] | None = None, seed: int | None = None,
           output_dir: str | Path, lora_scale: float = 1.0,
           transformer: str | Path | None = None) -> tuple[list[Path], list[GeneratedClip]]:
    """``transformer``: another transformer than ``model.checkpoint``'s (a fully fine-tuned one: a checkpoint
    directory or its ``transformer.safetensors``); ``lora``: a LoRA file of any dialect on top."""
    from ltx2train.models.adapters import apply_lora
    from ltx2train.models.loading import load_component
    from ltx2train.models.specs import load_variant, torch_dtype
    from ltx2train.models.text_encoder import load_text_encoder
    from ltx2train.inference.sampler import PromptSampler, encode_prompts

    spec = load_variant(cfg.model.variant)
    dtype = torch_dtype(cfg.model.dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    validation = cfg.validation if seed is None else dataclasses.replace(cfg.validation, seed=seed)
    prompts = list(prompts or validation.prompts)
    if not prompts:
        raise ValueError("no prompt: pass --prompt or set validation.prompts in the recipe")
    load = lambda name, d=dtype: load_component(spec, name, cfg.model.checkpoint, dtype=d, device=device,  # noqa: E731
                                                distilled=cfg.model.distilled)
    connectors = load("connectors")
    transformer = load("transformer") if transformer is None else load_component(
        spec, "transformer", Path(transformer), dtype=dtype, device=device)
    if lora is not None:
        apply_lora(transformer, lora, family=spec.family, connectors=connectors, scale=lora_scale)
    text_encoder = load_text_encoder(cfg.model.text_encoder, dtype=dtype, device=device,
                                     max_sequence_length=cfg.data.max_sequence_length)
    encoded = encode_prompts(text_encoder, prompts, validation.negative_prompt, cfg.data.max_sequence_length)
    del text_encoder
    sampler = PromptSampler(validation, encoded, video_vae=load("video_vae"), audio_vae=load("audio_vae"),
                                vocoder=load("vocoder", torch.float32), samples_dir=output_dir)
    clips = sampler.sample(transformer, connectors)
    paths = [write_clip(clip, Path(output_dir) / f"sample_seed{validation.seed}_prompt{i}.mp4")
             for i, clip in enumerate(clips)]
    return paths, clips
