"""Loaders and writers on the tiny model: repackaged, single file, diffusers dir; strictness."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ltx2train.models.layout import SPLIT_FILES
from ltx2train.models.loading import PASSTHROUGH_ATTR, CheckpointError, load_component
from ltx2train.models.specs import load_variant

TINY_COMPONENTS = list(load_variant("tiny").components)  # LTX-2.5's diffusion decoder: test_diffusion_decoder.py
TINY_SPLIT_FILES = [f for f in SPLIT_FILES if f.component in TINY_COMPONENTS]
from ltx2train.models.tiny import random_components
from ltx2train.models.writing import original_state_dict, save_repackaged, save_single_file


@pytest.fixture(scope="module")
def tiny_modules():
    return random_components("tiny", seed=1)


@pytest.fixture(scope="module")
def repackaged(tiny_modules, tmp_path_factory):
    out = tmp_path_factory.mktemp("repackaged")
    save_repackaged(tiny_modules, out, "2.0", variant_name="tiny")
    return out


@pytest.fixture(scope="module")
def single_file(tiny_modules, tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "ltx-2-tiny-dev.safetensors"
    save_single_file({k: v for k, v in tiny_modules.items() if k != "spatial_upsampler"}, path, "2.0")
    return path


def _run(component, module, seed=0):
    """One forward pass of each component on fixed random inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if component == "transformer":
            cfg = module.config
            video = torch.randn(1, 2 * 2 * 2, cfg.in_channels, generator=g)  # (B, F*H*W, C)
            audio = torch.randn(1, 5, cfg.audio_in_channels, generator=g)
            ctx = torch.randn(1, 6, cfg.caption_channels, generator=g)
            out = module(
                hidden_states=video,
                audio_hidden_states=audio,
                encoder_hidden_states=ctx,
                audio_encoder_hidden_states=torch.randn(1, 6, cfg.caption_channels, generator=g),
                timestep=torch.tensor([500.0]),
                encoder_attention_mask=torch.ones(1, 6),
                audio_encoder_attention_mask=torch.ones(1, 6),
                num_frames=2,
                height=2,
                width=2,
                fps=24.0,
                audio_num_frames=5,
                return_dict=False,
            )
            return torch.cat([out[0].flatten(), out[1].flatten()])
        if component == "connectors":
            hidden = torch.randn(2, 8, module.config.caption_channels * module.config.text_proj_in_factor, generator=g)
            mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1], [1] * 8])
            v, a, m = module(hidden, mask)
            return torch.cat([v.flatten(), a.flatten()])
        if component == "video_vae":
            x = torch.rand(1, 3, 9, 64, 64, generator=g) * 2 - 1
            z = module.encode(x).latent_dist.mode()
            return torch.cat([z.flatten(), module.decode(z).sample.flatten()])
        if component == "audio_vae":
            mel = torch.randn(1, 2, 16, module.config.mel_bins, generator=g)
            z = module.encode(mel).latent_dist.mode()
            return torch.cat([z.flatten(), module.decode(z).sample.flatten()])
        if component == "vocoder":
            return module(torch.randn(1, 2, 10, module.config.in_channels // 2, generator=g)).flatten()
        if component == "spatial_upsampler":
            return module(torch.randn(1, module.config.in_channels, 2, 4, 4, generator=g)).flatten()
    raise AssertionError(component)


def test_repackaged_files_hold_original_keys(repackaged, tiny_modules):
    for split in TINY_SPLIT_FILES:
        with safe_open(str(repackaged / split.filename), framework="pt") as f:
            keys = list(f.keys())
        assert keys and all(split.holds(k) for k in keys), split.filename
    enc = load_file(str(repackaged / "video_vae_encoder.safetensors"))
    assert "vae.per_channel_statistics.mean-of-means" in enc and "vae.per_channel_statistics.channel" in enc
    assert not any(k.startswith("vae.decoder.") for k in enc)


@pytest.mark.parametrize("component", TINY_COMPONENTS)
def test_repackaged_round_trip_outputs_equal(component, repackaged, tiny_modules):
    loaded = load_component("tiny", component, repackaged)
    ref = tiny_modules[component]
    assert torch.equal(_run(component, loaded), _run(component, ref))
    assert not any(p.device.type == "meta" for p in loaded.parameters())
    # the passthrough statistics survive the trip
    assert set(getattr(loaded, PASSTHROUGH_ATTR)) == set(getattr(ref, PASSTHROUGH_ATTR))


@pytest.mark.parametrize("component", [c for c in TINY_COMPONENTS if c != "spatial_upsampler"])
def test_single_file_round_trip_outputs_equal(component, single_file, tiny_modules):
    loaded = load_component("tiny", component, single_file)
    assert torch.equal(_run(component, loaded), _run(component, tiny_modules[component]))


def test_single_file_equals_repackaged_union(single_file, repackaged):
    combined = load_file(str(single_file))
    union = {}
    for split in TINY_SPLIT_FILES:
        union.update(load_file(str(repackaged / split.filename)))
    assert set(combined) == set(union)
    assert all(torch.equal(combined[k], union[k]) for k in union)


def test_save_reload_save_is_byte_identical_tensors(repackaged, tmp_path):
    modules = {c: load_component("tiny", c, repackaged) for c in TINY_COMPONENTS}
    save_repackaged(modules, tmp_path, "2.0")
    for split in TINY_SPLIT_FILES:
        a, b = load_file(str(repackaged / split.filename)), load_file(str(tmp_path / split.filename))
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_dtype_and_no_grad(repackaged):
    m = load_component("tiny", "transformer", repackaged, dtype=torch.bfloat16)
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in m.parameters())


def test_diffusers_directory(tiny_modules, tmp_path):
    tiny_modules["audio_vae"].save_pretrained(tmp_path / "audio_vae")
    loaded = load_component("tiny", "audio_vae", tmp_path)
    assert torch.equal(_run("audio_vae", loaded), _run("audio_vae", tiny_modules["audio_vae"]))
    # strict there too
    weights = tmp_path / "audio_vae" / "diffusion_pytorch_model.safetensors"
    sd = load_file(str(weights))
    del sd["decoder.conv_out.conv.bias"]
    save_file(sd, str(weights))
    with pytest.raises(CheckpointError, match="decoder.conv_out.conv.bias"):
        load_component("tiny", "audio_vae", tmp_path)


def _rewrite(path, edit):
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    sd = load_file(str(path))
    edit(sd)
    save_file(sd, str(path), metadata=meta)


def test_missing_tensor_names_tensor_and_file(repackaged, tmp_path):
    for split in TINY_SPLIT_FILES:
        (tmp_path / split.filename).write_bytes((repackaged / split.filename).read_bytes())
    key = "model.diffusion_model.transformer_blocks.1.attn2.to_k.weight"
    _rewrite(tmp_path / "transformer.safetensors", lambda sd: sd.pop(key))
    with pytest.raises(CheckpointError) as err:
        load_component("tiny", "transformer", tmp_path)
    assert key in str(err.value) and "transformer.safetensors" in str(err.value)


def test_reshaped_tensor_names_tensor_and_file(repackaged, tmp_path):
    for split in TINY_SPLIT_FILES:
        (tmp_path / split.filename).write_bytes((repackaged / split.filename).read_bytes())
    key = "vae.decoder.conv_out.conv.weight"
    _rewrite(tmp_path / "video_vae_decoder.safetensors", lambda sd: sd.__setitem__(key, sd[key][:-1].clone()))
    with pytest.raises(CheckpointError) as err:
        load_component("tiny", "video_vae", tmp_path)
    assert key in str(err.value) and "video_vae_decoder.safetensors" in str(err.value) and "shape" in str(err.value)


def test_unexpected_tensor_is_an_error(single_file, tmp_path):
    path = tmp_path / "one.safetensors"
    path.write_bytes(single_file.read_bytes())
    _rewrite(path, lambda sd: sd.__setitem__("audio_vae.encoder.extra_layer.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match="unexpected tensor 'audio_vae.encoder.extra_layer.weight'"):
        load_component("tiny", "audio_vae", path)
    # other components in the same file are unaffected
    load_component("tiny", "vocoder", path)


def test_distilled_transformer_file(tiny_modules, tmp_path):
    save_repackaged({"transformer": tiny_modules["transformer"]}, tmp_path, "2.0", distilled_transformer=True)
    assert (tmp_path / "transformer_distilled.safetensors").is_file()
    loaded = load_component("tiny", "transformer", tmp_path, distilled=True)
    assert torch.equal(_run("transformer", loaded), _run("transformer", tiny_modules["transformer"]))
    with pytest.raises(FileNotFoundError, match="transformer.safetensors"):
        load_component("tiny", "transformer", tmp_path)


def test_writes_are_atomic(tiny_modules, tmp_path, monkeypatch):
    import ltx2train.models.writing as writing

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writing, "save_file", boom)
    with pytest.raises(OSError):
        save_repackaged({"vocoder": tiny_modules["vocoder"]}, tmp_path, "2.0")
    assert list(tmp_path.iterdir()) == []


def test_original_state_dict_has_metadata_free_keys(tiny_modules):
    sd = original_state_dict("connectors", tiny_modules["connectors"], "2.0")
    assert "text_embedding_projection.aggregate_embed.weight" in sd
    assert any(k.startswith("model.diffusion_model.video_embeddings_connector.learnable_registers") for k in sd)
    json.dumps(sorted(sd))


@pytest.mark.parametrize("component", ["video_vae", "audio_vae", "connectors", "transformer"])
def test_a_components_fingerprint_is_its_weights_not_its_file_layout(component, repackaged, single_file, tmp_path):
    """The cache records which weights made it: the same tensors in split files and in the official single file
    give one fingerprint; other weights (another seed) give another."""
    from ltx2train.models.loading import component_fingerprint
    from ltx2train.models.tiny import write_tiny_checkpoint

    split = component_fingerprint(repackaged, component)
    assert split == component_fingerprint(single_file, component)
    seeds = [write_tiny_checkpoint(tmp_path / f"seed{s}", seed=s) for s in (5, 6)]
    assert component_fingerprint(seeds[0], component) != component_fingerprint(seeds[1], component)
