"""How training is distributed. A backend starts (or joins) the processes, applies parallelism to the model
the way torchtitan's ``parallelize`` does, and owns backward, gradient accumulation, clipping, the optimizer
step, collectives and the resumable state it shards: ``ddp`` (Accelerate; one process or many), ``fsdp2``
(``fully_shard`` per block, then the root) and ``deepspeed`` (ZeRO-2/3, optional offload; imported on use)."""

from __future__ import annotations

import importlib.util

from ltx2train.config import Config
from ltx2train.training.backends.ddp import DDPBackend
from ltx2train.training.backends.fsdp2 import FSDP2Backend
from ltx2train.utils.errors import UserError

BACKENDS = {DDPBackend.name: DDPBackend, FSDP2Backend.name: FSDP2Backend}


def build_backend(cfg: Config):
    if cfg.distributed.backend == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise UserError(
                "distributed.backend=deepspeed needs DeepSpeed: DS_BUILD_OPS=0 pip install 'ltx2train[deepspeed]'"
            )
        from ltx2train.training.backends.deepspeed import DeepSpeedBackend

        return DeepSpeedBackend(cfg)
    return BACKENDS[cfg.distributed.backend](cfg)
