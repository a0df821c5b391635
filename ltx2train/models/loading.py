"""Build LTX-2 components from checkpoint files, strictly, straight into the requested dtype/device.

Sources, detected from the path:
- the official single file (``ltx-2-19b-dev.safetensors``): one file feeds several components; each
  component reads only its own keys, nothing is consumed or popped;
- a directory of repackaged split files (``transformer.safetensors``, ``video_vae_encoder.safetensors``...);
- a diffusers-format directory (``<component>/config.json`` + ``diffusion_pytorch_model*.safetensors``,
  or a model directory with ``config.json`` directly);
- a release shipped as one file per part (LTX-2.5's ``diffusion_models/``, ``text_encoders/``, ``vae/``,
  ``latent_upscale_models/``: ``layout.RELEASE_FILES``), each file's keys brought to the original names;
- for the spatial upscaler, its own unprefixed file (or a directory holding it).

Modules are created with parameters on the meta device, then every tensor is read from disk, cast and
placed once, and assigned into the module: a 19B transformer never exists twice in memory. Loading is
strict: a missing, unexpected or mis-shaped tensor raises :class:`CheckpointError` naming the tensor and
the file — never silently random weights.

Over 400 lines: one module on purpose. It holds the four checkpoint layouts behind one strict loader; each layout's
file names are in ``layout.py`` and its key maps in ``key_maps.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch

from ltx2train.models.key_maps import ComponentKeyMap, build_key_map, original_keys_with_shapes
from ltx2train.models.layout import (
    DISTILLED_TRANSFORMER_FILE,
    RELEASE_FILES,
    UPSCALER_FILES,
    VAE_PARTS,
    in_part,
    is_release_dir,
    owner_of,
    release_files_for,
    split_files_for,
)
from ltx2train.models.specs import ComponentSpec, VariantSpec, load_variant

from ltx2train.utils.errors import UserError

# Original-key tensors that have no diffusers counterpart (LTX-2's unused VAE statistics) are kept on
# the module under this attribute, so that writers can put them back.
PASSTHROUGH_ATTR = "ltx2_passthrough"


class CheckpointError(UserError):
    """A checkpoint does not match the layout of the component being loaded."""


@dataclass(frozen=True)
class _Source:
    kind: str  # "single", "split", "release", "diffusers", "upscaler"
    files: tuple[Path, ...]
    config: dict | None = None  # diffusers config.json for kind == "diffusers"
    prefixes: tuple[str, ...] = ()  # per file: what its keys lack of the original names ("release" files)
    part: str | None = None  # a VAE half ("encoder" / "decoder"): only its tensors are read

    def prefix(self, path: Path) -> str:
        return self.prefixes[self.files.index(path)] if self.prefixes else ""


def diffusers_dir(path: Path, component: str) -> Path | None:
    for candidate in (path / component, path):
        if (candidate / "config.json").is_file() and list(candidate.glob("diffusion_pytorch_model*.safetensors")):
            return candidate
    return None


def _resolve_source(path: Path, component: str, distilled: bool, part: str | None = None) -> _Source:
    """Where ``component`` (its ``part`` only, for a VAE half) is read from under ``path``."""
    source = _find_source(path, component, distilled, part)
    return source if source.kind == "diffusers" else dataclasses.replace(source, part=part)


def _find_source(path: Path, component: str, distilled: bool, part: str | None) -> _Source:
    if not path.exists():
        raise FileNotFoundError(f"{component}: checkpoint path {path} does not exist")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{component}: {path} is not a .safetensors file (only safetensors are loaded)")
        kind = "upscaler" if component == "spatial_upsampler" else "single"
        return _Source(kind, (path,))
    ddir = diffusers_dir(path, component)
    if ddir is not None:
        files = sorted(ddir.glob("diffusion_pytorch_model*.safetensors"))
        return _Source("diffusers", tuple(files), json.loads((ddir / "config.json").read_text()))
    if is_release_dir(path):
        found = release_files_for(path, component, distilled)
        if not found:
            raise FileNotFoundError(
                f"{component}: no file of it in the release directory {path} (looked for "
                f"{', '.join(e.pattern for e in RELEASE_FILES if component in e.components)})"
            )
        return _Source("release", tuple(f for _, f in found), prefixes=tuple(e.prefix for e, _ in found))
    if component == "spatial_upsampler":
        found = [path / name for name in UPSCALER_FILES if (path / name).is_file()]
        if not found:
            raise FileNotFoundError(f"spatial_upsampler: none of {list(UPSCALER_FILES)} in {path}")
        return _Source("upscaler", (found[0],))
    names = [f.filename for f in split_files_for(component, part)]
    if component == "transformer" and distilled:
        names = [DISTILLED_TRANSFORMER_FILE]
    missing = [n for n in names if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{component}: {path} is neither a diffusers directory nor a repackaged checkpoint "
            f"(missing {', '.join(missing)})"
        )
    return _Source("split", tuple(path / n for n in names))


def present_half(checkpoint: str | Path, component: str) -> str | None:
    """The one VAE half a repackaged directory holds of ``component`` (``encoder`` / ``decoder``), or None when it
    holds both or neither, or the checkpoint is another layout (where both halves are in one file)."""
    path = Path(checkpoint)
    if not path.is_dir() or diffusers_dir(path, component) is not None or is_release_dir(path):
        return None
    held = [
        p for p in VAE_PARTS if all((path / f.filename).is_file() for f in split_files_for(component, p) if f.part == p)
    ]
    return held[0] if len(held) == 1 else None


def missing_model_files(
    checkpoint: str | Path,
    components: list[str],
    *,
    distilled: bool = False,
    text_encoder: str | Path | None = None,
    parts: Mapping[str, str] | None = None,
) -> list[str]:
    """Each file a command needs that is not where it is expected, as ``component: path``: the repackaged files
    of ``components`` in the ``checkpoint`` directory (``parts``: of only one half of a VAE; a single file or a
    diffusers directory is checked by the loader), and Gemma's config, tokenizer and weights in ``text_encoder``."""
    path, missing, parts = Path(checkpoint), [], dict(parts or {})
    if not path.exists():
        missing.append(f"model.checkpoint: {path} (a repackaged directory or the official .safetensors file)")
    elif path.is_dir():
        for component in components:
            if diffusers_dir(path, component) is not None:
                continue
            if is_release_dir(path):
                if not release_files_for(path, component, distilled):
                    missing.append(
                        f"{component}: {path}/"
                        + " or ".join(e.pattern for e in RELEASE_FILES if component in e.components)
                    )
                continue
            names = [f.filename for f in split_files_for(component, parts.get(component))]
            if component == "transformer" and distilled:
                names = [DISTILLED_TRANSFORMER_FILE]
            missing += [f"{component}: {path / n}" for n in names if not (path / n).is_file()]
    if text_encoder is not None:
        gemma = Path(text_encoder)
        wanted = {
            "config.json": (gemma / "config.json").is_file(),
            "tokenizer.json or tokenizer.model": any(
                (gemma / n).is_file() for n in ("tokenizer.json", "tokenizer.model")
            ),
            "*.safetensors": gemma.is_dir() and any(gemma.glob("*.safetensors")),
        }
        missing += [f"text encoder (Gemma 3): {gemma / name}" for name, ok in wanted.items() if not ok]
    return missing


def require_model_files(
    checkpoint: str | Path,
    components: list[str],
    *,
    distilled: bool = False,
    text_encoder: str | Path | None = None,
    variant: VariantSpec | None = None,
    parts: Mapping[str, str] | None = None,
) -> None:
    """``missing_model_files``, raised as one error that lists them all; with ``variant``, the files must also be
    that variant's version and size (:func:`ltx2train.models.version.check_version`), checked from their headers.
    ``parts``: component -> the VAE half the command needs (the other half's file may be absent)."""
    missing = missing_model_files(checkpoint, components, distilled=distilled, text_encoder=text_encoder, parts=parts)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} model file(s) missing:\n"
            + "\n".join(f"  - {m}" for m in missing)
            + "\nPoint model.checkpoint at the repackaged directory (transformer.safetensors, "
            "text_encoder_post_modules.safetensors, video/audio VAE and vocoder files) or the official single file, "
            "(or LTX-2.5's release directory), and model.text_encoder at the Gemma directory"
        )
    if variant is not None:
        from ltx2train.models.version import check_version  # reads headers through this module

        check_version(checkpoint, variant, components, distilled=distilled, text_encoder=text_encoder, parts=parts)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
SAFETENSORS_DTYPE_NAMES = {v: k for k, v in _SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class _Entry:
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


def read_safetensors_header(path: Path) -> tuple[dict[str, _Entry], dict[str, str]]:
    """Tensor names, dtypes, shapes and byte ranges of a safetensors file, without reading any data."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise CheckpointError(f"{path} is not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > path.stat().st_size - 8:
            raise CheckpointError(f"{path} is not a safetensors file (header length {header_len} exceeds the file)")
        try:
            header = json.loads(f.read(header_len))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is not a safetensors file (bad header: {exc})") from exc
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + header_len
    entries = {
        key: _Entry(v["dtype"], tuple(v["shape"]), base + v["data_offsets"][0], base + v["data_offsets"][1])
        for key, v in header.items()
    }
    return entries, metadata


def _read_tensor(f, entry: _Entry, key: str, path: Path) -> torch.Tensor:
    """Read one tensor with a plain read into freshly allocated memory (no mmap: the file's pages do not
    stay resident next to the copy, and the storage has the allocator's alignment)."""
    if entry.dtype not in _SAFETENSORS_DTYPES:
        raise CheckpointError(f"tensor {key!r} in {path} has unsupported dtype {entry.dtype}")
    tensor = torch.empty(entry.shape, dtype=_SAFETENSORS_DTYPES[entry.dtype])
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes != entry.end - entry.start:
        raise CheckpointError(
            f"tensor {key!r} in {path}: {entry.end - entry.start} bytes for shape {list(entry.shape)}"
        )
    f.seek(entry.start)
    if nbytes and f.readinto(memoryview(tensor.view(-1).view(torch.uint8).numpy())) != nbytes:
        raise CheckpointError(f"tensor {key!r} in {path} is truncated")
    return tensor


FINGERPRINT_BYTES = 256  # of each tensor: enough to tell one set of weights from another


def tensor_fingerprint(files, keep=lambda key: True, prefixes: tuple[str, ...] = ()) -> str:
    """The identity of a set of weights, independent of file layout: sha256 over each kept tensor's name,
    dtype, shape and first bytes, in name order (a split file and the official single file holding the same
    tensors give the same fingerprint; other weights give another). ``prefixes``: per file, what its keys lack of
    the original names."""
    digest, found = hashlib.sha256(), {}
    for i, path in enumerate(files):
        entries, _ = read_safetensors_header(Path(path))
        prefix = prefixes[i] if prefixes else ""
        found.update({prefix + key: (Path(path), entry) for key, entry in entries.items() if keep(prefix + key)})
    for key in sorted(found):
        path, entry = found[key]
        with open(path, "rb") as f:
            f.seek(entry.start)
            head = f.read(min(FINGERPRINT_BYTES, entry.end - entry.start))
        digest.update(f"{key}|{entry.dtype}|{list(entry.shape)}|".encode() + head)
    return digest.hexdigest()[:16]


def component_fingerprint(
    checkpoint: str | Path, component: str, distilled: bool = False, part: str | None = None
) -> str:
    """:func:`tensor_fingerprint` of one component of a checkpoint (its own tensors in an official single file;
    ``part``: of one half of a VAE)."""
    source = _resolve_source(Path(checkpoint), component, distilled, part)
    return tensor_fingerprint(source.files, keep=lambda key: _is_ours(key, component, source), prefixes=source.prefixes)


def checkpoint_shapes(
    checkpoint: str | Path, component: str, distilled: bool = False, part: str | None = None
) -> dict[str, tuple[int, ...]] | None:
    """The original keys and shapes ``checkpoint`` holds for ``component`` (its ``part``: a VAE half; headers only,
    any layout but diffusers'), or None for a diffusers directory (its ``config.json`` builds the module) or a
    component that is not there."""
    try:
        source = _resolve_source(Path(checkpoint), component, distilled, part)
    except (FileNotFoundError, CheckpointError):
        return None
    if source.kind == "diffusers":
        return None
    shapes = {}
    for path in source.files:
        prefix = source.prefix(path)
        shapes.update(
            {
                prefix + k: e.shape
                for k, e in read_safetensors_header(path)[0].items()
                if _is_ours(prefix + k, component, source)
            }
        )
    return shapes or None


def _expected_shapes(module: torch.nn.Module, key_map: ComponentKeyMap | None) -> dict[str, tuple[int, ...]]:
    """Checkpoint key -> shape, for every tensor the component needs (original keys if a key map is given)."""
    if key_map is None:
        return {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return original_keys_with_shapes(key_map, module)


def _is_ours(key: str, component: str, source: _Source) -> bool:
    """Does a key found in the file belong to this component (its half, if one is asked: so it must be known to
    the key map)?"""
    if source.kind in ("single", "release"):
        ours = owner_of(key) == component or (source.kind == "release" and component == "spatial_upsampler")
        return ours and in_part(component, key, source.part)
    return source.kind == "diffusers" or in_part(component, key, source.part)  # a split file: one component


def _read_tensors(
    component: str, source: _Source, expected: dict[str, tuple[int, ...]], dtype: torch.dtype, device: torch.device
) -> dict[str, torch.Tensor]:
    """Read exactly the expected tensors, checking names and shapes from the headers before loading any."""
    where: dict[str, Path] = {}
    headers = {
        path: {source.prefix(path) + k: e for k, e in read_safetensors_header(path)[0].items()} for path in source.files
    }
    for path, entries in headers.items():
        for key, entry in entries.items():
            if not _is_ours(key, component, source):
                continue
            if key not in expected:
                raise CheckpointError(f"{component}: unexpected tensor {key!r} in {path}")
            if entry.shape != expected[key]:
                raise CheckpointError(
                    f"{component}: tensor {key!r} in {path} has shape {list(entry.shape)}, expected {list(expected[key])}"
                )
            where.setdefault(key, path)
    missing = sorted(set(expected) - set(where))
    if missing:
        files = ", ".join(str(p) for p in source.files)
        shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
        raise CheckpointError(f"{component}: {len(missing)} tensor(s) missing from {files}: {shown}")

    tensors: dict[str, torch.Tensor] = {}
    for path, entries in headers.items():
        with open(path, "rb") as f:
            for key, entry in entries.items():
                if key not in expected:
                    continue
                value = _read_tensor(f, entry, key, path)
                value = value.to(device=device, dtype=dtype if value.is_floating_point() else value.dtype)
                if key in tensors:  # statistics stored in both halves of a split VAE must agree
                    if not torch.equal(tensors[key], value):
                        raise CheckpointError(f"{component}: {key!r} differs between {where[key]} and {path}")
                    continue
                tensors[key] = value
    return tensors


def build_component(
    spec: ComponentSpec,
    family: str,
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    distilled: bool = False,
    part: str | None = None,
) -> torch.nn.Module:
    """Build one component from a checkpoint path (see the module docstring for accepted layouts); ``part``: only
    that half of a VAE (``encoder`` / ``decoder``), the other one a :class:`MissingHalf`."""
    device = torch.device(device)
    source = _resolve_source(Path(path), spec.name, distilled, part)
    if source.kind == "diffusers":
        spec = ComponentSpec(
            spec.name, spec.class_name, {k: v for k, v in source.config.items() if not k.startswith("_")}
        )
    module = spec.build(meta=True)
    key_map = None if source.kind == "diffusers" else build_key_map(spec.name, module, family)
    expected = {k: s for k, s in _expected_shapes(module, key_map).items() if in_part(spec.name, k, source.part)}
    tensors = _read_tensors(spec.name, source, expected, dtype, device)
    if key_map is not None:
        tensors, passthrough = key_map.convert_to_diffusers(
            tensors, source=", ".join(map(str, source.files)), strict=source.part is None
        )
    else:
        passthrough = {}
    if source.part is not None:
        _drop_other_half(module, spec.name, source)
    module.load_state_dict(tensors, strict=True, assign=True)
    module.to(device)  # buffers computed at construction (not in the checkpoint)
    setattr(module, PASSTHROUGH_ATTR, passthrough)
    return module.eval().requires_grad_(False)


def load_component(
    variant: str | VariantSpec,
    component: str,
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    distilled: bool = False,
    part: str | None = None,
) -> torch.nn.Module:
    """Load ``component`` of ``variant`` (a shipped name or a VariantSpec) from ``path``.

    ``distilled=True`` loads ``transformer_distilled.safetensors`` from a repackaged directory; ``part`` one half
    of a VAE (``encoder`` / ``decoder``: what a command needs; the other half's file may be absent).
    The module is returned in eval mode with gradients off; training code enables what it trains.
    """
    spec_variant = load_variant(variant) if isinstance(variant, str) else variant
    return build_component(
        spec_variant.component(component),
        spec_variant.family,
        path,
        dtype=dtype,
        device=device,
        distilled=distilled,
        part=part,
    )


class MissingHalf(torch.nn.Module):
    """Stands in for the VAE half that was not loaded: calling it says what it needs, and where."""

    def __init__(self, message: str):
        super().__init__()
        self.message = message

    def forward(self, *args, **kwargs):
        raise CheckpointError(self.message)


def _drop_other_half(module: torch.nn.Module, component: str, source: _Source) -> None:
    other = next(p for p in VAE_PARTS if p != source.part)
    wanted = [f.filename for f in split_files_for(component, other) if f.part == other]
    where = source.files[0].parent if source.kind == "split" else source.files[0]
    setattr(
        module,
        other,
        MissingHalf(
            f"{component}: loaded without its {other} (only its {source.part} was needed, or only it is in {where}); "
            f"{'encoding an image, a reference or a clip' if other == 'encoder' else 'decoding'} needs it: put "
            f"{' / '.join(wanted)} there (DiffSynth: add its ModelConfig)"
        ),
    )


def load_components(
    variant: str | VariantSpec,
    path: str | Path,
    components: Iterable[str] = ("transformer", "connectors", "video_vae", "audio_vae", "vocoder"),
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> dict[str, torch.nn.Module]:
    spec_variant = load_variant(variant) if isinstance(variant, str) else variant
    return {c: load_component(spec_variant, c, path, dtype=dtype, device=device) for c in components}
