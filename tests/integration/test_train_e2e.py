"""Train -> checkpoint -> resume -> validation sampler -> `sample` reload, on the tiny model (real parts)."""

import os

import numpy as np
import pytest
import torch
from safetensors import safe_open

from conftest import tiny_config
from ltx2train.inference.sample import sample
from ltx2train.data import cache
from ltx2train.training import checkpoint as ckpt
from ltx2train.training.trainer import Trainer

SHORT = [
    "validation.at_start=false",
    "train.max_steps=4",
    "train.checkpoint_every=2",
    "train.keep_last=1",
    "validation.every=0",
    "validation.prompts=[a red circle moves right with a rising tone]",
    "validation.steps=2",
    "train.log_every=1",
]


@pytest.fixture(scope="module")
def short_run(tiny_workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tiny_workspace, out, SHORT)
    trainer = Trainer(cfg, log=lambda _: None)
    result = trainer.train()
    return cfg, trainer, result


def test_checkpoint_is_an_official_layout_lora_with_alpha_folded_and_metadata(short_run):
    cfg, _, result = short_run
    assert result.step == 4 and result.checkpoint == ckpt.checkpoint_dir(cfg.train.output_dir, 4)
    assert [step for step, _ in ckpt.list_checkpoints(cfg.train.output_dir)] == [4]  # keep_last=1
    assert not list((result.checkpoint.parent).glob("*.tmp"))
    with safe_open(str(result.checkpoint / "lora.safetensors"), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    a_keys = [k for k in keys if k.endswith(".lora_A.weight")]
    # 2 blocks x 6 attentions x (to_q, to_k, to_v, to_out.0)
    assert len(a_keys) == 48 and all(k.startswith("diffusion_model.transformer_blocks.") for k in keys)
    assert not [k for k in keys if k.endswith(".alpha")]  # folded into lora_B: every consumer applies it alike
    assert meta["rank"] == "8" and meta["alpha"] == "8.0" and meta["base_variant"] == "tiny" and meta["step"] == "4"
    assert meta["alpha_handling"] == "folded" and meta["strategy"] == "t2av"
    assert (result.checkpoint / "state" / "model" / ".metadata").is_file()  # exact state for resume
    # files a team can read on a shared cluster: the user's umask, not a temp-file helper's 0600
    umask = os.umask(0)
    os.umask(umask)
    for path in (result.checkpoint / "lora.safetensors", result.checkpoint.parents[1] / "config.yaml"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert cfg.train.output_dir and (result.checkpoint.parents[1] / "config.yaml").is_file()


def test_exported_lora_reloaded_by_sample_reproduces_validation_exactly(short_run, tmp_path):
    cfg, _, result = short_run
    assert len(result.samples) == 1 and result.samples[0].is_file()  # validation at the end
    in_training = result.last_validation[0]
    paths, clips = sample(cfg, lora=result.checkpoint / "lora.safetensors", output_dir=tmp_path)
    assert paths[0].is_file()
    assert np.array_equal(clips[0].video, in_training.video)
    assert torch.equal(clips[0].audio, in_training.audio)
    # ... and the LoRA matters: the base model alone gives another clip.
    _, base = sample(cfg, lora=None, output_dir=tmp_path / "base")
    assert not np.array_equal(base[0].video, in_training.video)


def test_validation_restores_the_training_state_exactly(short_run):
    _, trainer, _ = short_run
    model = trainer.model
    model.train()
    model.transformer_blocks[0].attn1.to_q.lora_A["default"].weight.requires_grad_(False)  # an unusual state
    modes = {n: m.training for n, m in model.named_modules()}
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    scaling = dict(model.transformer_blocks[0].attn1.to_q.scaling)
    trainer.run.validation_sampler.run(99, model, trainer.run.connectors)
    assert modes == {n: m.training for n, m in model.named_modules()}
    assert grads == {n: p.requires_grad for n, p in model.named_parameters()}
    assert scaling == model.transformer_blocks[0].attn1.to_q.scaling


def test_resume_continues_exactly_where_an_interrupted_run_stopped(tiny_workspace, tmp_path):
    common = ["train.max_steps=4", "train.checkpoint_every=2", "validation.prompts=[]", "train.keep_last=5"]
    straight = Trainer(tiny_config(tiny_workspace, tmp_path / "straight", common), log=lambda _: None).train()

    def interrupt_after_first_checkpoint(message):
        if "checkpoint" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tiny_workspace, tmp_path / "resumed", common), log=interrupt_after_first_checkpoint).train()
    messages = []
    resumed = Trainer(tiny_config(tiny_workspace, tmp_path / "resumed", common), log=messages.append).train()
    assert any("resumed from" in m and "step_000002" in m for m in messages)
    assert [s for s, _ in resumed.losses] == [3, 4]
    assert resumed.losses == straight.losses[2:]
    a = _tensors(straight.checkpoint / "lora.safetensors")
    b = _tensors(resumed.checkpoint / "lora.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _tensors(path):
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


@pytest.mark.slow
def test_sigterm_checkpoints_the_current_step_and_the_rerun_resumes(tiny_workspace, tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    from ltx2train.config import save_config

    run = tmp_path / "run"
    cfg = tiny_config(
        tiny_workspace,
        run,
        ["train.max_steps=100000", "train.checkpoint_every=0", "train.log_every=1", "validation.prompts=[]"],
    )
    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ltx2train", "train", str(recipe)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    assert "stopped by SIGTERM" in out
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    saved = ckpt.list_checkpoints(run)
    assert [s for s, _ in saved] == [steps[-1]]  # the step it was on, although checkpoint_every=0
    resumed = Trainer(
        tiny_config(
            tiny_workspace,
            run,
            [f"train.max_steps={steps[-1] + 2}", "validation.prompts=[]", "train.checkpoint_every=0"],
        ),
        log=lambda _: None,
    ).train()
    assert [s for s, _ in resumed.losses] == [steps[-1] + 1, steps[-1] + 2]


def test_validation_loss_is_deterministic_and_falls_with_training(tiny_workspace, tmp_path):
    common = [
        "validation.prompts=[]",
        "validation.at_start=true",
        "validation.every=0",
        "train.checkpoint_every=0",
        "optimizer.warmup_steps=2",
    ]
    a = Trainer(
        tiny_config(tiny_workspace, tmp_path / "a", ["train.max_steps=40", *common]), log=lambda _: None
    ).train()
    b = Trainer(tiny_config(tiny_workspace, tmp_path / "b", ["train.max_steps=1", *common]), log=lambda _: None).train()
    (start_a, before), (end_step, after) = a.validation_losses
    assert start_a == 0 and end_step == 40
    assert b.validation_losses[0] == (0, before)  # same clips, sigmas and noise: the same number
    assert after < before * 0.95, (before, after)


def test_validation_uses_the_pipelines_guidance(tiny_workspace, tmp_path):
    prompt = ["validation.prompts=[a red circle moves right]", "validation.steps=2"]
    neutral = tiny_config(tiny_workspace, tmp_path / "run", prompt)
    guided = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            *prompt,
            "validation.guidance_scale=3.0",
            "validation.audio_guidance_scale=7.0",
            "validation.stg_scale=1.0",
            "validation.stg_blocks=[1]",
            "validation.modality_scale=3.0",
            "validation.guidance_rescale=0.7",
            "validation.negative_prompt=black background",
        ],
    )
    _, (plain,) = sample(neutral, lora=None, output_dir=tmp_path / "a")
    _, (with_guidance,) = sample(guided, lora=None, output_dir=tmp_path / "b")
    assert np.isfinite(with_guidance.video).all() and torch.isfinite(with_guidance.audio).all()
    assert not np.array_equal(plain.video, with_guidance.video)
    assert not torch.equal(plain.audio, with_guidance.audio)
    bad = tiny_config(
        tiny_workspace, tmp_path / "run", [*prompt, "validation.stg_scale=1.0", "validation.stg_blocks=[29]"]
    )
    with pytest.raises(ValueError, match=r"STG blocks \[29\] are not blocks of this 2-block transformer"):
        sample(bad, lora=None, output_dir=tmp_path / "c")


def test_a_cache_without_audio_is_refused_before_the_transformer_loads(tiny_workspace, tmp_path, monkeypatch):
    from ltx2train.data.prepare import prepare
    from ltx2train.training import builder as builder_module

    cfg = tiny_config(
        tiny_workspace, tmp_path / "run", [f"data.cache_dir={tmp_path / 'cache'}", "data.with_audio=false"]
    )
    prepare(cfg)

    def no_loading(*args, **kwargs):
        raise AssertionError("the transformer was loaded")

    monkeypatch.setattr(builder_module, "load_component", no_loading)
    with pytest.raises(ValueError, match="data.with_audio=false"):
        Trainer(cfg, log=lambda _: None).setup()


def test_batch_size_2_trains_over_several_buckets_and_resumes_exactly(tiny_workspace, tmp_path):
    """Dynamic resolution: 2:1 and 1:1 clips in one cache, batches of 2 drawn from one bucket each, the loss
    falling; a run stopped at step 3 and resumed takes the same batches and ends with the same adapter."""
    from ltx2train.data.cache import CachedDataset
    from ltx2train.data.prepare import prepare
    from ltx2train.data.synthetic import make_synthetic_dataset
    from ltx2train.training.data import BucketBatchSampler

    rows = []
    for name, (h, w) in {"wide": (64, 128), "square": (64, 64)}.items():
        metadata = make_synthetic_dataset(tmp_path / name, num_clips=4, num_frames=9, height=h, width=w, seed=len(name))
        rows += [line.replace('"clips/', f'"{name}/clips/') for line in metadata.read_text().splitlines()]
    (tmp_path / "meta.jsonl").write_text("\n".join(rows) + "\n")
    common = [
        f"data.metadata={tmp_path / 'meta.jsonl'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "data.height=null",
        "data.width=null",
        f"data.max_pixels={64 * 128}",
        "data.aspect_ratios=[1.0, 2.0]",
        "data.batch_size=2",
        "validation.prompts=[]",
        "validation.loss_sigmas=[]",
        "train.log_every=1",
        "optimizer.lr=5e-3",
        "train.checkpoint_every=3",
        "train.keep_last=5",
    ]
    cfg = tiny_config(tiny_workspace, tmp_path / "run", [*common, "train.max_steps=8"])
    prepare(cfg)
    lines = []
    result = Trainer(cfg, log=lines.append).train()
    assert "8 cached clips in 2 buckets (64x128x9: 4, 64x64x9: 4)" in lines[0]
    plan = BucketBatchSampler(CachedDataset(cfg.data.cache_dir).buckets, 2, seed=cfg.train.seed)
    assert len({plan.buckets[b[0]] for b in _first(plan, 8)}) == 2  # both shapes trained
    losses = [loss for _, loss in result.losses]
    assert all(np.isfinite(losses)) and np.mean(losses[-3:]) < np.mean(losses[:3])

    again = tmp_path / "again"
    Trainer(tiny_config(tiny_workspace, again, [*common, "train.max_steps=3"]), log=lambda _: None).train()
    resumed = Trainer(tiny_config(tiny_workspace, again, [*common, "train.max_steps=8"]), log=lambda _: None).train()
    assert resumed.losses == result.losses[3:]
    ours = _tensors(ckpt.checkpoint_dir(again, 8) / "lora.safetensors")
    theirs = _tensors(ckpt.checkpoint_dir(tmp_path / "run", 8) / "lora.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def _first(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


def test_two_datasets_prepare_with_one_command_and_train_by_their_repeats(tiny_workspace, tmp_path):
    """data.datasets: `ltx2train prepare` caches each dataset into its own cache_dir; training draws from both,
    the second three times per epoch (data.datasets[0].repeats=3), and resumes at the exact next batch."""
    from ltx2train import cli
    from ltx2train.config import save_config
    from ltx2train.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "extra", num_clips=2, num_frames=9, height=64, width=64, seed=7)
    extra = (
        f"[{{metadata: {tmp_path / 'extra' / 'metadata.jsonl'}, cache_dir: {tmp_path / 'extra_cache'}, repeats: 3}}]"
    )
    common = [
        f"data.datasets={extra}",
        "validation.prompts=[]",
        "validation.loss_sigmas=[]",
        "train.log_every=1",
        "train.checkpoint_every=3",
        "train.keep_last=5",
        "data.batch_size=2",
    ]
    cfg = tiny_config(tiny_workspace, tmp_path / "run", [*common, "train.max_steps=6"])
    assert cli.main(["prepare", str(save_config(cfg, tmp_path / "recipe.yaml"))]) == 0
    assert len(cache.read_manifest(tmp_path / "extra_cache")["samples"]) == 2
    lines = []
    trainer = Trainer(cfg, log=lines.append)
    result = trainer.train()
    assert "8 cached clips (64x64x9) from 2 datasets (6, 2)" in lines[0]
    assert trainer.sampler.draws == {0: 6, 1: 6} and trainer.sampler.batches_per_epoch == 6  # 6 + 2 x 3 per epoch
    again = tmp_path / "again"
    Trainer(tiny_config(tiny_workspace, again, [*common, "train.max_steps=3"]), log=lambda _: None).train()
    resumed = Trainer(tiny_config(tiny_workspace, again, [*common, "train.max_steps=6"]), log=lambda _: None).train()
    assert resumed.losses == result.losses[3:]
