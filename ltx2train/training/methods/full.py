"""Full fine-tuning: every transformer weight (and, with ``train.trainable: [transformer, connectors]``, every
weight of the two text-connector transformers) trained, held in float32 (the optimizer state with it) while the
forward runs in ``train.mixed_precision``; exported in the repackaged layout: ``transformer.safetensors`` (and
``text_encoder_post_modules.safetensors``) with the original keys."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ltx2train.config import Config
from ltx2train.models.key_maps import build_key_map
from ltx2train.models.layout import SPLIT_FILES
from ltx2train.models.specs import torch_dtype
from ltx2train.models.trained import frozen_pattern, split_state, trainable_signature, trained_parts

EXPORT_FILE = "transformer.safetensors"
EXPORT_FILES = {f.component: f.filename for f in SPLIT_FILES if f.component in ("transformer", "connectors")}


class FullMethod:
    name = "full"
    export_file = EXPORT_FILE

    def __init__(self, cfg: Config, spec, frozen: str | None = None):
        self.cfg, self.spec, self.frozen = cfg, spec, frozen

    def describe(self) -> str:
        parts = " and the text connectors" if "connectors" in self.cfg.train.trainable else ""
        return f"full fine-tuning of the transformer{parts}" + (
            " (the audio branch frozen: it does not run)" if self.frozen else ""
        )

    def apply(self, model: torch.nn.Module, log, fresh: bool = True) -> None:
        """Every weight float32 and trained, except those of modules the component's frozen pattern names."""
        for component, (module, _) in trained_parts(model).items():
            frozen = frozen_pattern(component, self.frozen)
            for name, p in module.named_parameters():
                p.requires_grad_(not (frozen and re.fullmatch(frozen, name)))
                p.data = p.data.float()

    def signature(self) -> dict[str, str]:
        return {
            "method": self.name,
            "base_variant": self.spec.name,
            **({"frozen": self.frozen} if self.frozen else {}),
            **trainable_signature(self.cfg.train.trainable),
        }

    def trainable_names(self, model: torch.nn.Module) -> set[str]:
        return set(model.state_dict())

    def exports(self, model: torch.nn.Module, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict:
        """One file per trained component with the original keys (the repackaged layout ``load_component`` reads),
        in ``model.dtype``, the base checkpoint's precision. ``state``: every tensor gathered in full."""
        dtype, parts, files = torch_dtype(self.cfg.model.dtype), trained_parts(model), {}
        for component, tensors in split_state(model, state).items():
            key_map = build_key_map(component, parts[component][0], self.spec.family)
            original = key_map.convert_to_original(tensors)
            files[EXPORT_FILES[component]] = (
                {k: v.detach().to(dtype) for k, v in original.items()},
                {**metadata, "format": "pt", "ltx2train_variant": self.spec.name},
            )
        return files

    def state_from_export(self, model: torch.nn.Module, checkpoint: Path, source: str) -> dict[str, torch.Tensor]:
        from ltx2train.models.loading import load_component

        return {
            f"{prefix}{k}": v
            for component, (_, prefix) in trained_parts(model).items()
            for k, v in load_component(self.spec, component, checkpoint, dtype=torch.float32).state_dict().items()
        }
