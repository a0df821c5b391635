"""LoRA files <-> PEFT adapters on the diffusers transformer and text connectors.

A LoRA in any dialect of :mod:`ltx2train.lora.files` (official/ComfyUI with or without ``.alpha``,
diffusers, DiffSynth), including the stage-2 ``ltx-2-19b-distilled-lora-384.safetensors``, is attached as a
PEFT adapter with its exact ranks and alphas per module. Unlike diffusers' LoRA converter, LoRA weights on
the ``*_embeddings_connector`` modules are applied to the connectors rather than dropped; a key that matches
no module is an error. :func:`load_into_adapter` fills an existing (training) adapter from a file whatever
alpha the file was made with; :func:`export_lora` gives the adapter back in canonical form.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import torch

from ltx2train.models.key_maps import (
    build_key_map,
    lora_module_to_diffusers,
    lora_module_to_original,
    lora_original_to_peft,
)
from ltx2train.lora.files import LoraFile, LoraModule, from_state_dict, read_lora, to_state_dict
from ltx2train.models.trained import trained_parts
from ltx2train.utils.errors import UserError

if TYPE_CHECKING:
    from ltx2train.config.schema import Config, LoRAConfig


GATE_LOGITS = "to_gate_logits"  # LTX-2.3's per-head attention gate projection (2 * sigmoid scales each head)


def lora_targets(lora_cfg: LoRAConfig) -> list[str]:
    """The module-name suffixes a training LoRA adapts: ``lora.target_modules``, plus the attention gates only with
    ``lora.gate_logits``."""
    return [*lora_cfg.target_modules, *([GATE_LOGITS] if lora_cfg.gate_logits else [])]


def training_lora_config(lora_cfg: LoRAConfig, exclude: str | None = None):
    """PEFT's ``LoraConfig`` for a recipe's ``lora`` section (zero-initialised B: the model starts as the base);
    modules whose full name matches ``exclude`` get no adapter."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora_cfg.rank,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=lora_targets(lora_cfg),
        init_lora_weights=True,
        exclude_modules=exclude,
    )


def casts_adapter_inputs(cfg: Config) -> bool:
    """Whether a training step needs PEFT's cast of each adapted layer's input to the adapters' float32: an extra
    copy of every adapted activation (and of its bf16 recast for the matmul, saved for backward) in forward and in
    recompute. Not under autocast (``mixed_precision`` bf16 or fp16 with ddp or fsdp2): autocast casts the bf16
    input and the float32 adapter to its dtype for the matmuls either way, so outputs and gradients are
    bit-identical without it (tested). Kept without autocast (a float32 adapter needs a float32 input), under
    DeepSpeed (its engine casts the whole model and runs no autocast) and with ``lora.dropout`` (the dropout would
    draw its mask on another dtype). Sampling runs without autocast: it turns the cast back on
    (``preserved_training_state``)."""
    autocast = cfg.train.mixed_precision in ("bf16", "fp16") and cfg.distributed.backend != "deepspeed"
    return not autocast or cfg.lora.dropout > 0


def set_adapter_input_cast(module: torch.nn.Module, enabled: bool) -> None:
    """PEFT's input cast (``cast_input_dtype_enabled``) on every adapted layer of ``module``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for layer in module.modules():
        if isinstance(layer, BaseTunerLayer):
            layer.cast_input_dtype_enabled = enabled


def _lora_config(state: Mapping[str, torch.Tensor], alphas: Mapping[str, float]):
    from peft import LoraConfig

    ranks = {k[: -len(".lora_A.weight")]: v.shape[0] for k, v in state.items() if k.endswith(".lora_A.weight")}
    if not ranks:
        raise UserError("LoRA has no lora_A weights")
    missing_b = [m for m in ranks if f"{m}.lora_B.weight" not in state]
    if missing_b:
        raise UserError(f"LoRA modules without lora_B: {missing_b[:5]}")
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
    for name, p in module.named_parameters():  # PEFT makes adapters in their base layer's dtype: not in float8
        if f".{adapter_name}." in name and p.dtype == torch.float8_e4m3fn:
            p.data = torch.zeros_like(p.data, dtype=torch.float32)
    param = next(module.parameters())
    state = {
        k: v.to(device=param.device, dtype=torch.float32 if param.dtype == torch.float8_e4m3fn else param.dtype)
        for k, v in state.items()
    }
    result = set_peft_model_state_dict(module, state, adapter_name=adapter_name)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise UserError(f"LoRA keys not consumed by PEFT: {unexpected[:5]}")
    missing = [k for k in getattr(result, "missing_keys", []) if f".{adapter_name}." in k or k.endswith(adapter_name)]
    if missing:
        raise UserError(f"LoRA adapter {adapter_name!r}: weights not provided for {missing[:5]}")


def as_lora_file(lora: str | Path | Mapping[str, torch.Tensor] | LoraFile) -> LoraFile:
    if isinstance(lora, LoraFile):
        return lora
    return from_state_dict(lora) if isinstance(lora, Mapping) else read_lora(lora)


def apply_lora(
    transformer: torch.nn.Module,
    lora: str | Path | Mapping[str, torch.Tensor] | LoraFile,
    *,
    family: str = "2.0",
    connectors: torch.nn.Module | None = None,
    adapter_name: str = "default",
    scale: float = 1.0,
) -> dict[str, int]:
    """Attach a LoRA (file, state dict in any dialect, or :class:`LoraFile`) as PEFT adapter ``adapter_name``;
    returns modules per target.

    Connector LoRA weights need ``connectors``; without it they are an error, not silently dropped.
    """
    state = to_state_dict(as_lora_file(lora), "official-alpha")
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
    connectors: torch.nn.Module | None = None,
    adapter_name: str = "default",
    states: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
) -> LoraFile:
    """The PEFT adapter ``adapter_name`` in canonical form (original module names, each module's alpha).
    ``states``: per component (``transformer``, ``connectors``), its adapter tensors gathered in full (under
    sharding the modules hold shards)."""
    from peft.tuners.lora import LoraLayer

    modules: dict[str, LoraModule] = {}
    for component, module in (("transformer", transformer), ("connectors", connectors)):
        for name, layer in module.named_modules() if module is not None else ():
            if isinstance(layer, LoraLayer) and adapter_name in layer.lora_A:
                down, up = f"{name}.lora_A.{adapter_name}.weight", f"{name}.lora_B.{adapter_name}.weight"
                if states is not None and component in states:
                    down, up = states[component][down], states[component][up]
                else:
                    down, up = layer.lora_A[adapter_name].weight.detach(), layer.lora_B[adapter_name].weight.detach()
                modules[lora_module_to_original(component, name)] = LoraModule(
                    down, up, float(layer.scaling[adapter_name] * layer.r[adapter_name])
                )
    return LoraFile(modules, "official")


def load_into_adapter(
    model: torch.nn.Module,
    lora: LoraFile,
    *,
    adapter_name: str = "default",
    require_all: bool = False,
    source: str = "LoRA",
) -> int:
    """Fill the existing adapter ``adapter_name`` of a trained module (the transformer, or it with the connectors:
    ``models/trained.py``) so that each module's effect equals the file's, whatever alpha either was made with.
    Modules the adapter has but the file lacks keep their weights unless ``require_all``. Returns the number of
    modules filled."""
    state = adapter_state_from_lora(model, lora, adapter_name=adapter_name, require_all=require_all, source=source)
    with torch.no_grad():
        for key, value in state.items():
            param = model.get_parameter(key)
            param.copy_(value.to(param.dtype))
    return len(state) // 2


def _adapted_layers(model: torch.nn.Module, adapter_name: str) -> dict[tuple[str, str], tuple[object, str]]:
    """``{(component, module name): (LoRA layer, state-dict prefix)}`` of a trained module's adapter."""
    from peft.tuners.lora import LoraLayer

    return {
        (component, name): (layer, prefix)
        for component, (module, prefix) in trained_parts(model).items()
        for name, layer in module.named_modules()
        if isinstance(layer, LoraLayer) and adapter_name in layer.lora_A
    }


def adapter_state_from_lora(
    model: torch.nn.Module,
    lora: LoraFile,
    *,
    adapter_name: str = "default",
    require_all: bool = False,
    source: str = "LoRA",
) -> dict[str, torch.Tensor]:
    """The adapter's tensors (the trained module's state-dict names) that give each module the file's effect:
    ``B_adapter = B_file * scale_file / scale_adapter`` (float32 arithmetic); every module checked first."""
    layers = _adapted_layers(model, adapter_name)
    trains_connectors = "connectors" in trained_parts(model)
    problems, seen, state = [], set(), {}
    for name, weights in lora.modules.items():
        component, dname = lora_module_to_diffusers(name)
        layer, prefix = layers.get((component, dname), (None, ""))
        if component == "connectors" and not trains_connectors:
            problems.append(
                f"module {name!r} is on the text connectors, which this run does not adapt (add "
                "connectors to train.trainable, or leave them out: ltx2train export FILE "
                "--drop-connectors --output NEW)"
            )
        elif layer is None:
            problems.append(f"module {name!r} is not adapted here (lora.target_modules)")
        elif layer.r[adapter_name] != weights.rank:
            problems.append(
                f"module {name!r} has rank {weights.rank}, the adapter rank {layer.r[adapter_name]} (lora.rank)"
            )
        elif (
            layer.lora_A[adapter_name].weight.shape[1] != weights.down.shape[1]
            or layer.lora_B[adapter_name].weight.shape[0] != weights.up.shape[0]
        ):
            problems.append(
                f"module {name!r} has shapes {list(weights.up.shape)} x {list(weights.down.shape)}, which "
                "do not fit the model (another base variant?)"
            )
        else:
            ratio = weights.scale / float(layer.scaling[adapter_name])
            state[f"{prefix}{dname}.lora_A.{adapter_name}.weight"] = weights.down.float()
            up = weights.up.float()
            state[f"{prefix}{dname}.lora_B.{adapter_name}.weight"] = up * ratio if ratio != 1.0 else up
            seen.add((component, dname))
    if require_all:
        problems += [
            f"no weights for adapted module {lora_module_to_original(c, d)!r}" for c, d in sorted(set(layers) - seen)
        ]
    if problems:
        shown = "; ".join(problems[:4]) + (f"; ... ({len(problems)} in all)" if len(problems) > 4 else "")
        raise UserError(f"{source} does not fit this recipe's LoRA: {shown}")
    return state


@torch.no_grad()
def merge_into_base(
    lora: str | Path | Mapping[str, torch.Tensor] | LoraFile,
    transformer: torch.nn.Module,
    connectors: torch.nn.Module | None = None,
    strength: float = 1.0,
) -> int:
    """``W += strength * scale * B @ A`` for every module of ``lora`` (float32 arithmetic, the weight's dtype kept),
    into the transformer's and the connectors' own weights, as ``export --merge`` merges files; returns how many
    weights changed. A module the model lacks, or of another shape, is an error before any weight changes."""
    lora = as_lora_file(lora)
    targets = []
    for name, weights in lora.modules.items():
        component, path = lora_module_to_diffusers(name)
        owner = transformer if component == "transformer" else connectors
        if owner is None:
            raise UserError(f"LoRA module {name!r} is on the text connectors, which are not given")
        try:
            layer = owner.get_submodule(path)
        except AttributeError:
            raise UserError(
                f"LoRA module {name!r}: no {component} module {path!r} (a LoRA of another model?)"
            ) from None
        if tuple(layer.weight.shape) != (weights.up.shape[0], weights.down.shape[1]):
            raise UserError(
                f"LoRA module {name!r} makes {[weights.up.shape[0], weights.down.shape[1]]}, "
                f"{path} is {list(layer.weight.shape)} (a LoRA of another model size?)"
            )
        targets.append((layer, weights))
    for layer, weights in targets:
        delta = strength * weights.delta().to(layer.weight.device)
        layer.weight.data = (layer.weight.float() + delta).to(layer.weight.dtype)
    return len(targets)


def merge_presets(
    presets, transformer: torch.nn.Module, connectors: torch.nn.Module | None = None, log=lambda _: None
) -> None:
    """``lora.preset``: each LoRA file merged into the base weights (:func:`merge_into_base`), in order."""
    for path in presets:
        if not Path(path).is_file():
            raise FileNotFoundError(f"lora.preset: {path} does not exist")
        changed = merge_into_base(path, transformer, connectors)
        log(f"[ltx2train] lora.preset: {path} merged into the base ({changed} weight(s))")
