"""Official-format LoRA files <-> PEFT adapters on the diffusers transformer and text connectors.

Official/ComfyUI LoRAs (``diffusion_model.<module>.lora_A/B.weight`` [+ ``.alpha``]), including the
stage-2 ``ltx-2-19b-distilled-lora-384.safetensors``, are loaded as PEFT adapters with their exact ranks
and alphas per module. Unlike diffusers' LoRA converter, LoRA weights on the ``*_embeddings_connector``
modules are applied to the connectors rather than dropped; a key that matches no module is an error.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import load_file

from ltx2train.models.keys import build_key_map, lora_original_to_peft, lora_peft_to_original


def _lora_config(state: Mapping[str, torch.Tensor], alphas: Mapping[str, float]):
    from peft import LoraConfig

    ranks = {k[: -len(".lora_A.weight")]: v.shape[0] for k, v in state.items() if k.endswith(".lora_A.weight")}
    if not ranks:
        raise ValueError("LoRA has no lora_A weights")
    missing_b = [m for m in ranks if f"{m}.lora_B.weight" not in state]
    if missing_b:
        raise ValueError(f"LoRA modules without lora_B: {missing_b[:5]}")
    default_rank = Counter(ranks.values()).most_common(1)[0][0]
    module_alpha = {m: float(alphas.get(m, r)) for m, r in ranks.items()}
    default_alpha = Counter(module_alpha.values()).most_common(1)[0][0]
    exact = lambda name: re.escape(name)  # noqa: E731  (PEFT matches patterns as regex suffixes)
    return LoraConfig(
        r=default_rank,
        lora_alpha=default_alpha,
        target_modules="^(?:" + "|".join(exact(m) for m in sorted(ranks)) + ")$",
        rank_pattern={exact(m): r for m, r in ranks.items() if r != default_rank},
        alpha_pattern={exact(m): a for m, a in module_alpha.items() if a != default_alpha},
        init_lora_weights=False,
    )


def _inject(module: torch.nn.Module, state: Mapping[str, torch.Tensor], alphas, adapter_name: str) -> None:
    from peft.utils import set_peft_model_state_dict

    module.add_adapter(_lora_config(state, alphas), adapter_name=adapter_name)
    param = next(module.parameters())
    state = {k: v.to(device=param.device, dtype=torch.float32 if param.dtype == torch.float8_e4m3fn else param.dtype)
             for k, v in state.items()}
    result = set_peft_model_state_dict(module, state, adapter_name=adapter_name)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ValueError(f"LoRA keys not consumed by PEFT: {unexpected[:5]}")
    missing = [k for k in getattr(result, "missing_keys", []) if f".{adapter_name}." in k or k.endswith(adapter_name)]
    if missing:
        raise ValueError(f"LoRA adapter {adapter_name!r}: weights not provided for {missing[:5]}")


def load_lora_file(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"LoRA {path}: only .safetensors LoRA files are loaded")
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} does not exist")
    return load_file(str(path))


def apply_lora(
    transformer: torch.nn.Module,
    lora: str | Path | Mapping[str, torch.Tensor],
    *,
    family: str = "2.0",
    connectors: torch.nn.Module | None = None,
    adapter_name: str = "default",
    scale: float = 1.0,
) -> dict[str, int]:
    """Attach an official-format LoRA as PEFT adapter ``adapter_name``; returns modules per target.

    Connector LoRA weights need ``connectors``; without it they are an error, not silently dropped.
    """
    state = lora if isinstance(lora, Mapping) else load_lora_file(lora)
    t_map = build_key_map("transformer", transformer, family)
    c_map = build_key_map("connectors", connectors, family) if connectors is not None else None
    t_lora, c_lora, alphas = lora_original_to_peft(state, t_map, c_map)
    counts = {"transformer": 0, "connectors": 0}
    for target, module, part in (("transformer", transformer, t_lora), ("connectors", connectors, c_lora)):
        if not part:
            continue
        part_alphas = {m: a for m, a in alphas.items() if f"{m}.lora_A.weight" in part}
        _inject(module, part, part_alphas, adapter_name)
        if scale != 1.0:
            module.set_adapters([adapter_name], weights=[scale])
        counts[target] = len(part) // 2
    return counts


def export_lora(
    transformer: torch.nn.Module,
    *,
    family: str = "2.0",
    connectors: torch.nn.Module | None = None,
    adapter_name: str = "default",
) -> dict[str, torch.Tensor]:
    """The PEFT adapter ``adapter_name`` in the official layout, with ``.alpha`` written per module."""
    from peft.utils import get_peft_model_state_dict

    parts, alphas = [], {}
    for module in (transformer, connectors):
        if module is None or adapter_name not in getattr(module, "peft_config", {}):
            parts.append({})
            continue
        config = module.peft_config[adapter_name]
        state = get_peft_model_state_dict(module, adapter_name=adapter_name)
        parts.append(state)
        for key, value in state.items():
            if key.endswith(".lora_A.weight"):
                name = key[: -len(".lora_A.weight")]
                alphas[name] = _alpha_for(config, name, value.shape[0])
    t_map = build_key_map("transformer", transformer, family)
    c_map = build_key_map("connectors", connectors, family) if connectors is not None else None
    return lora_peft_to_original(parts[0], t_map, parts[1], c_map, alphas)


def _alpha_for(config, module_name: str, rank: int) -> float:
    for pattern, alpha in (config.alpha_pattern or {}).items():
        if re.match(rf"(.*\.)?(?:{pattern})$", module_name):
            return float(alpha)
    return float(config.lora_alpha)
