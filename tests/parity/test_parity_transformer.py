"""Transformer parity: Lightricks' ltx_core ``LTXModel`` (LTX-2 19B, and LTX-2.3 at tiny widths) against our
diffusers ``LTX2VideoTransformer3DModel`` built from the shipped ``ltx2-19b`` / ``ltx2.3-22b`` specs and loaded
through ``build_key_map``. Everything below up to "LTX-2.3" is about 19B; the 2.3 tests reuse the same machinery.

Where the production configuration comes from
-----------------------------------------------
The official single file ``ltx-2-19b-dev.safetensors`` stores its configuration as JSON in the safetensors
metadata (``__metadata__["config"]``, ltx_core's vocabulary); ltx_core builds the DiT from its ``"transformer"``
section with ``LTXModelConfigurator.from_config``. ``PRODUCTION_TRANSFORMER_CONFIG_19B`` below is that section
as dumped verbatim from the 19B header into ``models/ltx2/configs/ltx2_19b_config.json`` of Wan2GP (public copy
read: github.com/utshabiswas74/wangp @ 18e3d700); its ``audio_vae`` and ``vocoder`` sections agree with the
values ``tests/parity/test_parity_audio.py`` uses, and a test below checks that ltx_core builds, from it, exactly the
keys and shapes of the real file (``tests/data/reference``). Independent tools that read the real headers quote the same
forward scalars (``av_ca_timestep_scale_multiplier`` 1000.0, ``rope_type`` "split", ``frequencies_precision``
"float64", ``positional_embedding_max_pos`` [20, 2048, 2048]). These matter because ltx_core's configurator
DEFAULTS differ from production: ``rope_type`` "interleaved", ``av_ca_timestep_scale_multiplier`` 1 and a float32
RoPE frequency grid. Production values used (all of them, only ``num_layers`` reduced):

* RoPE: ``rope_type`` split, ``frequencies_precision`` float64, theta 10000, ``positional_embedding_max_pos``
  [20, 2048, 2048], ``audio_positional_embedding_max_pos`` [20], ``use_middle_indices_grid`` true,
  ``causal_temporal_positioning`` true;
* timesteps: ``timestep_scale_multiplier`` 1000, ``av_ca_timestep_scale_multiplier`` 1000.0;
* widths: 32 x 128 video heads, 32 x 64 audio heads, cross-attention dims 4096 / 2048, 128 in/out channels,
  ``caption_channels`` 3840 with the caption projections inside the transformer (no ``caption_proj_before_connector``);
* norms: RMS norm, ``norm_eps`` 1e-6, no elementwise affine, qk RMS norm across heads; gelu-approximate FF;
  no gated attention, no cross-attention AdaLN (those are LTX-2.3).

Our shipped spec agrees with every one of these (``test_shipped_spec_matches_production_19b_config``): ``rope_type``
split, ``rope_double_precision`` true, ``timestep_scale_multiplier`` 1000, ``cross_attn_timestep_scale_multiplier``
1000, ``pos_embed_max_pos``/``audio_pos_embed_max_pos`` 20, ``base_height``/``base_width`` 2048, ``causal_offset`` 1,
``rope_theta`` 10000, ``norm_eps`` 1e-6, ``use_prompt_embeddings`` true. No spec discrepancy was found.

Why only the depth is reduced
------------------------------
Full production widths run fast enough on 2 CPU cores, so no width is reduced. With ONE block the model has
730.7M parameters (2.9 GB in float32, the tensors shared by both modules) and a forward pass takes ~0.6 s; the
whole file runs in ~14 s (two blocks: ~21 s and 5 GB; one block already exercises every kind of tensor, and the
key map of all 48 blocks is checked against the real file's keys). Weights are filled with ``uniform_`` rather
than ``normal_`` only because drawing 730M normal samples takes ~12 s on 2 cores (uniform: ~2.5 s); the
distributions are std-matched: linear weights std 1/sqrt(fan_in), biases std 0.05, q/k RMSNorm gains 1 +- 0.25,
every scale-shift table (block, a2v/v2a and output ones) std 0.2 -- so every modulation, gate and AdaLN linear is
non-zero and every branch moves the output (see the controls). The weights are set in the official module,
written under the official single-file keys (``model.diffusion_model.*``) and loaded into diffusers strictly
through our key map, sharing the tensors.

Like-for-like inputs (what each implementation is fed)
-------------------------------------------------------
* Latents: (2, 128, 3, 3, 4) video and (2, 8, 17, 16) audio latents (17 frames of 96 x 128 at 25 fps, 0.68 s of
  audio), patchified by ltx_core's ``VideoLatentPatchifier``/``AudioPatchifier`` and packed by
  ``LTX2Pipeline._pack_latents``/``_pack_audio_latents`` (checked identical).
* Positions: ltx_core's ``VideoLatentTools``/``AudioLatentTools.create_initial_state`` (pixel-space [start, end)
  bounds, causal first-frame fix, seconds / fps; audio bounds in seconds), and diffusers'
  ``rope.prepare_video_coords(..., fps)``/``audio_rope.prepare_audio_coords`` as ``LTX2Pipeline`` calls them
  (checked bit-identical).
* Text: the same (2, 16, 3840) video and audio contexts with a LEFT-padded mask (5 and 3 pad tokens), as the
  Gemma tokenizer pads; ltx_core turns it into a -finfo.max additive bias, diffusers into -10000: both underflow
  to exactly 0 after softmax.
* Timesteps, ltx_core: ``Modality.timesteps`` per token in [0, 1] (video: sigma x denoise mask with the first
  latent frame of sample 0 at 0, i.e. image conditioning; audio: sigma per token) and ``Modality.sigma`` per sample
  (video 0.7/0.35, audio 0.55/0.9: distinct, so any swap shows). diffusers takes them pre-scaled by 1000 as
  ``LTX2Pipeline`` passes them: ``timestep``/``audio_timestep`` per token and ``sigma``/``audio_sigma`` per sample.

Audio-video cross-attention timesteps (the one behavioural switch)
------------------------------------------------------------------
The AdaLN inputs of the a2v/v2a cross-attention (scale/shift and gate) are where official ltx_core releases
differ (git history of github.com/Lightricks/LTX-2, ``ltx_core/model/transformer/transformer_args.py``):

1. own timesteps -- commits 9ce438b..4dbd99e (2026-01-05 .. 02-09, the code published with the 19B model): each
   modality's own per-token timesteps feed both scale/shift and gate;
2. cross sigma -- commits 822ce3c..7df34df (2026-03-04 .. 05-11): both fed by the OTHER modality's ``sigma``.
   The installed reference wheel (ltx_core "1.0.0") is commit d230aec (2026-03-05) of this group: its transformer,
   RoPE, attention, configurator, latent tools and patchifier sources are byte-identical to that commit;
3. mixed -- commits 203d484.. (ltx_core 1.1.4, 2026-05-28, .. 1.2.0): scale/shift from the OWN per-token
   timesteps, gate from the OTHER modality's sigma (the same fix a Lightricks engineer made in ComfyUI,
   Comfy-Org/ComfyUI#14097).

diffusers reproduces rule 2 with ``use_cross_timestep=True`` (the default of ``LTX2Pipeline.__call__``): the
main parity test. ``LTX2VideoTransformer3DModel.forward`` defaults to ``use_cross_timestep=False``, rule 1; a test
shows it equals the installed ltx_core with the two sigmas swapped (uniform timesteps, where rules 1 and 2 differ
only by that swap) and differs from it as soon as tokens carry their own timesteps or the sigmas differ. No
argument of diffusers 0.42.1 expresses rule 3; ``test_ltx_core_1_1_4_cross_timestep_rule_is_not_expressible``
emulates it on both sides and shows that neither flag value reproduces it, while diffusers with the inputs of its
two scale/shift AdaLNs replaced does. The three rules coincide when every token of both modalities carries the
same sigma (plain t2av training) and differ for i2v/IC-LoRA conditioning tokens (timestep 0) or different audio
and video sigmas (e.g. audio-to-video with a frozen audio stream).

LTX-2.3 (22B)
-------------
Production config: ``PRODUCTION_TRANSFORMER_CONFIG_23``, the ``config["transformer"]`` header section in ltx_core's
vocabulary. Source: third-party header captures of the gated Lightricks files (github:SceneWorks/inference,
docs/reference/sc-18756-headers, 2026-08-18): the LTX-2.5 transformer header minus ``ff_bias`` and
``use_keyframes_abs_pos_embedding``, which those notes give as the complete 2.3 -> 2.5 transformer-config diff
(2.3 side: Kijai/LTX2.3_comfy, ``model_version`` 2.3.0). Checked here: ltx_core builds from it exactly the 4186
DiT keys and shapes of ``ltx-2.3-22b-dev.safetensors`` (``test_production_config_builds_the_real_23_layout``), and
every numerics field of our ``ltx2.3-22b`` spec follows from it (``test_shipped_spec_matches_production_23_config``).
The 19B values above all hold for 2.3 (split RoPE, float64 grid, multipliers 1000 / 1000.0, [20, 2048, 2048]); the
2.3 settings on top:

* ``apply_gated_attention`` true: a per-head gate ``2 sigmoid(to_gate_logits(x))`` on all six attentions of a block
  (ours: ``gated_attn`` / ``audio_gated_attn``);
* ``cross_attention_adaln`` true: 9-row block tables (rows 6..8: shift / scale / gate of the text cross-attention
  query, from the per-token timesteps) and ``prompt_scale_shift_table`` rows modulating the text K/V, fed by
  ``prompt_adaln_single`` from the per-sample ``Modality.sigma`` (ours: ``cross_attn_mod`` / ``audio_cross_attn_mod``,
  ``prompt_adaln`` fed ``sigma`` / ``audio_sigma``);
* ``caption_proj_before_connector`` true: no caption projection in the DiT, which receives the connectors' outputs
  at the cross-attention widths 4096 / 2048 (ours: ``use_prompt_embeddings`` false). The ``connector_*``,
  ``caption_projection_*``, ``caption_proj_input_norm`` and ``text_encoder_norm_type`` keys are read by the text
  stack, not by the DiT configurator. No header key corresponds to our ``perturbed_attn``: ltx_core's attention
  always accepts the STG perturbation mask, and without one it is a no-op on both sides.

Reduced for the parity run (``REDUCED_23``, same key names in both vocabularies): 4 x 32 video heads, 4 x 16 audio
heads, cross-attention widths 128 / 64 (so the text contexts are (2, 16, 128) / (2, 16, 64)) and 2 blocks. Latent
channels (128), RoPE, norms, multipliers and every 2.3 flag stay production, and our side is the shipped
``ltx2.3-22b`` spec with only those keys replaced. Inputs, weight distributions and key-map loading are the same as
for 19B (gate-logit linears have std 1/sqrt(fan_in), so the gates range over (0, 2); the prompt tables have std 0.2).
The whole 2.3 part takes ~5 s on 2 shared cores.

The a2v/v2a timestep code path is the same for 2.3 (no ltx_core version switches it by architecture), so the three
rules above apply unchanged. Measured (outputs: std ~1.2, max |x| ~4.9 video / ~4.5 audio):

* main parity, ``use_cross_timestep=True`` against the installed ltx_core (rule 2): 0.0 / 0.0, bit-identical;
* ``use_cross_timestep=False``: 0.97 / 0.89. Unlike 19B, this is NOT the installed ltx_core with swapped sigmas
  (0.52 / 0.86 even with uniform timesteps), because ``Modality.sigma`` also feeds the prompt AdaLN: the swap
  changes that input, and diffusers' flag does not;
* rule 3 (ltx_core >= 1.1.4), emulated as for 19B: diffusers with its two scale/shift AdaLN inputs replaced matches
  it, 0.0 / 0.0. It differs from the installed rule by 0.53 / 0.46, from ``use_cross_timestep=True`` by the same,
  and from ``False`` by 1.03 / 0.86. Also measured outside CI against the real ltx-core 1.2.0
  (github:Lightricks/LTX-2 @ 400fd310, 2026-08-16; the measurement script is not part of the project). For the 2.3
  and the 2.5 architectures at tiny widths (2.5 with and without the keyframe marker), ltx-core 1.2.0 equals that
  hooked diffusers exactly (0.0 / 0.0) and matches neither flag (2.3: 0.53 / 0.46 and 1.03 / 0.86; 2.5: ~0.73 /
  ~0.47 and ~0.7 / ~0.9). With uniform timesteps and equal audio / video sigmas, all rules agree within 1.6e-6;
* controls (``test_wrong_setting_breaks_23_parity``): RoPE interleaved 1.01 / 0.93, cross multiplier 1 1.06 / 0.81,
  no text padding mask 0.63 / 0.68, no audio-video cross-attention 1.05 / 0.93, prompt AdaLN fed the other
  modality's sigma 0.52 / 0.89. A float32 RoPE grid moves the tables by ~4e-3 and the outputs by ~3e-4.

Precision and tolerance
-----------------------
float32 on both sides. float64 is not a common precision: both compute the sinusoidal timestep embedding in
float32, diffusers computes its RoPE angles in float32 and its split-RoPE application upcasts with ``.float()``
(a float64 input would be rounded to float32 there), while ltx_core would keep float64 angles. In float32 both
run the same operations in the same order on the same data. Measured on torch 2.13 CPU (outputs: std ~1.2,
max |x| ~4.9 video / ~4.4 audio):

* main parity (video, audio): max |diff| = 0.0 / 0.0 -- bit-identical; the four RoPE tables are bit-identical;
* ``use_cross_timestep=False`` against ltx_core with swapped sigmas: 1.4e-6 / 1.2e-6 (the AdaLN sees per-token
  rows in diffusers and per-sample rows in ltx_core: same values, GEMMs of other shapes round differently);
* emulated ltx_core >= 1.1.4 rule: 0.0 / 0.0.

Asserted: ``atol = rtol = 1e-5``, headroom for other SDPA/GEMM kernels and thread counts. Everything that must
differ differs by far more: ``use_cross_timestep=False`` vs the installed ltx_core 0.66 / 0.51; the 1.1.4 rule vs
the installed one 0.36 / 0.31, vs either flag >= 0.31; controls: RoPE interleaved 0.50 / 0.43,
``cross_attn_timestep_scale_multiplier`` 1 (ltx_core's default) 0.56 / 0.50, no text padding mask 0.54 / 0.50,
no audio-video cross-attention 0.63 / 0.64. A float32 RoPE frequency grid (ltx_core's default without
``frequencies_precision: float64``; ours with ``rope_double_precision: false``) moves the RoPE tables by ~4e-3 but
the outputs of this short clip by only ~8e-5, so that setting is checked on the tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch

# ltx_core's transformer, latent-tools and patchifier modules import without torchaudio (only the audio VAE's
# AudioProcessor needs it), so no torchaudio stub is needed here.
from diffusers import LTX2Pipeline, LTX2VideoTransformer3DModel
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier
from ltx_core.guidance.perturbations import BatchedPerturbationConfig
from ltx_core.model.transformer.model import LTXModel
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.rope import LTXRopeType
from ltx_core.tools import AudioLatentTools, VideoLatentTools
from ltx_core.types import AudioLatentShape, SpatioTemporalScaleFactors, VideoLatentShape

from conftest import load_reference
from ltx2train.models.key_maps import DIT_PREFIX, build_key_map
from ltx2train.models.specs import load_variant

pytestmark = pytest.mark.parity

# ``config["transformer"]`` of ltx-2-19b-dev.safetensors (ltx_core vocabulary), verbatim.
PRODUCTION_TRANSFORMER_CONFIG_19B = {
    "_class_name": "AVTransformer3DModel",
    "_diffusers_version": "0.25.1",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 128,
    "attention_type": "default",
    "audio_attention_head_dim": 64,
    "audio_cross_attention_dim": 2048,
    "audio_num_attention_heads": 32,
    "audio_out_channels": 128,
    "audio_positional_embedding_max_pos": [20],
    "av_ca_timestep_scale_multiplier": 1000.0,
    "av_cross_ada_norm": True,
    "caption_channels": 3840,
    "causal_temporal_positioning": True,
    "connector_attention_head_dim": 128,
    "connector_norm_output": True,
    "connector_num_attention_heads": 30,
    "connector_num_layers": 2,
    "connector_num_learnable_registers": 128,
    "connector_positional_embedding_max_pos": [4096],
    "cross_attention_dim": 4096,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "dropout": 0.0,
    "frequencies_precision": "float64",
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "num_attention_heads": 32,
    "num_embeds_ada_norm": 1000,
    "num_layers": 48,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "out_channels": 128,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "positional_embedding_theta": 10000.0,
    "positional_embedding_type": "rope",
    "qk_norm": "rms_norm",
    "rope_type": "split",
    "share_ff": False,
    "standardization_norm": "rms_norm",
    "timestep_scale_multiplier": 1000,
    "upcast_attention": False,
    "use_audio_video_cross_attention": True,
    "use_embeddings_connector": True,
    "use_linear_projection": False,
    "use_middle_indices_grid": True,
}

# ``config["transformer"]`` of ltx-2.3-22b-dev.safetensors (ltx_core vocabulary), from the third-party header capture
# described under "LTX-2.3" in the module docstring; ltx_core builds the real 2.3 DiT layout from it (checked below).
PRODUCTION_TRANSFORMER_CONFIG_23 = {
    "_class_name": "AVTransformer3DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 128,
    "attention_type": "default",
    "caption_channels": 3840,
    "cross_attention_dim": 4096,
    "double_self_attention": False,
    "dropout": 0.0,
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "num_attention_heads": 32,
    "num_embeds_ada_norm": 1000,
    "num_layers": 48,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "cross_attention_norm": True,
    "out_channels": 128,
    "upcast_attention": False,
    "use_linear_projection": False,
    "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000.0,
    "causal_temporal_positioning": True,
    "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64,
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "audio_out_channels": 128,
    "audio_cross_attention_dim": 2048,
    "audio_positional_embedding_max_pos": [20],
    "av_cross_ada_norm": True,
    "use_embeddings_connector": True,
    "connector_attention_head_dim": 128,
    "connector_num_attention_heads": 32,
    "connector_num_layers": 8,
    "connector_positional_embedding_max_pos": [4096],
    "connector_num_learnable_registers": 128,
    "connector_norm_output": True,
    "use_middle_indices_grid": True,
    "apply_gated_attention": True,
    "connector_apply_gated_attention": True,
    "caption_projection_first_linear": False,
    "caption_projection_second_linear": False,
    "caption_proj_input_norm": False,
    "connector_learnable_registers_std": 1,
    "caption_proj_before_connector": True,
    "audio_connector_attention_head_dim": 64,
    "audio_connector_num_attention_heads": 32,
    "cross_attention_adaln": True,
    "rope_type": "split",
    "frequencies_precision": "float64",
    "text_encoder_norm_type": "per_token_rms",
}

NUM_LAYERS = 1  # 19B: the only reduction is depth (see the module docstring)
# LTX-2.3: tiny widths and two blocks; every other value is production. The same key names in both vocabularies.
REDUCED_23 = {
    "num_attention_heads": 4,
    "attention_head_dim": 32,
    "audio_num_attention_heads": 4,
    "audio_attention_head_dim": 16,
    "cross_attention_dim": 128,
    "audio_cross_attention_dim": 64,
    "num_layers": 2,
}
ATOL = RTOL = 1e-5
CONTROL_MIN_DIFF = 1e-3  # a wrong setting must move an output by at least this much (100x the tolerance)

# Geometry: 17 frames of 96 x 128 pixels at 25 fps -> 3 x 3 x 4 latent tokens; 0.68 s of audio -> 17 latent frames.
BATCH, FRAMES, HEIGHT, WIDTH, FPS = 2, 3, 3, 4, 25.0
AUDIO_FRAMES, AUDIO_CHANNELS, AUDIO_MEL_BINS = 17, 8, 16
TEXT_TOKENS, TEXT_PADDING = 16, (5, 3)  # left padding per sample
VIDEO_SIGMA, AUDIO_SIGMA = (0.7, 0.35), (0.55, 0.9)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One architecture under test: our shipped spec, the production ltx_core config, and the reductions applied to
    both (keys that are spelled the same in both vocabularies)."""

    variant: str
    production: dict
    reduced: dict

    def official_config(self, **overrides) -> dict:
        return {"transformer": {**self.production, **self.reduced, **overrides}}

    def spec_config(self) -> dict:
        return {**load_variant(self.variant).component("transformer").config, **self.reduced}

    @property
    def family(self) -> str:
        return load_variant(self.variant).family

    @property
    def context_dims(self) -> tuple[int, int]:
        """Width of the text the DiT receives: Gemma features (19B, projected inside the DiT) or the connectors'
        outputs at the cross-attention widths (2.3: the projection sits before the connectors)."""
        config = self.official_config()["transformer"]
        if config.get("caption_proj_before_connector", False):
            return config["cross_attention_dim"], config["audio_cross_attention_dim"]
        return config["caption_channels"], config["caption_channels"]


ARCH_19B = Architecture("ltx2-19b", PRODUCTION_TRANSFORMER_CONFIG_19B, {"num_layers": NUM_LAYERS})
ARCH_23 = Architecture("ltx2.3-22b", PRODUCTION_TRANSFORMER_CONFIG_23, REDUCED_23)


@torch.no_grad()
def _fill_random_(model: torch.nn.Module, seed: int = 0) -> None:
    """Std-matched uniform weights (see the module docstring); every table, gate and AdaLN linear is non-zero."""
    gen = torch.Generator().manual_seed(seed)
    sqrt3 = 3.0**0.5

    def uniform_(p: torch.Tensor, std: float, centre: float = 0.0) -> None:
        p.uniform_(centre - sqrt3 * std, centre + sqrt3 * std, generator=gen)

    for name, p in model.named_parameters():
        if "scale_shift_table" in name:
            uniform_(p, 0.2)
        elif name.endswith("norm.weight"):  # q_norm / k_norm gains
            uniform_(p, 0.25 / sqrt3, centre=1.0)
        elif name.endswith(".bias"):
            uniform_(p, 0.05)
        elif p.ndim == 2:  # linear weights
            uniform_(p, p.shape[1] ** -0.5)
        else:
            raise AssertionError(f"unexpected parameter {name} {tuple(p.shape)}")


@dataclasses.dataclass
class Inputs:
    video: torch.Tensor  # (B, Nv, 128) tokens
    audio: torch.Tensor  # (B, Na, 128) tokens
    video_positions: torch.Tensor  # ltx_core (B, 3, Nv, 2)
    audio_positions: torch.Tensor  # ltx_core (B, 1, Na, 2)
    video_coords: torch.Tensor  # diffusers, same layout
    audio_coords: torch.Tensor
    context: torch.Tensor
    audio_context: torch.Tensor
    context_mask: torch.Tensor  # (B, L) int64, 0 = padding
    video_sigma: torch.Tensor  # (B,) in [0, 1]
    audio_sigma: torch.Tensor
    video_timesteps: torch.Tensor  # (B, Nv) in [0, 1]
    audio_timesteps: torch.Tensor  # (B, Na)
    packed_video: torch.Tensor  # diffusers packing, for the layout check
    packed_audio: torch.Tensor


def _make_inputs(first_frame_conditioning: bool = True, arch: Architecture = ARCH_19B) -> Inputs:
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(BATCH, 128, FRAMES, HEIGHT, WIDTH, generator=gen)
    audio_latents = torch.randn(BATCH, AUDIO_CHANNELS, AUDIO_FRAMES, AUDIO_MEL_BINS, generator=gen)
    context_dim, audio_context_dim = arch.context_dims
    context = torch.randn(BATCH, TEXT_TOKENS, context_dim, generator=gen)
    audio_context = torch.randn(BATCH, TEXT_TOKENS, audio_context_dim, generator=gen)
    mask = torch.ones(BATCH, TEXT_TOKENS, dtype=torch.long)
    for b, pad in enumerate(TEXT_PADDING):
        mask[b, :pad] = 0

    video_shape = VideoLatentShape(BATCH, 128, FRAMES, HEIGHT, WIDTH)
    audio_shape = AudioLatentShape(BATCH, AUDIO_CHANNELS, AUDIO_FRAMES, AUDIO_MEL_BINS)
    video_tools = VideoLatentTools(VideoLatentPatchifier(patch_size=1), video_shape, fps=FPS)
    audio_tools = AudioLatentTools(AudioPatchifier(patch_size=1), audio_shape)
    video_state = video_tools.create_initial_state("cpu", torch.float32, latents)
    audio_state = audio_tools.create_initial_state("cpu", torch.float32, audio_latents)

    # ltx_pipelines' timesteps_from_mask: per-token timestep = sigma x denoise mask (0 on conditioning tokens).
    video_sigma, audio_sigma = torch.tensor(VIDEO_SIGMA), torch.tensor(AUDIO_SIGMA)
    denoise_mask = torch.ones(BATCH, FRAMES * HEIGHT * WIDTH)
    if first_frame_conditioning:
        denoise_mask[0, : HEIGHT * WIDTH] = 0.0  # sample 0: the first latent frame is a clean image
    video_timesteps = video_sigma[:, None] * denoise_mask
    audio_timesteps = audio_sigma[:, None].expand(BATCH, AUDIO_FRAMES).clone()

    meta_model = _ours_on_meta(arch)
    return Inputs(
        video=video_state.latent,
        audio=audio_state.latent,
        video_positions=video_state.positions,
        audio_positions=audio_state.positions,
        video_coords=meta_model.rope.prepare_video_coords(BATCH, FRAMES, HEIGHT, WIDTH, torch.device("cpu"), fps=FPS),
        audio_coords=meta_model.audio_rope.prepare_audio_coords(BATCH, AUDIO_FRAMES, torch.device("cpu")),
        context=context,
        audio_context=audio_context,
        context_mask=mask,
        video_sigma=video_sigma,
        audio_sigma=audio_sigma,
        video_timesteps=video_timesteps,
        audio_timesteps=audio_timesteps,
        packed_video=LTX2Pipeline._pack_latents(latents, 1, 1),
        packed_audio=LTX2Pipeline._pack_audio_latents(audio_latents),
    )


def _ours_on_meta(arch: Architecture = ARCH_19B, **overrides) -> LTX2VideoTransformer3DModel:
    """Our spec's transformer (reduced as ``arch`` says, optional overrides), parameters on the meta device; its
    RoPE helpers (coordinates, tables) need no weights."""
    spec = load_variant(arch.variant).component("transformer")
    return dataclasses.replace(spec, config={**arch.spec_config(), **overrides}).build(meta=True)


class Harness:
    """One official module with random weights, and diffusers modules sharing its tensors through the key map."""

    def __init__(self, arch: Architecture = ARCH_19B) -> None:
        self.arch = arch
        with torch.device("meta"):
            official = LTXModelConfigurator.from_config(arch.official_config())
        official = official.to_empty(device="cpu")
        _fill_random_(official)
        self.official: LTXModel = official.eval()
        # The official single-file keys: ltx_core's transformer keys under ``model.diffusion_model.``.
        self.original = {DIT_PREFIX + k: v for k, v in official.state_dict().items()}
        self.ours = self.diffusers()
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def diffusers(self, **overrides) -> LTX2VideoTransformer3DModel:
        module = _ours_on_meta(self.arch, **overrides)
        key_map = build_key_map("transformer", module, self.arch.family)
        converted, extra = key_map.convert_to_diffusers(self.original, source="official ltx_core state dict")
        assert not extra
        result = module.load_state_dict(converted, strict=True, assign=True)
        assert not result.missing_keys and not result.unexpected_keys
        return module.eval()

    def cached(self, key: str, fn: Callable[[], tuple[torch.Tensor, torch.Tensor]]):
        if key not in self._cache:
            with torch.no_grad():
                self._cache[key] = fn()
        return self._cache[key]


def _modalities(
    x: Inputs, video_sigma: torch.Tensor | None = None, audio_sigma: torch.Tensor | None = None
) -> tuple[Modality, Modality]:
    """ltx_core's inputs as ltx_pipelines/ltx_trainer build them: one ``Modality`` per stream."""
    video = Modality(
        latent=x.video,
        sigma=x.video_sigma if video_sigma is None else video_sigma,
        timesteps=x.video_timesteps,
        positions=x.video_positions,
        context=x.context,
        context_mask=x.context_mask,
    )
    audio = Modality(
        latent=x.audio,
        sigma=x.audio_sigma if audio_sigma is None else audio_sigma,
        timesteps=x.audio_timesteps,
        positions=x.audio_positions,
        context=x.audio_context,
        context_mask=x.context_mask,
    )
    return video, audio


def run_official(
    model: LTXModel, x: Inputs, video_sigma: torch.Tensor | None = None, audio_sigma: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The official forward, no perturbation (the sigmas can be overridden: see the January-rule test)."""
    video, audio = _modalities(x, video_sigma, audio_sigma)
    return model(video, audio, BatchedPerturbationConfig.empty(BATCH))


def run_ours(
    model: LTX2VideoTransformer3DModel, x: Inputs, use_cross_timestep: bool = True, **kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers as ``LTX2Pipeline.__call__`` calls it: timesteps and sigmas scaled by 1000, precomputed coords."""
    scale = 1000.0  # LTX2Pipeline passes scheduler timesteps = sigma x num_train_timesteps
    args = dict(
        hidden_states=x.video,
        audio_hidden_states=x.audio,
        encoder_hidden_states=x.context,
        audio_encoder_hidden_states=x.audio_context,
        timestep=x.video_timesteps * scale,
        audio_timestep=x.audio_timesteps * scale,
        sigma=x.video_sigma * scale,
        audio_sigma=x.audio_sigma * scale,
        encoder_attention_mask=x.context_mask,
        audio_encoder_attention_mask=x.context_mask,
        video_coords=x.video_coords,
        audio_coords=x.audio_coords,
        use_cross_timestep=use_cross_timestep,
        return_dict=False,
    )
    args.update(kwargs)
    return model(**args)


def _max_diff(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    return (a[0] - b[0]).abs().max().item(), (a[1] - b[1]).abs().max().item()


def _assert_close(ours, official, what: str) -> None:
    for name, o, r in (("video", ours[0], official[0]), ("audio", ours[1], official[1])):
        assert o.shape == r.shape, f"{what} {name}: shape {tuple(o.shape)} != {tuple(r.shape)}"
        assert torch.isfinite(o).all()
        diff = (o - r).abs().max().item()
        torch.testing.assert_close(o, r, atol=ATOL, rtol=RTOL, msg=f"{what} {name}: max |diff| {diff:.3g}")


@pytest.fixture(scope="module")
def harness() -> Harness:
    return Harness()


@pytest.fixture(scope="module")
def inputs() -> Inputs:
    return _make_inputs(first_frame_conditioning=True)


@pytest.fixture(scope="module")
def harness23() -> Harness:
    return Harness(ARCH_23)


@pytest.fixture(scope="module")
def inputs23() -> Inputs:
    return _make_inputs(first_frame_conditioning=True, arch=ARCH_23)


# --- configuration ------------------------------------------------------------------------------------------


def _built_and_real_dit_layouts(arch: Architecture) -> tuple[dict, dict]:
    """ltx_core's DiT built from the full production config (every block) on the meta device, and the DiT keys of
    the real file under the single-file prefix (connectors excluded: they are a separate component)."""
    with torch.device("meta"):
        official = LTXModelConfigurator.from_config({"transformer": arch.production})
    built = {DIT_PREFIX + k: tuple(v.shape) for k, v in official.state_dict().items()}
    reference, _ = load_reference(arch.variant)
    connectors = (DIT_PREFIX + "video_embeddings_connector.", DIT_PREFIX + "audio_embeddings_connector.")
    expected = {k: s for k, s in reference.items() if k.startswith(DIT_PREFIX) and not k.startswith(connectors)}
    return built, expected


def test_production_config_builds_the_real_19b_layout():
    """ltx_core built from the production config has exactly the keys and shapes of the real 19B file (all 48
    blocks; connectors excluded: they are a separate component), so the dictionary above is the 19B config."""
    built, expected = _built_and_real_dit_layouts(ARCH_19B)
    assert len(expected) == 3510
    assert built == expected


def test_production_config_builds_the_real_23_layout():
    """The same for LTX-2.3: ltx_core built from ``PRODUCTION_TRANSFORMER_CONFIG_23`` has exactly the DiT keys and
    shapes of ``ltx-2.3-22b-dev.safetensors`` (48 blocks: gate logits on every attention, 9-row block tables,
    prompt scale-shift tables and ``prompt_adaln_single``, no caption projections; connectors excluded)."""
    built, expected = _built_and_real_dit_layouts(ARCH_23)
    assert len(expected) == 4186
    assert built == expected
    assert not any(".caption_projection." in k for k in built)
    assert built[DIT_PREFIX + "transformer_blocks.0.attn1.to_gate_logits.weight"] == (32, 4096)
    assert built[DIT_PREFIX + "transformer_blocks.0.scale_shift_table"] == (9, 4096)


def _check_shipped_spec(arch: Architecture) -> None:
    """Every numerics-relevant field of our shipped transformer spec follows from the production config, read off
    the module ltx_core builds where ltx_core derives it (so a configurator default cannot slip through)."""
    prod = arch.production
    with torch.device("meta"):
        official = LTXModelConfigurator.from_config(arch.official_config())
    spec = load_variant(arch.variant).component("transformer").config

    # What ltx_core made of the production config (its defaults would be interleaved / float32 grid / 1).
    assert official.rope_type is LTXRopeType.SPLIT
    assert official.double_precision_rope is True
    assert official.av_ca_timestep_scale_multiplier == 1000.0
    assert official.timestep_scale_multiplier == 1000
    assert official.positional_embedding_theta == 10000.0
    assert official.positional_embedding_max_pos == [20, 2048, 2048]
    assert official.audio_positional_embedding_max_pos == [20]
    assert official.use_middle_indices_grid is True

    assert spec["rope_type"] == official.rope_type.value
    assert spec["rope_double_precision"] is official.double_precision_rope
    assert spec["rope_theta"] == official.positional_embedding_theta
    assert spec["timestep_scale_multiplier"] == official.timestep_scale_multiplier
    assert spec["cross_attn_timestep_scale_multiplier"] == official.av_ca_timestep_scale_multiplier
    assert [spec["pos_embed_max_pos"], spec["base_height"], spec["base_width"]] == official.positional_embedding_max_pos
    assert [spec["audio_pos_embed_max_pos"]] == official.audio_positional_embedding_max_pos
    assert spec["causal_offset"] == (1 if prod["causal_temporal_positioning"] else 0)
    assert spec["norm_eps"] == prod["norm_eps"] and spec["norm_elementwise_affine"] is prod["norm_elementwise_affine"]
    assert spec["qk_norm"] == "rms_norm_across_heads" and prod["qk_norm"] == "rms_norm"
    assert spec["activation_fn"] == prod["activation_fn"]
    assert spec["attention_bias"] is prod["attention_bias"] and spec["attention_out_bias"] is True
    for ours, theirs in [
        ("num_attention_heads", "num_attention_heads"),
        ("attention_head_dim", "attention_head_dim"),
        ("audio_num_attention_heads", "audio_num_attention_heads"),
        ("audio_attention_head_dim", "audio_attention_head_dim"),
        ("cross_attention_dim", "cross_attention_dim"),
        ("audio_cross_attention_dim", "audio_cross_attention_dim"),
        ("in_channels", "in_channels"),
        ("out_channels", "out_channels"),
        ("audio_out_channels", "audio_out_channels"),
        ("caption_channels", "caption_channels"),
        ("num_layers", "num_layers"),
    ]:
        assert spec[ours] == prod[theirs], ours
    assert spec["audio_in_channels"] == 128  # ltx_core's default; the header does not set it
    # 19B: caption projections inside the transformer, no gates, no prompt AdaLN; 2.3: the opposite of each.
    assert spec["use_prompt_embeddings"] is not prod.get("caption_proj_before_connector", False)
    assert spec["gated_attn"] is spec["audio_gated_attn"] is prod.get("apply_gated_attention", False)
    assert spec["cross_attn_mod"] is spec["audio_cross_attn_mod"] is prod.get("cross_attention_adaln", False)
    # Header keys of later ltx_core versions (LTX-2.5), absent here; their defaults are the 19B / 2.3 behaviour.
    for key in ("use_prompt_adaln_single", "ff_bias", "audio_ff_bias"):
        assert spec.get(key, True) is prod.get(key, True) is True, key
    assert spec.get("use_keyframes_abs_pos_embedding", False) is prod.get("use_keyframes_abs_pos_embedding", False)
    # Position geometry that ltx_core takes from its latent tools rather than from the header.
    assert tuple(spec["vae_scale_factors"]) == tuple(SpatioTemporalScaleFactors.default())
    audio_patchifier = AudioPatchifier(patch_size=1)
    assert spec["audio_scale_factor"] == audio_patchifier.audio_latent_downsample_factor
    assert spec["audio_sampling_rate"] == audio_patchifier.sample_rate
    assert spec["audio_hop_length"] == audio_patchifier.hop_length
    assert spec["patch_size"] == spec["patch_size_t"] == spec["audio_patch_size"] == spec["audio_patch_size_t"] == 1


def test_shipped_spec_matches_production_19b_config():
    """Our ``ltx2-19b`` spec against the 19B production config (see ``_check_shipped_spec``)."""
    _check_shipped_spec(ARCH_19B)


def test_shipped_spec_matches_production_23_config():
    """The same for our ``ltx2.3-22b`` spec, plus what ltx_core builds from the 2.3-only header keys."""
    _check_shipped_spec(ARCH_23)
    with torch.device("meta"):
        official = LTXModelConfigurator.from_config(ARCH_23.official_config())
    assert official.cross_attention_adaln is True and official.prompt_adaln_single is not None
    assert not hasattr(official, "caption_projection") and not hasattr(official, "audio_caption_projection")
    block = official.transformer_blocks[0]
    gated = [
        block.attn1,
        block.attn2,
        block.audio_attn1,
        block.audio_attn2,
        block.audio_to_video_attn,
        block.video_to_audio_attn,
    ]
    assert all(attn.to_gate_logits is not None for attn in gated)
    # The parity model below is the shipped spec with only the widths and the depth reduced.
    assert set(REDUCED_23) <= {
        "num_attention_heads",
        "attention_head_dim",
        "audio_num_attention_heads",
        "audio_attention_head_dim",
        "cross_attention_dim",
        "audio_cross_attention_dim",
        "num_layers",
    }


def test_inputs_are_laid_out_alike(inputs):
    """Token packing and RoPE coordinates: ltx_core's latent tools and diffusers' pipeline helpers agree exactly."""
    assert torch.equal(inputs.video, inputs.packed_video)
    assert torch.equal(inputs.audio, inputs.packed_audio)
    assert inputs.video_positions.dtype == inputs.video_coords.dtype == torch.float32
    assert torch.equal(inputs.video_positions, inputs.video_coords)
    assert torch.equal(inputs.audio_positions.float(), inputs.audio_coords)
    # Non-trivial geometry: causal first frame, seconds at 25 fps, pixel bounds, audio seconds.
    assert inputs.video_positions[0, 0, 0].tolist() == pytest.approx([0.0, 1.0 / FPS])
    assert inputs.video_positions[0, 1:, -1].tolist() == [[64.0, 96.0], [96.0, 128.0]]
    assert inputs.audio_positions[0, 0, 1].tolist() == pytest.approx([0.01, 0.05])


# --- parity ---------------------------------------------------------------------------------------------------


def test_transformer_parity_19b(harness, inputs):
    """Official ``LTXModel(video, audio)`` == our diffusers transformer, video and audio outputs, with per-token
    timesteps (image-conditioned first frame), distinct audio/video sigmas and a padded text mask."""
    official = harness.cached("official", lambda: run_official(harness.official, inputs))
    ours = harness.cached("ours", lambda: run_ours(harness.ours, inputs, use_cross_timestep=True))
    assert ours[0].shape == (BATCH, FRAMES * HEIGHT * WIDTH, 128)
    assert ours[1].shape == (BATCH, AUDIO_FRAMES, 128)
    assert official[0].abs().max() > 1.0 and official[1].abs().max() > 1.0  # outputs are not degenerate
    _assert_close(ours, official, "19B transformer")


def test_diffusers_forward_default_is_the_january_cross_timestep_rule(harness):
    """``LTX2VideoTransformer3DModel.forward``'s default ``use_cross_timestep=False`` feeds the a2v/v2a AdaLNs each
    modality's OWN timesteps (first ltx_core release). With uniform timesteps per modality that is the installed
    ltx_core with the two ``Modality.sigma`` swapped -- exactly, which pins down what the flag means."""
    uniform = _make_inputs(first_frame_conditioning=False)
    official_swapped = run_official(
        harness.official, uniform, video_sigma=uniform.audio_sigma, audio_sigma=uniform.video_sigma
    )
    with torch.no_grad():
        legacy = run_ours(harness.ours, uniform, use_cross_timestep=False)
    _assert_close(legacy, official_swapped, "use_cross_timestep=False vs ltx_core with swapped sigmas")


def test_diffusers_forward_default_differs_from_installed_ltx_core(harness, inputs):
    """Known, explained difference: with the forward's default flag the outputs leave the installed ltx_core as
    soon as tokens carry their own timesteps (i2v first frame) or the audio and video sigmas differ."""
    official = harness.cached("official", lambda: run_official(harness.official, inputs))
    legacy = harness.cached("ours_legacy", lambda: run_ours(harness.ours, inputs, use_cross_timestep=False))
    video_diff, audio_diff = _max_diff(legacy, official)
    assert video_diff > 1e-2 and audio_diff > 1e-2, (video_diff, audio_diff)


def _mixed_rule_official(harness: Harness, x: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The installed ltx_core with the ltx_core >= 1.1.4 rule: the a2v/v2a scale/shift AdaLN is fed the modality's
    own per-token timesteps (x 1000); its gate keeps the other modality's sigma. Emulated by recomputing
    ``cross_scale_shift_timestep`` after each preprocessor's own ``prepare``."""
    model = harness.official

    def patched(preprocessor):
        original_prepare = preprocessor.prepare

        def prepare(modality, cross_modality=None):
            args = original_prepare(modality, cross_modality)
            multiplier = preprocessor.simple_preprocessor.timestep_scale_multiplier
            scale_shift, _ = preprocessor.cross_scale_shift_adaln(
                (modality.timesteps * multiplier).flatten(), hidden_dtype=modality.latent.dtype
            )
            scale_shift = scale_shift.view(modality.latent.shape[0], -1, scale_shift.shape[-1])
            return dataclasses.replace(args, cross_scale_shift_timestep=scale_shift)

        return prepare

    saved = model.video_args_preprocessor.prepare, model.audio_args_preprocessor.prepare
    model.video_args_preprocessor.prepare = patched(model.video_args_preprocessor)
    model.audio_args_preprocessor.prepare = patched(model.audio_args_preprocessor)
    try:
        return run_official(model, x)
    finally:
        del model.video_args_preprocessor.prepare, model.audio_args_preprocessor.prepare
        assert (model.video_args_preprocessor.prepare, model.audio_args_preprocessor.prepare) == saved


def _mixed_rule_ours(harness: Harness, x: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """diffusers with ``use_cross_timestep=True`` (gates from the other sigma) and the inputs of its two a2v/v2a
    scale/shift AdaLNs replaced by each modality's own per-token timesteps -- not reachable through any argument."""
    model = harness.ours
    own = {
        model.av_cross_attn_video_scale_shift: (x.video_timesteps * 1000.0).flatten(),
        model.av_cross_attn_audio_scale_shift: (x.audio_timesteps * 1000.0).flatten(),
    }
    hooks = [m.register_forward_pre_hook(lambda mod, args: (own[mod], *args[1:])) for m in own]
    try:
        return run_ours(model, x, use_cross_timestep=True)
    finally:
        for hook in hooks:
            hook.remove()


def test_ltx_core_1_1_4_cross_timestep_rule_is_not_expressible(harness, inputs):
    """Documents the rule of ltx_core >= 1.1.4 (not installed here; emulated on both sides): neither value of
    ``use_cross_timestep`` reproduces it, a diffusers transformer whose two scale/shift AdaLN inputs are replaced
    does, bit for bit. A trainer that must match ltx_core >= 1.1.4 needs that replacement (or its own forward)."""
    with torch.no_grad():
        official_mixed = _mixed_rule_official(harness, inputs)
        ours_mixed = _mixed_rule_ours(harness, inputs)
    _assert_close(ours_mixed, official_mixed, "ltx_core >= 1.1.4 rule, emulated")
    official = harness.cached("official", lambda: run_official(harness.official, inputs))
    assert min(_max_diff(official_mixed, official)) > 1e-2  # the emulation is a real change of the installed code
    for flag, key in ((True, "ours"), (False, "ours_legacy")):
        ours = harness.cached(key, lambda flag=flag: run_ours(harness.ours, inputs, use_cross_timestep=flag))
        assert max(_max_diff(ours, official_mixed)) > 1e-2, f"use_cross_timestep={flag} unexpectedly matches"


def _rope_tables(model: LTX2VideoTransformer3DModel, x: Inputs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {
        "video": model.rope(x.video_coords),
        "audio": model.audio_rope(x.audio_coords),
        "video cross": model.cross_attn_rope(x.video_coords[:, 0:1]),
        "audio cross": model.cross_attn_audio_rope(x.audio_coords[:, 0:1]),
    }


def test_rope_tables_match_and_the_float64_grid_matters(harness, inputs):
    """The four RoPE tables (video and audio self-attention, both sides of the a2v/v2a cross-attention) that the
    official preprocessors hand to the blocks equal ours bit for bit. With a float32 frequency grid (ltx_core's
    default without ``frequencies_precision: float64``, ours with ``rope_double_precision: false``) they move by
    ~4e-3; at this short geometry the outputs move by only ~8e-5, so this setting is checked on the tables."""
    model = harness.official
    video, audio = _modalities(inputs)
    with torch.no_grad():
        video_args = model.video_args_preprocessor.prepare(video, audio)
        audio_args = model.audio_args_preprocessor.prepare(audio, video)
        official = {
            "video": video_args.positional_embeddings,
            "audio": audio_args.positional_embeddings,
            "video cross": video_args.cross_positional_embeddings,
            "audio cross": audio_args.cross_positional_embeddings,
        }
        ours = _rope_tables(harness.ours, inputs)
        float32_grid = _rope_tables(_ours_on_meta(rope_double_precision=False), inputs)
    for name, (cos, sin) in official.items():
        assert torch.equal(ours[name][0], cos) and torch.equal(ours[name][1], sin), name
        moved = max((float32_grid[name][0] - cos).abs().max().item(), (float32_grid[name][1] - sin).abs().max().item())
        assert moved > 1e-4, (name, moved)


# --- controls: every setting the parity depends on is visible ----------------------------------------------------

CONTROLS = {
    # ltx_core's configurator defaults, which the production header overrides:
    "rope_type interleaved": ({"rope_type": "interleaved"}, {}),
    "cross_attn_timestep_scale_multiplier 1": ({"cross_attn_timestep_scale_multiplier": 1}, {}),
    # inputs: the padded text mask and the audio-video cross-attention both matter
    "no text padding mask": ({}, {"encoder_attention_mask": None, "audio_encoder_attention_mask": None}),
    "no audio-video cross-attention": ({}, {"isolate_modalities": True}),
}


@pytest.mark.parametrize("control", list(CONTROLS))
def test_wrong_setting_breaks_parity(harness, inputs, control):
    config_overrides, call_overrides = CONTROLS[control]
    official = harness.cached("official", lambda: run_official(harness.official, inputs))
    model = harness.diffusers(**config_overrides) if config_overrides else harness.ours
    with torch.no_grad():
        wrong = run_ours(model, inputs, use_cross_timestep=True, **call_overrides)
    video_diff, audio_diff = _max_diff(wrong, official)
    assert max(video_diff, audio_diff) > CONTROL_MIN_DIFF, (control, video_diff, audio_diff)


# --- LTX-2.3 (tiny widths, production settings otherwise) ------------------------------------------------------


def test_transformer_parity_23(harness23, inputs23):
    """Official 2.3 ``LTXModel`` (gated attention, cross-attention AdaLN with prompt AdaLN, caption projection
    before the connectors) == our diffusers transformer from the ``ltx2.3-22b`` spec, with the same inputs as the
    19B test: per-token timesteps (image-conditioned first frame), distinct sigmas, padded text mask."""
    model = harness23.ours
    block = model.transformer_blocks[0]
    assert not hasattr(model, "caption_projection") and model.prompt_adaln is not None
    assert block.scale_shift_table.shape[0] == 9 and block.prompt_scale_shift_table.shape[0] == 2
    assert block.attn1.to_gate_logits is not None and block.audio_to_video_attn.to_gate_logits is not None
    assert inputs23.context.shape[-1] == 128 and inputs23.audio_context.shape[-1] == 64  # connector outputs
    official = harness23.cached("official", lambda: run_official(harness23.official, inputs23))
    ours = harness23.cached("ours", lambda: run_ours(model, inputs23, use_cross_timestep=True))
    assert ours[0].shape == (BATCH, FRAMES * HEIGHT * WIDTH, 128)
    assert ours[1].shape == (BATCH, AUDIO_FRAMES, 128)
    assert official[0].abs().max() > 1.0 and official[1].abs().max() > 1.0
    _assert_close(ours, official, "2.3 transformer")


def test_23_cross_timestep_rules(harness23, inputs23):
    """The a2v/v2a timestep rules do not depend on the architecture: for 2.3 the installed ltx_core (rule 2,
    cross sigma) is matched by ``use_cross_timestep=True`` only (above); the forward's default differs; the
    ltx_core >= 1.1.4 rule (emulated; ltx-core 1.2.0 itself measured equal to it for 2.3 and 2.5, see the module
    docstring) is matched by neither flag but by diffusers with its two scale/shift AdaLN inputs replaced."""
    official = harness23.cached("official", lambda: run_official(harness23.official, inputs23))
    legacy = harness23.cached("ours_legacy", lambda: run_ours(harness23.ours, inputs23, use_cross_timestep=False))
    assert min(_max_diff(legacy, official)) > 1e-2
    with torch.no_grad():
        official_mixed = _mixed_rule_official(harness23, inputs23)
        ours_mixed = _mixed_rule_ours(harness23, inputs23)
    _assert_close(ours_mixed, official_mixed, "2.3, ltx_core >= 1.1.4 rule, emulated")
    assert min(_max_diff(official_mixed, official)) > 1e-2
    for key in ("ours", "ours_legacy"):
        ours = harness23.cached(key, lambda key=key: run_ours(harness23.ours, inputs23, key == "ours"))
        assert max(_max_diff(ours, official_mixed)) > 1e-2, key


def _other_sigma_into_prompt_adaln(model: LTX2VideoTransformer3DModel, x: Inputs):
    """Forward pre-hooks feeding each prompt AdaLN the OTHER modality's sigma (x 1000)."""
    swapped = {model.prompt_adaln: x.audio_sigma * 1000.0, model.audio_prompt_adaln: x.video_sigma * 1000.0}
    return [m.register_forward_pre_hook(lambda mod, args: (swapped[mod], *args[1:])) for m in swapped]


CONTROLS_23 = {
    **CONTROLS,
    # 2.3 only: the prompt AdaLN (K/V modulation of the text cross-attention) is live and reads the own sigma
    "prompt AdaLN fed the other modality's sigma": ({}, {}),
}


@pytest.mark.parametrize("control", list(CONTROLS_23))
def test_wrong_setting_breaks_23_parity(harness23, inputs23, control):
    config_overrides, call_overrides = CONTROLS_23[control]
    official = harness23.cached("official", lambda: run_official(harness23.official, inputs23))
    model = harness23.diffusers(**config_overrides) if config_overrides else harness23.ours
    hooks = _other_sigma_into_prompt_adaln(model, inputs23) if control.startswith("prompt AdaLN") else []
    try:
        with torch.no_grad():
            wrong = run_ours(model, inputs23, use_cross_timestep=True, **call_overrides)
    finally:
        for hook in hooks:
            hook.remove()
    video_diff, audio_diff = _max_diff(wrong, official)
    assert max(video_diff, audio_diff) > CONTROL_MIN_DIFF, (control, video_diff, audio_diff)
