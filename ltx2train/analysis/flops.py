"""Model FLOPs of a training step, counted from the architecture and the token counts, and MFU.

Method: the recipe's transformer, with its method applied as it trains (LoRA adapters on a frozen base, or every
weight trained), is built with one and with two blocks on fake tensors (no memory, no weights). torch's
``FlopCounterMode`` counts every matrix multiply and every attention (scores and values) of its forward, the loss
and its backward at the step's token counts: FLOPs(L blocks) = FLOPs(1) + (L - 1) x (FLOPs(2) - FLOPs(1)). The
backward is the one autograd runs: under LoRA, input gradients through the frozen base plus the adapters' weight
gradients (about 2x the forward); under full fine-tuning weight gradients too (about 3x). Elementwise work (norms,
activations, RoPE) is not counted, and neither is gradient checkpointing's recomputation: these are model FLOPs,
so MFU = model FLOPs per second / the GPU's dense bf16 peak, as PaLM defines it.
"""

from __future__ import annotations

import os

import torch

from ltx2train.config import Config
from ltx2train.analysis.fake import build_transformer, fake_mode, fake_parameters, quiet_diffusers, step_inputs
from ltx2train.analysis.tokens import Tokens

# Dense bf16 tensor-core peaks (no sparsity) per GPU, in FLOP/s, by a substring of torch.cuda.get_device_name().
PEAK_BF16_FLOPS = (
    ("B200", 2250e12),
    ("H200", 989.4e12),
    ("GH200", 989.4e12),
    ("H100 PCIe", 756.5e12),
    ("H100", 989.4e12),
    ("H800", 989.4e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362.1e12),
    ("L40", 181e12),
    ("A6000", 154.8e12),
    ("RTX 4090", 165.2e12),
    ("A10", 125e12),
    ("L4", 121e12),
)
PEAK_VARIABLE = "LTX2TRAIN_PEAK_TFLOPS"  # overrides the table (TFLOP/s per device), e.g. for a GPU not in it


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak in FLOP/s: ``$LTX2TRAIN_PEAK_TFLOPS``, else the table; None on a CPU or an
    unknown GPU (then MFU is not logged)."""
    if os.environ.get(PEAK_VARIABLE):
        return float(os.environ[PEAK_VARIABLE]) * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def _register_cpu_attention() -> None:
    """FlopCounterMode counts the CUDA attention kernels; the CPU (and fake-tensor) one is counted the same way."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    if aten._scaled_dot_product_flash_attention_for_cpu in fc.flop_registry:
        return
    fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)(
        lambda q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_flop_count(q, k, v)
    )
    fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)(
        lambda g, q, k, v, *args, out_shape=None, **kwargs: fc.sdpa_backward_flop_count(g, q, k, v)
    )


def _count(cfg: Config, spec, tokens, layers: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    mode = fake_mode()
    module = build_transformer(cfg, spec, frozen=torch.bfloat16, trained=torch.float32, fp8=False, num_layers=layers)
    module = fake_parameters(module, mode).train()
    counter = FlopCounterMode(display=False)
    with mode:
        kwargs = step_inputs(module, tokens, torch.bfloat16)
        with counter, torch.autocast("cpu", dtype=torch.bfloat16):
            video, audio = module(**kwargs)
            (video.float().square().mean() + audio.float().square().mean()).backward()
    return counter.get_total_flops()


_COUNTED: dict = {}  # (method, targets, rank, variant, tokens) -> FLOPs


def step_flops(cfg: Config, spec, *, batch: int, video: int, audio: int, text: int, fps: float = 24.0) -> int:
    """Model FLOPs of one micro-batch's forward + backward: ``batch`` samples of ``video`` / ``audio`` / ``text``
    tokens (the transformer's own sequence lengths, conditioning tokens included) for the recipe ``cfg`` and the
    transformer's ``spec``. Counted once per token count."""
    from ltx2train.lora.adapters import lora_targets

    tokens = Tokens(batch, 1, 1, video, audio, text, fps)
    key = (cfg.train.method, tuple(lora_targets(cfg.lora)), cfg.lora.rank, spec.name, str(spec.config), tokens)
    if key not in _COUNTED:
        _register_cpu_attention()
        with quiet_diffusers():
            one, layers = _count(cfg, spec, tokens, 1), spec.config["num_layers"]
            _COUNTED[key] = one if layers == 1 else one + (layers - 1) * (_count(cfg, spec, tokens, 2) - one)
    return _COUNTED[key]
