"""DDP through Accelerate: the model replicated on every process, gradients all-reduced in backward.

Accelerate starts from ``accelerate launch``, ``torchrun`` or a plain ``python`` (one process); on a machine
without GPUs ``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N`` gives N gloo processes (``accelerate launch
--cpu --num_processes N`` starts only one). The LR scheduler is never handed to Accelerate (it would step it
once per process).
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from ltx2train.config import Config
from ltx2train.memory.fp8 import STORAGE_DTYPE
from ltx2train.models.trained import trained_parts
from ltx2train.training.backends import state


class DDPBackend(state.DCPState):
    name = "ddp"
    collective_forward = False  # every process holds the whole model: the main one validates alone

    def __init__(self, cfg: Config):
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState

        # Accelerate keeps one state per process: a second run in the same process (a notebook, a test session)
        # with another train.mixed_precision would be refused, so that state (not the process group) starts over
        made = AcceleratorState._shared_state.get("_mixed_precision")
        if made is not None and made != cfg.train.mixed_precision:
            AcceleratorState._reset_state()
        self.accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available())
        self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.swap_blocks, self.swap_trained = cfg.memory.block_swap, cfg.train.method == "full"
        self.block_swap = None  # memory.block_swap's handle (ltx2train/memory/offload.py), once parallelized

    def parallelize(self, model: torch.nn.Module, make_optimizer):
        """(DDP-wrapped model, Accelerate's optimizer wrapper (fp16 loss scaling) around ``make_optimizer``'s).

        With ``memory.block_swap`` the swapped blocks' frozen weights (and under full fine-tuning their trained
        ones) go to host memory before DDP wraps the model, which then ignores them: DDP requires what it registers
        on the device; frozen weights it would only broadcast once (every process loaded the same ones), and the
        block swap averages the trained ones' gradients itself. Frozen float8 weights (``memory.fp8_frozen``) are
        left out too: gloo cannot broadcast float8 ("Invalid scalar type"), and every process loaded the same."""
        placement, ignored = None, _float8_names(model)
        if self.swap_blocks:
            from ltx2train.memory.offload import enable_block_swap

            transformer, prefix = trained_parts(model)["transformer"]
            self.block_swap = enable_block_swap(
                transformer,
                self.swap_blocks,
                self.device,  # the rest: on the device
                trained_on_host=self.swap_trained,
            )
            ignored |= {prefix + n for n in self.block_swap.parameter_names}
            placement = False
        if ignored:
            from torch.nn.parallel import DistributedDataParallel

            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sorted(ignored))
        model = self.accelerator.prepare_model(model, device_placement=placement)
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
        return model, self.accelerator.prepare_optimizer(optimizer)

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model)

    def accumulating(self, model: torch.nn.Module, last: bool):
        """Context for one micro-batch: gradients are synchronised on the last one only."""
        if self.block_swap is not None:
            self.block_swap.gradients.reduce = last
        return nullcontext() if last else self.accelerator.no_sync(model)

    def autocast(self):
        return self.accelerator.autocast()

    def backward(self, loss: torch.Tensor) -> None:
        self.accelerator.backward(loss)

    def step(self, optimizer, params, max_grad_norm: float) -> torch.Tensor | None:
        """Clip (if ``max_grad_norm`` > 0), step, zero the gradients; the total gradient norm before clipping, left
        on the device (the trainer reads it with the step's other values, in one sync)."""
        norm = self.accelerator.clip_grad_norm_(params, max_grad_norm).detach() if max_grad_norm > 0 else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def reduce(self, tensor: torch.Tensor, op: str = "mean") -> torch.Tensor:
        return self.accelerator.reduce(tensor.to(self.device), reduction=op)

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def full_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The whole model for validation (replicated: the local copy)."""
        return self.unwrap(model)

    def replicas(self, model: torch.nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
        """The tensors of ``names`` every process holds a full copy of: all of them."""
        return {k: v for k, v in self.unwrap(model).state_dict().items() if k in names}

    def gather(self, model: torch.nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
        """Full tensors of ``names`` on the main process for exports (replicated: the local ones)."""
        if not self.is_main:
            return {}
        return {k: v.detach() for k, v in self.unwrap(model).state_dict().items() if k in names}


def _float8_names(model: torch.nn.Module) -> set[str]:
    """The frozen weights ``memory.fp8_frozen`` stored in float8, which DDP must not broadcast."""
    return {name for name, p in model.named_parameters() if p.dtype == STORAGE_DTYPE and not p.requires_grad}
