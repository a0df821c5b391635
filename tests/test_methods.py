"""What is trained (train.method): full fine-tuning next to LoRA, through the same builder, loop and checkpoints;
and what every checkpoint must survive: a damaged latest checkpoint, logs after a resume."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import read_trained_state, tiny_config
from ltx2train.inference.sample import sample
from ltx2train.models.loading import load_component
from ltx2train.training import checkpoint as ckpt
from ltx2train.training.trainer import Trainer

FULL = ["train.method=full", "validation.at_start=false", "validation.every=0", "validation.loss_sigmas=[]",
        "optimizer.lr=1e-4", "train.log_every=1"]
PROMPT = ["validation.prompts=[a red circle moves right with a rising tone]", "validation.steps=2"]


@pytest.fixture(scope="module")
def full_run(tiny_workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    cfg = tiny_config(tiny_workspace, out, [*FULL, *PROMPT, "train.max_steps=3", "train.checkpoint_every=3"])
    trainer = Trainer(cfg, log=lambda _: None)
    return cfg, trainer, trainer.train()


def test_full_fine_tuning_trains_every_transformer_weight_in_float32(full_run):
    cfg, trainer, result = full_run
    base = load_component("tiny", "transformer", cfg.model.checkpoint)
    trained = trainer.model
    assert all(p.requires_grad and p.dtype == torch.float32 for p in trained.parameters())
    assert not [n for n, _ in trained.named_parameters() if "lora_" in n]
    changed = [n for (n, p), q in zip(trained.named_parameters(), base.parameters()) if not torch.equal(p, q)]
    assert len(changed) > 0.9 * len(list(base.parameters())), len(changed)  # (a few get no gradient)
    assert not (result.checkpoint / ckpt.LORA_FILE).exists()


def test_full_export_loads_strictly_and_samples_like_validation(full_run, tmp_path):
    cfg, trainer, result = full_run
    exported = result.checkpoint / "transformer.safetensors"
    loaded = load_component("tiny", "transformer", result.checkpoint)  # strict: every key, every shape
    for (name, p), q in zip(trainer.model.named_parameters(), loaded.parameters()):
        assert torch.equal(p, q), name
    assert all(k.startswith("model.diffusion_model.") for k in load_file(str(exported)))
    _, clips = sample(cfg, lora=None, transformer=result.checkpoint, output_dir=tmp_path)
    assert np.array_equal(clips[0].video, result.last_validation[0].video)
    assert torch.equal(clips[0].audio, result.last_validation[0].audio)


def test_full_fine_tuning_resumes_exactly(tiny_workspace, tmp_path):
    common = [*FULL, "validation.prompts=[]", "train.max_steps=4", "train.checkpoint_every=2", "train.keep_last=5"]
    straight = Trainer(tiny_config(tiny_workspace, tmp_path / "straight", common), log=lambda _: None).train()
    first = Trainer(tiny_config(tiny_workspace, tmp_path / "resumed", [*common, "train.max_steps=2"]), log=lambda _: None)
    first.train()
    resumed = Trainer(tiny_config(tiny_workspace, tmp_path / "resumed", common), log=lambda _: None).train()
    assert resumed.losses == straight.losses[2:]
    a, b = read_trained_state(straight.checkpoint), read_trained_state(resumed.checkpoint)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_lora_checkpoint_does_not_resume_a_full_run(tiny_workspace, tmp_path):
    lora = tiny_config(tiny_workspace, tmp_path / "run", ["validation.prompts=[]", "train.max_steps=1"])
    Trainer(lora, log=lambda _: None).train()
    full = tiny_config(tiny_workspace, tmp_path / "run", [*FULL, "validation.prompts=[]", "train.max_steps=2"])
    with pytest.raises(ValueError, match="method: checkpoint 'lora' vs recipe 'full'"):
        Trainer(full, log=lambda _: None).setup()


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(tiny_workspace, tmp_path):
    common = ["validation.prompts=[]", "validation.loss_sigmas=[]", "train.log_every=1", "train.checkpoint_every=2",
              "train.keep_last=5"]
    straight = Trainer(tiny_config(tiny_workspace, tmp_path / "straight", [*common, "train.max_steps=6"]),
                       log=lambda _: None).train()
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_workspace, run, [*common, "train.max_steps=4"]), log=lambda _: None).train()
    damaged = next((ckpt.checkpoint_dir(run, 4) / "state" / "optim").glob("*.distcp"))
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # truncated
    messages = []
    resumed = Trainer(tiny_config(tiny_workspace, run, [*common, "train.max_steps=6"]), log=messages.append).train()
    warning = next(m for m in messages if "warning" in m)
    assert "step_000004" in warning and "damaged" in warning and "state" in warning
    assert any("resumed from" in m and "step_000002" in m for m in messages)
    assert resumed.losses == straight.losses[2:]  # from step 2, exactly as the uninterrupted run
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4, 5, 6]  # steps 3-4 logged again, not twice


def test_no_readable_checkpoint_is_an_error_not_a_silent_restart(tiny_workspace, tmp_path):
    common = ["validation.prompts=[]", "train.max_steps=1"]
    Trainer(tiny_config(tiny_workspace, tmp_path / "run", common), log=lambda _: None).train()
    (ckpt.checkpoint_dir(tmp_path / "run", 1) / ckpt.STATE_FILE).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable checkpoint.*train.resume=none"):
        Trainer(tiny_config(tiny_workspace, tmp_path / "run", common), log=lambda _: None).setup()
