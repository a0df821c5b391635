"""How training is distributed. A backend starts (or joins) the processes, applies parallelism to the model
the way torchtitan's ``parallelize`` does, and owns backward, gradient accumulation, clipping, the optimizer
step, collectives and the resumable state it shards: ``ddp`` (Accelerate; one process or many) and
``fsdp2`` (``fully_shard`` per block, then the root)."""

from __future__ import annotations

from ltx2train.training.backends.ddp import DDPBackend
from ltx2train.training.backends.fsdp2 import FSDP2Backend

BACKENDS = {DDPBackend.name: DDPBackend, FSDP2Backend.name: FSDP2Backend}


def build_backend(cfg):
    return BACKENDS[cfg.distributed.backend](cfg)
