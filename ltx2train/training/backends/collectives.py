"""Collectives over ``torch.distributed`` for backends that do not go through Accelerate (FSDP2, DeepSpeed)."""

from __future__ import annotations

import torch
import torch.distributed as dist


class TorchCollectives:
    """Needs ``self.device`` and ``self.world_size``."""

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        out = tensor.detach().to(self.device).clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size if op == "mean" else out

    def barrier(self) -> None:
        dist.barrier()
