"""Optimizer and learning-rate schedule builders.

The scheduler is stepped by the trainer once per optimizer step and is never handed to
``accelerator.prepare``: Accelerate's wrapper would step it once per process, finishing an N-GPU schedule
N times early. Here the schedule ends at ``train.max_steps`` on any number of processes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ltx2train.config import OptimizerConfig
from ltx2train.utils.errors import UserError


def build_optimizer(params, optimizer_cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """``optimizer.name``: torch's AdamW, or bitsandbytes' 8-bit AdamW (the moments of tensors of 4096 elements
    or more as blockwise-quantised uint8; smaller ones keep float32 state)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise UserError("no trainable parameters (did the LoRA targets match any module?)")
    kwargs: dict[str, Any] = dict(
        lr=optimizer_cfg.lr,
        betas=tuple(optimizer_cfg.betas),
        eps=optimizer_cfg.eps,
        weight_decay=optimizer_cfg.weight_decay,
    )
    if optimizer_cfg.name == "adamw8bit":
        return _adamw8bit()(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs, fused=uses_fused_adamw(optimizer_cfg, params[0].device))


def uses_fused_adamw(optimizer_cfg: OptimizerConfig, device: torch.device) -> bool:
    """``optimizer.fused``: as asked, else on a GPU (where one kernel for every tensor's update saves launches)."""
    return device.type == "cuda" if optimizer_cfg.fused is None else optimizer_cfg.fused


def _adamw8bit():
    try:
        import bitsandbytes.optim
    except ImportError as exc:
        raise UserError(
            f"optimizer.name=adamw8bit needs bitsandbytes ({exc}): pip install 'ltx2train[memory]' "
            "(or bitsandbytes), or use optimizer.name=adamw"
        ) from None
    return bitsandbytes.optim.AdamW8bit


def lr_factor(step: int, *, warmup_steps: int, max_steps: int, schedule: str) -> float:
    """Multiplier of the base LR after ``step`` optimizer steps: linear warmup, then the schedule to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise UserError(f"unknown LR schedule {schedule!r}; expected constant, linear or cosine")


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, optimizer_cfg: OptimizerConfig, max_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: lr_factor(
            step, warmup_steps=optimizer_cfg.warmup_steps, max_steps=max_steps, schedule=optimizer_cfg.scheduler
        ),
    )
