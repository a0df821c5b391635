"""Activation memory, simulated: one training step (and the validation forward, the VAE decode) on fake tensors at
the recipe's token counts, counting the live tensor storages (``analysis/estimate.py`` explains the model)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ltx2train.config import Config
from ltx2train.analysis.fake import LiveBytes, build_transformer, fake_mode, fake_parameters, step_inputs, storage_bytes
from ltx2train.analysis.precision import Precision
from ltx2train.analysis.tokens import Tokens
from ltx2train.utils.autograd import in_backward


@dataclass
class StepActivations:
    """One simulated step (bytes): see the module docstring."""

    inputs: int  # the transformer's inputs and the loss targets
    block: int  # what block 0 leaves alive at the end of the forward (per block)
    outside: int  # the rest alive at the end of the forward
    transient: int  # the peak's excess over the end of the forward (backward working set, recomputation)
    saved_block: int  # what autograd saves for backward, per block / outside (activation offload moves it)
    saved_outside: int
    seconds: float = 0.0

    def at_end_of_forward(self, layers: int) -> int:
        return self.outside + layers * self.block

    def saved(self, layers: int) -> int:
        return self.saved_outside + layers * self.saved_block


def simulate_step(cfg: Config, spec, precision: Precision, tokens: Tokens) -> StepActivations:
    """Forward, loss and backward of the recipe's transformer with two blocks (one if it has one), on fake tensors.
    Two, because the backward's working set reaches its size only where one block's backward meets the next."""
    import time

    started = time.perf_counter()
    mode = fake_mode()
    weights, blocks = precision.gathered or None, min(2, spec.config["num_layers"])
    module = build_transformer(
        cfg,
        spec,
        frozen=weights or precision.frozen,
        trained=weights or precision.trained,
        fp8=False,
        num_layers=blocks,
    )
    module = fake_parameters(module, mode).train()
    if cfg.train.gradient_checkpointing:
        module.enable_gradient_checkpointing()
    with mode:
        kwargs = step_inputs(module, tokens, module.dtype)
        targets = [torch.randn(kwargs["hidden_states"].shape), torch.randn(kwargs["audio_hidden_states"].shape)]
    given = [t for t in [*kwargs.values(), *targets] if isinstance(t, torch.Tensor)]
    inputs = storage_bytes(given)
    live, saved = LiveBytes([*module.parameters(), *module.buffers(), *given]), {}
    for p in module.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda q: live.forget(q.grad))  # gradients are a part of their own
    block = module.transformer_blocks[0]
    block.register_forward_pre_hook(lambda *_: setattr(live, "tag", None if in_backward() else "block"))
    block.register_forward_hook(lambda *_: setattr(live, "tag", None))
    params = {p.untyped_storage()._cdata for p in module.parameters()}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in params:
            saved[key] = (t.untyped_storage().nbytes(), live.tag_of(t))
        return t

    autocast = torch.autocast("cpu", dtype=precision.compute) if precision.compute else contextlib.nullcontext()
    with mode, live, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with autocast:
            video, audio = module(**kwargs)
            loss = ((video.float() - targets[0]) ** 2).mean() + ((audio.float() - targets[1]) ** 2).mean()
        end, end_block = live.bytes, live.tagged("block")
        saved_block = sum(n for n, tag in saved.values() if tag == "block")
        saved_all = sum(n for n, _ in saved.values())
        loss.backward()
    return StepActivations(
        inputs,
        end_block,
        end - blocks * end_block,
        live.peak - end,
        saved_block,
        saved_all - blocks * saved_block,
        time.perf_counter() - started,
    )


def simulate_inference(cfg: Config, spec, precision: Precision, tokens: Tokens) -> int:
    """Peak bytes (inputs and activations, not the weights) of a no-grad forward of the one-block transformer, in
    the module's dtype without autocast (the validation pipeline's way): activations do not pile up over blocks."""
    from ltx2train.lora.adapters import set_adapter_input_cast

    mode = fake_mode()
    weights = precision.gathered or None
    module = build_transformer(
        cfg, spec, frozen=weights or precision.frozen, trained=weights or precision.trained, fp8=False
    )
    module = fake_parameters(module, mode).eval()
    set_adapter_input_cast(module, True)  # as the sampler runs it (``preserved_training_state``)
    with mode:
        kwargs = step_inputs(module, tokens, module.dtype)
    given = [t for t in kwargs.values() if isinstance(t, torch.Tensor)]
    live = LiveBytes([*module.parameters(), *module.buffers(), *given])
    with mode, live, torch.no_grad():
        module(**kwargs)
    return live.peak + storage_bytes(given)


def simulate_vae(spec, dtype: torch.dtype, shape: tuple, *, decode: bool, tiled: bool) -> int:
    """Peak bytes (input and activations, not the weights) of the video VAE's decode (or encode) of one ``shape``
    tensor, tiled as ``memory.tiled_vae`` tiles it."""
    mode = fake_mode()
    vae = spec.build(meta=True).to(dtype)
    vae = fake_parameters(vae, mode).eval()
    if tiled:
        from ltx2train.memory.tiling import enable_vae_tiling

        enable_vae_tiling(vae)
    with mode:
        x = torch.randn(shape, dtype=dtype)
    live = LiveBytes([*vae.parameters(), *vae.buffers(), x])
    with mode, live, torch.no_grad():
        vae.decode(x) if decode else vae.encode(x)
    return live.peak + storage_bytes([x])
