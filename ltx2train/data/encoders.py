"""The frozen encoders of ``prepare`` (the VAE encoders, Gemma and the text projection), loaded a phase at a
time, and the fingerprint of what made a cache (``producer``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ltx2train.config.schema import Config

logger = logging.getLogger(__name__)


@dataclass
class Encoders:
    """The frozen encoders of prepare: video VAE, audio VAE (optional), Gemma and the text projection. Prepare
    loads the text ones, encodes every caption, frees them, then loads the media ones (``None`` meanwhile)."""

    video_vae: torch.nn.Module | None
    audio_vae: torch.nn.Module | None
    text_encoder: object | None  # ltx2train.models.text_encoder.GemmaTextEncoder
    connectors: torch.nn.Module | None  # only its frozen feature extractor runs here (project_text)


# the parts whose weights make the cache's tensors: the VAEs' encoders (their decoders never touch it), the connectors
ENCODING_PARTS = {
    "video_vae_encoder": ("video_vae", "encoder"),
    "audio_vae_encoder": ("audio_vae", "encoder"),
    "connectors": ("connectors", None),
}


def producer(cfg: Config, text_encoder: bool = True, present_only: bool = False) -> dict[str, str]:
    """What the cache's tensors come from: the code version, the model variant and its version, and the fingerprint
    of each part that makes them (``models.loading.tensor_fingerprint``: names, shapes and first bytes of its
    tensors). ``present_only``: leave out a part whose files are not there (training needs no VAE encoder)."""
    from importlib.metadata import version

    from ltx2train.models.loading import component_fingerprint, tensor_fingerprint
    from ltx2train.models.specs import load_variant

    out = {
        "ltx2train": version("ltx2train"),
        "variant": cfg.model.variant,
        "version": f"LTX-{load_variant(cfg.model.variant).family}",
    }
    for key, (component, part) in ENCODING_PARTS.items():
        if component == "audio_vae" and not cfg.data.with_audio:
            continue
        try:
            out[key] = component_fingerprint(cfg.model.checkpoint, component, part=part)
        except FileNotFoundError:
            if not present_only:
                raise
    if text_encoder:
        out["text_encoder"] = tensor_fingerprint(sorted(Path(cfg.model.text_encoder).glob("*.safetensors")))
    return out


def load_encoders(cfg: Config, device: str | torch.device = "cpu") -> Encoders:
    """All of them at once (tests, notebooks); ``prepare`` loads them a phase at a time."""
    text, media = load_text_encoders(cfg, device), load_media_encoders(cfg, device)
    return Encoders(media.video_vae, media.audio_vae, text.text_encoder, text.connectors)


def load_text_encoders(cfg: Config, device: str | torch.device = "cpu") -> Encoders:
    """Gemma and the text projection."""
    from ltx2train.models.loading import load_component
    from ltx2train.models.specs import torch_dtype
    from ltx2train.models.text_encoder import load_text_encoder

    dtype = torch_dtype(cfg.model.dtype)
    text_encoder = load_text_encoder(
        cfg.model.text_encoder, dtype=dtype, device=device, max_sequence_length=cfg.data.max_sequence_length
    )
    connectors = load_component(cfg.model.variant, "connectors", cfg.model.checkpoint, dtype=dtype, device=device)
    _frozen_in_fp8(cfg, {"text_encoder": text_encoder.model, "connectors": connectors})
    return Encoders(None, None, text_encoder, connectors)


def _frozen_in_fp8(cfg: Config, modules: dict[str, torch.nn.Module]) -> None:
    """``memory.fp8_frozen``: the listed ones stored in FP8, computed in bfloat16."""
    from ltx2train.memory.fp8 import store_fp8

    for name, module in modules.items():
        if name in cfg.memory.fp8_frozen and module is not None:  # computed in the dtype it was loaded in
            report = store_fp8(module, name, compute_dtype=next(module.parameters()).dtype)
            logger.info("prepare: %s stored in FP8", report.describe())


def load_media_encoders(cfg: Config, device: str | torch.device = "cpu") -> Encoders:
    """The video VAE and (with audio) the audio VAE."""
    from ltx2train.models.loading import load_component
    from ltx2train.models.specs import torch_dtype

    dtype = torch_dtype(cfg.model.dtype)
    video_vae = load_component(
        cfg.model.variant, "video_vae", cfg.model.checkpoint, dtype=dtype, device=device, part="encoder"
    )
    audio_vae = None
    if cfg.data.with_audio:
        # The audio VAE is small; its mel front end is precision-sensitive, so it runs in float32.
        audio_vae = load_component(
            cfg.model.variant, "audio_vae", cfg.model.checkpoint, dtype=torch.float32, device=device, part="encoder"
        )
    if cfg.memory.tiled_vae:
        from ltx2train.memory.tiling import enable_vae_tiling

        enable_vae_tiling(video_vae)
    _frozen_in_fp8(cfg, {"video_vae": video_vae, "audio_vae": audio_vae})
    return Encoders(video_vae, audio_vae, None, None)
