"""The embedded default: a tiny random-weight LTX-2 of the real architecture, written to disk offline.

``write_tiny_checkpoint`` produces exactly what a user downloads for the real model — repackaged split
files with original keys, the x2 upscaler file and a Gemma 3 directory with a tokenizer — so the tiny
model goes through the same loaders, trainer and sampler as the 19B model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ltx2train.models.key_maps import build_key_map
from ltx2train.models.loading import PASSTHROUGH_ATTR
from ltx2train.models.specs import VariantSpec, load_variant

# A small closed vocabulary: the words of the demo captions, plus specials. Unknown words map to <unk>.
TINY_VOCAB = (
    "<pad> <eos> <bos> <unk> a an the of and with on in to is at over under left right up down "
    "red green blue yellow orange purple white black cyan magenta "
    "circle square triangle shape shapes ball box disk star "
    "moving moves slides bounces rises falls spins grows shrinks drifts "
    "tone note pitch high low rising falling beep hum sound music "
    "background dark light small big fast slow video clip frame scene"
).split()


def random_components(variant: str | VariantSpec = "tiny", seed: int = 0) -> dict[str, torch.nn.Module]:
    """Every component of ``variant`` with random weights (diffusers' own initialisation, seeded).

    Zero-initialised output projections are re-drawn so that every path carries signal. The unused
    LTX-2 VAE statistics get their natural values (channel index; the std statistics mirror the used ones).
    """
    spec = load_variant(variant) if isinstance(variant, str) else variant
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        modules = {}
        for name in spec.components:
            module = spec.component(name).build(meta=False).eval()
            with torch.no_grad():
                for param in module.parameters():
                    if param.is_floating_point() and torch.count_nonzero(param) == 0 and param.ndim >= 1:
                        param.normal_(0.0, 0.02)
                for buf_name in ("latents_mean", "latents_std"):
                    buf = getattr(module, buf_name, None)
                    if buf is not None:
                        buf.copy_(torch.rand_like(buf) * 0.5 + (0.75 if buf_name == "latents_std" else -0.25))
            key_map = build_key_map(name, module, spec.family)
            passthrough = {}
            for key in key_map.passthrough:
                channels = module.config.latent_channels
                passthrough[key] = (
                    torch.arange(channels, dtype=torch.float32)
                    if key.endswith(".channel")
                    else torch.rand(channels) + 0.5
                )
            setattr(module, PASSTHROUGH_ATTR, passthrough)
            modules[name] = module
    finally:
        torch.random.set_rng_state(generator_state)
    return modules


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(TINY_VOCAB)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=128,
    )


def build_tiny_gemma(
    hidden_size: int = 32, num_layers: int = 2, seed: int = 0, kind: str = "gemma3"
) -> torch.nn.Module:
    """The class of the real text encoder with tiny dimensions: ``Gemma3ForConditionalGeneration`` (LTX-2, 2.3) or
    ``Gemma4UnifiedForConditionalGeneration`` (``kind="gemma4_unified"``, LTX-2.5's Gemma 4)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = (_tiny_gemma4 if kind == "gemma4_unified" else _tiny_gemma3)(hidden_size, num_layers).eval()
    finally:
        torch.random.set_rng_state(state)
    return model


_TINY_TEXT = dict(
    intermediate_size=64,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=16,
    sliding_window=16,
    max_position_embeddings=256,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
)


def _tiny_gemma3(hidden_size: int, num_layers: int) -> torch.nn.Module:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text_config = Gemma3TextConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        **{**_TINY_TEXT, "intermediate_size": 2 * hidden_size},
    )
    vision_config = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
    )
    config = Gemma3Config(text_config=text_config, vision_config=vision_config, mm_tokens_per_image=4)
    return Gemma3ForConditionalGeneration(config)


def _tiny_gemma4(hidden_size: int, num_layers: int) -> torch.nn.Module:
    """Gemma 4's layer pattern in small: sliding-window layers, the last one global with its own head width."""
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration, Gemma4UnifiedTextConfig

    layer_types = ["sliding_attention"] * (num_layers - 1) + ["full_attention"]
    text_config = Gemma4UnifiedTextConfig(
        vocab_size=len(TINY_VOCAB),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        layer_types=layer_types,
        global_head_dim=32,
        num_global_key_value_heads=1,
        **{**_TINY_TEXT, "intermediate_size": 2 * hidden_size},
    )
    return Gemma4UnifiedForConditionalGeneration(Gemma4UnifiedConfig(text_config=text_config.to_dict()))


def write_tiny_checkpoint(out_dir: str | Path, seed: int = 0, variant: str = "tiny") -> Path:
    """Write the tiny model as a user would download the real one: repackaged files + upscaler + Gemma dir."""
    from ltx2train.models.writing import save_repackaged

    out_dir = Path(out_dir)
    spec = load_variant(variant)
    modules = random_components(spec, seed)
    save_repackaged(modules, out_dir, spec.family, variant_name=spec.name)
    connectors_cfg = spec.component("connectors").config
    gemma_dir = out_dir / "gemma"
    gemma = build_tiny_gemma(
        hidden_size=connectors_cfg["caption_channels"],
        num_layers=connectors_cfg["text_proj_in_factor"] - 1,
        seed=seed,
        kind=spec.text_encoder,
    )
    gemma.save_pretrained(gemma_dir, safe_serialization=True)
    build_tiny_tokenizer().save_pretrained(gemma_dir)
    return out_dir
