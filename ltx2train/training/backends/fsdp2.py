"""FSDP2 (``torch.distributed.fsdp.fully_shard``): parameters, gradients and optimizer state sharded over the
processes. Applied the way torchtitan's ``parallelize`` does: ``fully_shard`` on each transformer block, then
on the root; the same code on CPU (gloo) and GPU (NCCL).

- Mixed precision: ``train.mixed_precision=bf16`` all-gathers parameters in bf16 and reduces gradients in
  float32 (``MixedPrecisionPolicy``), with autocast around the forward so that the timestep embeddings keep
  their float32 inputs. The frozen base stays in ``model.dtype`` (a LoRA never upcasts it); trained weights
  (adapters, or every weight for full fine-tuning) are float32 shards.
- ``distributed.reshard_after_forward`` (ZeRO-3 style, default) or keep the gathered parameters until
  backward (ZeRO-2 style: more memory, less communication); ``distributed.cpu_offload`` keeps the shards
  and optimizer state in host memory.
- Resumable state is sharded (``backends/state.py``); exports gather only the trained tensors.
- Validation is collective: every process runs the forward passes, the main process writes.

Accelerate's FSDP plugin is not used: on CPU-only machines it silently falls back to DDP.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager, nullcontext

import torch
import torch.distributed as dist

from ltx2train.config import Config
from ltx2train.models.trained import trained_parts, transformer_of
from ltx2train.training.backends.collectives import TorchCollectives

from ltx2train.training.backends import state

_COMPUTE_DTYPES = {"bf16": torch.bfloat16, "no": None}


def _units_of_pair(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The FSDP units of a trained pair below its root, inner first: the two connector transformers (the step calls
    them, not the connectors' own forward), the connectors and the transformer (validation calls them one by one).
    None for the transformer alone."""
    parts = {name: module for name, (module, _) in trained_parts(model).items() if module is not model}
    if "connectors" not in parts:
        return []
    connectors = parts["connectors"]
    return [connectors.video_connector, connectors.audio_connector, connectors, parts["transformer"]]


class FSDP2Backend(state.DCPState, TorchCollectives):
    name = "fsdp2"
    collective_forward = True  # a sharded module's forward needs every rank

    def __init__(self, cfg: Config):
        from accelerate import PartialState

        from torch.distributed.device_mesh import init_device_mesh

        partial = PartialState(cpu=not torch.cuda.is_available())  # joins accelerate launch / torchrun
        if not dist.is_initialized():  # a single process: FSDP2 still shards over a group of one
            self._store = tempfile.NamedTemporaryFile(prefix="ltx2train-pg-")
            dist.init_process_group(
                "nccl" if torch.cuda.is_available() else "gloo",
                init_method=f"file://{self._store.name}",
                rank=0,
                world_size=1,
            )
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.device = partial.device
        self.is_main = self.rank == 0
        self.mesh = init_device_mesh(self.device.type, (self.world_size,))
        self.compute_dtype = _COMPUTE_DTYPES[cfg.train.mixed_precision]
        self.reshard_after_forward = cfg.distributed.reshard_after_forward
        self.cpu_offload = cfg.distributed.cpu_offload

    def parallelize(self, model: torch.nn.Module, make_optimizer):
        """(the sharded model, ``make_optimizer`` over its sharded parameters)."""
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        policy = (
            MixedPrecisionPolicy(param_dtype=self.compute_dtype, reduce_dtype=torch.float32, cast_forward_inputs=False)
            if self.compute_dtype
            else MixedPrecisionPolicy()
        )
        options = dict(
            mesh=self.mesh,
            mp_policy=policy,
            reshard_after_forward=self.reshard_after_forward,
            offload_policy=CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy(),
        )
        for block in transformer_of(model).transformer_blocks:
            fully_shard(block, **options)
        for part in _units_of_pair(model):
            fully_shard(part, **options)
        fully_shard(model, **options)
        return model, make_optimizer([p for p in model.parameters() if p.requires_grad])

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return model  # fully_shard changes the module in place

    @contextmanager
    def accumulating(self, model: torch.nn.Module, last: bool):
        """Gradients reduce-scattered on the last micro-batch only."""
        model.set_requires_gradient_sync(last)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    def autocast(self):
        if self.compute_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self, optimizer, params, max_grad_norm: float) -> torch.Tensor | None:
        norm = None
        if max_grad_norm > 0:
            total = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            norm = (total.full_tensor() if hasattr(total, "full_tensor") else total).detach()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm

    def full_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model  # its forward gathers; every rank must call it (collective_forward)

    def replicas(self, model: torch.nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
        return {}  # every trained tensor is sharded: one copy of each element

    def gather(self, model: torch.nn.Module, names: set[str]) -> dict[str, torch.Tensor]:
        """Collective: the full tensors of ``names`` on the main process (CPU), one tensor at a time."""
        out = {}
        for key, value in model.state_dict().items():
            if key not in names:
                continue
            full = value.full_tensor() if hasattr(value, "full_tensor") else value
            if self.is_main:
                out[key] = full.detach().cpu()
        return out
