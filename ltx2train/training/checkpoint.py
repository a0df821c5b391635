"""Checkpoints: what users load, the exact trained state, and the training state to resume from.

``OUTPUT/checkpoints/step_000250/`` holds

- the method's export, for users: ``lora.safetensors`` (official/ComfyUI keys, alpha/rank folded into
  ``lora_B``, no ``.alpha`` tensors, so diffusers, ltx-core, DiffSynth and ComfyUI apply it at the same
  strength; metadata: rank, alpha, targets, base variant, strategy, step) or, for full fine-tuning,
  ``transformer.safetensors`` (original keys, the repackaged layout ``load_component`` reads);
- ``state/``: the backend's resumable state (``training/backends/state.py``): ``state/model/`` the trained
  tensors exactly as trained, ``state/optim/`` the optimizer state by parameter name, in torch distributed
  checkpointing's format (sharded where the backend shards). Resume loads it, so a run continues bit for
  bit (folding alpha is a float multiply, not invertible bit for bit); without ``state/model/`` (removed
  to save space) resume reads the trained weights from the export;
- ``training_state.pt``: LR scheduler, step, the method's signature, the world size (tensors and plain
  Python values only, read back with ``torch.load(weights_only=True)``);
- ``rng_rank<r>.pt``: each process' torch / numpy / Python RNG states.

A checkpoint is assembled under ``step_N.tmp`` and renamed when complete, so a crash never leaves a
half-written checkpoint where resume would find it; a checkpoint damaged later (a truncated file) is reported
and the previous one is used. Only the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import pickle
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ltx2train.models.writing import save_safetensors_atomic

CHECKPOINTS_DIR = "checkpoints"
LORA_FILE = "lora.safetensors"
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
        if match and path.is_dir() and (path / STATE_FILE).is_file():
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
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *[int(x) if isinstance(x, (int, np.integer)) else float(x) for x in np_state[2:]],
        ],
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
    exports: dict[str, tuple[dict[str, torch.Tensor], dict[str, str]]],
    training_state: dict,
    save_state: Callable[[Path], None],
    rank: int,
    world_size: int,
    barrier,
    keep_last: int,
) -> Path:
    """Assemble ``step_N.tmp``: every rank writes its RNG and calls ``save_state(dir)`` (the backend's
    collective writer), the main rank the ``exports`` (file name -> (tensors, metadata)) and the training
    state; then the main rank renames it into place and prunes old checkpoints."""
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    save_state(tmp)
    if rank == 0:
        for name, (tensors, metadata) in exports.items():
            save_safetensors_atomic(tensors, tmp / name, metadata=metadata)
        torch.save({**training_state, "world_size": world_size}, tmp / STATE_FILE)
    barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for _, old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


@dataclass
class LoadedCheckpoint:
    path: Path
    state: dict  # training_state.pt
    rng: dict | None  # this rank's RNG state; None when the checkpoint was made by fewer processes


def read_checkpoint(path: str | Path, rank: int) -> LoadedCheckpoint:
    """The small files of a checkpoint (training state, RNG); :class:`DamagedCheckpoint` if unreadable."""
    path = Path(path)
    current = path / STATE_FILE
    try:
        state = torch.load(current, weights_only=True)
        current = path / f"rng_rank{rank}.pt"
        rng = torch.load(current, weights_only=True) if current.is_file() else None
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        raise DamagedCheckpoint(
            f"{current} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None
    return LoadedCheckpoint(path, state, rng)


class DamagedCheckpoint(ValueError):
    """A checkpoint file cannot be read (truncated, corrupt)."""
