"""Video latents -> frames through LTX-2.5's diffusion video decoder (diffusers ``LTX2VideoDiffusionDecoderModel``).

Unlike the VAE's conv decoder it is a small diffusion model of its own: stages 1-4 upsample the latents into a
context volume, stage 5 denoises pixel noise against it (one x0 step, as LTX-2.5 ships). Its noise comes from a CPU
generator seeded by the sample's seed, so a clip decodes the same on every device and in validation and ``sample``
alike. Its neighborhood attention is diffusers' FlexAttention processor: eager on CPU (the tiny model), compiled on a
GPU, where eager flex would materialize every tile's full score matrix; decoding is tiled as diffusers tiles it.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

_compiled_flex = {}


@contextlib.contextmanager
def _flex_attention_for(device: torch.device):
    """diffusers calls ``torch.nn.attention.flex_attention.flex_attention`` through the module (so that it may be
    compiled): on a GPU it is the compiled function for the decode, on the CPU the eager one, quietly."""
    import torch.nn.attention.flex_attention as flex

    original = flex.flex_attention
    if device.type == "cuda":
        flex.flex_attention = _compiled_flex.setdefault("fn", torch.compile(original, dynamic=False))
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            yield
    finally:
        flex.flex_attention = original


@torch.no_grad()
def decode_video(decoder: torch.nn.Module, latents: torch.Tensor, seed: int | None, output_type: str = "np"):
    """Denormalized video latents ``(B, C, F, H, W)`` (what an LTX-2 pipeline returns with ``output_type="latent"``)
    -> frames: ``np`` ``(B, F', H', W', 3)`` float32 in [0, 1], or ``pil`` (one list of images per clip)."""
    from diffusers.video_processor import VideoProcessor

    decoder.enable_tiling()  # only where the latents exceed one tile (768 px, 80 frames)
    latents = latents.to(device=decoder.device, dtype=decoder.dtype)
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    with _flex_attention_for(latents.device):
        pixels = decoder.decode(latents, generator=generator, return_dict=False)[0]
    frames = VideoProcessor(vae_scale_factor=decoder.spatial_compression_ratio).postprocess_video(
        pixels, output_type=output_type
    )
    return np.asarray(frames, dtype=np.float32) if output_type == "np" else frames
