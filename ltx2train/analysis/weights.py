"""Weight bytes counted on meta builds: the transformer's split into block 0 and the rest, any frozen component as
stored (FP8 included), and the text encoder (Gemma) from its config."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ltx2train.config import Config
from ltx2train.analysis.fake import compute_dtype_of
from ltx2train.memory.fp8 import module_bytes


@dataclass
class WeightCounts:
    """Parameter bytes of the transformer, split into block 0 (every block alike) and the rest."""

    block_frozen: int
    block_trained: int
    outside_frozen: int
    outside_trained: int
    block_trained_numels: list[int]  # per trained tensor, for the optimizer state
    outside_trained_numels: list[int]
    block_frozen_shapes: list[tuple]  # (shape, element size) for sharding
    block_trained_shapes: list[tuple]
    outside_frozen_shapes: list[tuple]
    outside_trained_shapes: list[tuple]
    block_fp8_cast: int  # bytes in the compute dtype of block 0's float8 layers (0 without FP8)


def count_weights(module: torch.nn.Module) -> WeightCounts:
    c = WeightCounts(0, 0, 0, 0, [], [], [], [], [], [], 0)
    for name, p in module.named_parameters():
        where = "block" if name.startswith("transformer_blocks.0.") else "outside"
        kind = "trained" if p.requires_grad else "frozen"
        nbytes = p.numel() * p.element_size()
        setattr(c, f"{where}_{kind}", getattr(c, f"{where}_{kind}") + nbytes)
        getattr(c, f"{where}_{kind}_shapes").append((tuple(p.shape), p.element_size()))
        if p.requires_grad:
            getattr(c, f"{where}_trained_numels").append(p.numel())
        if where == "block" and p.dtype == torch.float8_e4m3fn:
            c.block_fp8_cast += p.numel() * 2
    return c


def component_bytes(spec, dtype: torch.dtype, fp8: bool, component: str) -> int:
    """Parameter and buffer bytes of a (frozen) component in ``dtype``, FP8 as ``store_fp8`` stores it."""
    module = spec.build(meta=True).to(dtype)
    if fp8:
        from ltx2train.memory.fp8 import store_fp8

        store_fp8(module, component, compute_dtype=compute_dtype_of(dtype))
    return module_bytes(module)


GEMMA3_12B = {  # google/gemma-3-12b-it (the LTX-2 text encoder), used when model.text_encoder is not on disk
    "text_config": dict(
        vocab_size=262208,
        hidden_size=3840,
        intermediate_size=15360,
        num_hidden_layers=48,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=256,
    ),
    "vision_config": dict(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=27,
        num_attention_heads=16,
        image_size=896,
        patch_size=14,
    ),
    "mm_tokens_per_image": 256,
}


# LTX-2.5's text encoder, LTX's fine-tuned Gemma 4 12B: 48 layers of width 3840 (MLP 15360), 5 sliding-window layers
# (256-wide heads, 8 KV heads) to each global one (512-wide heads, keys equal values, 1 KV head): the figures of its
# file's header as published third-party captures show it (tests/data/reference/README.md).
GEMMA4_12B_TEXT = dict(
    vocab_size=262144,
    hidden_size=3840,
    intermediate_size=15360,
    num_hidden_layers=48,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=256,
    global_head_dim=512,
    num_global_key_value_heads=1,
    attention_k_eq_v=True,
)


def gemma_config(cfg: Config, spec):
    """The text encoder's config: ``model.text_encoder/config.json`` if it is there; otherwise the 12B Gemma of the
    variant's kind (Gemma 3 for LTX-2 and 2.3, Gemma 4 for 2.5) when its connectors take 49 x 3840 hidden states,
    or the tiny stand-in ``models/tiny.py`` writes."""
    from pathlib import Path

    from transformers import AutoConfig

    path = Path(cfg.model.text_encoder)
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(path, local_files_only=True), str(path / "config.json")
    connectors = spec.component("connectors").config
    hidden, layers = connectors["caption_channels"], connectors["text_proj_in_factor"] - 1
    if (hidden, layers) == (3840, 48) and spec.text_encoder == "gemma4_unified":
        from transformers import Gemma4UnifiedConfig, Gemma4UnifiedTextConfig

        return Gemma4UnifiedConfig(
            text_config=Gemma4UnifiedTextConfig(**GEMMA4_12B_TEXT).to_dict()
        ), "Gemma 4 12B (built in)"
    if (hidden, layers) == (3840, 48):
        from transformers import Gemma3Config, Gemma3TextConfig, SiglipVisionConfig

        return Gemma3Config(
            text_config=Gemma3TextConfig(**GEMMA3_12B["text_config"]),
            vision_config=SiglipVisionConfig(**GEMMA3_12B["vision_config"]),
            mm_tokens_per_image=GEMMA3_12B["mm_tokens_per_image"],
        ), "Gemma 3 12B (built in)"
    from ltx2train.models.tiny import build_tiny_gemma

    return build_tiny_gemma(
        hidden_size=hidden, num_layers=layers, kind=spec.text_encoder
    ).config, "the tiny Gemma stand-in"


def gemma_bytes(config, dtype: torch.dtype, fp8: bool) -> int:
    import transformers
    from accelerate import init_empty_weights

    from ltx2train.models.text_encoder import GEMMA_CLASSES

    cls = getattr(transformers, GEMMA_CLASSES[config.model_type])
    with init_empty_weights():
        model = cls(config)
    model.tie_weights()
    model.to(dtype)
    if fp8:
        from ltx2train.memory.fp8 import store_fp8

        store_fp8(model, "text_encoder", compute_dtype=compute_dtype_of(dtype))
    return module_bytes(model)


def gemma_forward_bytes(config, tokens: int, dtype: torch.dtype) -> int:
    """``GemmaTextEncoder.encode`` of one prompt: every layer's hidden states (kept for ``output_hidden_states``)
    and their stacked copy, plus the language-model logits over the vocabulary."""
    text = getattr(config, "text_config", None) or config
    hidden = (text.num_hidden_layers + 1) * tokens * text.hidden_size * dtype.itemsize
    return 2 * hidden + tokens * text.vocab_size * dtype.itemsize
