"""Full fine-tuning: every transformer weight trained, held in float32 (the optimizer state with it) while
the forward runs in ``train.mixed_precision``; exported as ``transformer.safetensors`` in the original layout."""

from __future__ import annotations

from pathlib import Path

import torch

from ltx2train.models.keys import base_state_dict, build_key_map
from ltx2train.models.specs import torch_dtype

EXPORT_FILE = "transformer.safetensors"


class FullMethod:
    name = "full"
    export_file = EXPORT_FILE

    def __init__(self, cfg, spec):
        self.cfg, self.spec = cfg, spec

    def describe(self) -> str:
        return "full fine-tuning of the transformer"

    def apply(self, transformer: torch.nn.Module, log, fresh: bool = True) -> None:
        transformer.requires_grad_(True)
        for p in transformer.parameters():
            p.data = p.data.float()

    def signature(self) -> dict[str, str]:
        return {"method": self.name, "base_variant": self.spec.name}

    def trainable_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in model.state_dict().items()}

    def load_trainable_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(f"{source} does not fit this transformer: missing {result.missing_keys[:3]}, "
                             f"unexpected {result.unexpected_keys[:3]}")

    def exports(self, model: torch.nn.Module, metadata: dict[str, str]) -> dict[str, tuple[dict, dict]]:
        """``transformer.safetensors`` with the original keys: a repackaged transformer for ``load_component``."""
        key_map = build_key_map("transformer", model, self.spec.family)
        state = key_map.convert_to_original(base_state_dict(model))
        dtype = torch_dtype(self.cfg.model.dtype)  # the base checkpoint's precision
        return {EXPORT_FILE: ({k: v.detach().to(dtype) for k, v in state.items()},
                              {**metadata, "format": "pt", "ltx2train_variant": self.spec.name})}

    def load_export(self, model: torch.nn.Module, path: Path, *, require_all: bool = True, source: str = "") -> None:
        from ltx2train.models.loading import load_component

        loaded = load_component(self.spec, "transformer", path.parent, dtype=torch.float32)
        self.load_trainable_state(model, loaded.state_dict(), source or str(path))

