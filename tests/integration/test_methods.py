"""What is trained (train.method): full fine-tuning next to LoRA, through the same builder, loop and checkpoints;
which components (train.trainable: the text connectors beside the DiT); and what every checkpoint must survive: a
damaged latest checkpoint, logs after a resume."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import LORA_RANK, LORA_TRAIN, read_trained_state, tiny_config
from ltx2train.inference.sample import sample
from ltx2train.models.loading import load_component
from ltx2train.models.trained import CONNECTOR_TRAINED
from ltx2train.training import checkpoint as ckpt
from ltx2train.training.trainer import Trainer

FULL = [
    "train.method=full",
    "validation.at_start=false",
    "validation.every=0",
    "validation.loss_sigmas=[]",
    "optimizer.lr=1e-4",
    "train.log_every=1",
]
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
    first = Trainer(
        tiny_config(tiny_workspace, tmp_path / "resumed", [*common, "train.max_steps=2"]), log=lambda _: None
    )
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
    common = [
        "validation.prompts=[]",
        "validation.loss_sigmas=[]",
        "train.log_every=1",
        "train.checkpoint_every=2",
        "train.keep_last=5",
    ]
    straight = Trainer(
        tiny_config(tiny_workspace, tmp_path / "straight", [*common, "train.max_steps=6"]), log=lambda _: None
    ).train()
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


# train.trainable: the text connectors trained beside the DiT (DiffSynth's --trainable_models ...,
# text_encoder_post_modules), by the same method, in the same step
CONNECTORS = ["train.trainable=[transformer,connectors]"]


@pytest.fixture(scope="module")
def lora_connectors_run(tiny_workspace, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora_connectors")
    cfg = tiny_config(
        tiny_workspace,
        out,
        [*LORA_TRAIN, *CONNECTORS, *PROMPT, "train.max_steps=3", "train.checkpoint_every=3", f"lora.alpha={LORA_RANK}"],
    )  # (see below)
    trainer = Trainer(cfg, log=lambda _: None)
    return cfg, trainer, trainer.train()


def _connector_modules(lora: dict) -> dict:
    return {k: v for k, v in lora.items() if "embeddings_connector." in k}


def test_a_lora_on_the_connectors_trains_them_and_samples_like_validation(lora_connectors_run, tmp_path):
    cfg, trainer, result = lora_connectors_run
    lora = load_file(str(result.checkpoint / ckpt.LORA_FILE))
    ups = {k: v for k, v in _connector_modules(lora).items() if "lora_B" in k}
    # both connector transformers got adapters, and every B moved from its zero init: they had gradients
    assert any("video_embeddings_connector" in k for k in ups) and any("audio_embeddings_connector" in k for k in ups)
    assert all(v.abs().max() > 0 for v in ups.values())
    assert len(lora) > len(_connector_modules(lora)) > 0  # the DiT's adapters beside them, in one file
    # bit for bit, as for the DiT alone: alpha = rank, so the file holds the adapter as trained
    _, clips = sample(cfg, lora=result.checkpoint / ckpt.LORA_FILE, output_dir=tmp_path / "with")
    assert np.array_equal(clips[0].video, result.last_validation[0].video)
    assert torch.equal(clips[0].audio, result.last_validation[0].audio)
    # the connectors' adapters take part in the sample: without them it is another clip
    dit_only = {k: v for k, v in lora.items() if k not in _connector_modules(lora)}
    save_file(dit_only, str(tmp_path / "dit_only.safetensors"), metadata=_metadata(result.checkpoint / ckpt.LORA_FILE))
    _, other = sample(cfg, lora=tmp_path / "dit_only.safetensors", output_dir=tmp_path / "without")
    assert not torch.equal(other[0].audio, result.last_validation[0].audio)


def _metadata(path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_a_lora_with_connector_modules_initialises_only_a_run_that_trains_them(
    lora_connectors_run, tiny_workspace, tmp_path
):
    _, _, result = lora_connectors_run
    source = result.checkpoint / ckpt.LORA_FILE
    init = [*LORA_TRAIN, f"lora.init_from={source}", "train.max_steps=1", "optimizer.lr=1e-12"]
    plain = tiny_config(tiny_workspace, tmp_path / "plain", init)
    with pytest.raises(ValueError, match="add connectors to train.trainable"):
        Trainer(plain, log=lambda _: None).setup()
    # one step at a negligible learning rate: the export is the file it started from, connectors included
    started = Trainer(tiny_config(tiny_workspace, tmp_path / "both", [*init, *CONNECTORS]), log=lambda _: None).train()
    a, b = load_file(str(source)), load_file(str(started.checkpoint / ckpt.LORA_FILE))
    assert a.keys() == b.keys() and _connector_modules(b)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-7)


def test_a_lora_on_the_connectors_resumes_exactly_and_only_as_such(tiny_workspace, tmp_path):
    common = [*LORA_TRAIN, *CONNECTORS, "train.max_steps=4", "train.checkpoint_every=2", "train.keep_last=5"]
    straight = Trainer(tiny_config(tiny_workspace, tmp_path / "straight", common), log=lambda _: None).train()
    Trainer(
        tiny_config(tiny_workspace, tmp_path / "resumed", [*common, "train.max_steps=2"]), log=lambda _: None
    ).train()
    resumed = Trainer(tiny_config(tiny_workspace, tmp_path / "resumed", common), log=lambda _: None).train()
    assert resumed.losses == straight.losses[2:]
    a, b = read_trained_state(straight.checkpoint), read_trained_state(resumed.checkpoint)
    assert any(k.startswith("connectors.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    dit_only = tiny_config(tiny_workspace, tmp_path / "resumed", [*LORA_TRAIN, "train.max_steps=6"])
    with pytest.raises(ValueError, match="trainable: checkpoint 'transformer,connectors' vs recipe 'transformer'"):
        Trainer(dit_only, log=lambda _: None).setup()


def test_full_fine_tuning_of_the_connectors_exports_them_beside_the_transformer(tiny_workspace, tmp_path):
    cfg = tiny_config(
        tiny_workspace, tmp_path / "run", [*FULL, *CONNECTORS, *PROMPT, "train.max_steps=2", "train.checkpoint_every=2"]
    )
    result = Trainer(cfg, log=lambda _: None).train()
    base = load_component("tiny", "connectors", cfg.model.checkpoint)
    trained = load_component("tiny", "connectors", result.checkpoint)  # strict: a complete file
    changed = {n for (n, p), q in zip(base.named_parameters(), trained.parameters()) if not torch.equal(p, q)}
    # both connector transformers trained; the text projection before them (its output is cached) is not
    assert {n.split(".")[0] for n in changed} == {"video_connector", "audio_connector"}
    assert all(CONNECTOR_TRAINED.fullmatch(n) for n in changed)
    assert (result.checkpoint / "transformer.safetensors").is_file()
    _, clips = sample(cfg, lora=None, transformer=result.checkpoint, output_dir=tmp_path / "samples")
    assert np.array_equal(clips[0].video, result.last_validation[0].video)
    assert torch.equal(clips[0].audio, result.last_validation[0].audio)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_without_an_audio_branch_the_audio_connector_stays_frozen(tiny_workspace, tmp_path, method):
    extra = LORA_TRAIN if method == "lora" else FULL
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [*extra, *CONNECTORS, "strategy.name=t2v", "train.max_steps=1", "validation.prompts=[]"],
    )
    trainer = Trainer(cfg, log=lambda _: None)
    result = trainer.train()
    trained = {
        n.split(".")[1] for n, p in trainer.model.named_parameters() if p.requires_grad and n.startswith("connectors.")
    }
    assert trained == {"video_connector"}
    if method == "lora":
        lora = load_file(str(result.checkpoint / ckpt.LORA_FILE))
        assert _connector_modules(lora) and not [k for k in lora if "audio_embeddings_connector" in k]
