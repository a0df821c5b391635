"""``ltx2train export --merge BASE``: a LoRA merged into the base weights, in either checkpoint layout.

``W' = W + (alpha / r) * B @ A`` in float32, cast to the base tensor's dtype (or ``dtype``). The merge works on
original keys straight from the files (no model is built) and writes one tensor at a time, so merging the
19B transformer needs memory for one tensor, not for the model.

- output ``*.safetensors``: the official single file — every tensor of BASE (a single file or a repackaged
  directory) copied through, the adapted ones merged;
- output directory: the repackaged layout — ``transformer.safetensors`` (and ``text_encoder_post_modules.safetensors``
  when the LoRA adapts the connectors) merged, the other component files of BASE copied through.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx2train.models.keys import DIT_PREFIX
from ltx2train.models.layout import SPLIT_FILES
from ltx2train.models.lora_files import LoraFile
from ltx2train.models.loading import SAFETENSORS_DTYPE_NAMES, read_safetensors_header
from ltx2train.models.writing import stream_safetensors

_DTYPES = {name: dtype for dtype, name in SAFETENSORS_DTYPE_NAMES.items()}


@dataclass
class MergeResult:
    paths: list[Path]
    merged: int  # tensors changed by the LoRA
    copied: int  # tensors copied through unchanged


def _base_tensors(base: Path) -> dict[str, tuple[Path, tuple[int, ...], torch.dtype]]:
    """Original key -> (file, shape, dtype) for every tensor of BASE (official single file or repackaged dir)."""
    if base.is_file():
        files = [base]
    elif base.is_dir():
        files = [base / f.filename for f in SPLIT_FILES if (base / f.filename).is_file()]
        if not any(f.name == "transformer.safetensors" for f in files):
            raise FileNotFoundError(f"--merge {base}: no transformer.safetensors (repackaged layout) in that directory")
    else:
        raise FileNotFoundError(f"--merge {base} does not exist")
    found = {}
    for path in files:
        entries, _ = read_safetensors_header(path)
        for key, entry in entries.items():
            found.setdefault(key, (path, entry.shape, _DTYPES[entry.dtype]))
    return found


def _targets(lora: LoraFile, base: dict, source: Path) -> dict[str, str]:
    """Base weight key -> LoRA module, every module checked against the base's shapes."""
    targets, problems = {}, []
    for name, weights in lora.modules.items():
        key = f"{DIT_PREFIX}{name}.weight"
        if key not in base:
            problems.append(f"{key} is not in the base")
        elif tuple(base[key][1]) != (weights.up.shape[0], weights.down.shape[1]):
            problems.append(f"{key} is {list(base[key][1])}, the LoRA makes {[weights.up.shape[0], weights.down.shape[1]]}")
        else:
            targets[key] = name
    if problems:
        raise ValueError(f"the LoRA does not fit --merge {source} (another base variant?): " + "; ".join(problems[:4]))
    return targets


def merge_lora(lora: LoraFile, base: str | Path, output: str | Path, *, dtype: torch.dtype | None = None) -> MergeResult:
    """Merge ``lora`` into BASE and write ``output``; ``dtype`` casts every floating tensor written."""
    base, output = Path(base), Path(output)
    tensors = _base_tensors(base)
    targets = _targets(lora, tensors, base)
    plan, paths = {}, []
    if output.suffix == ".safetensors":
        plan[output] = sorted(tensors)
    else:
        for split in SPLIT_FILES:
            keys = sorted(k for k in tensors if split.holds(k))
            if base.is_file() or any(k in targets for k in keys):
                plan[output / split.filename] = keys
            elif keys:
                paths.append(_copy(tensors[keys[0]][0], output / split.filename))
    readers: dict[Path, object] = {}

    def produce(key: str) -> torch.Tensor:
        from safetensors import safe_open

        path = tensors[key][0]
        if path not in readers:
            readers[path] = safe_open(str(path), framework="pt")
        value = readers[path].get_tensor(key)
        if key in targets:
            value = (value.float() + lora.modules[targets[key]].delta()).to(value.dtype)
        return value

    def out_dtype(key: str) -> torch.dtype:
        stored = tensors[key][2]
        return dtype if (dtype is not None and stored.is_floating_point) else stored

    metadata = {"format": "pt", "writer": "ltx2train", **_base_version(tensors),
                "merged_lora_modules": str(len(targets)), **_lora_meta(lora)}
    for path, keys in plan.items():
        if keys:
            paths.insert(0, stream_safetensors(path, [(k, out_dtype(k), tensors[k][1]) for k in keys], produce, metadata))
    return MergeResult(paths, len(targets), len(tensors) - len(targets))


def _base_version(tensors: dict) -> dict[str, str]:
    """The base's ``model_version`` header entry (Lightricks' version field), carried into the merged files."""
    for path in sorted({entry[0] for entry in tensors.values()}):
        version = read_safetensors_header(Path(path))[1].get("model_version")
        if version:
            return {"model_version": version}
    return {}


def _lora_meta(lora: LoraFile) -> dict[str, str]:
    return {f"lora_{k}": v for k, v in lora.metadata.items() if k in ("base_variant", "rank", "alpha", "step", "strategy")}


def _copy(source: Path, target: Path) -> Path:
    """A base component file copied through (hard link where the filesystem allows: no extra disk)."""
    from ltx2train.utils.atomic import atomic_path

    with atomic_path(target) as tmp:
        try:
            tmp.hardlink_to(source)
        except OSError:
            shutil.copyfile(source, tmp)
    return target
