"""FP8 storage of frozen weights (``memory.fp8_frozen``), on diffusers' layerwise casting.

Each selected ``Linear`` / ``Conv*`` / ``Embedding`` keeps its weight and bias as ``float8_e4m3fn`` and is cast
to the compute dtype just before it runs and back just after (``diffusers.hooks.apply_layerwise_casting``).
Every float8 value is exact in bfloat16, so the round trip never changes the stored weights: the only error
is the one rounding to float8 when the weights are stored. ``SKIP_PATTERNS`` says, per component, what stays in
the compute dtype (``re.search`` on module names; parameters that belong to no such layer -- norms, the AdaLN
``scale_shift_table`` tables, the connectors' registers -- are never cast).

Limits:
- Autograd keeps the compute-dtype copy of each cast weight for backward (the input gradient needs it). Without
  gradient checkpointing a step holds every cast layer's weights in the compute dtype until backward, so the
  step's peak is not lower than without FP8; with ``train.gradient_checkpointing`` only the block being
  recomputed holds its copy.
- Casting a module already on the GPU halves what it keeps, not the peak of loading it: load on the host,
  store in FP8, then move it (``training/builder.py`` does).
- A LoRA goes on top of the FP8 layers, never under them: PEFT then makes its adapters in float8 (the base
  layer's dtype) and the method casts them to float32; ``redraw_lora_init`` redraws their random half in
  float32 (the other order fails at the first forward in diffusers 0.42).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ltx2train.utils.format import format_bytes
from ltx2train.utils.errors import UserError

STORAGE_DTYPE = torch.float8_e4m3fn
# diffusers' DEFAULT_SKIP_MODULES_PATTERN (norms, patch embeddings, the top-level proj_in / proj_out), spelled out
# so that a diffusers release that changes its default does not change what this package stores in FP8.
DEFAULT_SKIPS = ("pos_embed", "patch_embed", "norm", "^proj_in$", "^proj_out$")
SKIP_PATTERNS = {
    # Only the transformer blocks (about 98% of LTX-2 19B's weights). Outside them the few weights that condition
    # every token stay precise: the video/audio patchify projections, the caption projections, the timestep
    # embeddings and the AdaLN / cross-modal modulation that feeds every block.
    "transformer": (*DEFAULT_SKIPS, r"^(?!transformer_blocks$)[^.]+$"),  # every top-level child but the blocks
    # The connector transformers. The feature extractor's projection (text_proj_in, LTX-2.3: video_/audio_
    # text_proj_in) stays: project_text and the inference pipeline read the connectors' compute dtype from their
    # first parameter, which is that projection's weight (in FP8 they would feed float8 prompts: masked_fill fails).
    "connectors": (*DEFAULT_SKIPS, "text_proj_in"),
    "video_vae": DEFAULT_SKIPS,
    "audio_vae": DEFAULT_SKIPS,
    # Gemma 3: the language model's (and the unused vision tower's) layers. The token embedding stays: its
    # ``embed_scale`` buffer would be rounded (sqrt(hidden) 5.657 -> 5.5 at hidden 32) and the tied lm_head shares
    # its weight, so casting lm_head would store the embedding table in FP8 too.
    "text_encoder": (*DEFAULT_SKIPS, "embed_tokens", "lm_head"),
}


@dataclass
class Fp8Report:
    component: str
    layers: int  # layers stored in FP8
    cast_bytes_before: int  # their weights' bytes before / after
    cast_bytes_after: int
    bytes_before: int  # the whole component's parameter bytes before / after
    bytes_after: int

    @property
    def saved(self) -> int:
        return self.bytes_before - self.bytes_after

    def describe(self) -> str:
        return f"{self.component} {format_bytes(self.bytes_before)} -> {format_bytes(self.bytes_after)}"


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters and buffers (a tensor held twice counted once)."""
    tensors = {id(t): t for t in [*module.parameters(), *module.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def param_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters (a tied parameter counted once)."""
    return sum(p.numel() * p.element_size() for p in module.parameters())


def fp8_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The layers of ``module`` stored in FP8 (those carrying a layerwise-casting hook), by name."""
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK

    return {
        name: m
        for name, m in module.named_modules()
        if getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook.get_hook(_LAYERWISE_CASTING_HOOK)
    }


def store_fp8(
    module: torch.nn.Module,
    component: str,
    compute_dtype: torch.dtype = torch.bfloat16,
    storage_dtype: torch.dtype = STORAGE_DTYPE,
) -> Fp8Report:
    """Store ``component``'s frozen layers (but ``SKIP_PATTERNS[component]``) as float8 (``storage_dtype``: e4m3fn,
    or e5m2), computed in ``compute_dtype`` (the dtype the rest of the module runs in). Call it before any adapter
    is added."""
    from diffusers.hooks import apply_layerwise_casting

    if component not in SKIP_PATTERNS:
        raise UserError(f"memory.fp8_frozen: unknown component {component!r}; expected one of {sorted(SKIP_PATTERNS)}")
    if any("lora_" in name for name, _ in module.named_parameters()):
        raise UserError(f"{component}: store_fp8 must run before adapters are added (they would be cast too)")
    if fp8_layers(module):
        raise UserError(f"{component}: already stored in FP8")
    before = {name: param_bytes(m) for name, m in module.named_modules()}
    if storage_dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
        raise UserError(f"{component}: FP8 storage is float8_e4m3fn or float8_e5m2, not {storage_dtype}")
    apply_layerwise_casting(module, storage_dtype, compute_dtype, skip_modules_pattern=SKIP_PATTERNS[component])
    layers = fp8_layers(module)
    return Fp8Report(
        component,
        len(layers),
        sum(before[name] for name in layers),
        sum(param_bytes(m) for m in layers.values()),
        before[""],
        param_bytes(module),
    )


@torch.no_grad()
def redraw_lora_init(module: torch.nn.Module) -> int:
    """Redraw every LoRA ``lora_A`` in its own (float32) dtype, the way PEFT's default init
    (``init_lora_weights=True``) draws it: Kaiming-uniform, a = sqrt(5); ``lora_B`` stays zero. Returns how many
    were redrawn.

    PEFT creates adapters in the base layer's dtype, so over an FP8 base its initial draw is rounded to float8:
    with 4096 inputs every value lies in float8's subnormal range (below 2**-6) and keeps one of 17 levels."""
    from peft.tuners.lora import LoraLayer

    redrawn = 0
    for layer in module.modules():
        if isinstance(layer, LoraLayer):
            for adapter in layer.lora_A.values():
                torch.nn.init.kaiming_uniform_(adapter.weight, a=math.sqrt(5))
                redrawn += 1
    return redrawn
