"""Where the inference pipeline's weights live and in which dtype: ltx2train's ``low_vram`` and DiffSynth-Studio's
``vram_config`` / ``vram_limit``, one plan.

DiffSynth gives each model ``onload_dtype`` / ``onload_device`` (where its weights stay and in which dtype),
``computation_dtype`` / ``computation_device`` (where they run), and ``vram_limit`` (GB the weights may hold on
the computation device). Here that becomes: a float8 onload dtype stores the transformer, the text connectors and
Gemma in that float8 (computed in the computation dtype); weights that stay on another device than the one that
computes, or a ``vram_limit``, put the transformer's blocks in host memory, each brought to the device one block
ahead of use, as many of them resident on the device as the limit leaves room for after everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx2train.memory.fp8 import module_bytes

FLOAT8 = (torch.float8_e4m3fn, torch.float8_e5m2)


@dataclass(frozen=True)
class VramPlan:
    storage_dtype: torch.dtype | None  # float8 storage of the transformer, connectors and Gemma; None: as loaded
    swap: bool  # the transformer's blocks in host memory, streamed to the device
    vram_limit_gb: float | None = None  # resident weights on the device; None: no block resident (all streamed)

    @property
    def low_vram(self) -> bool:
        return self.storage_dtype is not None or self.swap


def plan_from_configs(model_configs, vram_limit: float | None) -> VramPlan | None:
    """The plan DiffSynth's ``vram_config`` on the transformer's ``ModelConfig`` (and ``vram_limit``) asks for, or
    None when they ask for nothing beyond loading onto the device."""
    config = next((c for c in model_configs if "transformer" in str(c.origin_file_pattern or c.path or "")), None)
    if config is None:
        return None
    storage = next((d for d in (config.onload_dtype, config.offload_dtype) if d in FLOAT8), None)
    home, compute = config.onload_device, config.computation_device
    swap = vram_limit is not None or (home is not None and compute is not None and str(home) != str(compute))
    plan = VramPlan(storage, swap, vram_limit)
    return plan if plan.low_vram else None


def low_vram_plan(swap_blocks: int | None) -> VramPlan:
    """``low_vram=True``: e4m3fn storage, every block streamed (``swap_blocks``: the last N only)."""
    from ltx2train.memory.fp8 import STORAGE_DTYPE

    return VramPlan(STORAGE_DTYPE, swap_blocks != 0)


def resident_blocks(transformer: torch.nn.Module, others: int, vram_limit_gb: float) -> int:
    """How many transformer blocks fit on the device within ``vram_limit_gb`` beside ``others`` bytes (everything
    else the device holds: the transformer outside its blocks, the connectors, Gemma, the decoders)."""
    blocks = list(transformer.transformer_blocks)
    per_block = max(module_bytes(b) for b in blocks)
    outside = module_bytes(transformer) - sum(module_bytes(b) for b in blocks)
    room = int(vram_limit_gb * 2**30) - others - outside
    return max(0, min(len(blocks), room // per_block))


def place(
    modules: dict,
    plan: VramPlan,
    compute_dtype: torch.dtype,
    device: torch.device,
    swap_blocks: int | None,
    others: int = 0,
) -> int:
    """FP8-store and place ``modules`` (transformer, connectors, text_encoder if any, loaded on the host) as ``plan`` says;
    returns the number of blocks streamed from host memory. ``others``: bytes of what else the device holds."""
    from ltx2train.memory.fp8 import store_fp8
    from ltx2train.memory.offload import enable_block_swap

    transformer, connectors = modules["transformer"], modules["connectors"]
    text = modules.get("text_encoder")
    frozen = [(transformer, "transformer"), (connectors, "connectors")] + (
        [(text.model, "text_encoder")] if text else []
    )
    if plan.storage_dtype is not None:
        for module, name in frozen:
            store_fp8(module, name, compute_dtype=compute_dtype, storage_dtype=plan.storage_dtype)
    for module, _ in frozen[1:]:
        module.to(device)
    blocks = len(transformer.transformer_blocks)
    if plan.vram_limit_gb is not None:
        others += sum(module_bytes(module) for module, _ in frozen[1:])
        blocks -= resident_blocks(transformer, others, plan.vram_limit_gb)
    elif swap_blocks is not None:
        blocks = swap_blocks
    if plan.swap and blocks:
        transformer.block_swap = enable_block_swap(transformer, blocks, device)  # places the rest on the device
        return blocks
    transformer.to(device)
    return 0
