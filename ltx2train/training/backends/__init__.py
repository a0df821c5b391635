"""How training is distributed. A backend starts (or joins) the processes, applies parallelism to the model
the way torchtitan's ``parallelize`` does, and owns backward, gradient accumulation, clipping, the optimizer
step, collectives and the resumable state it shards. Today: ``ddp`` (Accelerate; one process or many)."""

from __future__ import annotations

from ltx2train.training.backends.ddp import DDPBackend

BACKENDS = {DDPBackend.name: DDPBackend}


def build_backend(cfg):
    return BACKENDS[cfg.distributed.backend](cfg)
