"""LTX-2.3 end to end on its tiny variant (``tiny-2.3``: gated attention, prompt AdaLN, 9-row modulation,
per-modality text projections, the 2.3 VAE decoder, the vocoder with bandwidth extension), and the version checks
that keep one LTX-2 version's files, caches and LoRAs away from another."""

import json
import re
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import REFERENCE, tiny_config
from ltx2train import cli
from ltx2train.config import save_config
from ltx2train.data.prepare import prepare
from ltx2train.inference.sample import sample
from ltx2train.models.keys import build_key_map
from ltx2train.models.loading import load_component
from ltx2train.models.lora_files import read_lora
from ltx2train.models.specs import load_variant
from ltx2train.models.version import VersionMismatchError, check_version, detect_checkpoint
from ltx2train.training import checkpoint as ckpt
from ltx2train.training.trainer import Trainer

PROMPT = "a red circle moves right with a rising tone"
QUIET = lambda _: None  # noqa: E731
SHORT = ["validation.at_start=false", "train.max_steps=4", "train.checkpoint_every=2", "train.keep_last=5",
         "validation.every=0", f"validation.prompts=[{PROMPT}]", "validation.steps=2", "train.log_every=1"]


@pytest.fixture(scope="module")
def run23(tiny23_workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("run23")
    cfg = tiny_config(tiny23_workspace, out, SHORT)
    return cfg, Trainer(cfg, log=QUIET).train()


def test_the_tiny_23_model_has_the_23_structure():
    """Every LTX-2.3 module kind of the 22B layout is in tiny-2.3 and nothing else: the reference key list with
    block indices dropped equals tiny-2.3's (transformer, connectors, vocoder, upscaler); both ways through the key map."""
    reference = json.loads((REFERENCE / "ltx23_22b_original_keys.json").read_text())["ltx2.3-22b"]
    strip = lambda keys: {re.sub(r"\.\d+\.", ".N.", re.sub(r"\.\d+\.", ".N.", k)) for k in keys}  # noqa: E731
    spec = load_variant("tiny-2.3")
    for component, prefix in (("transformer", "model.diffusion_model.transformer_blocks"),
                              ("connectors", "model.diffusion_model.video_embeddings_connector"),
                              ("vocoder", "vocoder."), ("audio_vae", "audio_vae.")):
        module = spec.component(component).build(meta=True)
        key_map = build_key_map(component, module, spec.family)
        ours = set(key_map.to_diffusers)
        assert {key_map.to_original[key_map.to_diffusers[k]] for k in ours} == ours  # a bijection
        theirs = {k for k in reference if k.startswith(prefix)}
        assert strip(k for k in ours if k.startswith(prefix)) == strip(theirs), component
    gates = [k for k in build_key_map("transformer", spec.component("transformer").build(meta=True), "2.3").to_diffusers
             if "to_gate_logits" in k]
    assert gates and all(k.endswith(("to_gate_logits.weight", "to_gate_logits.bias")) for k in gates)


def test_the_version_is_detected_from_the_files(tiny23_workspace, tiny_workspace, tmp_path, capsys):
    from ltx2train.models.writing import save_single_file

    for root, variant, version in ((tiny23_workspace, "tiny-2.3", "LTX-2.3"), (tiny_workspace, "tiny", "LTX-2.0")):
        found = detect_checkpoint(root / "model")
        assert (found.variant, found.version) == (variant, version)
    # the official single file too: its keys, not its name or our metadata
    modules = {c: load_component("tiny-2.3", c, tiny23_workspace / "model") for c in ("transformer", "connectors")}
    single = save_single_file(modules, tmp_path / "ltx-2.3-custom.safetensors", "2.3", metadata={})
    assert detect_checkpoint(single).variant == "tiny-2.3"
    assert cli.main(["inspect", str(single)]) == 0
    assert "LTX-2.3 weights, variant tiny-2.3: connectors, transformer" in capsys.readouterr().out


@pytest.mark.parametrize("checkpoint_of, variant", [("2.3", "tiny"), ("2.3", "ltx2-19b"), ("2.0", "tiny-2.3"),
                                                    ("2.0", "ltx2.3-22b")])
def test_a_checkpoint_of_another_version_is_refused_naming_both(tiny23_workspace, tiny_workspace, tmp_path, capsys,
                                                               checkpoint_of, variant):
    root = tiny23_workspace if checkpoint_of == "2.3" else tiny_workspace
    recipe = save_config(tiny_config(root, tmp_path / "run"), tmp_path / "recipe.yaml")
    found = "tiny-2.3" if checkpoint_of == "2.3" else "tiny"
    for command in ("train", "prepare", "sample"):
        assert cli.main([command, str(recipe), f"model.variant={variant}"]) == 2, command
        err = capsys.readouterr().err
        assert f"weights are LTX-{checkpoint_of} ({found}), but model.variant is {variant} " \
               f"(LTX-{load_variant(variant).family}): set model.variant={found}" in err, err
        assert "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before any work


def test_a_file_of_another_size_is_named_with_what_differs(tiny23_workspace, tmp_path):
    spec = load_variant("tiny-2.3")
    model = tmp_path / "model"
    shutil.copytree(tiny23_workspace / "model", model)
    state = load_file(str(model / "transformer.safetensors"))
    state = {k: v for k, v in state.items() if ".transformer_blocks.1." not in k}  # one block fewer
    save_file(state, str(model / "transformer.safetensors"))
    with pytest.raises(VersionMismatchError, match=r"matches no shipped variant .* missing \(e\.g\. "
                                                   r"model\.diffusion_model\.transformer_blocks\.1\..*closest shipped "
                                                   r"variant is tiny-2.3 \(LTX-2.3\)"):
        check_version(model, spec, ["transformer"])


def test_a_20_cache_is_refused_for_23_with_how_to_prepare(tiny23_workspace, tiny_workspace, tmp_path, capsys):
    cache20 = tiny_config(tiny_workspace, tmp_path).data.cache_dir
    recipe = save_config(tiny_config(tiny23_workspace, tmp_path / "run", [f"data.cache_dir={cache20}"]),
                         tmp_path / "recipe.yaml")
    for command in ("train", "prepare"):
        assert cli.main([command, str(recipe)]) == 2
        err = capsys.readouterr().err
        assert "prepared for tiny (LTX-2.0), but the recipe's model.variant is tiny-2.3 (LTX-2.3)" in err
        assert "--overwrite" in err
    manifest = json.loads((Path(tiny_config(tiny23_workspace, tmp_path).data.cache_dir) / "manifest.json").read_text())
    assert manifest["produced_by"]["variant"] == "tiny-2.3" and manifest["produced_by"]["version"] == "LTX-2.3"
    assert manifest["settings"]["variant"] == "tiny-2.3"


def test_23_prepare_caches_both_text_projections(tiny23_workspace):
    from ltx2train.data.cache import CachedDataset

    sample0 = CachedDataset(tiny_config(tiny23_workspace, "unused").data.cache_dir)[0]
    connectors = load_variant("tiny-2.3").component("connectors").config
    assert sample0["text_video"].shape[-1] == connectors["video_hidden_dim"]
    assert sample0["text_audio"].shape[-1] == connectors["audio_hidden_dim"]
    assert sample0["video_latents"].shape[0] == 8 and sample0["audio_latents"].shape[0] == 2


def test_23_lora_trains_checkpoints_and_sample_reproduces_validation(run23, tmp_path):
    cfg, result = run23
    assert result.step == 4 and all(np.isfinite(loss) for _, loss in result.losses)
    lora = read_lora(result.checkpoint / ckpt.LORA_FILE)
    assert lora.metadata["base_variant"] == "tiny-2.3" and lora.metadata["family"] == "2.3"
    assert not [m for m in lora.modules if "gate_logits" in m]  # the default leaves the gates alone
    assert any(m.endswith("audio_attn1.to_q") for m in lora.modules)  # ... and trains the audio stream
    in_training = result.last_validation[0]
    assert in_training.sample_rate == 48000  # the vocoder's bandwidth extension
    paths, clips = sample(cfg, lora=result.checkpoint / ckpt.LORA_FILE, output_dir=tmp_path)
    assert np.array_equal(clips[0].video, in_training.video) and torch.equal(clips[0].audio, in_training.audio)
    with av.open(str(paths[0])) as container:
        assert container.streams.audio[0].rate == 48000
    _, base = sample(cfg, lora=None, output_dir=tmp_path / "base")
    assert not np.array_equal(base[0].video, in_training.video)


def test_23_resume_continues_exactly(run23, tiny23_workspace, tmp_path):
    cfg, straight = run23
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(ckpt.checkpoint_dir(cfg.train.output_dir, 2), ckpt.checkpoint_dir(resumed_dir, 2))
    resumed = Trainer(tiny_config(tiny23_workspace, resumed_dir, SHORT), log=QUIET).train()
    assert [s for s, _ in resumed.losses] == [3, 4] and resumed.losses == straight.losses[2:]
    a, b = (load_file(str(r.checkpoint / ckpt.LORA_FILE)) for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_default_23_lora_trains_stably_and_audio_learns(tiny23_workspace, tmp_path):
    """The default targets on LTX-2.3 (attention q/k/v/out, gates untouched): 60 steps, nothing non-finite, the
    video and the audio loss both fall, and the gates stay exactly the base model's."""
    cfg = tiny_config(tiny23_workspace, tmp_path, ["validation.at_start=false", "validation.every=0",
                                                   "validation.prompts=[]", "train.max_steps=60", "train.log_every=10",
                                                   "train.checkpoint_every=60"])
    trainer = Trainer(cfg, log=QUIET)
    result = trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert all(np.isfinite([r["loss"], r["video_loss"], r["audio_loss"], r["grad_norm"]]).all() for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    first, last = (np.mean([r[k] for r in part]) for part in (rows[:2], rows[-2:]) for k in ("audio_loss",))
    assert last < first
    base = load_component("tiny-2.3", "transformer", cfg.model.checkpoint)
    gates = {n: p for n, p in trainer.model.named_parameters() if "to_gate_logits" in n}
    assert gates and all("lora_" not in n and torch.equal(p, base.get_parameter(n.replace(".base_layer", "")))
                         for n, p in gates.items())
    assert result.step == 60


def test_gate_logits_are_an_explicit_option(tiny23_workspace, tmp_path, capsys):
    cfg = tiny_config(tiny23_workspace, tmp_path / "gates", ["validation.at_start=false", "validation.every=0",
                                                             "validation.prompts=[]", "train.max_steps=2",
                                                             "lora.gate_logits=true", "optimizer.lr=1e-2"])
    result = Trainer(cfg, log=QUIET).train()
    lora = read_lora(result.checkpoint / ckpt.LORA_FILE)
    gated = [m for m in lora.modules if m.endswith("to_gate_logits")]
    transformer = load_variant("tiny-2.3").component("transformer").build(meta=True)
    assert len(gated) == sum(1 for n, _ in transformer.named_modules() if n.endswith("to_gate_logits"))
    assert all(torch.count_nonzero(lora.modules[m].up) for m in gated)  # trained, not left at zero
    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    assert cli.main(["train", str(recipe), "lora.gate_logits=false", "lora.target_modules=[to_q,to_gate_logits]"]) == 2
    assert "set lora.gate_logits=true" in capsys.readouterr().err
    assert cli.main(["train", str(recipe), "model.variant=tiny"]) == 2
    assert "has no gated attention" in capsys.readouterr().err


def test_a_lora_with_nan_weights_is_refused(run23, tmp_path):
    _, result = run23
    state = load_file(str(result.checkpoint / ckpt.LORA_FILE))
    key = next(k for k in state if k.endswith("lora_B.weight"))
    state[key][0, 0] = float("nan")
    save_file(state, str(tmp_path / "nan.safetensors"))
    with pytest.raises(ValueError, match=f"NaN or infinite values .*{re.escape(key)}"):
        read_lora(tmp_path / "nan.safetensors")


def test_23_two_stage_and_distilled_sampling(run23, tmp_path, capsys):
    """``sample --two-stage`` (the 2.3 x2 upscaler beside the checkpoint, a stage-2 LoRA) and ``--distilled-pipeline``."""
    from test_inference_pipeline import _stage2_lora

    cfg, result = run23
    assert (Path(cfg.model.checkpoint) / "ltx-2.3-spatial-upscaler-x2-1.0.safetensors").is_file()
    recipe = save_config(tiny_config(Path(cfg.model.checkpoint).parent, tmp_path / "run",
                                     ["validation.height=64", "validation.width=128", "validation.num_frames=9",
                                      "validation.steps=2"]), tmp_path / "recipe.yaml")
    stage2 = _stage2_lora(load_component("tiny-2.3", "transformer", cfg.model.checkpoint), tmp_path / "s2.safetensors")
    lora = str(result.checkpoint / ckpt.LORA_FILE)
    for flags in (["--two-stage", "--stage2-lora", str(stage2)], ["--distilled-pipeline"]):
        assert cli.main(["sample", str(recipe), *flags, "--lora", lora, "--prompt", PROMPT,
                         "--output", str(tmp_path / flags[0])]) == 0
        path = Path(capsys.readouterr().out.strip().splitlines()[-1])
        with av.open(str(path)) as container:
            assert (container.streams.video[0].width, container.streams.video[0].height) == (128, 64)
            assert container.streams.audio[0].rate == 48000
