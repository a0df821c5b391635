"""DeepSpeed ZeRO-2 / ZeRO-3: optimizer state and gradients (ZeRO-2), and parameters too (ZeRO-3), partitioned
over the processes by DeepSpeed's engine; optimizer state (and, with ZeRO-3, parameters) optionally in host
memory. On CPU-only machines DeepSpeed runs on its CPU accelerator over gloo by itself.

The engine owns mixed precision (``bf16``: the model in bf16, float32 master weights in the optimizer), gradient
accumulation (``engine.step()`` after every micro-batch steps the optimizer at the boundary) and clipping.
Resumable state is the engine's checkpoint (``state/deepspeed``, trained parameters only); exports are the
float32 master weights gathered on the main process. Rank and world size come from ``torch.distributed``
(Accelerate reports one process per rank under DeepSpeed on CPU).
"""

from __future__ import annotations

import os
import socket
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist

from ltx2train.config import Config
from ltx2train.training.backends.collectives import TorchCollectives

STATE_DIR = Path("state") / "deepspeed"
TAG = "state"


def _single_process_env() -> None:
    """``python -m ltx2train train`` without a launcher: a group of one on a free local port."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


class DeepSpeedBackend(TorchCollectives):
    name = "deepspeed"

    def __init__(self, cfg: Config):
        import deepspeed

        _single_process_env()
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", 0))
        self.device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
        self.is_main = self.rank == 0
        d = cfg.distributed
        self.stage = d.zero_stage
        self.collective_forward = self.stage == 3  # partitioned parameters: every rank in each forward
        zero = {"stage": d.zero_stage}
        if d.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu"}
        if d.offload_params:
            zero["offload_param"] = {"device": "cpu"}
        self.config = {
            "train_micro_batch_size_per_gpu": cfg.data.batch_size,
            "gradient_accumulation_steps": cfg.train.gradient_accumulation_steps,
            "gradient_clipping": float(cfg.optimizer.max_grad_norm),
            "zero_optimization": zero,
            "bf16": {"enabled": cfg.train.mixed_precision == "bf16"},
            "fp16": {"enabled": cfg.train.mixed_precision == "fp16"},
            "zero_force_ds_cpu_optimizer": False,  # our AdamW (the schedule steps it), also when offloaded
            "steps_per_print": 2**31,
        }
        self.engine = None

    def parallelize(self, model: torch.nn.Module, make_optimizer):
        import deepspeed

        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = make_optimizer(params)
        self.engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, model_parameters=params, config=self.config
        )
        return self.engine, optimizer  # the schedule steps the torch optimizer's param groups

    def unwrap(self, model) -> torch.nn.Module:
        return getattr(model, "module", model)

    def accumulating(self, model, last: bool):
        return nullcontext()  # the engine counts micro-batches and reduces at the boundary

    def autocast(self):
        return nullcontext()  # the engine runs the model in its precision

    def backward(self, loss: torch.Tensor) -> None:
        self.engine.backward(loss, scale_wrt_gas=False)  # the loop already divides by the accumulation steps
        self.engine.step()

    def step(self, optimizer, params, max_grad_norm: float) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return None if norm is None or max_grad_norm <= 0 else float(norm)

    def full_model(self, model) -> torch.nn.Module:
        return self.unwrap(model)  # ZeRO-3 gathers in its forward hooks (collective_forward)

    def replicas(self, model, names: set[str]) -> dict[str, torch.Tensor]:
        """ZeRO-2: the module's copy of the trained parameters, rebuilt on every process after each step from
        the partitioned master weights; ZeRO-3 partitions the parameters themselves."""
        if self.stage >= 3:
            return {}
        return {k: p for k, p in self.unwrap(model).named_parameters() if k in names}

    def gather(self, model, names: set[str]) -> dict[str, torch.Tensor]:
        """Collective: full tensors on the main process; trained parameters from the float32 master weights."""
        from deepspeed.utils import safe_get_full_fp32_param

        module, out = self.unwrap(model), {}
        for key, param in module.named_parameters():
            if key in names:
                full = safe_get_full_fp32_param(param) if param.requires_grad else self._gathered(param)
                if self.is_main:
                    out[key] = full.detach().cpu().clone()
        for key, buffer in module.named_buffers():
            if key in names and self.is_main:
                out[key] = buffer.detach().cpu().clone()
        return out

    def _gathered(self, param) -> torch.Tensor:
        import deepspeed

        if self.stage < 3:
            return param
        with deepspeed.zero.GatheredParameters([param]):
            return param.detach().cpu().clone()

    def save_state(self, directory, model, optimizer, names: set[str]) -> None:
        self.engine.save_checkpoint(str(Path(directory) / STATE_DIR), tag=TAG, exclude_frozen_parameters=True)

    def load_state(self, directory, model, optimizer, names: set[str]) -> tuple[bool, bool]:
        """The engine's checkpoint: trained parameters, master weights and optimizer state, all or nothing."""
        path = Path(directory) / STATE_DIR
        if not (path / TAG).is_dir():
            raise RuntimeError(f"{path / TAG} is missing: DeepSpeed resumes from its own state only")
        loaded, _ = self.engine.load_checkpoint(
            str(path), tag=TAG, load_module_strict=False, load_lr_scheduler_states=False
        )
        if loaded is None:
            raise RuntimeError(f"DeepSpeed could not load {path / TAG}")
        return True, True

    def set_full_state(self, model, tensors) -> None:  # pragma: no cover - load_state never returns False
        raise NotImplementedError
