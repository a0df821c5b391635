"""What is trained: ``lora`` (PEFT adapters on the frozen transformer) or ``full`` (every transformer weight).

A method applies itself to the model (freeze, adapters), names the parameters it trains, gives their exact
state for resume, exports what users load (original key layouts through ``models/``), and states the
signature a checkpoint must match to be resumed. The loop and the backends never ask which method runs.
"""

from __future__ import annotations

from ltx2train.config import Config
from ltx2train.training.methods.full import FullMethod
from ltx2train.training.methods.lora import LoraMethod

METHODS = {LoraMethod.name: LoraMethod, FullMethod.name: FullMethod}


def build_method(cfg: Config, spec, frozen: str | None = None):
    """``frozen``: a regex of module names the strategy never trains (no adapter there; frozen under full)."""
    return METHODS[cfg.train.method](cfg, spec, frozen=frozen)
