"""Which LTX-2 version a checkpoint is, read from what it holds, and the check against ``model.variant``.

A checkpoint's version is its key set and shapes: LTX-2.3 adds gated attention (``to_gate_logits``), the prompt
AdaLN and 9-row modulation tables to the DiT, per-modality text projections to the connectors and another VAE
decoder topology; LTX-2.5 drops the video feed-forward biases and adds the keyframe position embedding (and reads
Gemma 4, told by the text encoder's ``config.json``); sizes tell 22B from a tiny model. Only safetensors headers are
read. The check runs before any weight loads, so a 2.3 file under ``model.variant: ltx2-19b`` (or the reverse) is one
clear error naming both, never a strict-loading failure deep in a component, and never a silently mis-built model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

from ltx2train.models.layout import in_part
from ltx2train.models.loading import CheckpointError, checkpoint_shapes
from ltx2train.models.specs import VariantSpec, list_variants, load_variant

Shapes = dict[str, tuple[int, ...]]


class VersionMismatchError(CheckpointError):
    """The checkpoint holds another LTX-2 version (or size) than the recipe's ``model.variant``."""


@dataclass(frozen=True)
class Detected:
    """The shipped variant a component's tensors match exactly (None if none does) and the closest one."""

    component: str
    variant: str | None  # exact match: every key and shape
    closest: str  # the shipped variant sharing most keys and shapes
    family: str  # the closest variant's family: "2.0", "2.3", "2.5"

    @property
    def version(self) -> str:
        return f"LTX-{self.family}"


def _layout_of(spec: VariantSpec, component: str) -> Shapes:
    """A variant's component: every original key with its shape (built on the meta device once per config)."""
    part = spec.component(component)
    return _layout(component, part.class_name, json.dumps(part.config, sort_keys=True), spec.family)


@lru_cache(maxsize=None)
def _layout(component: str, class_name: str, config: str, family: str) -> Shapes:
    from ltx2train.models.key_maps import build_key_map, original_keys_with_shapes
    from ltx2train.models.specs import ComponentSpec

    module = ComponentSpec(component, class_name, json.loads(config)).build(meta=True)
    return original_keys_with_shapes(build_key_map(component, module, family), module)


def shipped_layout(variant: str, component: str) -> Shapes:
    """A shipped variant's component: every original key with its shape."""
    return _layout_of(load_variant(variant), component)


def detect(component: str, shapes: Shapes) -> Detected:
    """The shipped variant whose ``component`` has exactly these keys and shapes, else the closest one."""

    def common(variant: str) -> int:
        layout = shipped_layout(variant, component)
        return sum(1 for k, s in shapes.items() if layout.get(k) == tuple(s))

    variants = list_variants()
    exact = [v for v in variants if shipped_layout(v, component) == {k: tuple(s) for k, s in shapes.items()}]
    closest = exact[0] if exact else max(variants, key=common)
    return Detected(component, exact[0] if exact else None, closest, load_variant(closest).family)


def detect_checkpoint(checkpoint: str | Path, distilled: bool = False) -> Detected:
    """The version of a checkpoint's transformer (a repackaged directory or an official single file)."""
    shapes = checkpoint_shapes(checkpoint, "transformer", distilled)
    if shapes is None:
        raise FileNotFoundError(
            f"{checkpoint}: no transformer weights to identify (a repackaged directory with "
            "transformer.safetensors, or the official single file)"
        )
    return detect("transformer", shapes)


def check_version(
    checkpoint: str | Path,
    spec: VariantSpec,
    components: Iterable[str],
    distilled: bool = False,
    text_encoder: str | Path | None = None,
    parts: Mapping[str, str] | None = None,
) -> None:
    """Every listed component of ``checkpoint`` (``parts``: one half of a VAE) has exactly the keys and shapes of
    ``spec``'s, and the text encoder is the Gemma the variant reads, or one error says which version the file is,
    which the recipe asks for, and what to set."""
    parts = dict(parts or {})
    # the transformer first, whenever it is there: it alone tells LTX-2.3 from 2.5 (their other parts are alike)
    for component in dict.fromkeys(("transformer", *components)):
        shapes = checkpoint_shapes(checkpoint, component, distilled, parts.get(component))
        if shapes is None:
            continue
        expected = {k: s for k, s in _layout_of(spec, component).items() if in_part(component, k, parts.get(component))}
        if {k: tuple(s) for k, s in shapes.items()} == expected:
            continue
        raise VersionMismatchError(_mismatch_message(checkpoint, spec, detect(component, shapes), shapes, expected))
    _check_text_encoder(text_encoder, spec)


def _check_text_encoder(text_encoder, spec: VariantSpec) -> None:
    from ltx2train.models.text_encoder import gemma_kind

    kind = gemma_kind(text_encoder) if text_encoder is not None else None
    if kind is not None and kind != spec.text_encoder:
        raise VersionMismatchError(
            f"model.text_encoder {text_encoder} is a {_GEMMA_NAMES.get(kind, kind)} model, but model.variant "
            f"{spec.name} ({spec.version}) reads {_GEMMA_NAMES[spec.text_encoder]}: point model.text_encoder at that "
            "model's directory"
        )


_GEMMA_NAMES = {"gemma3": "Gemma 3 (LTX-2, LTX-2.3)", "gemma4_unified": "Gemma 4 (LTX-2.5's fine-tuned Gemma 4 12B)"}


def _mismatch_message(checkpoint, spec: VariantSpec, found: Detected, shapes: Shapes, expected: Shapes) -> str:
    asked = f"model.variant is {spec.name} (LTX-{spec.family})"
    if found.variant is not None:
        real = found.family != "2.0" and not found.variant.startswith("tiny")
        recipes = f" (recipes/ltx{found.family}_*.yaml are made for it)" if real else ""
        return (
            f"model.checkpoint {checkpoint}: its {found.component} weights are {found.version} ({found.variant}), "
            f"but {asked}: set model.variant={found.variant}{recipes}"
        )
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(shapes) & set(expected) if tuple(shapes[k]) != expected[k])
    parts = [
        f"{len(v)} {what} (e.g. {v[0]})"
        for what, v in (("missing", missing), ("unexpected", unexpected), ("with another shape", wrong))
        if v
    ]
    return (
        f"model.checkpoint {checkpoint}: its {found.component} matches no shipped variant and not {asked}: "
        f"{', '.join(parts)}. The closest shipped variant is {found.closest} ({found.version}); a file of another "
        f"size needs a variant JSON of its own (model.variant=PATH.json)"
    )
