"""LoRA: PEFT adapters on ``lora.target_modules`` of the transformer (and of the text connectors when
``train.trainable`` has them), the base frozen (never upcast: adapters alone are fp32)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ltx2train.config import Config, LoRAConfig
from ltx2train.lora.adapters import (
    adapter_state_from_lora,
    casts_adapter_inputs,
    export_lora,
    load_into_adapter,
    lora_targets,
    set_adapter_input_cast,
    training_lora_config,
)
from ltx2train.lora.files import read_lora, to_state_dict
from ltx2train.models.trained import frozen_pattern, split_state, trainable_signature, trained_parts
from ltx2train.utils.errors import UserError

ADAPTER = "default"
EXPORT_FILE = "lora.safetensors"


def add_lora(
    module: torch.nn.Module,
    lora_cfg: LoRAConfig,
    exclude: str | None = None,
    component: str = "transformer",
    cast_inputs: bool = True,
) -> list[torch.nn.Parameter]:
    """PEFT LoRA on ``lora_cfg.target_modules`` of ``module`` (the transformer, or the text connectors) except
    modules whose full name matches ``exclude``; adapter weights kept in float32 whatever the base dtype.
    ``cast_inputs``: PEFT casts each adapted layer's input to float32 (:func:`casts_adapter_inputs`)."""
    module.requires_grad_(False)
    try:
        module.add_adapter(training_lora_config(lora_cfg, exclude), adapter_name=ADAPTER)
    except ValueError as exc:
        raise UserError(f"lora.target_modules={lora_targets(lora_cfg)} match no {component} module: {exc}") from exc
    set_adapter_input_cast(module, cast_inputs)
    params = [p for n, p in module.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


class LoraMethod:
    name = "lora"
    export_file = EXPORT_FILE

    def __init__(self, cfg: Config, spec, frozen: str | None = None):
        self.cfg, self.spec, self.frozen = cfg, spec, frozen

    def describe(self) -> str:
        where = " (none on the audio branch: it does not run)" if self.frozen else ""
        parts = " and the text connectors" if "connectors" in self.cfg.train.trainable else ""
        return f"LoRA rank {self.cfg.lora.rank} on {lora_targets(self.cfg.lora)} of the transformer{parts}{where}"

    def apply(self, model: torch.nn.Module, log, fresh: bool = True) -> None:
        """Adapters on the frozen transformer (and connectors: ``train.trainable``); on a fresh run (not a resume)
        filled from ``lora.init_from``."""
        cast = casts_adapter_inputs(self.cfg)
        for component, (module, _) in trained_parts(model).items():
            exclude = frozen_pattern(component, self.frozen)
            add_lora(module, self.cfg.lora, exclude=exclude, component=component, cast_inputs=cast)
        if fresh and self.cfg.lora.init_from:
            self.load_export(
                model,
                Path(self.cfg.lora.init_from),
                require_all=False,
                source=f"lora.init_from {self.cfg.lora.init_from}",
            )
            log(f"[ltx2train] LoRA initialised from {self.cfg.lora.init_from}")

    def signature(self) -> dict[str, str]:
        lora = self.cfg.lora
        return {
            "method": self.name,
            "base_variant": self.spec.name,
            "rank": str(lora.rank),
            "target_modules": json.dumps(lora_targets(lora)),
            **({"excluded_modules": self.frozen} if self.frozen else {}),
            **trainable_signature(self.cfg.train.trainable),
        }

    def trainable_names(self, model: torch.nn.Module) -> set[str]:
        """State-dict names of what is trained and saved: the adapters."""
        return {k for k in model.state_dict() if "lora_" in k}

    def exports(self, model: torch.nn.Module, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict:
        """``lora.safetensors``: official layout, alpha/rank folded into lora_B, float32. ``state``: the
        adapters gathered in full."""
        parts = trained_parts(model)
        lora = export_lora(
            parts["transformer"][0],
            connectors=parts.get("connectors", (None,))[0],
            adapter_name=ADAPTER,
            states=split_state(model, state),
        )
        meta = {
            **metadata,
            "format": "ltx2train-lora",
            "lora_format": "official",
            "alpha_handling": "folded",
            "rank": str(self.cfg.lora.rank),
            "alpha": str(self.cfg.lora.alpha),
            "target_modules": json.dumps(lora_targets(self.cfg.lora)),
        }
        return {EXPORT_FILE: (to_state_dict(lora, "official", dtype=torch.float32), meta)}

    def load_export(self, model: torch.nn.Module, path: Path, *, require_all: bool = True, source: str = "") -> None:
        """A LoRA file in any dialect (folded, or with .alpha) into the adapter, rescaled to this alpha."""
        load_into_adapter(
            model, read_lora(path), adapter_name=ADAPTER, require_all=require_all, source=source or str(path)
        )

    def state_from_export(self, model: torch.nn.Module, checkpoint: Path, source: str) -> dict[str, torch.Tensor]:
        """The adapter tensors a checkpoint's ``lora.safetensors`` stands for (it may be folded or carry .alpha)."""
        return adapter_state_from_lora(
            model, read_lora(checkpoint / EXPORT_FILE), adapter_name=ADAPTER, require_all=True, source=source
        )
