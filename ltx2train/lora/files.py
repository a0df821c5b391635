"""LoRA files in the dialects LTX-2 users meet, read into one canonical form and written back out.

Canonical form: for each adapted module, named as in the official checkpoint without the
``diffusion_model.`` prefix (``transformer_blocks.0.attn1.to_q``, ``patchify_proj``,
``video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k``), the pair ``down`` (A, ``(r, in)``) and
``up`` (B, ``(out, r)``) and an optional ``alpha``. Its effect on the base weight is
``W + (alpha / r) * B @ A``, with scale 1 when the file has no alpha (alpha folded into B, or never used).

Dialects read (``detect_dialect``):

=================  =======================================================  ==========================
dialect            keys                                                     written by
=================  =======================================================  ==========================
``official``       ``diffusion_model.<m>.lora_A.weight`` / ``lora_B.weight``  ltx2train (alpha folded),
                                                                            Lightricks' trainer
``official-alpha`` the same + ``diffusion_model.<m>.alpha``                  ComfyUI tools, kohya-style
``diffusers``      ``transformer.<diffusers module>.lora_A.weight``          ``LTX2Pipeline.save_lora_weights``
``diffsynth``      ``<m>.lora_A.default.weight`` / ``<m>.lora_A.weight``      DiffSynth-Studio's trainer
=================  =======================================================  ==========================

``lora_down``/``lora_up`` spellings are read as A/B. Written (``to_state_dict``): ``official`` — the
default, alpha/rank folded into B and no ``.alpha`` tensors, the one form diffusers, ltx-core, DiffSynth and
ComfyUI all apply at the same strength — ``official-alpha`` and ``diffusers``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ltx2train.models.key_maps import (
    LORA_ORIGINAL_PREFIX,
    KeyMappingError,
    lora_module_to_diffusers,
    lora_module_to_original,
)
from ltx2train.utils.errors import UserError

DIALECTS = ("official", "official-alpha", "diffusers", "diffsynth")
WRITE_FORMATS = ("official", "official-alpha", "diffusers")
DIFFUSERS_PREFIX = "transformer."
LORA_KEY = re.compile(
    r"^(?P<module>.+?)\.(?:(?P<kind>lora_A|lora_B|lora_down|lora_up)(?:\.default)?\.weight|(?P<alpha>alpha))$"
)
_KIND = {"lora_A": "down", "lora_down": "down", "lora_B": "up", "lora_up": "up"}
# Top-level module names that exist only in diffusers' naming: a prefix-less file using them is diffusers-named.
_DIFFUSERS_ONLY_HEADS = {
    "proj_in",
    "audio_proj_in",
    "time_embed",
    "audio_time_embed",
    "prompt_adaln",
    "audio_prompt_adaln",
    "video_connector",
    "audio_connector",
}


@dataclass
class LoraModule:
    down: torch.Tensor  # A: (rank, in_features)
    up: torch.Tensor  # B: (out_features, rank)
    alpha: float | None = None  # None: the file's weights carry the whole effect (scale 1)

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def folded_up(self) -> torch.Tensor:
        """B with alpha/rank multiplied in (float32 arithmetic, original dtype kept)."""
        if self.scale == 1.0:
            return self.up
        return (self.up.float() * self.scale).to(self.up.dtype)

    def delta(self) -> torch.Tensor:
        """The change of the base weight, ``scale * B @ A``, in float32: (out_features, in_features)."""
        return self.scale * (self.up.float() @ self.down.float())


@dataclass
class LoraFile:
    modules: dict[str, LoraModule]  # original module name (no diffusion_model. prefix) -> weights
    dialect: str = "official"
    metadata: dict[str, str] = field(default_factory=dict)

    def select(self, names: Iterable[str]) -> "LoraFile":
        keep = set(names)
        return LoraFile({m: w for m, w in self.modules.items() if m in keep}, self.dialect, dict(self.metadata))

    @property
    def ranks(self) -> list[int]:
        return sorted({w.rank for w in self.modules.values()})


def is_connector_module(name: str) -> bool:
    return lora_module_to_diffusers(name)[0] == "connectors"


# --- reading ------------------------------------------------------------------------------------------
def detect_dialect(keys: Iterable[str]) -> str:
    keys = list(keys)
    if not keys:
        raise KeyMappingError("the LoRA file holds no tensors")
    if all(k.startswith(LORA_ORIGINAL_PREFIX) for k in keys):
        return "official-alpha" if any(k.endswith(".alpha") for k in keys) else "official"
    if all(k.startswith(DIFFUSERS_PREFIX) for k in keys):
        return "diffusers"
    if any(k.startswith((LORA_ORIGINAL_PREFIX, DIFFUSERS_PREFIX)) for k in keys):
        raise KeyMappingError(
            "the LoRA file mixes key prefixes (diffusion_model. / transformer. / none): "
            "it is not one of the known dialects " + ", ".join(DIALECTS)
        )
    heads = {k.partition(".")[0] for k in keys}
    return "diffusers" if heads & _DIFFUSERS_ONLY_HEADS else "diffsynth"


def _original_name(module: str, dialect: str, prefixed: bool) -> str:
    if dialect.startswith("official"):
        return module[len(LORA_ORIGINAL_PREFIX) :]
    if dialect == "diffusers":
        name = module[len(DIFFUSERS_PREFIX) :] if prefixed else module
        head = name.partition(".")[0]
        component = "connectors" if head in ("video_connector", "audio_connector", "text_proj_in") else "transformer"
        return lora_module_to_original(component, name)
    return module  # diffsynth: original module names, no prefix


def from_state_dict(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None, source: str = "LoRA"
) -> LoraFile:
    """Any known dialect -> canonical :class:`LoraFile`; malformed or unknown keys are errors naming the key."""
    dialect = detect_dialect(state)
    prefixed = all(k.startswith(DIFFUSERS_PREFIX) for k in state)
    parts: dict[str, dict] = {}
    for key, value in state.items():
        m = LORA_KEY.match(key)
        if m is None:
            raise KeyMappingError(
                f"{source}: key {key!r} is neither a lora_A/lora_B (lora_down/lora_up) weight nor an alpha"
            )
        entry = parts.setdefault(_original_name(m.group("module"), dialect, prefixed), {})
        if m.group("alpha"):
            entry["alpha"] = float(value.float().item())
        else:
            entry[_KIND[m.group("kind")]] = value
    modules = {}
    for name, entry in sorted(parts.items()):
        if "down" not in entry or "up" not in entry:
            raise KeyMappingError(
                f"{source}: module {name!r} has {'lora_A' if 'down' in entry else 'lora_B'} "
                f"but not {'lora_B' if 'down' in entry else 'lora_A'}"
            )
        down, up = entry["down"], entry["up"]
        if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
            raise KeyMappingError(
                f"{source}: module {name!r} has lora_A {list(down.shape)} and lora_B {list(up.shape)}, "
                "which do not make a low-rank pair"
            )
        modules[name] = LoraModule(down, up, entry.get("alpha"))
    return LoraFile(modules, dialect, dict(metadata or {}))


def read_lora(path: str | Path) -> LoraFile:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {path} does not exist")
    if path.suffix != ".safetensors":
        raise UserError(f"LoRA {path}: only .safetensors LoRA files are read")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise UserError(f"LoRA {path} is not a readable safetensors file: {exc}") from None
    require_finite(state, f"LoRA {path}")
    return from_state_dict(state, metadata, source=str(path))


def require_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """A LoRA with a NaN or infinite weight renders black or noise frames in every consumer: refused, by tensor."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(
            f"{what}: {len(bad)} tensor(s) hold NaN or infinite values (e.g. {', '.join(bad[:3])}); "
            "the file is unusable. Take an earlier checkpoint's LoRA (lower the learning rate, keep "
            "lora.gate_logits off on LTX-2.3)"
        )


# --- writing ------------------------------------------------------------------------------------------
def to_state_dict(lora: LoraFile, fmt: str = "official", dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Canonical -> tensors in ``fmt``. ``official`` and ``diffusers`` fold alpha/rank into B (no alpha
    tensors); ``official-alpha`` writes ``.alpha`` for every module (rank, i.e. scale 1, where none is known).
    ``diffusers`` cannot name connector modules: drop them first (``without_connectors``)."""
    if fmt not in WRITE_FORMATS:
        raise UserError(f"unknown LoRA format {fmt!r}; choose one of {', '.join(WRITE_FORMATS)}")
    cast = (lambda t: t.to(dtype).contiguous()) if dtype is not None else (lambda t: t.contiguous())  # noqa: E731
    out: dict[str, torch.Tensor] = {}
    for name, w in lora.modules.items():
        if fmt == "diffusers":
            component, dname = lora_module_to_diffusers(name)
            if component != "transformer":
                raise UserError(f"the diffusers LoRA format has no place for connector module {name!r}")
            prefix = DIFFUSERS_PREFIX + dname
        else:
            prefix = LORA_ORIGINAL_PREFIX + name
        out[f"{prefix}.lora_A.weight"] = cast(w.down)
        if fmt == "official-alpha":
            up, alpha = _with_alpha(w, lora.metadata)
            out[f"{prefix}.lora_B.weight"] = cast(up)
            out[f"{prefix}.alpha"] = torch.tensor(alpha)
        else:
            out[f"{prefix}.lora_B.weight"] = cast(w.folded_up())
    return out


def _with_alpha(w: LoraModule, metadata: Mapping[str, str]) -> tuple[torch.Tensor, float]:
    """(B, alpha) for a file with ``.alpha``: a module's own alpha; for a file ltx2train folded, the training
    alpha from its metadata with B unfolded again; otherwise alpha = rank (scale 1)."""
    if w.alpha is not None:
        return w.up, float(w.alpha)
    if metadata.get("alpha_handling") == "folded" and metadata.get("rank") == str(w.rank) and metadata.get("alpha"):
        alpha = float(metadata["alpha"])
        return (w.up.float() * (w.rank / alpha)).to(w.up.dtype), alpha
    return w.up, float(w.rank)


def without_connectors(lora: LoraFile) -> LoraFile:
    return lora.select(m for m in lora.modules if not is_connector_module(m))


def file_metadata(lora: LoraFile, fmt: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The file's metadata with how alpha is stored recorded (``alpha_handling``)."""
    meta = {**lora.metadata, **(extra or {})}
    meta["lora_format"] = fmt
    meta["alpha_handling"] = "tensors" if fmt == "official-alpha" else "folded"
    return meta


def save_lora(
    lora: LoraFile,
    path: str | Path,
    fmt: str = "official",
    dtype: torch.dtype | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    from ltx2train.models.writing import save_safetensors_atomic

    return save_safetensors_atomic(to_state_dict(lora, fmt, dtype), path, file_metadata(lora, fmt, metadata))


# --- streams ------------------------------------------------------------------------------------------
# Which stream a module acts on. In every block the video stream runs attn1 (self), attn2 (text) and ff;
# the audio stream audio_attn1, audio_attn2 and audio_ff. The cross-modal attentions write into one stream
# from the other: audio_to_video_attn (queries from video, keys/values from audio, added to the video
# stream) is "a2v", video_to_audio_attn is "v2a". The shared audio-video modulation (av_ca_* adaLN) is
# "av". The text connectors make each stream's text context.
STREAMS = ("video", "audio", "a2v", "v2a", "av", "video_connector", "audio_connector")
_BLOCK_STREAMS = {
    "attn1": "video",
    "attn2": "video",
    "ff": "video",
    "audio_attn1": "audio",
    "audio_attn2": "audio",
    "audio_ff": "audio",
    "audio_to_video_attn": "a2v",
    "video_to_audio_attn": "v2a",
}


def module_stream(name: str) -> str:
    """The stream an original module name acts on (one of :data:`STREAMS`)."""
    parts = name.split(".")
    if parts[0] in ("video_embeddings_connector", "audio_embeddings_connector"):
        return parts[0].split("_")[0] + "_connector"
    if parts[0] == "transformer_blocks" and len(parts) > 2:
        if parts[2] not in _BLOCK_STREAMS:
            raise KeyMappingError(f"LoRA module {name!r}: unknown block module {parts[2]!r}")
        return _BLOCK_STREAMS[parts[2]]
    if parts[0].startswith("av_ca_"):
        return "av"
    return "audio" if parts[0].startswith("audio_") else "video"


# --modality -> streams kept; --cross-modal: which cross-modal modules go with the kept stream.
CROSS_MODAL = ("receiving", "none", "all")


def streams_for(modality: str, cross_modal: str = "receiving") -> set[str]:
    """``video``: the video stream and its connector, plus ``a2v`` (it writes into the video stream) by
    default; ``audio`` likewise with ``v2a``; ``all``: everything. ``cross_modal="none"`` drops the
    cross-modal attentions, ``"all"`` keeps both of them and the shared ``av`` modulation."""
    if modality == "all":
        return set(STREAMS)
    if modality not in ("video", "audio"):
        raise UserError(f"modality must be video, audio or all, not {modality!r}")
    if cross_modal not in CROSS_MODAL:
        raise UserError(f"cross_modal must be one of {', '.join(CROSS_MODAL)}, not {cross_modal!r}")
    kept = {modality, f"{modality}_connector"}
    if cross_modal == "receiving":
        kept.add("a2v" if modality == "video" else "v2a")
    elif cross_modal == "all":
        kept |= {"a2v", "v2a", "av"}
    return kept


def select_streams(lora: LoraFile, streams: set[str]) -> LoraFile:
    return lora.select(m for m in lora.modules if module_stream(m) in streams)
