"""LTX-2.5's diffusion video decoder (diffusers ``LTX2VideoDiffusionDecoderModel``): its file's layout both ways,
strict loading from the release and repackaged layouts, and decoding validation and ``sample`` clips with it."""

import dataclasses
import json

import av

import numpy as np
import pytest
import torch

from conftest import REFERENCE, tiny_config
from ltx2train import cli
from ltx2train.config import ConfigError
from ltx2train.inference.sample import sample
from ltx2train.models.key_maps import build_key_map, base_state_dict
from ltx2train.models.loading import CheckpointError, load_component, read_safetensors_header
from ltx2train.models.tiny import random_components
from ltx2train.models.version import shipped_layout
from ltx2train.models.writing import save_release, save_repackaged, save_safetensors_atomic

RELEASE_FILE = "vae/ltx-2.5-video-vae-bf16.safetensors"
DECODER = "video_diffusion_decoder"


def test_the_real_decoder_is_the_published_files_decoder_key_for_key():
    """``ltx2.5``'s decoder, built on the meta device and named as its file names it, is exactly the published file's
    ``decoder.*`` and statistics (fused qkv included), and the rest of that file is the conv VAE's encoder, repeated."""
    published = json.loads((REFERENCE / "ltx25_22b_official_files.json").read_text())[RELEASE_FILE]
    ours = {k[len("diffusion_vae.") :]: s for k, s in shipped_layout("ltx2.5", DECODER).items()}
    decoder = {k: tuple(s) for k, s in published.items() if not k.startswith("encoder.")}
    assert ours == decoder and len(ours) == 312
    assert ours["decoder.det_stages.0.0.attn.qkv.weight"] == (3 * 2048, 2048)
    encoder = {k: tuple(s) for k, s in published.items() if k.startswith("encoder.")}
    conv = shipped_layout("ltx2.5", "video_vae")
    assert encoder == {k[len("vae.") :]: s for k, s in conv.items() if k.startswith("vae.encoder.")}


def test_fused_qkv_is_q_then_k_then_v_and_maps_back():
    decoder = random_components("tiny-2.5")[DECODER]
    key_map = build_key_map(DECODER, decoder, "2.5")
    state = base_state_dict(decoder)
    original = key_map.convert_to_original(state, decoder.ltx2_passthrough)
    head = "decoder.diff_blocks.0.attn."
    qkv = original[f"diffusion_vae.{head}qkv.weight"]
    assert torch.equal(qkv, torch.cat([state[f"{head}to_{p}.weight"] for p in "qkv"]))
    assert f"diffusion_vae.{head}proj.weight" in original and "diffusion_vae.decoder.type_emb" in original
    again, passthrough = key_map.convert_to_diffusers(original)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)
    assert set(passthrough) == {"diffusion_vae.decoder.type_emb"}


def _decode(decoder, latents, seed=3):
    with torch.no_grad():
        return decoder.decode(latents, generator=torch.Generator().manual_seed(seed), return_dict=False)[0]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoders")
    modules = random_components("tiny-2.5")
    save_repackaged(modules, root / "split", "2.5", variant_name="tiny-2.5")
    save_release(modules, root / "release", "2.5", variant_name="tiny-2.5")
    return root, modules[DECODER].requires_grad_(False)


@pytest.mark.parametrize("layout", ["split", "release"])
def test_the_decoder_loads_from_each_layout_and_decodes_the_same(written, layout):
    root, decoder = written
    loaded = load_component("tiny-2.5", DECODER, root / layout)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), decoder.state_dict().values()))
    latents = torch.randn(1, 8, 2, 2, 2)
    out = _decode(loaded, latents)
    assert out.shape == (1, 3, 9, 64, 64) and torch.equal(out, _decode(decoder, latents))
    assert not torch.equal(out, _decode(loaded, latents, seed=4))  # it denoises noise of its own


def test_the_release_file_repeats_the_encoder_as_the_published_one_does(written):
    root, _ = written
    keys, _ = read_safetensors_header(root / "release" / RELEASE_FILE)
    conv, _ = read_safetensors_header(root / "release" / "vae/ltx-2.5-video-vae-conv-bf16.safetensors")
    assert {k for k in keys if k.startswith("encoder.")} == {k for k in conv if k.startswith("encoder.")}
    assert "decoder.type_emb" in keys and "decoder.det_stages.0.0.attn.qkv.weight" in keys


@pytest.mark.parametrize("damage", ["missing", "shape"])
def test_a_damaged_decoder_file_is_refused_naming_the_tensor(written, tmp_path, damage):
    root, _ = written
    from safetensors.torch import load_file

    tensors = load_file(root / "split" / "video_vae_diffusion_decoder.safetensors")
    key = "diffusion_vae.decoder.diff_blocks.0.attn.qkv.weight"
    if damage == "missing":
        del tensors[key]
    else:
        tensors[key] = tensors[key][:-1]
    save_safetensors_atomic(tensors, tmp_path / "video_vae_diffusion_decoder.safetensors")
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_component("tiny-2.5", DECODER, tmp_path)


# ------------------------------------------------------------------------------------------ decoding clips
def test_validation_and_sample_decode_with_the_diffusion_decoder(tiny25_workspace, tmp_path):
    """``validation.video_decoder=diffusion``: the in-training clip is decoded by LTX-2.5's diffusion decoder, and
    ``sample`` from the checkpoint reproduces it exactly; the conv decoder gives another picture of the same size
    and the same audio."""
    from ltx2train.training import checkpoint as ckpt
    from ltx2train.training.trainer import Trainer

    cfg = tiny_config(
        tiny25_workspace,
        tmp_path / "run",
        [
            "validation.at_start=false",
            "validation.every=0",
            "train.max_steps=2",
            "validation.steps=2",
            "validation.prompts=[a red circle]",
            "optimizer.lr=1e-2",
            "validation.video_decoder=diffusion",
        ],
    )
    result = Trainer(cfg, log=lambda _: None).train()
    in_training = result.last_validation[0]
    _, clips = sample(cfg, lora=result.checkpoint / ckpt.LORA_FILE, output_dir=tmp_path / "sample")
    assert np.array_equal(clips[0].video, in_training.video) and torch.equal(clips[0].audio, in_training.audio)
    conv_cfg = dataclasses.replace(cfg, validation=dataclasses.replace(cfg.validation, video_decoder="conv"))
    _, conv = sample(conv_cfg, lora=result.checkpoint / ckpt.LORA_FILE, output_dir=tmp_path / "conv")
    assert clips[0].video.shape == conv[0].video.shape == (9, 64, 64, 3)
    assert not np.allclose(clips[0].video, conv[0].video, atol=0.05)
    assert torch.equal(clips[0].audio, conv[0].audio)  # the audio is decoded as before


def test_the_diffsynth_pipeline_decodes_with_the_diffusion_decoder(tiny25_workspace, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    from ltx2train.config import save_config

    save_config(
        tiny_config(
            tiny25_workspace,
            tmp_path / "run",
            ["validation.height=64", "validation.width=64", "validation.num_frames=9", "validation.steps=2"],
        ),
        recipe,
    )
    frames = {}
    for decoder in ("conv", "diffusion"):
        assert (
            cli.main(
                [
                    "sample",
                    str(recipe),
                    "--distilled-pipeline",
                    "--video-decoder",
                    decoder,
                    "--prompt",
                    "a red circle",
                    "--output",
                    str(tmp_path / decoder),
                ]
            )
            == 0
        )
        path = capsys.readouterr().out.strip().splitlines()[-1]
        with av.open(path) as container:
            frames[decoder] = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames["conv"].shape == frames["diffusion"].shape == (9, 64, 64, 3)
    assert np.abs(frames["conv"].astype(int) - frames["diffusion"].astype(int)).mean() > 5


def test_the_diffusion_decoder_is_refused_where_the_version_has_none(
    tiny23_workspace, tiny25_workspace, tmp_path, capsys
):
    with pytest.raises(
        ConfigError, match=r"validation\.video_decoder=diffusion: model\.variant tiny-2\.3 \(LTX-2\.3\)"
    ):
        tiny_config(tiny23_workspace, tmp_path, ["validation.video_decoder=diffusion"])
    from ltx2train.inference.av_pipeline import LTX2AudioVideoPipeline

    with pytest.raises(ValueError, match="LTX-2.5 has a diffusion decoder"):
        LTX2AudioVideoPipeline.from_pretrained(
            tiny23_workspace / "model", tiny23_workspace / "model" / "gemma", video_decoder="diffusion"
        )
    model = tmp_path / "model"  # a 2.5 checkpoint without the decoder's file: named before anything loads
    model.mkdir()
    for path in (tiny25_workspace / "model").iterdir():
        if path.name != "video_vae_diffusion_decoder.safetensors":
            (model / path.name).symlink_to(path)
    cfg = tiny_config(
        tiny25_workspace, tmp_path / "run", [f"model.checkpoint={model}", "validation.video_decoder=diffusion"]
    )
    with pytest.raises(FileNotFoundError, match="video_diffusion_decoder: .*video_vae_diffusion_decoder.safetensors"):
        sample(cfg, lora=None, output_dir=tmp_path / "out")


# ------------------------------------------------------------------------------------------ the duration head
def test_the_duration_head_maps_its_fused_pooler_both_ways():
    head = random_components("tiny-2.5")["duration_head"]
    key_map = build_key_map("duration_head", head, "2.5")
    state = base_state_dict(head)
    original = key_map.convert_to_original(state)
    in_proj = original["duration_head.attention_pooler.cross_attn.in_proj_weight"]
    assert torch.equal(in_proj, torch.cat([state[f"attention_pooler.to_{p}.weight"] for p in "qkv"]))
    assert "duration_head.attention_pooler.cross_attn.out_proj.bias" in original and len(original) == 15
    again, _ = key_map.convert_to_diffusers(original)
    assert again.keys() == state.keys() and all(torch.equal(again[k], state[k]) for k in state)


def _model_with_head(workspace, tmp_path, seconds: float):
    """The workspace's model with a duration head that predicts ``seconds`` for any prompt (its output bias)."""
    from safetensors.torch import load_file

    model = tmp_path / "model"
    model.mkdir()
    for path in (workspace / "model").iterdir():
        if path.name != "duration_head.safetensors":
            (model / path.name).symlink_to(path)
    tensors = load_file(workspace / "model" / "duration_head.safetensors")
    tensors["duration_head.mlp_out.weight"] = torch.zeros_like(tensors["duration_head.mlp_out.weight"])
    tensors["duration_head.mlp_out.bias"] = torch.full_like(tensors["duration_head.mlp_out.bias"], np.log(seconds))
    save_safetensors_atomic(tensors, model / "duration_head.safetensors")
    return model


def test_sample_num_frames_auto_takes_each_prompts_length_from_the_duration_head(tiny25_workspace, tmp_path, capsys):
    """``sample --num-frames auto``: the clip is as long as LTX-2.5's duration head says (2 s at 24 fps -> 41 frames
    on the 8k+1 grid), the frame count diffusers' ``LTX2Pipeline`` picks with the same head when ``num_frames`` is
    omitted."""
    from ltx2train.config import save_config
    from ltx2train.inference.prompt_sampler import encode_prompts
    from ltx2train.models.text_encoder import load_text_encoder

    model = _model_with_head(tiny25_workspace, tmp_path, seconds=2.0)
    cfg = tiny_config(
        tiny25_workspace, tmp_path / "run", [f"model.checkpoint={model}", "validation.steps=2", "validation.fps=24"]
    )
    _, clips = sample(cfg, lora=None, prompts=["a red circle"], output_dir=tmp_path / "auto", num_frames="auto")
    assert clips[0].video.shape[0] == 41

    # diffusers' LTX2Pipeline, num_frames omitted: its connectors' output for the prompt into the head
    encoded = encode_prompts(
        load_text_encoder(
            cfg.model.text_encoder, dtype=torch.float32, max_sequence_length=cfg.data.max_sequence_length
        ),
        ["a red circle"],
        "",
        cfg.data.max_sequence_length,
    )
    video, audio, _ = load_component("tiny-2.5", "connectors", model)(
        encoded.hidden_states, encoded.attention_mask, padding_side="left"
    )
    head = load_component("tiny-2.5", "duration_head", model)
    assert head.predict_num_frames(video, audio, frame_rate=24.0, temporal_compression_ratio=8) == 41

    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    for diffsynth_pipeline in ([], ["--distilled-pipeline"]):  # the validation pipeline, DiffSynth's
        assert (
            cli.main(
                [
                    "sample",
                    str(recipe),
                    "--num-frames",
                    "auto",
                    "--prompt",
                    "a red circle",
                    *diffsynth_pipeline,
                    "--output",
                    str(tmp_path / f"cli{len(diffsynth_pipeline)}"),
                ]
            )
            == 0
        )
        with av.open(capsys.readouterr().out.strip().splitlines()[-1]) as container:
            assert sum(1 for _ in container.decode(video=0)) == 41


def test_num_frames_auto_is_refused_where_there_is_no_duration_head(tiny23_workspace, tmp_path):
    cfg = tiny_config(tiny23_workspace, tmp_path / "run", ["validation.steps=2"])
    with pytest.raises(ValueError, match=r"tiny-2\.3 \(LTX-2\.3\) has no duration head"):
        sample(cfg, lora=None, output_dir=tmp_path / "out", num_frames="auto")
