"""The fake-tensor toolkit: the recipe's transformer built on the meta device with its method applied, its
parameters as fake tensors (shapes and dtypes, no memory), its step inputs, and a dispatch mode counting the bytes of
the tensor storages alive. The memory simulation and the FLOP counter run on it."""

from __future__ import annotations

import contextlib
import weakref

import torch

from ltx2train.config import Config
from ltx2train.analysis.tokens import Tokens


def build_transformer(cfg: Config, spec, *, frozen: torch.dtype, trained: torch.dtype, fp8: bool, num_layers: int = 1):
    """The recipe's transformer on the meta device with ``num_layers`` blocks, the method applied: LoRA adapters
    (as ``training/methods/lora.py`` adds them) or every weight trained, in the given dtypes."""
    from ltx2train.models.specs import ComponentSpec

    module = ComponentSpec(spec.name, spec.class_name, dict(spec.config, num_layers=num_layers)).build(meta=True)
    module.to(frozen)
    if fp8:
        from ltx2train.memory.fp8 import store_fp8

        store_fp8(module, "transformer", compute_dtype=compute_dtype_of(frozen))
    if cfg.train.method == "full":
        module.requires_grad_(True)
        for p in module.parameters():
            p.data = p.data.to(trained)
        return module
    from accelerate import init_empty_weights

    from ltx2train.lora.adapters import casts_adapter_inputs, set_adapter_input_cast, training_lora_config

    module.requires_grad_(False)
    with init_empty_weights():
        module.add_adapter(training_lora_config(cfg.lora))
    set_adapter_input_cast(module, casts_adapter_inputs(cfg))
    for name, p in module.named_parameters():
        if "lora_" in name:
            p.data = p.data.to(trained)
            p.requires_grad_(True)
    return module


def compute_dtype_of(dtype: torch.dtype) -> torch.dtype:
    """The dtype a float8 layer of a ``dtype`` model computes in."""
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def fake_parameters(module: torch.nn.Module, mode) -> torch.nn.Module:
    """Parameters and buffers as fake CPU tensors of the same shapes and dtypes (no memory)."""
    with mode:
        for sub in module.modules():
            for name, p in list(sub._parameters.items()):
                if p is not None:
                    sub._parameters[name] = torch.nn.Parameter(
                        torch.empty(p.shape, dtype=p.dtype), requires_grad=p.requires_grad
                    )
            for name, b in list(sub._buffers.items()):
                if b is not None:
                    sub._buffers[name] = torch.zeros(b.shape, dtype=b.dtype)
    return module


def step_inputs(module, tokens: Tokens, dtype: torch.dtype) -> dict:
    """The transformer's keyword arguments for ``tokens`` (``models/forward.py`` builds them), in ``dtype``."""
    from ltx2train.models.forward import AudioTokens, VideoTokens, transformer_kwargs
    from ltx2train.models.text_encoder import TextContext

    c, b = module.config, tokens.batch
    sigma = torch.rand(b)
    # the connectors' outputs: Gemma's width for LTX-2 (the transformer projects them), the attention widths for 2.3
    video_dim, audio_dim = (
        (c.caption_channels, c.caption_channels)
        if c.use_prompt_embeddings
        else (c.cross_attention_dim, c.audio_cross_attention_dim)
    )
    context = TextContext(
        torch.randn(b, tokens.text, video_dim, dtype=dtype),
        torch.randn(b, tokens.text, audio_dim, dtype=dtype),
        None,  # the connectors' mask: all ones, passed as None (``connect_text``)
    )
    video = VideoTokens(
        torch.randn(b, tokens.video, c.in_channels, dtype=dtype),
        sigma[:, None].expand(b, tokens.video).contiguous(),
        tokens.frames,
        tokens.height,
        tokens.width,
        tokens.fps,
    )
    audio = AudioTokens(torch.randn(b, tokens.audio, c.audio_in_channels, dtype=dtype), sigma)
    return transformer_kwargs(video, audio, context, sigma, use_cross_timestep=True, device="cpu")


def step_targets(module, tokens: Tokens) -> list[torch.Tensor]:
    """Random float32 velocity targets for ``step_inputs``' video and audio tokens."""
    c = module.config
    return [
        torch.randn(tokens.batch, tokens.video, c.out_channels),
        torch.randn(tokens.batch, tokens.audio, c.audio_out_channels),
    ]


class LiveBytes(torch.utils._python_dispatch.TorchDispatchMode):
    """Bytes of the tensor storages created under this mode that are still alive (``bytes``) and their maximum
    (``peak``). Storages created while ``tag`` is set carry it (``tagged``); ``forget`` stops counting one
    (gradients, accounted apart). Views share their storage: counted once; views of ``existing`` tensors (the
    weights, the inputs) not at all."""

    def __init__(self, existing=()):
        super().__init__()
        self.bytes = self.peak = 0
        self.tag: str | None = None
        self._live: dict[int, tuple[int, str | None]] = {}
        self._ignored = {t.untyped_storage()._cdata for t in existing}  # storages made before (views of them too)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out

    def track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage._cdata
        if key in self._live or key in self._ignored:
            return
        self._live[key] = (storage.nbytes(), self.tag)
        self.bytes += storage.nbytes()
        self.peak = max(self.peak, self.bytes)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        nbytes, _ = self._live.pop(key, (0, None))
        self.bytes -= nbytes

    def forget(self, t: torch.Tensor) -> None:
        key = t.untyped_storage()._cdata
        self._ignored.add(key)
        self._free(key)

    def tag_of(self, t: torch.Tensor) -> str | None:
        return self._live.get(t.untyped_storage()._cdata, (0, None))[1]

    def tagged(self, tag: str) -> int:
        return sum(n for n, t in self._live.values() if t == tag)


def storage_bytes(tensors) -> int:
    """Bytes of the storages of ``tensors`` (each tensor once)."""
    return sum(t.untyped_storage().nbytes() for t in {id(t): t for t in tensors}.values())


@contextlib.contextmanager
def quiet_diffusers():
    """diffusers warns on every ``module.to(dtype)`` of a meta model without fp32 modules; nothing to act on here."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)
