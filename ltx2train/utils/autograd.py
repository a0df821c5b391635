"""Small autograd facts other modules ask about."""

from __future__ import annotations

import torch


def in_backward() -> bool:
    """True while autograd runs a backward pass (e.g. gradient checkpointing recomputing a block)."""
    return torch._C._current_graph_task_id() != -1
