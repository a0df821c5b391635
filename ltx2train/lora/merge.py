"""``ltx2train export --merge BASE``: a LoRA merged into the base weights, in either checkpoint layout.

``W' = W + (alpha / r) * B @ A`` in float32, cast to the base tensor's dtype (or ``dtype``). The merge works on
original keys straight from the files (no model is built) and writes one tensor at a time, so merging the
19B transformer needs memory for one tensor, not for the model.

- output ``*.safetensors``: the official single file — every tensor of BASE (a single file or a repackaged
  directory) copied through, the adapted ones merged;
- output directory: the repackaged layout — ``transformer.safetensors`` (and ``text_encoder_post_modules.safetensors``
  when the LoRA adapts the connectors) merged, the other component files of BASE copied through; from LTX-2.5's
  release directory, the release layout — its transformer file merged, the other files copied through.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ltx2train.models.key_maps import DIT_PREFIX
from ltx2train.models.layout import RELEASE_FILES, SPLIT_FILES, is_release_dir, owner_of
from ltx2train.lora.files import LoraFile
from ltx2train.models.loading import SAFETENSORS_DTYPE_NAMES, read_safetensors_header
from ltx2train.models.writing import stream_safetensors
from ltx2train.utils.errors import UserError

_DTYPES = {name: dtype for dtype, name in SAFETENSORS_DTYPE_NAMES.items()}


@dataclass
class MergeResult:
    paths: list[Path]
    merged: int  # tensors changed by the LoRA
    copied: int  # tensors copied through unchanged


def _base_tensors(base: Path) -> dict[str, tuple[Path, tuple[int, ...], torch.dtype, str]]:
    """Original key -> (file, shape, dtype, the key's name in that file) for every tensor of BASE: the official
    single file, a repackaged directory, or LTX-2.5's release directory (a file per part; Gemma's own weights
    beside the text projection are not LTX-2 components and are left out)."""
    if base.is_file():
        files = [(base, "")]
    elif base.is_dir() and is_release_dir(base):
        files = [
            (path, entry.prefix)
            for entry in RELEASE_FILES
            if entry.distilled is not True
            for path in sorted(base.glob(entry.pattern))[:1]
            if "spatial_upsampler" not in entry.components
        ]
    elif base.is_dir():
        files = [(base / f.filename, "") for f in SPLIT_FILES if (base / f.filename).is_file()]
        if not any(f.name == "transformer.safetensors" for f, _ in files):
            raise FileNotFoundError(
                f"--merge {base}: no transformer.safetensors (repackaged layout) and no "
                "diffusion_models/*-transformer*.safetensors (LTX-2.5 release) in that directory"
            )
    else:
        raise FileNotFoundError(f"--merge {base} does not exist")
    found = {}
    for path, prefix in files:
        entries, _ = read_safetensors_header(path)
        for name, entry in entries.items():
            if base.is_dir() and prefix + name and owner_of(prefix + name) is None:
                continue
            found.setdefault(prefix + name, (path, entry.shape, _DTYPES[entry.dtype], name))
    return found


def _targets(lora: LoraFile, base: dict, source: Path) -> dict[str, str]:
    """Base weight key -> LoRA module, every module checked against the base's shapes."""
    targets, problems = {}, []
    for name, weights in lora.modules.items():
        key = f"{DIT_PREFIX}{name}.weight"
        if key not in base:
            problems.append(f"{key} is not in the base")
        elif tuple(base[key][1]) != (weights.up.shape[0], weights.down.shape[1]):
            problems.append(
                f"{key} is {list(base[key][1])}, the LoRA makes {[weights.up.shape[0], weights.down.shape[1]]}"
            )
        else:
            targets[key] = name
    if problems:
        raise UserError(f"the LoRA does not fit --merge {source} (another base variant?): " + "; ".join(problems[:4]))
    return targets


def merge_lora(
    lora: LoraFile, base: str | Path, output: str | Path, *, dtype: torch.dtype | None = None
) -> MergeResult:
    """Merge ``lora`` into BASE and write ``output``; ``dtype`` casts every floating tensor written."""
    base, output = Path(base), Path(output)
    tensors = _base_tensors(base)
    targets = _targets(lora, tensors, base)
    plan, paths = _plan(base, output, tensors, targets)
    readers: dict[Path, object] = {}

    def produce(key: str) -> torch.Tensor:
        from safetensors import safe_open

        path = tensors[key][0]
        if path not in readers:
            readers[path] = safe_open(str(path), framework="pt")
        value = readers[path].get_tensor(tensors[key][3])
        if key in targets:
            value = (value.float() + lora.modules[targets[key]].delta()).to(value.dtype)
        return value

    def out_dtype(key: str) -> torch.dtype:
        stored = tensors[key][2]
        return dtype if (dtype is not None and stored.is_floating_point) else stored

    metadata = {
        "format": "pt",
        "writer": "ltx2train",
        **_base_version(tensors),
        "merged_lora_modules": str(len(targets)),
        **_lora_meta(lora),
    }
    for path, keys in plan.items():
        if keys:
            original = {written: key for key, written in keys}  # the name in the written file -> original key
            paths.insert(
                0,
                stream_safetensors(
                    path,
                    [(w, out_dtype(k), tensors[k][1]) for k, w in keys],
                    lambda w, original=original: produce(original[w]),
                    metadata,
                ),
            )
    return MergeResult(paths, len(targets), len(tensors) - len(targets))


def _plan(base: Path, output: Path, tensors: dict, targets: dict) -> tuple[dict[Path, list], list[Path]]:
    """Which files are written (output file -> (original key, name written) per tensor) and which are copied
    through: one official single file, the repackaged layout, or BASE's release layout, a merged file only where
    the LoRA adapts one of its tensors."""
    plan, copied = {}, []
    if output.suffix == ".safetensors":
        return {output: [(k, k) for k in sorted(tensors)]}, copied
    if base.is_dir() and is_release_dir(base):
        for path in sorted({t[0] for t in tensors.values()}):
            keys = sorted(k for k, t in tensors.items() if t[0] == path)
            target = output / path.relative_to(base)
            if any(k in targets for k in keys):
                plan[target] = [(k, tensors[k][3]) for k in keys]
            else:
                copied.append(_copy(path, target))
        for path in sorted(base.glob("latent_upscale_models/*.safetensors")):
            copied.append(_copy(path, output / path.relative_to(base)))
        return plan, copied
    for split in SPLIT_FILES:
        keys = sorted(k for k in tensors if split.holds(k))
        if base.is_file() or any(k in targets for k in keys):
            plan[output / split.filename] = [(k, k) for k in keys]
        elif keys:
            copied.append(_copy(tensors[keys[0]][0], output / split.filename))
    return plan, copied


def _base_version(tensors: dict) -> dict[str, str]:
    """The base's ``model_version`` header entry (Lightricks' version field), carried into the merged files."""
    for path in sorted({entry[0] for entry in tensors.values()}):
        version = read_safetensors_header(Path(path))[1].get("model_version")
        if version:
            return {"model_version": version}
    return {}


def _lora_meta(lora: LoraFile) -> dict[str, str]:
    return {
        f"lora_{k}": v for k, v in lora.metadata.items() if k in ("base_variant", "rank", "alpha", "step", "strategy")
    }


def _copy(source: Path, target: Path) -> Path:
    """A base component file copied through (hard link where the filesystem allows: no extra disk)."""
    from ltx2train.utils.atomic import atomic_path

    with atomic_path(target) as tmp:
        try:
            tmp.hardlink_to(source)
        except OSError:
            shutil.copyfile(source, tmp)
    return target
