"""Where each kind of weight lives and in which dtype, for a recipe's method, backend and mixed precision."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx2train.config import Config

_MIXED = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """Where each kind of weight lives and in which dtype, for a recipe's method, backend and precision."""

    frozen: torch.dtype  # the frozen base as stored on the module
    trained: torch.dtype  # trained weights as stored on the module (and their gradients)
    master: torch.dtype | None  # DeepSpeed: the optimizer's float32 copy of the trained weights
    compute: torch.dtype | None  # autocast dtype (None: none); FSDP2 also gathers parameters in it
    gathered: torch.dtype | None  # fsdp2: the dtype parameters are all-gathered in (None: as stored)


def precision_of(cfg: Config) -> Precision:
    from ltx2train.models.specs import torch_dtype

    mixed = _MIXED.get(cfg.train.mixed_precision)
    base = torch_dtype(cfg.model.dtype)
    if cfg.distributed.backend == "deepspeed" and mixed is not None:  # the engine casts the whole module
        return Precision(mixed, mixed, torch.float32, None, None)
    gathered = mixed if cfg.distributed.backend == "fsdp2" else None
    return Precision(base, torch.float32, None, mixed, gathered)
