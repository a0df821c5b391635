"""Two wastes of the training step, removed exactly: the text mask, all ones after the connectors' registers, reaches
the transformer as None (no zero bias in both text cross-attentions of every block), and PEFT's cast of each adapted
input to the adapters' float32 is off under autocast. On the tiny model the outputs and the LoRA gradients are
bit-identical either way, and what the step builds takes the cheaper way."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ltx2train.lora.adapters import casts_adapter_inputs, set_adapter_input_cast
from ltx2train.models.forward import AudioTokens, VideoTokens, transformer_kwargs
from ltx2train.models.specs import load_variant
from ltx2train.models.text_encoder import TextContext, TextEmbeddings, apply_connectors, connect_text, project_text

REPO = Path(__file__).resolve().parents[2]
MIXED = ["train.mixed_precision=bf16", "model.dtype=bfloat16"]  # a bf16 base, float32 adapters, bf16 autocast


def _cfg(*overrides):
    from ltx2train.config import load_config

    return load_config(REPO / "recipes" / "demo.yaml", ["validation.prompts=[]", *overrides])


def _connectors(registers: bool = True) -> torch.nn.Module:
    spec = load_variant("tiny").component("connectors")
    if not registers:
        none = {f"{m}_connector_num_learnable_registers": None for m in ("video", "audio")}
        spec = replace(spec, config={**spec.config, **none})
    return spec.build().to(torch.bfloat16).eval()


def _text(connectors) -> TextEmbeddings:
    """Stacked Gemma states of two prompts, left-padded (5 and 11 padding tokens of 16)."""
    mask = torch.ones(2, 16, dtype=torch.int64)
    mask[0, :5] = mask[1, :11] = 0
    return TextEmbeddings(torch.randn(2, 16, connectors.text_proj_in.in_features), mask)


def _context(connectors=None):
    connectors = connectors or _connectors()
    with torch.no_grad():
        return connect_text(connectors, project_text(connectors, _text(connectors)))


def _kwargs(context) -> dict:
    """The transformer call our forward builds (``models/forward.py``) for ``context``, on a 2x2x2 latent grid."""
    batch, sigma = context.video.shape[0], torch.full((context.video.shape[0],), 0.6)
    video = VideoTokens(torch.randn(batch, 8, 8, dtype=torch.bfloat16), sigma[:, None].expand(batch, 8), 2, 2, 2, 24.0)
    audio = AudioTokens(torch.randn(batch, 5, 8, dtype=torch.bfloat16), sigma)
    return transformer_kwargs(video, audio, context, sigma, use_cross_timestep=True, device="cpu")


def _lora_transformer(cfg) -> torch.nn.Module:
    """The tiny transformer in ``model.dtype`` with the LoRA method applied as the builder applies it; lora_B drawn
    (not zero) so that every adapter gets a gradient."""
    from ltx2train.training.methods import build_method

    spec = load_variant(cfg.model.variant)
    model = spec.component("transformer").build().to(torch.bfloat16)
    build_method(cfg, spec).apply(model, lambda _: None, fresh=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model.train()


def _step(model, kwargs, dtype=torch.bfloat16):
    """Outputs and LoRA gradients of one forward and backward under ``dtype`` autocast."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype):
        video, audio = model(**kwargs)
        loss = video.float().square().mean() + audio.float().square().mean()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    return [video.detach(), audio.detach(), *grads.values()]


def _identical(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def lora_model():
    return _lora_transformer(_cfg(*MIXED))


@pytest.mark.parametrize("registers", [True, False])
def test_the_connectors_mask_is_all_ones_and_the_call_gets_none(registers):
    """diffusers' connectors give an all-ones mask for padded prompts, with learned registers (every shipped
    variant) or without; ours give None, with the same contexts, and our call passes None on."""
    connectors = _connectors(registers)
    text = _text(connectors)
    with torch.no_grad():
        full = apply_connectors(connectors, text)
        ours = connect_text(connectors, project_text(connectors, text))
    assert bool((full.attention_mask == 1).all()) and ours.attention_mask is None
    assert torch.equal(full.video, ours.video) and torch.equal(full.audio, ours.audio)
    kwargs = _kwargs(ours)
    assert kwargs["encoder_attention_mask"] is None and kwargs["audio_encoder_attention_mask"] is None


def test_a_mask_with_zeros_reaches_the_call():
    padded = _text(_connectors()).attention_mask
    context = _context()
    kwargs = _kwargs(TextContext(context.video, context.audio, padded))
    assert kwargs["encoder_attention_mask"] is padded and kwargs["audio_encoder_attention_mask"] is padded


def test_an_all_ones_mask_and_none_give_identical_outputs_and_lora_gradients(lora_model):
    kwargs = _kwargs(_context())
    ones = torch.ones(kwargs["encoder_hidden_states"].shape[:2], dtype=torch.int64)
    masked = _step(lora_model, {**kwargs, "encoder_attention_mask": ones, "audio_encoder_attention_mask": ones})
    assert _identical(masked, _step(lora_model, kwargs))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_training_turns_the_input_cast_off_under_autocast_where_it_is_exact(lora_model, dtype):
    layers = [m for m in lora_model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    assert layers and not any(m.cast_input_dtype_enabled for m in layers)  # as the LoRA method left them
    kwargs = _kwargs(_context())
    try:
        set_adapter_input_cast(lora_model, True)
        cast = _step(lora_model, kwargs, dtype)
    finally:
        set_adapter_input_cast(lora_model, False)
    assert _identical(cast, _step(lora_model, kwargs, dtype))


@pytest.mark.parametrize(
    "overrides",
    [["train.mixed_precision=no"], [*MIXED, "lora.dropout=0.1"], [*MIXED, "distributed.backend=deepspeed"]],
    ids=["no autocast", "dropout", "deepspeed"],
)
def test_the_input_cast_stays_where_the_step_needs_it(overrides):
    assert casts_adapter_inputs(_cfg(*overrides)) and not casts_adapter_inputs(_cfg(*MIXED))


def test_sampling_turns_the_input_cast_back_on_and_restores_it(lora_model):
    """The validation pipelines run the live transformer without autocast: bf16 activations into float32
    adapters need PEFT's cast."""
    from ltx2train.inference.prompt_sampler import preserved_training_state

    layers = [m for m in lora_model.modules() if hasattr(m, "cast_input_dtype_enabled")]
    kwargs = _kwargs(_context())
    with torch.no_grad(), preserved_training_state(lora_model):
        assert all(m.cast_input_dtype_enabled for m in layers)
        video, _ = lora_model(**kwargs)  # no autocast
    assert video.dtype == torch.bfloat16 and not any(m.cast_input_dtype_enabled for m in layers)
