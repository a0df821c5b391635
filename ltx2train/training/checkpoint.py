"""Checkpoints: the LoRA in the official layout plus the training state to resume from.

``OUTPUT/checkpoints/step_000250/`` holds

- ``lora.safetensors``  the LoRA for users: official/ComfyUI keys (``diffusion_model.<module>.lora_A/B.weight``),
  alpha/rank folded into ``lora_B`` and no ``.alpha`` tensors, so diffusers, ltx-core, DiffSynth and ComfyUI
  apply it at the same strength; metadata (rank, alpha, targets, base variant, strategy, step);
- ``adapter_state.safetensors``  the adapter exactly as trained (PEFT names, unfolded, training dtype): what
  resume loads, so that a resumed run continues bit for bit (folding is a float multiply, not invertible
  bit for bit). Without it resume unfolds ``lora.safetensors``;
- ``training_state.pt``  optimizer, LR scheduler, step and data position (tensors and plain Python values
  only, read back with ``torch.load(weights_only=True)``);
- ``rng_rank<r>.pt``     each process' torch / numpy / Python RNG states.

A checkpoint is assembled under ``step_N.tmp`` and renamed when complete, so a crash never leaves a
half-written checkpoint where resume would find it. Only the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ltx2train.models.writing import save_safetensors_atomic

CHECKPOINTS_DIR = "checkpoints"
LORA_FILE = "lora.safetensors"
ADAPTER_FILE = "adapter_state.safetensors"
STATE_FILE = "training_state.pt"
_STEP_DIR = re.compile(r"^step_(\d{6,})$")


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR / f"step_{step:06d}"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first (``.tmp`` leftovers of a crash are ignored)."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file() and (path / LORA_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *[int(x) if isinstance(x, (int, np.integer)) else float(x) for x in np_state[2:]]],
        "python": _to_lists(random.getstate()),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    lora: dict[str, torch.Tensor],
    lora_metadata: dict[str, str],
    adapter_state: dict[str, torch.Tensor],
    training_state: dict,
    rank: int,
    world_size: int,
    barrier,
    keep_last: int,
) -> Path:
    """Write on every rank (RNG) and the main rank (the rest); rename once all ranks are done."""
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    if rank == 0:
        save_safetensors_atomic(lora, tmp / LORA_FILE, metadata=lora_metadata)
        save_safetensors_atomic(adapter_state, tmp / ADAPTER_FILE)
        torch.save({**training_state, "world_size": world_size}, tmp / STATE_FILE)
    barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for _, old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_training_state(path: str | Path, rank: int) -> tuple[dict, dict | None]:
    """(training state, this rank's RNG state or None when the checkpoint was made by fewer processes)."""
    path = Path(path)
    state = torch.load(path / STATE_FILE, weights_only=True)
    rng_file = path / f"rng_rank{rank}.pt"
    rng = torch.load(rng_file, weights_only=True) if rng_file.is_file() else None
    return state, rng


def lora_metadata(*, variant: str, family: str, rank: int, alpha: float, targets, step: int, strategy: str) -> dict:
    return {
        "format": "ltx2train-lora",
        "lora_format": "official",
        "alpha_handling": "folded",
        "base_variant": variant,
        "family": family,
        "rank": str(rank),
        "alpha": str(alpha),
        "target_modules": json.dumps(list(targets)),
        "strategy": strategy,
        "step": str(step),
    }
