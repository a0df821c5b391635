"""Key mapping: our specs against the verified original layouts, round trips, LoRA names."""

import json

import pytest
import torch

from conftest import REFERENCE, load_reference
from ltx2train.models.key_maps import (
    KeyMappingError,
    build_key_map,
    lora_original_to_peft,
    lora_peft_to_original,
    original_keys_with_shapes,
)
from ltx2train.models.specs import COMPONENTS, list_variants, load_variant


def _meta_maps(variant_name):
    variant = load_variant(variant_name)
    out = {}
    for name, spec in variant.components.items():
        module = spec.build(meta=True)
        out[name] = (module, build_key_map(name, module, variant.family))
    return out


def test_shipped_variants():
    assert {"ltx2-19b", "ltx2.3-22b", "ltx2.5", "tiny", "tiny-2.3", "tiny-2.5"} <= set(list_variants())
    for name in list_variants():
        spec = load_variant(name)  # LTX-2.5 adds its diffusion video decoder
        added = {"video_diffusion_decoder", "duration_head"}
        assert set(spec.components) == set(COMPONENTS) - (added if spec.family != "2.5" else set())


@pytest.mark.parametrize("variant_name", ["ltx2-19b", "ltx2.3-22b", "ltx2.5"])
def test_specs_match_reference_layout(variant_name):
    """Meta-built diffusers modules, mapped to original names: exactly the keys and shapes of the real files."""
    main_ref, upscaler_ref = load_reference(variant_name)
    decoder_ref = (
        {
            "diffusion_vae." + k: tuple(s)
            for k, s in json.loads((REFERENCE / "ltx25_22b_official_files.json").read_text())[
                "vae/ltx-2.5-video-vae-bf16.safetensors"
            ].items()
            if not k.startswith("encoder.")
        }
        if variant_name == "ltx2.5"
        else {}
    )  # its own file, named with our prefix
    head_ref = (
        {
            k: tuple(s)
            for k, s in json.loads((REFERENCE / "ltx25_22b_original_keys.json").read_text())[
                "ltx2.5-duration-head"
            ].items()
        }
        if variant_name == "ltx2.5"
        else {}
    )
    ours, upscaler, decoder, head = {}, {}, {}, {}
    for name, (module, key_map) in _meta_maps(variant_name).items():
        shapes = original_keys_with_shapes(key_map, module)
        target = {"spatial_upsampler": upscaler, "video_diffusion_decoder": decoder, "duration_head": head}.get(
            name, ours
        )
        assert not set(shapes) & set(target), f"{name} overlaps another component"
        target.update(shapes)
    for ref, got in ((main_ref, ours), (upscaler_ref, upscaler), (decoder_ref, decoder), (head_ref, head)):
        assert sorted(set(ref) - set(got)) == []
        assert sorted(set(got) - set(ref)) == []
        assert {k: got[k] for k in ref if got[k] != ref[k]} == {}


def test_ltx23_keys_that_diffusers_single_file_converters_miss():
    """diffusers 0.42.1 leaves these unmapped for 2.3; ours maps them to real diffusers parameters."""
    maps = _meta_maps("ltx2.3-22b")
    t = maps["transformer"][1].to_diffusers
    assert t["model.diffusion_model.prompt_adaln_single.linear.weight"] == "prompt_adaln.linear.weight"
    assert t["model.diffusion_model.audio_prompt_adaln_single.linear.bias"] == "audio_prompt_adaln.linear.bias"
    v = maps["video_vae"][1].to_diffusers
    assert v["vae.decoder.up_blocks.7.conv.conv.weight"] == "decoder.up_blocks.3.upsamplers.0.conv.conv.weight"
    assert v["vae.decoder.up_blocks.8.res_blocks.1.conv2.conv.bias"] == "decoder.up_blocks.3.resnets.1.conv2.conv.bias"


@pytest.mark.parametrize("variant_name", ["ltx2-19b", "ltx2.3-22b", "ltx2.5"])
def test_round_trip_names_and_shapes_on_meta(variant_name):
    for name, (module, key_map) in _meta_maps(variant_name).items():
        state = module.state_dict()
        original = key_map.convert_to_original(state)
        back, extra = key_map.convert_to_diffusers(original, strict=True)
        assert extra == {}
        assert sorted(back) == sorted(state)  # (a fused qkv comes back as its three parts together)
        assert all(back[k].shape == state[k].shape for k in state)


def test_tiny_round_trip_is_identity_on_values():
    variant = load_variant("tiny")
    for name, spec in variant.components.items():
        module = spec.build(meta=False)
        key_map = build_key_map(name, module, variant.family)
        state = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in module.state_dict().items()}
        passthrough = {
            k: torch.randn(s) for k, s in original_keys_with_shapes(key_map, module).items() if k in key_map.passthrough
        }
        original = key_map.convert_to_original(state, passthrough)
        assert len(original) == len(state) + len(passthrough)
        back, extra = key_map.convert_to_diffusers(original)
        assert set(back) == set(state) and set(extra) == set(passthrough)
        assert all(torch.equal(back[k], state[k]) for k in state)
        assert all(torch.equal(extra[k], passthrough[k]) for k in passthrough)
        again = key_map.convert_to_original(back, extra)
        assert list(again) == list(original)


def test_missing_key_is_named():
    maps = _meta_maps("tiny")
    module, key_map = maps["audio_vae"]
    original = key_map.convert_to_original(module.state_dict())
    del original["audio_vae.encoder.conv_in.conv.weight"]
    with pytest.raises(KeyMappingError, match="audio_vae.encoder.conv_in.conv.weight"):
        key_map.convert_to_diffusers(original, source="audio_vae_encoder.safetensors")


def _fake_lora(key_map, modules, rank=4):
    lora = {}
    for m in modules:
        lora[f"diffusion_model.{m}.lora_A.weight"] = torch.randn(rank, 8)
        lora[f"diffusion_model.{m}.lora_B.weight"] = torch.randn(8, rank)
        lora[f"diffusion_model.{m}.alpha"] = torch.tensor(float(rank * 2))
    return lora


def test_lora_round_trip_including_connectors():
    maps = _meta_maps("ltx2-19b")
    t_map, c_map = maps["transformer"][1], maps["connectors"][1]
    modules = [
        "transformer_blocks.0.attn1.to_q",
        "transformer_blocks.47.audio_to_video_attn.to_out.0",
        "transformer_blocks.3.ff.net.0.proj",
        "patchify_proj",
        "video_embeddings_connector.transformer_1d_blocks.1.attn1.to_k",
        "audio_embeddings_connector.transformer_1d_blocks.0.ff.net.2",
    ]
    lora = _fake_lora(t_map, modules)
    t_lora, c_lora, alphas = lora_original_to_peft(lora, t_map, c_map)
    assert "transformer_blocks.0.attn1.to_q.lora_A.weight" in t_lora
    assert "proj_in.lora_B.weight" in t_lora
    assert "video_connector.transformer_blocks.1.attn1.to_k.lora_A.weight" in c_lora
    assert "audio_connector.transformer_blocks.0.ff.net.2.lora_B.weight" in c_lora
    assert len(t_lora) + len(c_lora) == 2 * len(modules) and len(alphas) == len(modules)
    back = lora_peft_to_original(t_lora, t_map, c_lora, c_map, alphas)
    assert set(back) == set(lora)
    assert all(torch.equal(back[k], lora[k]) for k in lora)


def test_lora_unknown_module_is_an_error():
    maps = _meta_maps("tiny")
    bad = {"diffusion_model.transformer_blocks.0.attn9.to_q.lora_A.weight": torch.zeros(1, 1)}
    with pytest.raises(KeyMappingError, match="attn9"):
        lora_original_to_peft(bad, maps["transformer"][1], maps["connectors"][1])
