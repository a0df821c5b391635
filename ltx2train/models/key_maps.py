"""Original LTX-2 checkpoint keys <-> diffusers state-dict keys, both directions, weights and LoRA.

One state-dict adapter per component. Each adapter is derived from the *module itself*: every
diffusers key of the built (usually meta) module is translated to its original name by a small set of
rules, and the inverse table is taken from that. So the mapping is a bijection by construction, and it
follows whatever block topology the config describes (the tiny variant included), where diffusers'
converters hard-wire the production VAE block indices.

Gaps in diffusers 0.42.1 this module fills: no converter for the text connectors, the vocoder or the
upsampler in the wheel; no diffusers -> original direction anywhere; the single-file converters leave
twelve LTX-2.3 transformer keys and eighteen LTX-2.3 video-decoder keys unmapped without an error; the
LoRA converter drops ``*_embeddings_connector`` modules.

Original keys are the exact keys of the official single file (``model.diffusion_model.*``, ``vae.*``,
``audio_vae.*``, ``vocoder.*``, ``text_embedding_projection.*``); the repackaged split files keep the same
keys. The spatial upscaler file has no prefix.

Over 400 lines: one module on purpose. The rules of every component's key map sit together, so that the bijection
(each rule and its inverse) can be read and checked in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import torch

from ltx2train.utils.errors import UserError

DIT_PREFIX = "model.diffusion_model."

# --- transformer ---------------------------------------------------------------------------------
# diffusers top-level module name -> original name
_TRANSFORMER_TOP = {
    "proj_in": "patchify_proj",
    "audio_proj_in": "audio_patchify_proj",
    "time_embed": "adaln_single",
    "audio_time_embed": "audio_adaln_single",
    "prompt_adaln": "prompt_adaln_single",  # LTX-2.3
    "audio_prompt_adaln": "audio_prompt_adaln_single",  # LTX-2.3
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
}
# renames of a single dotted segment, wherever it appears
_ATTENTION_SEGMENTS = {"norm_q": "q_norm", "norm_k": "k_norm"}
_TRANSFORMER_SEGMENTS = {
    **_ATTENTION_SEGMENTS,
    "video_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_video",
    "audio_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_audio",
}

# --- text connectors (+ text embedding projection) ----------------------------------------------
_CONNECTOR_TOP = {
    "text_proj_in": "text_embedding_projection.aggregate_embed",  # LTX-2
    "video_text_proj_in": "text_embedding_projection.video_aggregate_embed",  # LTX-2.3
    "audio_text_proj_in": "text_embedding_projection.audio_aggregate_embed",  # LTX-2.3
    "video_connector": DIT_PREFIX + "video_embeddings_connector",
    "audio_connector": DIT_PREFIX + "audio_embeddings_connector",
}
_CONNECTOR_SEGMENTS = {**_ATTENTION_SEGMENTS, "transformer_blocks": "transformer_1d_blocks"}

# --- vocoder ------------------------------------------------------------------------------------
_VOCODER_SEGMENTS = {
    "upsamplers": "ups",
    "resnets": "resblocks",
    "conv_in": "conv_pre",
    "conv_out": "conv_post",
    "act_out": "act_post",
}

# --- VAE statistics -----------------------------------------------------------------------------
_STATISTICS = {
    "latents_mean": "per_channel_statistics.mean-of-means",
    "latents_std": "per_channel_statistics.std-of-means",
}
# LTX-2 (19B) video VAE files carry three more statistics buffers that no module reads. They are kept
# verbatim ("passthrough") so that original -> diffusers -> original loses nothing.
_VIDEO_VAE_UNUSED_STATISTICS_20 = (
    "vae.per_channel_statistics.channel",
    "vae.per_channel_statistics.mean-of-stds",
    "vae.per_channel_statistics.mean-of-stds_over_std-of-means",
)


class KeyMappingError(UserError, KeyError):
    """A state dict does not match the layout a component expects."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def _rename_segments(key: str, table: Mapping[str, str]) -> str:
    return ".".join(table.get(part, part) for part in key.split("."))


def _rename_top(key: str, table: Mapping[str, str]) -> str:
    head, _, rest = key.partition(".")
    if head in table:
        return table[head] + ("." + rest if rest else "")
    return key


def _transformer_to_original(key: str, module: torch.nn.Module) -> str:
    return DIT_PREFIX + _rename_segments(_rename_top(key, _TRANSFORMER_TOP), _TRANSFORMER_SEGMENTS)


def _connectors_to_original(key: str, module: torch.nn.Module) -> str:
    return _rename_top(_rename_segments(key, _CONNECTOR_SEGMENTS), _CONNECTOR_TOP)


def _video_vae_index_tables(vae: torch.nn.Module) -> tuple[dict[str, str], dict[str, str]]:
    """Prefix tables for the video VAE, derived from its actual block structure.

    The original encoder is one flat ``down_blocks`` list: for each diffusers stage its res blocks, then
    its downsampler, and the mid block last. The original decoder is one flat ``up_blocks`` list: the mid
    block first, then for each stage its upsampler followed by its res blocks.
    """
    enc: dict[str, str] = {}
    idx = 0
    for i, block in enumerate(vae.encoder.down_blocks):
        if len(getattr(block, "resnets", ()) or ()) > 0:
            enc[f"encoder.down_blocks.{i}.resnets."] = f"encoder.down_blocks.{idx}.res_blocks."
            idx += 1
        if getattr(block, "downsamplers", None) is not None:
            for j in range(len(block.downsamplers)):
                enc[f"encoder.down_blocks.{i}.downsamplers.{j}."] = f"encoder.down_blocks.{idx}."
                idx += 1
    enc["encoder.mid_block.resnets."] = f"encoder.down_blocks.{idx}.res_blocks."

    dec: dict[str, str] = {"decoder.mid_block.resnets.": "decoder.up_blocks.0.res_blocks."}
    idx = 1
    for i, block in enumerate(vae.decoder.up_blocks):
        if getattr(block, "upsamplers", None) is not None:
            for j in range(len(block.upsamplers)):
                dec[f"decoder.up_blocks.{i}.upsamplers.{j}."] = f"decoder.up_blocks.{idx}."
                idx += 1
        if len(getattr(block, "resnets", ()) or ()) > 0:
            dec[f"decoder.up_blocks.{i}.resnets."] = f"decoder.up_blocks.{idx}.res_blocks."
            idx += 1
    return enc, dec


def _video_vae_to_original_fn(vae: torch.nn.Module):
    enc, dec = _video_vae_index_tables(vae)
    prefixes = sorted({**enc, **dec}.items(), key=lambda kv: -len(kv[0]))

    def convert(key: str, module: torch.nn.Module) -> str:
        if key in _STATISTICS:
            return "vae." + _STATISTICS[key]
        for src, dst in prefixes:
            if key.startswith(src):
                key = dst + key[len(src) :]
                break
        key = key.replace("decoder.time_embedder.", "decoder.last_time_embedder.")
        key = key.replace("decoder.scale_shift_table", "decoder.last_scale_shift_table")
        return "vae." + key

    return convert


def _audio_vae_to_original(key: str, module: torch.nn.Module) -> str:
    return "audio_vae." + _STATISTICS.get(key, key)


def _vocoder_to_original(key: str, module: torch.nn.Module) -> str:
    key = _rename_segments(key, _VOCODER_SEGMENTS)
    key = key.replace(".downsample.filter", ".downsample.lowpass.filter")  # LTX-2.3 anti-aliased activations
    return "vocoder." + key


def _upsampler_to_original(key: str, module: torch.nn.Module) -> str:
    return key


# --- LTX-2.5's diffusion video decoder ----------------------------------------------------------
# Its file (``vae/ltx-2.5-video-vae-bf16.safetensors``) names it bare (``decoder.*``, ``per_channel_statistics.*``);
# the original names here carry ``diffusion_vae.`` so that every component owns a prefix. Each attention's q, k and v
# are one fused ``attn.qkv`` Linear there (stacked on dim 0 in that order), three Linears in diffusers.
DIFFUSION_VAE_PREFIX = "diffusion_vae."
_DIFFUSION_DECODER_RENAMES = (
    ("decoder.t_embedder.timestep_embedder.linear_1.", "decoder.t_embedder.mlp.0."),
    ("decoder.t_embedder.timestep_embedder.linear_2.", "decoder.t_embedder.mlp.2."),
    (".attn.to_out.0.", ".attn.proj."),
    (".attn.norm_q.", ".attn.q_norm."),
    (".attn.norm_k.", ".attn.k_norm."),
)
_FUSED_QKV = re.compile(r"^(?P<head>.+\.attn\.)to_(?P<part>[qkv])\.(?P<leaf>weight|bias)$")
# the file's timestep-type embedding, which neither diffusers nor ltx-core reads: carried verbatim
_DIFFUSION_DECODER_UNUSED = (DIFFUSION_VAE_PREFIX + "decoder.type_emb",)


# --- LTX-2.5's duration head -------------------------------------------------------------------
# Its file (``model_patches/ltx-2.5-duration-head-bf16.safetensors``) keeps the pooler as ``nn.MultiheadAttention``:
# one ``in_proj`` for q, k and v (stacked on dim 0), ``out_proj``.
DURATION_HEAD_PREFIX = "duration_head."
_FUSED_POOLER_QKV = re.compile(r"^(?P<head>attention_pooler\.)to_(?P<part>[qkv])\.(?P<leaf>weight|bias)$")


def _duration_head_to_original(key: str, module: torch.nn.Module) -> str:
    fused = _FUSED_POOLER_QKV.match(key)
    if fused:
        return f"{DURATION_HEAD_PREFIX}{fused['head']}cross_attn.in_proj_{fused['leaf']}"
    return DURATION_HEAD_PREFIX + key.replace("attention_pooler.to_out.", "attention_pooler.cross_attn.out_proj.")


_FUSED = {"video_diffusion_decoder": _FUSED_QKV, "duration_head": _FUSED_POOLER_QKV}  # diffusers keys fused on disk


def _diffusion_decoder_to_original(key: str, module: torch.nn.Module) -> str:
    if key in _STATISTICS:
        return DIFFUSION_VAE_PREFIX + _STATISTICS[key]
    fused = _FUSED_QKV.match(key)
    if fused:
        key = f"{fused['head']}qkv.{fused['leaf']}"
    for diffusers_name, original_name in _DIFFUSION_DECODER_RENAMES:
        key = key.replace(diffusers_name, original_name)
    return DIFFUSION_VAE_PREFIX + key


@dataclass
class ComponentKeyMap:
    """The bijection between one component's diffusers keys and its original checkpoint keys; an original tensor
    may also be several diffusers tensors stacked on dim 0 (``fused``: a fused qkv Linear)."""

    component: str
    to_original: dict[str, str]  # diffusers key -> original key
    passthrough: tuple[str, ...] = ()  # original keys with no diffusers tensor, carried verbatim
    fused: dict[str, tuple[str, ...]] = field(default_factory=dict)  # original key -> its diffusers parts, in order
    to_diffusers: dict[str, str] = field(init=False)  # original key -> diffusers key

    def __post_init__(self) -> None:
        self.to_diffusers = {o: d for d, o in self.to_original.items()}
        if len(self.to_diffusers) != len(self.to_original):
            seen: dict[str, str] = {}
            for d, o in self.to_original.items():
                if o in seen:
                    raise AssertionError(f"{self.component}: {seen[o]!r} and {d!r} both map to {o!r}")
                seen[o] = d

    @property
    def original_keys(self) -> set[str]:
        return set(self.to_diffusers) | set(self.passthrough) | set(self.fused)

    def owns(self, original_key: str) -> bool:
        return original_key in self.to_diffusers or original_key in self.passthrough or original_key in self.fused

    def convert_to_diffusers(
        self, original: Mapping[str, torch.Tensor], source: str = "state dict", strict: bool = True
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Original-key tensors -> (diffusers-key tensors, passthrough tensors kept under original keys).

        Keys of other components are ignored (a combined file feeds several components); with
        ``strict`` every key this component needs must be present.
        """
        converted, extra = {}, {}
        for key, value in original.items():
            if key in self.to_diffusers:
                converted[self.to_diffusers[key]] = value
            elif key in self.fused:
                converted.update(zip(self.fused[key], _unstack(key, value, len(self.fused[key]))))
            elif key in self.passthrough:
                extra[key] = value
        if strict:
            missing = sorted((set(self.to_diffusers) | set(self.fused)) - set(original))
            if missing:
                raise KeyMappingError(_missing_message(self.component, missing, source))
        return converted, extra

    def convert_to_original(
        self, diffusers_state: Mapping[str, torch.Tensor], extra: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        out = {}
        parts = {part for group in self.fused.values() for part in group}
        unknown = sorted(set(diffusers_state) - set(self.to_original) - parts)
        if unknown:
            raise KeyMappingError(
                f"{self.component}: {len(unknown)} diffusers key(s) have no original name, e.g. {unknown[:5]}"
            )
        first = {group[0]: key for key, group in self.fused.items()}  # a fused tensor goes where its first part was
        for key, value in diffusers_state.items():
            if key in first and all(part in diffusers_state for part in self.fused[first[key]]):
                out[first[key]] = torch.cat([diffusers_state[part] for part in self.fused[first[key]]])
            elif key not in parts:
                out[self.to_original[key]] = value
        for key, value in (extra or {}).items():
            if key not in self.passthrough:
                raise KeyMappingError(f"{self.component}: unexpected passthrough key {key!r}")
            out[key] = value
        return out


def _unstack(key: str, value: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
    if value.shape[0] % parts:
        raise KeyMappingError(f"fused tensor {key!r}: dim 0 is {value.shape[0]}, not {parts} equal parts")
    return tuple(part.clone() for part in value.chunk(parts))


def _missing_message(component: str, missing: list[str], source: str) -> str:
    shown = ", ".join(missing[:10]) + (f", ... ({len(missing)} in all)" if len(missing) > 10 else "")
    return f"{component}: {len(missing)} tensor(s) missing from {source}: {shown}"


_RULES = {
    "transformer": _transformer_to_original,
    "connectors": _connectors_to_original,
    "audio_vae": _audio_vae_to_original,
    "vocoder": _vocoder_to_original,
    "spatial_upsampler": _upsampler_to_original,
    "video_diffusion_decoder": _diffusion_decoder_to_original,
    "duration_head": _duration_head_to_original,
}


_ADAPTER_TENSOR = re.compile(r"\.(lora_[A-Za-z_]+|lora_magnitude_vector)(\.|$)")


def base_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's own tensors under its plain diffusers names: PEFT adapter tensors are left out and
    PEFT's ``.base_layer`` wrapping is undone, so a module carrying a LoRA maps like a plain one."""
    out = {}
    for key, value in module.state_dict().items():
        if _ADAPTER_TENSOR.search(key):
            continue
        out[key.replace(".base_layer.", ".")] = value
    return out


def build_key_map(component: str, module: torch.nn.Module, family: str = "2.0") -> ComponentKeyMap:
    """Derive the original <-> diffusers key bijection for ``module`` (a built, possibly meta, component)."""
    if component == "video_vae":
        rule = _video_vae_to_original_fn(module)
    elif component in _RULES:
        rule = _RULES[component]
    else:
        raise UserError(f"no key mapping for component {component!r}")
    to_original, fused = {}, {}
    for key in base_state_dict(module):
        original = rule(key, module)
        if component in _FUSED and _FUSED[component].match(key):
            fused.setdefault(original, []).append(key)  # state-dict order: to_q, to_k, to_v
        else:
            to_original[key] = original
    passthrough: tuple[str, ...] = ()
    if component == "video_vae" and family == "2.0":
        passthrough = _VIDEO_VAE_UNUSED_STATISTICS_20
    if component == "video_diffusion_decoder":
        passthrough = _DIFFUSION_DECODER_UNUSED
    return ComponentKeyMap(component, to_original, passthrough, {k: tuple(v) for k, v in fused.items()})


def passthrough_shapes(key_map: ComponentKeyMap, module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes of the passthrough tensors (per-channel statistics and the diffusion decoder's type embedding have the
    latent channel count)."""
    if key_map.component in ("video_vae", "video_diffusion_decoder"):
        return {k: (module.config.latent_channels,) for k in key_map.passthrough}
    return {}


# --- LoRA ---------------------------------------------------------------------------------------
LORA_ORIGINAL_PREFIX = "diffusion_model."
_LORA_SUFFIX = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)\.weight$|^(?P<amodule>.+)\.alpha$")


def lora_original_to_peft(
    lora: Mapping[str, torch.Tensor], transformer_map: ComponentKeyMap, connectors_map: ComponentKeyMap | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]], dict[str, float]]:
    """Official/ComfyUI LoRA (``diffusion_model.<module>.lora_A/B.weight`` [+ ``.alpha``]) -> PEFT names.

    Returns ``(transformer_lora, connector_lora, alphas)``: PEFT state dicts (``<module>.lora_A.weight``)
    for the transformer and for the text connectors, and the alpha of each diffusers module path (a
    LoRA without ``.alpha`` has alpha == rank, i.e. scale 1). Unknown modules are an error, never dropped.
    """
    transformer_lora: dict[str, torch.Tensor] = {}
    connector_lora: dict[str, torch.Tensor] = {}
    alphas: dict[str, float] = {}
    for key, value in lora.items():
        if not key.startswith(LORA_ORIGINAL_PREFIX):
            raise KeyMappingError(f"LoRA key {key!r} does not start with {LORA_ORIGINAL_PREFIX!r}")
        m = _LORA_SUFFIX.match(key[len(LORA_ORIGINAL_PREFIX) :])
        if m is None:
            raise KeyMappingError(f"LoRA key {key!r} is neither lora_A/lora_B weight nor alpha")
        module = m.group("module") or m.group("amodule")
        original_weight = "model." + LORA_ORIGINAL_PREFIX + module + ".weight"
        if original_weight in transformer_map.to_diffusers:
            target, dmodule = transformer_lora, transformer_map.to_diffusers[original_weight][: -len(".weight")]
        elif connectors_map is not None and original_weight in connectors_map.to_diffusers:
            target, dmodule = connector_lora, connectors_map.to_diffusers[original_weight][: -len(".weight")]
        else:
            raise KeyMappingError(f"LoRA key {key!r}: no module {module!r} in the transformer or connectors")
        if m.group("kind"):
            target[f"{dmodule}.{m.group('kind')}.weight"] = value
        else:
            alphas[dmodule] = float(value.item())
    return transformer_lora, connector_lora, alphas


def lora_peft_to_original(
    transformer_lora: Mapping[str, torch.Tensor],
    transformer_map: ComponentKeyMap,
    connector_lora: Mapping[str, torch.Tensor] | None = None,
    connectors_map: ComponentKeyMap | None = None,
    alphas: Mapping[str, float] | None = None,
) -> dict[str, torch.Tensor]:
    """PEFT LoRA state dicts -> official layout; ``alphas`` (per diffusers module) are written as ``.alpha``."""
    out: dict[str, torch.Tensor] = {}
    for state, key_map in ((transformer_lora, transformer_map), (connector_lora or {}, connectors_map)):
        for key, value in state.items():
            m = re.match(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)(?:\.default)?\.weight$", key)
            if m is None or key_map is None:
                raise KeyMappingError(f"not a PEFT LoRA weight: {key!r}")
            dmodule = m.group("module")
            original_weight = key_map.to_original.get(dmodule + ".weight")
            if original_weight is None:
                raise KeyMappingError(f"PEFT LoRA key {key!r}: no module {dmodule!r} in {key_map.component}")
            module = original_weight[len("model.") : -len(".weight")]
            if not module.startswith(LORA_ORIGINAL_PREFIX):
                raise KeyMappingError(f"module {original_weight!r} cannot carry a diffusion_model LoRA")
            out[f"{module}.{m.group('kind')}.weight"] = value
            if alphas and dmodule in alphas:
                out[f"{module}.alpha"] = torch.tensor(float(alphas[dmodule]))
    return out


def original_keys_with_shapes(key_map: ComponentKeyMap, module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """Every original key of a component with its shape, from a (meta) module: no weights needed."""
    state = base_state_dict(module)
    shapes = {key_map.to_original[k]: tuple(v.shape) for k, v in state.items() if k in key_map.to_original}
    for key, parts in key_map.fused.items():
        first = tuple(state[parts[0]].shape)
        shapes[key] = (sum(state[p].shape[0] for p in parts), *first[1:])
    shapes.update(passthrough_shapes(key_map, module))
    return shapes


def iter_component_maps(variant, meta: bool = True) -> Iterable[tuple[str, torch.nn.Module, ComponentKeyMap]]:
    for name, spec in variant.components.items():
        module = spec.build(meta=meta)
        yield name, module, build_key_map(name, module, variant.family)


# --- LoRA module names without a model ----------------------------------------------------------
# LoRA files name modules, not tensors, and a file can be read (inspected, converted) before any model
# is built. These two functions apply the same rename tables as the weight maps above, both ways; a test
# checks them against ``build_key_map`` on every linear layer of the tiny and 19B modules.
_CONNECTOR_HEADS = {"video_embeddings_connector": "video_connector", "audio_embeddings_connector": "audio_connector"}


def _inverse(table: Mapping[str, str]) -> dict[str, str]:
    return {v: k for k, v in table.items()}


def lora_module_to_diffusers(original_module: str) -> tuple[str, str]:
    """``transformer_blocks.0.attn1.to_q`` (original, without ``diffusion_model.``) ->
    (component, diffusers module path): ``("transformer", "transformer_blocks.0.attn1.to_q")``,
    ``("connectors", "video_connector.transformer_blocks.0.attn1.to_k")`` for connector modules."""
    head, _, rest = original_module.partition(".")
    if head in _CONNECTOR_HEADS:
        return "connectors", _rename_segments(_CONNECTOR_HEADS[head] + "." + rest, _inverse(_CONNECTOR_SEGMENTS))
    renamed = _rename_top(original_module, _inverse(_TRANSFORMER_TOP))
    return "transformer", _rename_segments(renamed, _inverse(_TRANSFORMER_SEGMENTS))


def lora_module_to_original(component: str, diffusers_module: str) -> str:
    """The inverse of :func:`lora_module_to_diffusers`."""
    if component == "connectors":
        original = _connectors_to_original(diffusers_module, None)
    elif component == "transformer":
        original = _transformer_to_original(diffusers_module, None)
    else:
        raise UserError(f"LoRA modules live on the transformer or the connectors, not on {component!r}")
    if not original.startswith("model." + LORA_ORIGINAL_PREFIX):
        raise KeyMappingError(f"{component} module {diffusers_module!r} cannot carry a diffusion_model LoRA")
    return original[len("model." + LORA_ORIGINAL_PREFIX) :]
