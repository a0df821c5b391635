"""Several LoRAs at inference, each at its own strength, loaded and unloaded cleanly.

Each LoRA (a file, a state dict in any dialect of :mod:`ltx2train.lora.files`, or a
:class:`~ltx2train.lora.files.LoraFile`) becomes its own PEFT adapter on the transformer, and on the
text connectors where it has connector modules. All loaded adapters are active together: a module's output is
``base(x) + sum_i strength_i * (alpha_i / r_i) * B_i A_i x``, the effect of merging
``sum_i strength_i * dW_i`` into the base weights. When the last adapter leaves a module, its PEFT layers are
removed, so the module is exactly as loaded (same parameter names and tensors, bit-identical forward).

Every file is checked against the model before any PEFT layer is made: a module the model lacks, a connector
module without ``connectors``, or a shape from another model is a ``ValueError`` naming the LoRA and the
module, and nothing is left half-loaded.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import torch

from ltx2train.lora.adapters import apply_lora, as_lora_file
from ltx2train.models.key_maps import LORA_ORIGINAL_PREFIX, KeyMappingError, build_key_map
from ltx2train.lora.files import LoraFile, is_connector_module
from ltx2train.utils.errors import UserError

LoraSource = str | Path | Mapping[str, torch.Tensor] | LoraFile
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # a PEFT adapter name becomes a ModuleDict key: no dots
_SHOWN = 4  # problems listed in one error message


def _describe(lora: LoraSource) -> str:
    if isinstance(lora, (str, Path)):
        return str(lora)
    return "a LoraFile" if isinstance(lora, LoraFile) else "a state dict"


def _peft_adapters(module: torch.nn.Module | None) -> list[str]:
    return list(getattr(module, "peft_config", None) or {}) if module is not None else []


def _shown(problems: list[str]) -> str:
    more = f"; ... ({len(problems)} in all)" if len(problems) > _SHOWN else ""
    return "; ".join(problems[:_SHOWN]) + more


class LoraStack:
    """The LoRAs loaded on one transformer (and its text connectors), by adapter name, with strengths.

    The stack owns every PEFT adapter on its modules: they must carry none when it is made.
    """

    def __init__(self, transformer: torch.nn.Module, connectors: torch.nn.Module | None = None, family: str = "2.0"):
        for label, module in (("transformer", transformer), ("connectors", connectors)):
            if _peft_adapters(module):
                raise UserError(
                    f"the {label} already carries PEFT adapters {_peft_adapters(module)}: a LoraStack "
                    "manages all adapters of its modules; make it on freshly loaded modules"
                )
        self.transformer, self.connectors, self.family = transformer, connectors, family
        self._modules = {"transformer": transformer, "connectors": connectors}
        self._maps = {c: build_key_map(c, m, family) for c, m in self._modules.items() if m is not None}
        self._strengths: dict[str, float] = {}
        self._targets: dict[str, tuple[str, ...]] = {}  # adapter -> the components it is on
        self._requires_grad: dict[str, dict[str, bool]] = {}  # component -> base requires_grad before any load
        self._files: dict[str, Path] = {}  # adapter -> the file it was loaded from

    @property
    def names(self) -> list[str]:
        """Loaded adapters, in load order."""
        return list(self._strengths)

    def strength(self, name: str) -> float:
        return self._strengths[self._known(name)]

    # --- load / unload -------------------------------------------------------------------------------
    def load(self, lora: LoraSource, strength: float = 1.0, name: str | None = None) -> str:
        """Attach ``lora`` as adapter ``name`` (default: the file's stem, else ``lora<k>``) at ``strength``;
        returns the adapter name."""
        source = _describe(lora)
        name = self._new_name(lora, name, source)
        try:
            lora_file = as_lora_file(lora)
        except KeyMappingError as exc:
            raise UserError(f"LoRA {name!r} ({source}) is not a LoRA file ltx2train reads: {exc}") from None
        targets = self._check_fits(lora_file, f"LoRA {name!r} ({source})")
        for component in targets:
            self._requires_grad.setdefault(
                component, {n: p.requires_grad for n, p in self._modules[component].named_parameters()}
            )
        try:
            with warnings.catch_warnings():  # PEFT warns on every adapter after the first: here that is the point
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                apply_lora(
                    self.transformer, lora_file, family=self.family, connectors=self.connectors, adapter_name=name
                )
        except (ValueError, RuntimeError, KeyError) as exc:
            self._targets[name] = targets
            self._remove(name)
            self._activate()  # the others as they were: PEFT activated the new adapter alone
            raise UserError(f"LoRA {name!r} ({source}) could not be attached: {exc}") from exc
        self._targets[name], self._strengths[name] = targets, float(strength)
        if isinstance(lora, (str, Path)):
            self._files[name] = Path(lora).resolve()
        self._activate()
        return name

    def set_strength(self, name: str, strength: float) -> None:
        self._strengths[self._known(name)] = float(strength)
        self._activate()

    def unload(self, name: str) -> None:
        """Delete adapter ``name``; a module left with no adapter gets its original layers back."""
        self._known(name)
        del self._strengths[name]
        self._files.pop(name, None)
        self._remove(name)
        self._activate()

    def clear(self) -> None:
        """Unload every LoRA, the last loaded first."""
        for name in reversed(self.names):
            self.unload(name)

    @contextmanager
    def applied(self, loras: Iterable[tuple[LoraSource, float]]) -> Iterator[list[str]]:
        """Load ``(lora, strength)`` pairs for the block, unload them after (also on an exception)."""
        loaded: list[str] = []
        try:
            for lora, strength in loras:
                loaded.append(self.load(lora, strength))
            yield list(loaded)
        finally:
            for name in reversed(loaded):
                self.unload(name)

    # --- internals -----------------------------------------------------------------------------------
    def _known(self, name: str) -> str:
        if name not in self._strengths:
            raise UserError(
                f"no LoRA named {name!r} is loaded (loaded: {self.names or 'none'}); use a name that load() returned"
            )
        return name

    def _new_name(self, lora: LoraSource, name: str | None, source: str) -> str:
        loaded = [
            n for n, path in self._files.items() if isinstance(lora, (str, Path)) and path == Path(lora).resolve()
        ]
        if loaded and name is None:  # the same file twice would double its effect
            raise UserError(
                f"LoRA {source} is already loaded as {loaded[0]!r}: set_strength({loaded[0]!r}, s) "
                f"changes its strength; to stack it twice on purpose, pass adapter_name="
            )
        if name is None:
            return self._free_name(lora)
        if not _NAME.match(name):
            raise UserError(f"LoRA {source}: adapter name {name!r} may hold only letters, digits, '_' and '-'")
        if name in self._strengths:
            raise UserError(
                f"LoRA {source}: a LoRA named {name!r} is already loaded; pass another adapter_name= "
                f"or unload({name!r}) first"
            )
        return name

    def _free_name(self, lora: LoraSource) -> str:
        """A file's stem, else with as many of its folders before it as make it unique (two checkpoints'
        ``lora.safetensors``: ``lora``, then ``step_000500_lora``), else ``lora<k>``."""
        candidates = []
        if isinstance(lora, (str, Path)):
            path = Path(lora).absolute()
            parts = [path.stem, *(p.name for p in path.parents if p.name)]
            candidates = [
                re.sub(r"[^A-Za-z0-9_-]", "_", "_".join(reversed(parts[:k]))) for k in range(1, len(parts) + 1)
            ]
        candidates += [f"lora{k}" for k in range(1, len(self._strengths) + 2)]
        return next(c for c in candidates if c not in self._strengths)

    def _check_fits(self, lora: LoraFile, label: str) -> tuple[str, ...]:
        """The components ``lora`` touches, after checking that every module exists here with its shapes."""
        if not lora.modules:
            raise UserError(f"{label} holds no LoRA modules")
        missing, connector_only, shapes, targets = [], [], [], set()
        for module_name, weights in lora.modules.items():
            key = f"model.{LORA_ORIGINAL_PREFIX}{module_name}.weight"
            found = [(c, m.to_diffusers[key]) for c, m in self._maps.items() if key in m.to_diffusers]
            if not found:
                (connector_only if is_connector_module(module_name) and self.connectors is None else missing).append(
                    module_name
                )
                continue
            component, weight_key = found[0]
            layer = self._modules[component].get_submodule(weight_key[: -len(".weight")])
            layer = getattr(layer, "base_layer", layer)  # already wrapped by another adapter
            if not isinstance(layer, torch.nn.Linear):
                missing.append(f"{module_name} (a {type(layer).__name__}, not a linear layer)")
            elif (weights.down.shape[1], weights.up.shape[0]) != (layer.in_features, layer.out_features):
                shapes.append(
                    f"{module_name}: lora_B {list(weights.up.shape)} x lora_A {list(weights.down.shape)} "
                    f"for a {layer.out_features}x{layer.in_features} weight"
                )
            else:
                targets.add(component)
        if connector_only:
            raise UserError(
                f"{label} has weights for the text connectors ({_shown(connector_only)}) but no "
                "connectors were given: pass connectors= to LoraStack, or drop them with "
                "ltx2train export FILE --drop-connectors --output NEW"
            )
        if missing:
            raise UserError(
                f"{label}: {len(missing)} of {len(lora.modules)} modules match nothing in this LTX-2 "
                f"(family {self.family}) model: {_shown(missing)}. Is it a LoRA for this model? "
                "ltx2train inspect FILE shows what it was made for"
            )
        if shapes:
            raise UserError(
                f"{label} was made for another model (family or size) than this family "
                f"{self.family} one; shapes differ at {_shown(shapes)}"
            )
        return tuple(c for c in self._modules if c in targets)

    def _remove(self, name: str) -> None:
        """Delete adapter ``name`` wherever it is; unwrap a module left without adapters."""
        for component in self._targets.pop(name, ()):
            module = self._modules[component]
            if name in _peft_adapters(module):
                with warnings.catch_warnings():  # PEFT says which adapter it activates instead: _activate decides
                    warnings.filterwarnings("ignore", message=".* was active which is now deleted")
                    module.delete_adapters(name)
            if not _peft_adapters(module):
                self._restore(component)

    def _restore(self, component: str) -> None:
        module = self._modules[component]
        if any(True for _ in _peft_layers(module)):
            module.unload_lora()  # PEFT wrappers -> their base layers (diffusers' recurse_remove_peft_layers)
        for param_name, flag in self._requires_grad.pop(component, {}).items():
            module.get_parameter(param_name).requires_grad_(flag)

    def _activate(self) -> None:
        """Make every loaded adapter active at its strength, on each module it touches."""
        for component, module in self._modules.items():
            names = [n for n in self._strengths if component in self._targets[n]]
            if names:
                module.set_adapters(names, weights=[self._strengths[n] for n in names])


def _peft_layers(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return (m for m in module.modules() if isinstance(m, BaseTunerLayer))
