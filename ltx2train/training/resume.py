"""Resuming a run: which checkpoint, whether it fits this recipe and backend, and applying it to a built run.

Every checkpoint this version writes holds the method's signature, the backend's name, the trained tensors and the
optimizer state (``training/backends/state.py``); a checkpoint whose ``state/model/`` is gone resumes its trained
weights from its export. Anything else that is missing makes it a damaged checkpoint: the previous one is tried.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ltx2train.config import Config
from ltx2train.training import checkpoint as ckpt
from ltx2train.training.backends import state
from ltx2train.training.interfaces import Backend, Method
from ltx2train.utils.errors import UserError

if TYPE_CHECKING:
    from ltx2train.training.builder import TrainingRun


def resume_candidates(cfg: Config) -> list[Path]:
    """Checkpoints to resume from, best first: an explicit ``train.resume`` path, or the run's own, newest first."""
    if cfg.train.resume == "none":
        return []
    if cfg.train.resume != "latest":
        return [Path(cfg.train.resume)]
    return [path for _, path in reversed(ckpt.list_checkpoints(cfg.train.output_dir))]


def resume(run: TrainingRun, candidates: list[Path], *, explicit: bool, log: Callable[[str], None]) -> None:
    """Resume from the first readable candidate; a damaged one is named in a warning and the previous one
    tried (a checkpoint applied halfway is overwritten in full by the next)."""
    for path in candidates:
        try:
            apply_checkpoint(run, ckpt.read_checkpoint(path, run.backend.rank))
        except ckpt.DamagedCheckpoint as exc:
            if explicit:
                raise UserError(f"train.resume={path}: {exc}") from None
            log(f"[ltx2train] warning: checkpoint {path} is damaged ({exc}); trying the previous one")
            continue
        log(f"[ltx2train] resumed from {path} (step {run.step})")
        return
    if candidates:
        raise UserError(
            f"no readable checkpoint in {Path(run.cfg.train.output_dir) / ckpt.CHECKPOINTS_DIR}; "
            "set train.resume=none to start over (or train.resume=<a checkpoint directory>)"
        )


def apply_checkpoint(run: TrainingRun, loaded: ckpt.LoadedCheckpoint) -> None:
    """Trained state, optimizer and schedule from a checkpoint."""
    from torch.distributed.checkpoint.api import CheckpointException

    check_signature(run.method, loaded)
    check_backend(run.backend, loaded)
    backend, path = run.backend, loaded.path
    names = run.method.trainable_names(backend.unwrap(run.model))
    try:
        model_loaded, optim_loaded = backend.load_state(path, run.model, run.optimizer, names)
        if not optim_loaded:
            raise RuntimeError(f"{path / state.STATE_DIR / 'optim'} is missing")
        if not model_loaded:  # state/model/ removed: the trained weights from the export
            exported = run.method.state_from_export(backend.unwrap(run.model), path, f"checkpoint {path}")
            backend.set_full_state(run.model, exported)
    except (CheckpointException, RuntimeError, OSError, KeyError) as exc:
        raise ckpt.DamagedCheckpoint(
            f"{path / state.STATE_DIR} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from None
    run.lr_scheduler.load_state_dict(loaded.state["lr_scheduler"])
    # The LR of the restored step comes from this recipe's schedule (e.g. a longer max_steps).
    run.lr_scheduler.last_epoch = int(loaded.state["step"]) - 1
    run.lr_scheduler.step()
    run.step = int(loaded.state["step"])
    # another process count: data order is re-split, noise streams start afresh
    run.rng = loaded.rng if loaded.state["world_size"] == backend.world_size else None


def check_backend(backend: Backend, loaded: ckpt.LoadedCheckpoint) -> None:
    """ddp and fsdp2 checkpoints (torch distributed checkpointing) resume under either, at any world size;
    a DeepSpeed checkpoint resumes under DeepSpeed on the world size that wrote it."""
    saved = loaded.state["backend"]
    saved_world = loaded.state["world_size"]
    if (saved == "deepspeed") != (backend.name == "deepspeed"):
        raise UserError(
            f"cannot resume {loaded.path} (written by distributed.backend={saved}) with "
            f"distributed.backend={backend.name}: set distributed.backend={saved}, or start a new run "
            "from its export (lora.init_from=<checkpoint>/lora.safetensors)"
        )
    if saved == "deepspeed" and saved_world != backend.world_size:
        raise UserError(
            f"{loaded.path} is a DeepSpeed ZeRO checkpoint of {saved_world} process(es); it resumes on "
            f"{saved_world} (this run has {backend.world_size}). Resume with {saved_world} processes, or "
            "start a new run from its export (lora.init_from=<checkpoint>/lora.safetensors)"
        )


def check_signature(method: Method, loaded: ckpt.LoadedCheckpoint) -> None:
    """The checkpoint was made by the same method on the same model."""
    saved = loaded.state["signature"]
    expected = method.signature()
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs recipe {v!r}" for k, v in expected.items() if saved.get(k) != v]
    if diffs:
        raise UserError(
            f"cannot resume from {loaded.path}: {'; '.join(diffs)} "
            "(set train.resume=none or use another train.output_dir)"
        )
