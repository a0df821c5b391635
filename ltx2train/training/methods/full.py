"""Full fine-tuning: every transformer weight trained, held in float32 (the optimizer state with it) while
the forward runs in ``train.mixed_precision``; exported as ``transformer.safetensors`` in the original layout."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ltx2train.models.keys import build_key_map
from ltx2train.models.specs import torch_dtype

EXPORT_FILE = "transformer.safetensors"


class FullMethod:
    name = "full"
    export_file = EXPORT_FILE

    def __init__(self, cfg, spec, frozen: str | None = None):
        self.cfg, self.spec, self.frozen = cfg, spec, frozen

    def describe(self) -> str:
        return "full fine-tuning of the transformer" + (" (the audio branch frozen: it does not run)" if self.frozen else "")

    def apply(self, transformer: torch.nn.Module, log, fresh: bool = True) -> None:
        """Every weight float32 and trained, except those of modules matching ``frozen`` (the strategy's)."""
        for name, p in transformer.named_parameters():
            p.requires_grad_(not (self.frozen and re.fullmatch(self.frozen, name)))
            p.data = p.data.float()

    def signature(self) -> dict[str, str]:
        return {"method": self.name, "base_variant": self.spec.name, **({"frozen": self.frozen} if self.frozen else {})}

    def trainable_names(self, model: torch.nn.Module) -> set[str]:
        return set(model.state_dict())

    def exports(self, model: torch.nn.Module, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict:
        """``transformer.safetensors`` with the original keys (the repackaged layout ``load_component`` reads),
        in ``model.dtype``, the base checkpoint's precision. ``state``: every tensor gathered in full."""
        key_map = build_key_map("transformer", model, self.spec.family)
        original = key_map.convert_to_original(state)
        dtype = torch_dtype(self.cfg.model.dtype)
        return {EXPORT_FILE: ({k: v.detach().to(dtype) for k, v in original.items()},
                              {**metadata, "format": "pt", "ltx2train_variant": self.spec.name})}

    def state_from_export(self, model: torch.nn.Module, checkpoint: Path, source: str) -> dict[str, torch.Tensor]:
        from ltx2train.models.loading import load_component

        return load_component(self.spec, "transformer", checkpoint, dtype=torch.float32).state_dict()
