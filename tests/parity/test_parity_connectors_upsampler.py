"""Text connectors and x2 spatial upscaler parity: Lightricks' ltx_core modules against our diffusers
``LTX2TextConnectors`` / ``LTX2LatentUpsamplerModel``, loaded from the official modules' weights by their
ORIGINAL single-file keys through ``build_key_map("connectors" | "spatial_upsampler", ...)``.

What is compared
----------------
* Text path (19B, "V1"): stacked Gemma hidden states ``(B, T, 3840, layers)`` -> per-sample, per-layer masked
  mean/range normalisation (x8, padding zeroed) -> ``text_embedding_projection.aggregate_embed`` (no bias)
  -> the SAME projected features into the video and the audio ``Embeddings1DConnector`` (learnable
  registers, 1-D split RoPE, two pre-norm blocks, final RMS norm). Official side: ltx_core's
  ``EmbeddingsProcessor.process_hidden_states`` (``FeatureExtractorV1`` + both connectors, built by ltx_core's
  own connector configurators from the production header). Our side: ``LTX2TextConnectors.forward`` fed exactly
  as ``LTX2Pipeline._get_gemma_prompt_embeds`` feeds it (``torch.stack(hidden_states, -1).flatten(2, 3)``),
  with ``padding_side="left"`` as for Gemma. Compared: video context, audio context and the returned mask.
* Upscaler: ltx_core ``LatentUpsampler`` (built by ``LatentUpsamplerConfigurator`` from the production
  header) against ``LTX2LatentUpsamplerModel`` on a random latent.

Which positions are meaningful
------------------------------
With learnable registers (19B: 128) every one of the T output positions is meaningful. The connector
compacts the n valid tokens to positions ``[0, n)`` in their order, fills positions ``[n, T)`` with the
registers tiled along the sequence (``registers[i % 128]`` at absolute position i), runs the blocks with an
all-zero (attend-everything) mask, and returns that all-zero mask; the binary mask handed to the DiT is
therefore all ones. So the full ``(T, D)`` outputs are compared, and the mask is checked to be all ones on
both sides. The hidden states at pad positions are filled with large garbage (Gemma's are not zero): the
masked normalisation and the register substitution must make them irrelevant, which the batched test checks.

Production configuration and where it comes from
------------------------------------------------
ltx_core's configurators read ``config["transformer"]`` / the upscaler ``config`` stored in the safetensors
header; their defaults are NOT production (``rope_type`` "interleaved", ``connector_positional_embedding_max_pos``
[1], float32 RoPE ladder, upscaler ``mid_channels`` 512 and no rational resampler: see
``test_production_settings_match_our_variant``). ``PRODUCTION_19B_TRANSFORMER`` holds the header values those
configurators read. Sources: the ``config.transformer`` dict of ``ltx-2-19b-dev.safetensors`` as quoted
verbatim in public golden-generation code (``rope_type`` "split", ``frequencies_precision`` "float64",
``connector_num_attention_heads`` 30, ``connector_attention_head_dim`` 128, ``connector_num_layers`` 2,
``connector_num_learnable_registers`` 128, ``connector_positional_embedding_max_pos`` [4096],
``positional_embedding_theta`` 10000.0, ``caption_channels`` 3840; no ``audio_connector_*``,
``connector_apply_gated_attention`` or ``caption_proj_*`` keys, so the audio connector falls back to the video
values, attention is ungated and ltx_core picks ``FeatureExtractorV1``), confirmed by TensorRT-LLM's LTX-2
connector tests ("values in the real bundled checkpoints") and by diffusers'
``scripts/convert_ltx2_to_diffusers.py`` for "2.0" (split, double precision, base sequence length 4096).
``PRODUCTION_19B_UPSCALER`` (ltx_core vocabulary) follows from the real upscaler file's key list alone
(``tests/data/reference``): ``mid_channels`` 1024 and 4 + 4 res blocks from the shapes, ``rational_resampler``
true because the file has ``upsampler.conv.*`` and ``upsampler.blur_down.kernel`` (the plain resampler would be
``upsampler.0.*``), ``spatial_scale`` 2.0 because ``upsampler.conv`` has 4 x 1024 = num^2 x mid outputs and 2.0 is
the only supported scale with num = 2 (ratio 2/1); diffusers' conversion script agrees. Our shipped ``ltx2-19b``
connectors and spatial_upsampler specs correspond to these values key for key (first two tests).

For the 19B x2 upscaler the rational resampler is (2/1): conv -> pixel shuffle x2 -> ``BlurDownsample`` with
stride 1, which returns its input untouched in both implementations; the stored binomial kernel is unused.
So rational vs plain resampler changes key names, not the function; the key map pins the rational names.

Reductions for CPU, and why they do not change the function
------------------------------------------------------------
* Connectors, production width (``test_text_connectors_parity_production_width``): every connector setting is
  production (30 heads x 128, 2 layers, 128 registers, split RoPE over 3840 dims with the float64 ladder and
  base length 4096, theta 1e4, pre-norm RMS eps 1e-6). Reduced: the number of Gemma hidden states feeding the
  projection, 49 -> 3 (``text_proj_in_factor`` 3; ltx_core's ``_create_feature_extractor`` hard-wires 3840 x 49,
  so its V1 branch is built directly with the smaller Linear). The normalisation is per layer and the
  projection is one Linear over the flattened (hidden, layer) axis, so the layer count only sizes that Linear
  (the 49-layer one alone is 722M parameters). One left-padded prompt of T = 128 tokens (one register tile;
  production pads to 1024 = 8 tiles), batch 1: ltx_core 1.0.0's register substitution only handles batch 1.
* Connectors, batched (``test_text_connectors_parity_batched_and_padding_sides``): width 240 (30 heads x 8,
  head count, registers and RoPE settings production), T = 256 (two register tiles), three prompts of
  different lengths (full, partial, BOS only) in one diffusers batch against ltx_core prompt by prompt; and
  the same prompts RIGHT-padded to diffusers against the official left-padded result. ltx_core 1.0.0 assumes
  left padding (right-padded input loses its tokens there); Lightricks' current ltx-core (Lightricks/LTX-2
  HEAD, 1.2.0) sorts valid tokens first in ``EmbeddingsProcessor`` and substitutes registers in place, which
  makes the result padding-side independent and equal to 1.0.0's for left padding; diffusers' stable-argsort
  compaction implements that, as the test shows.
* Upscaler: production configuration unchanged (498M parameters); a (2, 128, 2, 3, 4) latent (two samples to
  exercise the (B F) frame folding of the per-frame 2-D resampler, non-square so that H/W mix-ups show).
* Random weights come from one shared normal pool (each tensor a different shifted window of it, norm scales
  around 1, the registers uniform in [-1, 1) in bf16 as ltx_core creates them): allocating and filling ~700M
  fresh parameters costs >10 s on two cores, the pool ~1 s. The official module and ours share these tensors
  (``load_state_dict(assign=True)``), so the comparison costs no second copy.

Tolerance
---------
Both sides run the same float32 operations in the same order (Linear, SDPA with an additive zero mask, the
same RMS norms, tanh-GELU, the same split-RoPE rotation with the same float64-computed frequency ladder, the
same convs/GroupNorms/pixel shuffle). Measured on torch 2.13 CPU: max |diff| = 0.0 for video context, audio
context, mask and upscaler output (bit-identical; outputs of magnitude ~5-8), also for the batched left-padded
prompts; 7.2e-7 for right-padded prompts against the official left-padded result (the same tokens in another
order, so the normalisation's masked sums run in another order). Asserted: ``atol = rtol = 1e-5``, headroom for
other kernels, while each wrong RoPE setting moves the output well past it: rope type or base length 0.15-0.2
(``test_connector_rope_settings_are_pinned_by_parity``), a float32 instead of float64 frequency ladder
2.4e-4 at production width (asserted > 1e-4; only 3e-5 at width 240, where the ladder is shorter).
"""

from __future__ import annotations

import pytest
import torch

from conftest import load_reference
from ltx2train.models.key_maps import build_key_map, original_keys_with_shapes
from ltx2train.models.specs import ComponentSpec, load_variant

pytestmark = pytest.mark.parity

# ltx_core imports neither torchaudio nor anything else missing for these modules: no stub needed.
ltx_gemma = pytest.importorskip("ltx_core.text_encoders.gemma", reason="ltx-core (the reference) is not installed")
from ltx_core.model.transformer.rope import LTXRopeType  # noqa: E402
from ltx_core.model.upsampler import LatentUpsamplerConfigurator  # noqa: E402
from ltx_core.model.upsampler.spatial_rational_resampler import SpatialRationalResampler  # noqa: E402
from ltx_core.text_encoders.gemma.embeddings_connector import (  # noqa: E402
    AudioEmbeddings1DConnectorConfigurator,
    Embeddings1DConnectorConfigurator,
)
from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1  # noqa: E402

# The keys of config["transformer"] in the ltx-2-19b-dev.safetensors header that the connector configurators
# and the feature-extractor selection read (sources in the module docstring). ltx_core 1.0.0 takes the register
# count and theta from its constructor defaults (128, 1e4), which equal these header values.
PRODUCTION_19B_TRANSFORMER = {
    "caption_channels": 3840,
    "rope_type": "split",
    "frequencies_precision": "float64",
    "positional_embedding_theta": 10000.0,
    "connector_num_attention_heads": 30,
    "connector_attention_head_dim": 128,
    "connector_num_layers": 2,
    "connector_num_learnable_registers": 128,
    "connector_positional_embedding_max_pos": [4096],
}
# config of ltx-2-spatial-upscaler-x2-1.0.safetensors, in ltx_core's vocabulary.
PRODUCTION_19B_UPSCALER = {
    "_class_name": "LatentUpsampler",
    "in_channels": 128,
    "mid_channels": 1024,
    "num_blocks_per_stage": 4,
    "dims": 3,
    "spatial_upsample": True,
    "temporal_upsample": False,
    "spatial_scale": 2.0,
    "rational_resampler": True,
}
GEMMA_HIDDEN_STATES_19B = 49  # Gemma 3 12B: embeddings + 48 layers
ATOL = RTOL = 1e-5

_CONNECTOR_FILE_PREFIXES = (
    "text_embedding_projection.",
    "model.diffusion_model.video_embeddings_connector.",
    "model.diffusion_model.audio_embeddings_connector.",
)


# --- building both sides ------------------------------------------------------------------------------
def _reference_connector_keys() -> dict[str, tuple[int, ...]]:
    main, _ = load_reference("ltx2-19b")
    return {k: v for k, v in main.items() if k.startswith(_CONNECTOR_FILE_PREFIXES)}


def _official_text_stack(transformer: dict, gemma_hidden_states: int) -> torch.nn.Module:
    """ltx_core's EmbeddingsProcessor with parameters on the meta device.

    The connectors come from ltx_core's own configurators. The feature extractor is the V1 branch of
    ``_create_feature_extractor`` (chosen for 19B, see the first test), built directly because that function
    hard-wires Gemma 3 12B's 3840 x 49 input.
    """
    from accelerate import init_empty_weights

    config = {"transformer": transformer}
    hidden = transformer["connector_num_attention_heads"] * transformer["connector_attention_head_dim"]
    with init_empty_weights(include_buffers=False):
        video = Embeddings1DConnectorConfigurator.from_config(config)
        audio = AudioEmbeddings1DConnectorConfigurator.from_config(config)
        aggregate_embed = torch.nn.Linear(hidden * gemma_hidden_states, hidden, bias=False)
        extractor = FeatureExtractorV1(aggregate_embed=aggregate_embed, is_av=True)
    return ltx_gemma.EmbeddingsProcessor(feature_extractor=extractor, video_connector=video, audio_connector=audio)


def _fill_random_(module: torch.nn.Module, seed: int, std: float = 0.02) -> None:
    """Replace every (meta) parameter by random values: shifted windows of one shared N(0, std) pool, norm
    scales 1 + 10 x window (about 1 +- 0.2), registers U[-1, 1) in their own dtype (bf16 in ltx_core)."""
    slots = [(owner, name, p) for owner in module.modules() for name, p in owner._parameters.items() if p is not None]
    max_shift = 1_000_003
    generator = torch.Generator().manual_seed(seed)
    pool = torch.empty(max(p.numel() for *_, p in slots) + max_shift).normal_(0.0, std, generator=generator)
    shifts = torch.randint(0, max_shift, (len(slots),), generator=generator).tolist()
    for (owner, name, param), shift in zip(slots, shifts):
        window = pool[shift : shift + param.numel()].view(param.shape)
        if name == "learnable_registers":
            value = torch.rand(param.shape, generator=generator).mul_(2.0).sub_(1.0)
        elif name == "weight" and param.ndim == 1:  # RMSNorm / GroupNorm scale
            value = 1.0 + 10.0 * window
        else:
            value = window
        owner._parameters[name] = torch.nn.Parameter(value.to(param.dtype), requires_grad=False)


def _text_checkpoint(processor: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The official modules' tensors under the single-file keys, each found the way ltx_core's loader finds
    it: ``EMBEDDINGS_PROCESSOR_KEY_OPS`` maps a file key to the module key."""
    state = processor.state_dict()
    checkpoint = {}
    for key in _reference_connector_keys():
        checkpoint[key] = state.pop(ltx_gemma.EMBEDDINGS_PROCESSOR_KEY_OPS.apply_to_key(key))
    assert not state, f"official tensors with no key in the real file: {sorted(state)}"
    return checkpoint


def _ours(component: str, checkpoint: dict[str, torch.Tensor], **overrides) -> torch.nn.Module:
    """Our shipped 19B spec (with ``overrides``), loaded strictly from original-key tensors via our key map."""
    spec = load_variant("ltx2-19b").component(component)
    module = ComponentSpec(spec.name, spec.class_name, {**spec.config, **overrides}).build(meta=True)
    key_map = build_key_map(component, module, family="2.0")
    assert key_map.original_keys == set(checkpoint)
    converted, passthrough = key_map.convert_to_diffusers(checkpoint, source="ltx_core modules", strict=True)
    assert not passthrough
    # float32 like the official compute; shares storage except for the bf16 registers
    module.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True, assign=True)
    return module.eval()


# --- inputs -------------------------------------------------------------------------------------------
def _gemma_hidden_states(valid_lengths, seq_len, hidden, layers, seed) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Stand-ins for Gemma's ``output_hidden_states``: ``layers`` tensors (B, T, hidden), LEFT-padded as Gemma
    is used, with a binary mask (B, T). Each layer has its own scale and offset (removed by the per-layer
    normalisation); pad positions hold large garbage, as real pad hidden states are not zero."""
    generator = torch.Generator().manual_seed(seed)
    batch = len(valid_lengths)
    mask = torch.zeros(batch, seq_len, dtype=torch.int64)
    for row, n in enumerate(valid_lengths):
        mask[row, seq_len - n :] = 1
    keep = mask.bool()[..., None]
    states = []
    for layer in range(layers):
        tokens = torch.randn(batch, seq_len, hidden, generator=generator) * (0.5 + layer) + 0.3 * layer
        garbage = 50.0 * torch.randn(batch, seq_len, hidden, generator=generator)
        states.append(torch.where(keep, tokens, garbage))
    return states, mask


def _to_right_padding(states: list[torch.Tensor], mask: torch.Tensor):
    """The same prompts right-padded: each row's valid tokens first, its pad positions after."""
    order = torch.argsort(1 - mask, dim=1, stable=True)  # (B, T): valid positions first, in order
    gather = lambda x: torch.gather(x, 1, order[..., None].expand_as(x))  # noqa: E731
    return [gather(s) for s in states], torch.gather(mask, 1, order)


def _prompt_embeds(states: list[torch.Tensor]) -> torch.Tensor:
    """As ``LTX2Pipeline._get_gemma_prompt_embeds``: stack on a new last dim, flatten (hidden, layer)."""
    return torch.stack(states, dim=-1).flatten(2, 3)  # (B, T, hidden * layers)


def _official_outputs(processor, states, mask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ltx_core, prompt by prompt (its register substitution in 1.0.0 handles batch 1 only)."""
    video, audio, out_mask = [], [], []
    for row in range(mask.shape[0]):
        out = processor.process_hidden_states(tuple(s[row : row + 1] for s in states), mask[row : row + 1], "left")
        video.append(out.video_encoding)
        audio.append(out.audio_encoding)
        out_mask.append(out.attention_mask)
    return torch.cat(video), torch.cat(audio), torch.cat(out_mask)


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _assert_text_parity(ours_out, official_out) -> dict[str, float]:
    diffs = {}
    for name, mine, theirs in zip(("video", "audio", "mask"), ours_out, official_out):
        assert mine.shape == theirs.shape, (name, mine.shape, theirs.shape)
        diffs[name] = _max_abs_diff(mine, theirs)
        torch.testing.assert_close(mine.to(theirs.dtype), theirs, atol=ATOL, rtol=RTOL, msg=lambda m: f"{name}: {m}")
    # registers fill every padded position: the DiT attends to all T positions of both contexts
    assert bool((ours_out[2] == 1).all()) and bool((official_out[2] == 1).all())
    return diffs


# --- the production configuration ---------------------------------------------------------------------
def test_production_configs_reproduce_the_checkpoint_layouts():
    """ltx_core built from the production headers has exactly the real files' keys and shapes (through
    ltx_core's own loader key ops), and so does our spec through our key map."""
    reference = _reference_connector_keys()
    assert len(reference) == 59
    with torch.device("meta"):
        processor = ltx_gemma.EmbeddingsProcessorConfigurator.from_config({"transformer": PRODUCTION_19B_TRANSFORMER})
        upsampler = LatentUpsamplerConfigurator.from_config(PRODUCTION_19B_UPSCALER)
    module_shapes = {k: tuple(v.shape) for k, v in processor.state_dict().items()}
    via_loader = {ltx_gemma.EMBEDDINGS_PROCESSOR_KEY_OPS.apply_to_key(k): shape for k, shape in reference.items()}
    assert via_loader == module_shapes

    _, upscaler_reference = load_reference("ltx2-19b")
    assert {k: tuple(v.shape) for k, v in upsampler.state_dict().items()} == upscaler_reference

    for component, expected in (("connectors", reference), ("spatial_upsampler", upscaler_reference)):
        ours = load_variant("ltx2-19b").component(component).build(meta=True)
        assert original_keys_with_shapes(build_key_map(component, ours, "2.0"), ours) == expected, component


def test_production_settings_match_our_variant():
    """Every numerics-relevant setting ltx_core derives from the production headers has its counterpart in our
    shipped ``ltx2-19b`` spec; ltx_core's configurator defaults would differ, hence the header values."""
    with torch.device("meta"):
        processor = ltx_gemma.EmbeddingsProcessorConfigurator.from_config({"transformer": PRODUCTION_19B_TRANSFORMER})
        defaults = Embeddings1DConnectorConfigurator.from_config({})
        upsampler = LatentUpsamplerConfigurator.from_config(PRODUCTION_19B_UPSCALER)
        default_upsampler = LatentUpsamplerConfigurator.from_config({})
    cfg = load_variant("ltx2-19b").component("connectors").config

    for modality, connector in (("video", processor.video_connector), ("audio", processor.audio_connector)):
        heads = cfg[f"{modality}_connector_num_attention_heads"]
        assert connector.num_attention_heads == heads
        assert connector.inner_dim == heads * cfg[f"{modality}_connector_attention_head_dim"] == cfg["caption_channels"]
        assert len(connector.transformer_1d_blocks) == cfg[f"{modality}_connector_num_layers"]
        assert connector.num_learnable_registers == cfg[f"{modality}_connector_num_learnable_registers"]
        assert (connector.transformer_1d_blocks[0].attn1.to_gate_logits is not None) == cfg[f"{modality}_gated_attn"]
        assert connector.rope_type.value == cfg["rope_type"] == "split"
        assert connector.double_precision_rope == cfg["rope_double_precision"] is True
        # ltx_core: position i / max_pos[0]; diffusers: i / connector_rope_base_seq_len
        assert connector.positional_embedding_max_pos == [cfg["connector_rope_base_seq_len"]] == [4096]
        assert connector.positional_embedding_theta == cfg["rope_theta"]
    extractor = processor.feature_extractor
    assert isinstance(extractor, FeatureExtractorV1) and extractor.is_av  # one projection feeds both connectors
    assert not cfg["per_modality_projections"]
    assert (extractor.aggregate_embed.bias is not None) == cfg["proj_bias"]
    assert extractor.aggregate_embed.in_features == cfg["caption_channels"] * cfg["text_proj_in_factor"]
    assert cfg["text_proj_in_factor"] == GEMMA_HIDDEN_STATES_19B
    # ltx_core's own defaults are not the production connector
    assert defaults.rope_type is LTXRopeType.INTERLEAVED and defaults.positional_embedding_max_pos == [1]
    assert not defaults.double_precision_rope

    up = load_variant("ltx2-19b").component("spatial_upsampler").config
    assert (upsampler.in_channels, upsampler.mid_channels, upsampler.num_blocks_per_stage, upsampler.dims) == (
        up["in_channels"],
        up["mid_channels"],
        up["num_blocks_per_stage"],
        up["dims"],
    )
    assert upsampler.spatial_upsample == up["spatial_upsample"]
    assert upsampler.temporal_upsample == up["temporal_upsample"]
    assert isinstance(upsampler.upsampler, SpatialRationalResampler) == up["use_rational_resampler"] is True
    assert upsampler.upsampler.scale == up["rational_spatial_scale"] == 2.0
    assert (upsampler.upsampler.num, upsampler.upsampler.den) == (2, 1)  # blur stride 1: the blur is a no-op
    assert default_upsampler.mid_channels == 512 and not default_upsampler.rational_resampler


# --- numerical parity ---------------------------------------------------------------------------------
def test_text_connectors_parity_production_width():
    """Production connectors (30 x 128, 2 layers, 128 registers, split float64 RoPE over 4096), 3 Gemma hidden
    states instead of 49, one left-padded prompt of 77 tokens in T = 128. Measured max |diff|: 0.0."""
    layers, seq_len = 3, 128
    processor = _official_text_stack(PRODUCTION_19B_TRANSFORMER, layers)
    _fill_random_(processor, seed=19)
    processor.eval()
    checkpoint = _text_checkpoint(processor)
    ours = _ours("connectors", checkpoint, text_proj_in_factor=layers)
    # control: a float32 RoPE frequency ladder (ltx_core's default frequencies_precision) instead of float64
    float32_ladder = _ours("connectors", checkpoint, text_proj_in_factor=layers, rope_double_precision=False)

    states, mask = _gemma_hidden_states([77], seq_len, 3840, layers, seed=0)
    with torch.no_grad():
        official = _official_outputs(processor, states, mask)
        mine = ours(_prompt_embeds(states), mask, padding_side="left")
        wrong = float32_ladder(_prompt_embeds(states), mask, padding_side="left")
    diffs = _assert_text_parity(mine, official)
    assert official[0].abs().max() > 1.0 and official[1].abs().max() > 1.0  # not a trivially small output
    print(f"production-width connectors: max |diff| {diffs}")
    # measured 2.4e-4 (video) / 2.2e-4 (audio): the production float64 ladder is pinned by parity too
    for name, w, o in (("video", wrong[0], official[0]), ("audio", wrong[1], official[1])):
        assert _max_abs_diff(w, o) > 10 * ATOL, f"{name}: float32 ladder indistinguishable from production"


def _reduced_connector_models(seed: int):
    """Width 240 = 30 heads x 8 (head count, registers and every RoPE setting production), 3 hidden states."""
    layers = 3
    transformer = {**PRODUCTION_19B_TRANSFORMER, "connector_attention_head_dim": 8, "caption_channels": 240}
    processor = _official_text_stack(transformer, layers)
    _fill_random_(processor, seed=seed)
    processor.eval()
    overrides = dict(
        caption_channels=240,
        text_proj_in_factor=layers,
        video_connector_attention_head_dim=8,
        audio_connector_attention_head_dim=8,
    )
    return processor, _text_checkpoint(processor), overrides, layers


def test_text_connectors_parity_batched_and_padding_sides():
    """Three prompts (256, 100 and 1 valid tokens; T = 256, two register tiles) in one diffusers batch against
    ltx_core prompt by prompt; left padding, then the same prompts right-padded to diffusers against the official
    left-padded result (padding-side independence, as in ltx-core HEAD). Measured max |diff|: 0.0 (left),
    7.2e-7 (right)."""
    processor, checkpoint, overrides, layers = _reduced_connector_models(seed=7)
    ours = _ours("connectors", checkpoint, **overrides)
    states, mask = _gemma_hidden_states([256, 100, 1], 256, 240, layers, seed=1)
    with torch.no_grad():
        official = _official_outputs(processor, states, mask)
        left = ours(_prompt_embeds(states), mask, padding_side="left")
        right_states, right_mask = _to_right_padding(states, mask)
        right = ours(_prompt_embeds(right_states), right_mask, padding_side="right")
        # other garbage at the pad positions: nothing may change
        regarbaged = [torch.where(mask.bool()[..., None], s, -s.flip(1)) for s in states]
        regarbaged_out = ours(_prompt_embeds(regarbaged), mask, padding_side="left")
    print(f"batched, left padding: max |diff| {_assert_text_parity(left, official)}")
    print(f"batched, right padding: max |diff| {_assert_text_parity(right, official)}")
    for a, b in zip(left, regarbaged_out):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "override",
    [
        {"rope_type": "interleaved"},  # LTX2TextConnectors' class default and ltx_core's configurator default
        {"connector_rope_base_seq_len": 1},  # ltx_core's default connector_positional_embedding_max_pos [1]
        {"connector_rope_base_seq_len": 1024},  # e.g. the prompt length instead of the header's 4096
    ],
    ids=lambda o: next(iter(o.items()))[0] + "=" + str(next(iter(o.values()))),
)
def test_connector_rope_settings_are_pinned_by_parity(override):
    """Control: a wrong connector RoPE setting moves the output far beyond the parity tolerance (measured
    0.15 to 0.21), so the parity tests pin the production values. The subtler float32-ladder control
    (``rope_double_precision`` False) runs at production width, where it is 24x the tolerance."""
    processor, checkpoint, overrides, layers = _reduced_connector_models(seed=7)
    wrong = _ours("connectors", checkpoint, **overrides, **override)
    states, mask = _gemma_hidden_states([100], 128, 240, layers, seed=2)
    with torch.no_grad():
        official = _official_outputs(processor, states, mask)
        mine = wrong(_prompt_embeds(states), mask, padding_side="left")
    assert _max_abs_diff(mine[0], official[0]) > 1e-2
    assert _max_abs_diff(mine[1], official[1]) > 1e-2


def test_spatial_upsampler_parity_production():
    """Production x2 upscaler (mid 1024, 4 + 4 res blocks, rational 2/1 resampler), latent (2, 128, 2, 3, 4)
    -> (2, 128, 2, 6, 8). Measured max |diff|: 0.0."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):  # the blur kernel buffer stays real
        official = LatentUpsamplerConfigurator.from_config(PRODUCTION_19B_UPSCALER)
    _fill_random_(official, seed=2)
    official.eval()
    checkpoint = official.state_dict()  # the upscaler file has no key prefix
    _, upscaler_reference = load_reference("ltx2-19b")
    assert set(checkpoint) == set(upscaler_reference)
    ours = _ours("spatial_upsampler", checkpoint)
    assert torch.equal(ours.upsampler.blur_down.kernel, official.upsampler.blur_down.kernel)
    assert ours.upsampler.blur_down.stride == official.upsampler.blur_down.stride == 1

    latent = torch.randn(2, 128, 2, 3, 4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = official(latent)
        actual = ours(latent)
    assert expected.shape == actual.shape == (2, 128, 2, 6, 8)
    assert expected.abs().max() > 1.0
    diff = _max_abs_diff(actual, expected)
    torch.testing.assert_close(actual, expected, atol=ATOL, rtol=RTOL)
    print(f"spatial upscaler: max |diff| {diff}")
