"""Write components back in the original layouts: repackaged split files or one official-layout file.

Every file is written to a temporary name in the target directory and renamed into place, so an
interrupted write never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from safetensors.torch import save_file

from ltx2train.models.key_maps import base_state_dict, build_key_map
from ltx2train.models.layout import (
    DISTILLED_TRANSFORMER_FILE,
    SINGLE_FILE_COMPONENTS,
    SPLIT_FILES,
    release_names,
    upscaler_file,
)
from ltx2train.models.loading import PASSTHROUGH_ATTR, SAFETENSORS_DTYPE_NAMES
from ltx2train.utils.atomic import atomic_path


def save_safetensors_atomic(
    tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    path = Path(path)
    prepared = {}
    for key, value in tensors.items():
        if value.device.type == "meta":
            raise ValueError(f"cannot save {key!r} to {path}: it is on the meta device (weights never loaded)")
        prepared[key] = value.detach().to("cpu").contiguous()
    with atomic_path(path) as tmp:
        save_file(prepared, str(tmp), metadata=dict(metadata or {}))
    return path


def stream_safetensors(
    path: str | Path,
    specs: Sequence[tuple[str, torch.dtype, tuple[int, ...]]],
    produce: Callable[[str], torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a safetensors file one tensor at a time: ``specs`` (key, dtype, shape) fix the header, then
    ``produce(key)`` makes each tensor just before it is written. Peak memory is one tensor, not the file
    (a merged 19B transformer is written without holding 38 GB). Atomic like :func:`save_safetensors_atomic`."""
    header, offset = {}, 0
    for key, dtype, shape in specs:
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[key] = {
            "dtype": SAFETENSORS_DTYPE_NAMES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    if metadata:
        header["__metadata__"] = dict(metadata)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for key, dtype, shape in specs:
            tensor = produce(key).detach().to("cpu", dtype).contiguous()
            if tuple(tensor.shape) != tuple(shape):
                raise ValueError(
                    f"{path}: tensor {key!r} has shape {list(tensor.shape)}, the header says {list(shape)}"
                )
            f.write(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return path


def original_state_dict(component: str, module: torch.nn.Module, family: str) -> dict[str, torch.Tensor]:
    """A component's base tensors under their original checkpoint keys (including passthrough tensors;
    adapters are not merged: export them with :func:`ltx2train.lora.adapters.export_lora`)."""
    key_map = build_key_map(component, module, family)
    return key_map.convert_to_original(base_state_dict(module), getattr(module, PASSTHROUGH_ATTR, None))


def _metadata(variant_name: str | None, extra: Mapping[str, str] | None, family: str) -> dict[str, str]:
    """The header metadata of a written component file: ``model_version`` is where Lightricks' files carry the
    version (ltx-pipelines picks its LTX-2.3 defaults from it), ``ltx2train_variant`` the variant it was built as."""
    meta = {"format": "pt", "writer": "ltx2train", "model_version": f"{family}.0"}  # as Lightricks writes it: "2.3.0"
    if variant_name:
        meta["ltx2train_variant"] = variant_name
    meta.update(extra or {})
    return meta


def save_repackaged(
    modules: Mapping[str, torch.nn.Module],
    out_dir: str | Path,
    family: str,
    *,
    variant_name: str | None = None,
    distilled_transformer: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> list[Path]:
    """Write the given components as repackaged split files (original keys) into ``out_dir``.

    ``spatial_upsampler`` is written unprefixed under its published name (``ltx-2-spatial-upscaler-x2-1.0.safetensors``,
    ``ltx-2.3-spatial-upscaler-x2-1.0.safetensors``).
    """
    out_dir = Path(out_dir)
    written = []
    for component, module in modules.items():
        state = original_state_dict(component, module, family)
        if component == "spatial_upsampler":
            written.append(save_upscaler(module, out_dir / upscaler_file(family), family, variant_name=variant_name))
            continue
        files = [f for f in SPLIT_FILES if f.component == component]
        if not files:
            raise ValueError(f"no repackaged file layout for component {component!r}")
        for split in files:
            name = (
                DISTILLED_TRANSFORMER_FILE if (component == "transformer" and distilled_transformer) else split.filename
            )
            part = {k: v for k, v in state.items() if split.holds(k)}
            written.append(save_safetensors_atomic(part, out_dir / name, _metadata(variant_name, metadata, family)))
    return written


def save_single_file(
    modules: Mapping[str, torch.nn.Module],
    path: str | Path,
    family: str,
    *,
    variant_name: str | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write components into one official-layout file (``model.diffusion_model.*``, ``vae.*``, ...)."""
    tensors: dict[str, torch.Tensor] = {}
    for component, module in modules.items():
        if component not in SINGLE_FILE_COMPONENTS:
            raise ValueError(f"{component!r} does not belong in the official single file (write it separately)")
        tensors.update(original_state_dict(component, module, family))
    meta = _metadata(variant_name, metadata, family)
    meta.setdefault("ltx2train_components", json.dumps(sorted(modules)))
    return save_safetensors_atomic(tensors, path, meta)


def save_upscaler(module: torch.nn.Module, path: str | Path, family: str, *, variant_name: str | None = None) -> Path:
    return save_safetensors_atomic(
        original_state_dict("spatial_upsampler", module, family), path, _metadata(variant_name, None, family)
    )


def save_release(
    modules: Mapping[str, torch.nn.Module], out_dir: str | Path, family: str, *, variant_name: str | None = None
) -> list[Path]:
    """Write components in the one-file-per-part release layout (``layout.RELEASE_FILES``: LTX-2.5's), each key under
    the name its file gives it; the text projection goes into the text-encoder file, alone, and the diffusion VAE
    file repeats the video VAE's encoder, as the release's does."""
    files: dict[str, dict[str, torch.Tensor]] = {}
    for component, module in modules.items():
        for key, value in original_state_dict(component, module, family).items():
            for name, key_in_file in release_names(component, key, present=modules):
                files.setdefault(name, {})[key_in_file] = value
    out_dir = Path(out_dir)
    return [
        save_safetensors_atomic(tensors, out_dir / name, _metadata(variant_name, None, family))
        for name, tensors in files.items()
    ]
