"""LoRA files: dialects, folding, export formats, per-modality split, merge, import (init_from), inspect.

Consumers other than ltx2train are tested with their own code in test_lora_consumers.py; here the effect of a
file is always computed from first principles: W + (alpha / r) * B @ A on the plain base weights.
"""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import LORA_ALPHA as ALPHA
from conftest import LORA_RANK as RANK
from conftest import LORA_TRAIN as TRAIN
from conftest import read_trained_state, tiny_config, transformer_inputs, transformer_outputs
from ltx2train.lora.export import export_lora_file
from ltx2train.lora.merge import merge_lora
from ltx2train.lora.adapters import apply_lora
from ltx2train.file_report import inspect_file
from ltx2train.models.key_maps import build_key_map, lora_module_to_diffusers, lora_module_to_original
from ltx2train.models.loading import load_component
from ltx2train.lora.files import from_state_dict, module_stream, read_lora, to_state_dict
from ltx2train.models.specs import load_variant
from ltx2train.models.writing import save_single_file
from ltx2train.training import checkpoint as ckpt
from ltx2train.training.trainer import Trainer


@torch.no_grad()
def _merged_by_hand(base, lora_file):
    """The base transformer with W + (alpha/r) B A written into its weights: the definition of the effect."""
    for name, w in lora_file.modules.items():
        component, dname = lora_module_to_diffusers(name)
        assert component == "transformer"
        base.get_submodule(dname).weight += w.delta()
    return base


def _deltas(lora_file):
    return {m: w.delta() for m, w in lora_file.modules.items()}


def test_lora_module_names_match_the_weight_key_maps_both_ways():
    for variant in ("tiny", "ltx2-19b"):
        spec = load_variant(variant)
        for component in ("transformer", "connectors"):
            module = spec.components[component].build(meta=True)
            key_map = build_key_map(component, module, spec.family)
            linears = [n for n, m in module.named_modules() if isinstance(m, torch.nn.Linear)]
            for dname in linears:
                original = key_map.to_original[dname + ".weight"]
                if not original.startswith("model.diffusion_model."):
                    continue  # text_embedding_projection: not a LoRA target
                name = lora_module_to_original(component, dname)
                assert original == f"model.diffusion_model.{name}.weight"
                assert lora_module_to_diffusers(name) == (component, dname)


def test_checkpoint_lora_is_folded_and_the_exact_state_is_kept(trained_lora):
    cfg, path = trained_lora
    folded = read_lora(path / ckpt.LORA_FILE)
    assert folded.dialect == "official" and all(w.alpha is None for w in folded.modules.values())
    exact = read_trained_state(path)
    assert exact.keys() == {k for k in exact if ".lora_" in k}  # the adapters only, never the frozen base
    b = exact["transformer_blocks.0.attn1.to_q.lora_B.default.weight"]
    assert b.abs().max() > 0  # trained
    torch.testing.assert_close(folded.modules["transformer_blocks.0.attn1.to_q"].up, b * (ALPHA / RANK))


def test_every_format_round_trips_to_the_same_effective_weights(trained_lora, tmp_path):
    _, path = trained_lora
    source = read_lora(path / ckpt.LORA_FILE)
    for fmt, dialect in (("official", "official"), ("official-alpha", "official-alpha"), ("diffusers", "diffusers")):
        out = export_lora_file(path / ckpt.LORA_FILE, tmp_path / f"{fmt}.safetensors", fmt=fmt).path
        back = read_lora(out)
        assert back.dialect == dialect and back.modules.keys() == source.modules.keys()
        for name, delta in _deltas(source).items():
            torch.testing.assert_close(back.modules[name].delta(), delta, rtol=1e-5, atol=1e-7)
    # an .alpha file from another tool (alpha != rank, B unfolded) reads to the same effect
    with_alpha = {}
    for name, w in source.modules.items():
        with_alpha[f"diffusion_model.{name}.lora_A.weight"] = w.down
        with_alpha[f"diffusion_model.{name}.lora_B.weight"] = w.up / 3.0
        with_alpha[f"diffusion_model.{name}.alpha"] = torch.tensor(3.0 * RANK)
    for name, delta in _deltas(source).items():
        torch.testing.assert_close(from_state_dict(with_alpha).modules[name].delta(), delta, rtol=1e-5, atol=1e-7)
    # DiffSynth's native names: original module names, PEFT's ".default", no prefix
    native = {
        k.replace("diffusion_model.", "")
        .replace(".lora_A.", ".lora_A.default.")
        .replace(".lora_B.", ".lora_B.default."): v
        for k, v in to_state_dict(source).items()
    }
    assert from_state_dict(native).dialect == "diffsynth"
    assert all(torch.equal(from_state_dict(native).modules[m].up, w.up) for m, w in source.modules.items())


def test_export_dtype(trained_lora, tmp_path):
    _, path = trained_lora
    out = export_lora_file(path / ckpt.LORA_FILE, tmp_path / "bf16.safetensors", dtype=torch.bfloat16).path
    assert {w.down.dtype for w in read_lora(out).modules.values()} == {torch.bfloat16}


def test_video_only_and_audio_only_loras_leave_the_other_stream_as_the_base(trained_lora, tiny_workspace, tmp_path):
    cfg, path = trained_lora
    kwargs = transformer_inputs(tiny_workspace, tmp_path)
    base = load_component("tiny", "transformer", cfg.model.checkpoint)
    base_video, base_audio = transformer_outputs(base, kwargs, isolate_modalities=True)
    full = load_component("tiny", "transformer", cfg.model.checkpoint)
    apply_lora(full, path / ckpt.LORA_FILE)
    full_video, full_audio = transformer_outputs(full, kwargs, isolate_modalities=True)
    for modality in ("video", "audio"):
        out = export_lora_file(path / ckpt.LORA_FILE, tmp_path / f"{modality}.safetensors", modality=modality).path
        kept = read_lora(out)
        streams = {module_stream(m) for m in kept.modules}
        assert streams == ({"video", "a2v"} if modality == "video" else {"audio", "v2a"})
        model = load_component("tiny", "transformer", cfg.model.checkpoint)
        apply_lora(model, out)
        video, audio = transformer_outputs(model, kwargs, isolate_modalities=True)
        # With the streams isolated (no cross-modal attention), the other stream is exactly the base model's
        # and this stream is exactly the full LoRA's.
        if modality == "video":
            assert torch.equal(audio, base_audio) and not torch.equal(video, base_video)
            torch.testing.assert_close(video, full_video, rtol=0, atol=1e-6)
        else:
            assert torch.equal(video, base_video) and not torch.equal(audio, base_audio)
            torch.testing.assert_close(audio, full_audio, rtol=0, atol=1e-6)
    no_cross = read_lora(
        export_lora_file(path / ckpt.LORA_FILE, tmp_path / "vn.safetensors", modality="video", cross_modal="none").path
    )
    assert {module_stream(m) for m in no_cross.modules} == {"video"}


def test_merged_weights_reproduce_base_plus_lora_in_both_layouts(trained_lora, tiny_workspace, tmp_path):
    cfg, path = trained_lora
    lora = read_lora(path / ckpt.LORA_FILE)
    kwargs = transformer_inputs(tiny_workspace, tmp_path)
    adapted = load_component("tiny", "transformer", cfg.model.checkpoint)
    apply_lora(adapted, lora)
    expected = transformer_outputs(adapted, kwargs)

    repackaged = merge_lora(lora, cfg.model.checkpoint, tmp_path / "merged")
    assert repackaged.merged == len(lora.modules)
    single_base = save_single_file(
        {
            c: load_component("tiny", c, cfg.model.checkpoint)
            for c in ("transformer", "connectors", "video_vae", "audio_vae", "vocoder")
        },
        tmp_path / "base.safetensors",
        "2.0",
    )
    merge_lora(lora, single_base, tmp_path / "merged.safetensors", dtype=torch.bfloat16)
    for source, tol in ((tmp_path / "merged", 1e-5), (tmp_path / "merged.safetensors", 0.05)):
        merged = load_component("tiny", "transformer", source)
        got = transformer_outputs(merged.float(), kwargs)
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, rtol=tol, atol=tol)
    # the other components are copied through unchanged
    with (
        safe_open(str(tmp_path / "merged.safetensors"), framework="pt") as f,
        safe_open(str(cfg.model.checkpoint + "/audio_vocoder.safetensors"), framework="pt") as v,
    ):
        key = next(iter(v.keys()))
        assert torch.equal(f.get_tensor(key).float(), v.get_tensor(key).to(torch.bfloat16).float())
    assert (tmp_path / "merged" / "video_vae_decoder.safetensors").is_file()


def test_merge_refuses_a_lora_of_another_shape(trained_lora, tiny_workspace, tmp_path):
    cfg, path = trained_lora
    lora = read_lora(path / ckpt.LORA_FILE)
    name = next(iter(lora.modules))
    lora.modules[name].down = torch.zeros(RANK, 3)
    with pytest.raises(ValueError, match="another base variant"):
        merge_lora(lora, cfg.model.checkpoint, tmp_path / "bad")
    assert not (tmp_path / "bad" / "transformer.safetensors").exists()


@pytest.mark.parametrize("fmt", ["official", "official-alpha", "diffusers", "diffsynth", "ltx-trainer"])
def test_init_from_any_dialect_starts_with_that_files_effect(trained_lora, tiny_workspace, tmp_path, fmt):
    cfg, path = trained_lora
    source = read_lora(path / ckpt.LORA_FILE)
    init = tmp_path / "init.safetensors"
    if fmt == "diffsynth":  # what DiffSynth's trainer saves: PEFT names with .default, no prefix, no alpha
        state = {
            k.replace("diffusion_model.", "").replace(".weight", ".default.weight"): v
            for k, v in to_state_dict(source).items()
        }
        save_file(state, str(init), metadata={"format": "pt"})
    elif fmt == "ltx-trainer":
        # Lightricks' trainer: diffusion_model. + PEFT names, its B as trained (alpha dropped), bf16, no LoRA
        # metadata. Its consumer (ltx-core) applies W + B A: that is the effect to start from.
        for w in source.modules.values():
            w.up = (w.up / 3.0).to(torch.bfloat16)
            w.down = w.down.to(torch.bfloat16)
        save_file(to_state_dict(source), str(init), metadata={})
    else:
        init = export_lora_file(path / ckpt.LORA_FILE, tmp_path / "init.safetensors", fmt=fmt).path
    # another alpha than the file's: the import rescales B so the effect stays the file's
    new = tiny_config(
        tiny_workspace, tmp_path / "run", [*TRAIN, "lora.alpha=2", f"lora.init_from={init}", "train.max_steps=1"]
    )
    trainer = Trainer(new, log=lambda _: None)
    trainer.setup()
    kwargs = transformer_inputs(tiny_workspace, tmp_path)
    expected = transformer_outputs(
        _merged_by_hand(load_component("tiny", "transformer", cfg.model.checkpoint), source), kwargs
    )
    got = transformer_outputs(trainer.model, kwargs)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


def test_init_from_checks_rank_and_targets(trained_lora, tiny_workspace, tmp_path):
    _, path = trained_lora
    for override, message in (("lora.rank=8", "rank 4"), ("lora.target_modules=[to_q]", "lora.target_modules")):
        cfg = tiny_config(
            tiny_workspace, tmp_path / override, [*TRAIN, override, f"lora.init_from={path / 'lora.safetensors'}"]
        )
        with pytest.raises(ValueError, match=message):
            Trainer(cfg, log=lambda _: None).setup()


def test_resume_from_a_folded_or_alpha_file_continues_as_from_the_exact_state(trained_lora, tiny_workspace, tmp_path):
    cfg, _ = trained_lora
    step3 = ckpt.checkpoint_dir(cfg.train.output_dir, 3)
    straight = [loss for step, loss in _losses(cfg.train.output_dir) if step > 3]
    for form in ("folded", "alpha"):
        run = tmp_path / form
        copy = ckpt.checkpoint_dir(run, 3)
        shutil.copytree(step3, copy)
        shutil.rmtree(copy / "state" / "model")  # no exact trained state: resume must read the LoRA file
        if form == "alpha":  # B unfolded again + .alpha tensors; the metadata (rank, targets) comes along
            export_lora_file(step3 / ckpt.LORA_FILE, copy / ckpt.LORA_FILE, fmt="official-alpha")
        resumed = Trainer(tiny_config(tiny_workspace, run, [*TRAIN, "train.max_steps=6"]), log=lambda _: None).train()
        assert [s for s, _ in resumed.losses] == [4, 5, 6]
        # unfolding B = B' / (alpha/r) is exact to float32 rounding, so the losses agree to ~1e-6
        assert [loss for _, loss in resumed.losses] == pytest.approx(straight, rel=1e-5)


def _losses(output_dir):
    from pathlib import Path

    rows = [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_inspect_identifies_each_lora_format_and_component_files(trained_lora, tiny_workspace, tmp_path):
    cfg, path = trained_lora
    for fmt in ("official", "official-alpha", "diffusers"):
        out = export_lora_file(path / ckpt.LORA_FILE, tmp_path / f"{fmt}.safetensors", fmt=fmt).path
        report = inspect_file(out)
        assert report["kind"] == "lora" and report["dialect"] == fmt and report["ranks"] == [RANK]
        assert report["streams"] == {"a2v": 8, "audio": 16, "v2a": 8, "video": 18}
        assert report["targets"]["video"]["ff.net.0.proj"] == 2  # one per block
        assert report["targets"]["a2v"] == {f"audio_to_video_attn.{p}": 2 for p in ("to_k", "to_out.0", "to_q", "to_v")}
        assert (report["consumers"]["diffusers"] == "ok") == (fmt != "official-alpha")
        assert report["consumers"]["ltx-core"].startswith("wrong strength") == (fmt == "official-alpha")
    transformer = inspect_file(f"{cfg.model.checkpoint}/transformer.safetensors")
    assert transformer["variant"] == "tiny" and [c["component"] for c in transformer["components"]] == ["transformer"]
    assert transformer["components"][0]["missing"] == []
    decoder = inspect_file(f"{cfg.model.checkpoint}/video_vae_decoder.safetensors")
    assert decoder["components"][0]["missing"] == [] and "video_vae_decoder" in decoder["components"][0]["file_layout"]
    single = save_single_file(
        {c: load_component("tiny", c, cfg.model.checkpoint) for c in ("transformer", "connectors")},
        tmp_path / "single.safetensors",
        "2.0",
    )
    report = inspect_file(single)
    assert [c["component"] for c in report["components"]] == ["connectors", "transformer"]
    assert report["components"][0]["file_layout"] == "official single file"
    # a damaged transformer file: the missing keys are named
    with safe_open(str(f"{cfg.model.checkpoint}/transformer.safetensors"), framework="pt") as f:
        keys = list(f.keys())
        partial = {k: f.get_tensor(k) for k in keys[1:]}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    assert inspect_file(tmp_path / "partial.safetensors")["components"][0]["missing"] == [keys[0]]


def test_cli_export_and_inspect(trained_lora, tmp_path):
    _, path = trained_lora
    run = lambda *a: subprocess.run([sys.executable, "-m", "ltx2train", *a], capture_output=True, text=True)  # noqa: E731
    proc = run("export", str(path), "--output", str(tmp_path / "d.safetensors"), "--format", "diffusers")
    assert proc.returncode == 0, proc.stderr
    proc = run("inspect", str(tmp_path / "d.safetensors"), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["dialect"] == "diffusers"
    proc = run("export", str(tmp_path / "missing"), "--output", str(tmp_path / "x.safetensors"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "missing" in proc.stderr
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    proc = run("inspect", str(tmp_path / "junk.safetensors"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "junk.safetensors" in proc.stderr


def test_connector_modules_are_warned_about_left_out_where_they_cannot_go_and_merged(tiny_workspace, tmp_path):
    from ltx2train.models.tiny import random_components

    modules = random_components("tiny", seed=1)
    state = {}
    for name, (component, dname) in {
        "transformer_blocks.0.attn1.to_q": ("transformer", "transformer_blocks.0.attn1.to_q"),
        "video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k": (
            "connectors",
            "video_connector.transformer_blocks.0.attn1.to_k",
        ),
    }.items():
        linear = modules[component].get_submodule(dname)
        state[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(2, linear.in_features)
        state[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(linear.out_features, 2)
    save_file(state, str(tmp_path / "c.safetensors"))
    official = export_lora_file(tmp_path / "c.safetensors", tmp_path / "o.safetensors")
    assert official.modules == 2 and any("connector" in w and "ignore" in w for w in official.warnings)
    diffusers = export_lora_file(tmp_path / "c.safetensors", tmp_path / "d.safetensors", fmt="diffusers")
    assert diffusers.modules == 1 and any("left out" in w for w in diffusers.warnings)
    assert list(read_lora(diffusers.path).modules) == ["transformer_blocks.0.attn1.to_q"]
    assert "connector module(s) are not applied" in inspect_file(tmp_path / "c.safetensors")["consumers"]["diffusers"]
    # merged into the repackaged text_encoder_post_modules.safetensors (the connectors' file)
    cfg = tiny_config(tiny_workspace, tmp_path / "unused")
    lora = read_lora(tmp_path / "c.safetensors")
    merge_lora(lora, cfg.model.checkpoint, tmp_path / "merged")
    base = load_component("tiny", "connectors", cfg.model.checkpoint)
    merged = load_component("tiny", "connectors", tmp_path / "merged")
    name = "video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k"
    dname = "video_connector.transformer_blocks.0.attn1.to_k"
    torch.testing.assert_close(
        merged.get_submodule(dname).weight, base.get_submodule(dname).weight + lora.modules[name].delta()
    )
