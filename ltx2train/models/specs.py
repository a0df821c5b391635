"""Variant specs: the diffusers constructor configs of every LTX-2 component, shipped as data.

A *variant* (``ltx2-19b``, ``ltx2.3-22b``, ``ltx2.5`` and the tiny ``tiny``, ``tiny-2.3``, ``tiny-2.5``) is a JSON
file in ``variants/`` naming, per component, the diffusers class and its config, and the text encoder's kind. Nothing is fetched from a hub: offline clusters and
tests build every module from these files.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ltx2train.utils.errors import UserError

# Components in the order they appear in the official single file; then the parts a version may add
# (LTX-2.5's diffusion video decoder, a second decoder for the same latents, and its duration head, which predicts a
# prompt's length from the text connectors' output: used only for samples).
COMPONENTS = (
    "transformer",
    "connectors",
    "video_vae",
    "audio_vae",
    "vocoder",
    "spatial_upsampler",
    "video_diffusion_decoder",
    "duration_head",
)

_CLASS_NAMES = {
    "LTX2VideoTransformer3DModel",
    "LTX2TextConnectors",
    "AutoencoderKLLTX2Video",
    "AutoencoderKLLTX2Audio",
    "LTX2Vocoder",
    "LTX2VocoderWithBWE",
    "LTX2LatentUpsamplerModel",
    "LTX2VideoDiffusionDecoderModel",
    "LTX2DurationHead",
}


def _diffusers_class(name: str) -> type[torch.nn.Module]:
    if name not in _CLASS_NAMES:
        raise UserError(f"unknown component class {name!r}; expected one of {sorted(_CLASS_NAMES)}")
    import diffusers
    import diffusers.pipelines.ltx2 as ltx2_pipelines

    return getattr(diffusers, name, None) or getattr(ltx2_pipelines, name)


@dataclass(frozen=True)
class ComponentSpec:
    """One component of a variant: a diffusers class and the config it is built with."""

    name: str
    class_name: str
    config: dict[str, Any]

    def build(self, meta: bool = False) -> torch.nn.Module:
        """Instantiate the module.

        With ``meta=True`` parameters live on the meta device (no memory) while buffers that the
        constructor computes (RoPE tables, filters) stay real, so the module can later be filled with
        ``load_state_dict(..., assign=True)`` without ever existing twice in memory.
        """
        cls = _diffusers_class(self.class_name)
        if not meta:
            return cls.from_config(dict(self.config))
        # accelerate creates each parameter (drawing its initial values) before moving it to the meta device:
        # a meta build must not move the global RNG, or what a run draws next would depend on what was built before
        with torch.random.fork_rng(devices=[]), _init_empty_parameters():
            return cls.from_config(dict(self.config))


FAMILIES = ("2.0", "2.3", "2.5")  # LTX-2, LTX-2.3, LTX-2.5
# The text encoder's transformers ``model_type``: Gemma 3 12B (LTX-2, 2.3), LTX's fine-tuned Gemma 4 12B (LTX-2.5)
TEXT_ENCODERS = ("gemma3", "gemma4_unified")


@dataclass(frozen=True)
class VariantSpec:
    name: str
    family: str  # "2.0" (LTX-2), "2.3" (LTX-2.3), "2.5" (LTX-2.5): selects key-mapping rules
    description: str
    components: dict[str, ComponentSpec] = field(default_factory=dict)
    text_encoder: str = "gemma3"  # the Gemma whose stacked hidden states the text projection takes

    @property
    def version(self) -> str:
        return f"LTX-{self.family}"

    def has(self, name: str) -> bool:
        return name in self.components

    def component(self, name: str) -> ComponentSpec:
        if name not in self.components:
            raise KeyError(f"variant {self.name!r} has no component {name!r}; it has {list(self.components)}")
        return self.components[name]


@contextlib.contextmanager
def _init_empty_parameters():
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        yield


def list_variants() -> list[str]:
    root = resources.files("ltx2train.models") / "variants"
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def load_variant(name_or_path: str | Path) -> VariantSpec:
    """Load a shipped variant by name, or a user variant from a JSON file of the same format."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        data = json.loads(path.read_text())
    else:
        name = str(name_or_path)
        if name not in list_variants():
            raise UserError(f"unknown variant {name!r}; shipped variants: {', '.join(list_variants())}")
        data = json.loads((resources.files("ltx2train.models") / "variants" / f"{name}.json").read_text())
    if data.get("family") not in FAMILIES:
        raise UserError(
            f"variant {data.get('name')!r}: family must be one of {', '.join(FAMILIES)}, got {data.get('family')!r}"
        )
    if data.get("text_encoder", "gemma3") not in TEXT_ENCODERS:
        raise UserError(
            f"variant {data.get('name')!r}: text_encoder must be one of {', '.join(TEXT_ENCODERS)}, got "
            f"{data.get('text_encoder')!r}"
        )
    components = {
        comp: ComponentSpec(comp, entry["class"], dict(entry["config"])) for comp, entry in data["components"].items()
    }
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise UserError(f"variant {data['name']!r}: unknown components {sorted(unknown)}; expected {COMPONENTS}")
    return VariantSpec(
        data["name"], data["family"], data.get("description", ""), components, data.get("text_encoder", "gemma3")
    )


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16`` (the dtype names used in recipes)."""
    try:
        return _DTYPES[name]
    except KeyError:
        raise UserError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}") from None
