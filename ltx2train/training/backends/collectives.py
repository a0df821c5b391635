"""Collectives over ``torch.distributed``: the reductions of backends that do not go through Accelerate (FSDP2,
DeepSpeed), and the check that replicated tensors hold the same bits on every process."""

from __future__ import annotations

import torch
import torch.distributed as dist

_WORDS = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


class TorchCollectives:
    """Needs ``self.device`` and ``self.world_size``."""

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        out = tensor.detach().to(self.device).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size if op == "mean" else out

    def barrier(self) -> None:
        dist.barrier()


def fingerprint(tensor: torch.Tensor) -> torch.Tensor:
    """The integer sum of a tensor's raw words (int64, on its device): equal bits give equal sums, and a
    replica that drifted by even one bit anywhere gives another sum unless its differences cancel exactly."""
    words = tensor.detach().contiguous().view(-1).view(_WORDS[tensor.element_size()])
    return words.sum(dtype=torch.int64)


def disagreeing(tensors: dict[str, torch.Tensor], device: torch.device) -> list[str]:
    """Collective (every process, the same names in the same order): the names whose bits differ between
    processes. ``[]`` without a process group of two or more."""
    if not tensors or not dist.is_initialized() or dist.get_world_size() == 1:
        return []
    sums = torch.stack([fingerprint(t).to(device) for t in tensors.values()])
    high, low = sums.clone(), sums.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return [name for name, differs in zip(tensors, (high != low).tolist()) if differs]
