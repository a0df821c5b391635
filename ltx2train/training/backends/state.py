"""Resumable state with torch distributed checkpointing (DCP), for every backend built on torch modules.

Two DCP directories per checkpoint, written by all ranks:

- ``state/model/``: the trained tensors under the module's state-dict names — the method's names, so a
  LoRA checkpoint holds the adapters and never the frozen base;
- ``state/optim/``: the optimizer state keyed by parameter name (not by index).

Replicated tensors (DDP) are written once, sharded ones (FSDP2) as shards; DCP reshards on load, so a
checkpoint resumes at another world size and across ``ddp`` <-> ``fsdp2``. Without ``state/model/`` (removed to
save space) resume takes the trained weights from the method's export instead.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

STATE_DIR = "state"


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps the torch one


@contextmanager
def _quiet():
    with warnings.catch_warnings():  # one process without a process group: DCP warns that it runs alone
        warnings.filterwarnings("ignore", message=".*process group.*")
        warnings.filterwarnings("ignore", message=".*torch.distributed is.*")
        yield


def _model_state(model: torch.nn.Module, names: set[str]) -> dict:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return {k: v for k, v in get_model_state_dict(model).items() if k in names}


def _optim_state(model: torch.nn.Module, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, _inner(optimizer))


def save_state(directory: Path, model: torch.nn.Module, optimizer, names: set[str]) -> None:
    """Collective: every rank calls it with the same arguments."""
    import torch.distributed.checkpoint as dcp

    root = Path(directory) / STATE_DIR
    with _quiet():
        dcp.save({"model": _model_state(model, names)}, checkpoint_id=str(root / "model"))
        dcp.save({"optim": _optim_state(model, optimizer)}, checkpoint_id=str(root / "optim"))


def has_model_state(directory: Path) -> bool:
    return (Path(directory) / STATE_DIR / "model" / ".metadata").is_file()


def has_optim_state(directory: Path) -> bool:
    return (Path(directory) / STATE_DIR / "optim" / ".metadata").is_file()


def load_model_state(directory: Path, model: torch.nn.Module, names: set[str]) -> None:
    """Collective. The trained tensors from ``directory`` into the (possibly sharded) model."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state = {"model": _model_state(model, names)}
    with _quiet():
        dcp.load(state, checkpoint_id=str(Path(directory) / STATE_DIR / "model"))
        set_model_state_dict(model, state["model"], options=StateDictOptions(strict=False))


def load_optim_state(directory: Path, model: torch.nn.Module, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    state = {"optim": _optim_state(model, optimizer)}
    with _quiet():
        dcp.load(state, checkpoint_id=str(Path(directory) / STATE_DIR / "optim"))
        set_optimizer_state_dict(model, _inner(optimizer), state["optim"])


def set_full_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Full (unsharded) tensors, e.g. from an export, into the (possibly sharded) model, on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


class DCPState:
    """The resumable-state methods of a backend whose model is a torch module (DDP, FSDP2)."""

    def save_state(self, directory, model, optimizer, names: set[str]) -> None:
        save_state(directory, self.unwrap(model), optimizer, names)

    def load_state(self, directory, model, optimizer, names: set[str]) -> tuple[bool, bool]:
        """Collective. (trained tensors loaded, optimizer state loaded): each part where the checkpoint has it."""
        module = self.unwrap(model)
        has_model, has_optim = has_model_state(directory), has_optim_state(directory)
        if has_model:
            load_model_state(directory, module, names)
        if has_optim:
            load_optim_state(directory, module, optimizer)
        return has_model, has_optim

    def set_full_state(self, model, tensors: dict[str, torch.Tensor]) -> None:
        set_full_state(self.unwrap(model), tensors)
