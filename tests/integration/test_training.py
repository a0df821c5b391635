"""The training step's behaviour on the real tiny transformer: loss falls, masks cut gradients, schedules end."""

import math

import numpy as np
import pytest
import torch

from conftest import tiny_config
from ltx2train.config import ConfigError
from ltx2train.data.cache import CachedDataset
from ltx2train.models.loading import load_component
from ltx2train.models.text_encoder import ProjectedText, connect_text
from ltx2train.training.objective import masked_mse, sample_sigmas
from ltx2train.training.optim import build_lr_scheduler, build_optimizer, lr_factor
from ltx2train.training.strategies import build_strategy
from ltx2train.training.methods.lora import add_lora


def _modules_and_batch(root, tmp_path):
    cfg = tiny_config(root, tmp_path / "run")
    transformer = load_component("tiny", "transformer", cfg.model.checkpoint)
    connectors = load_component("tiny", "connectors", cfg.model.checkpoint)
    dataset = CachedDataset(cfg.data.cache_dir)
    batch = dataset.collate([dataset[0], dataset[1]])
    with torch.no_grad():
        context = connect_text(connectors, ProjectedText(batch["text_video"], None, batch["text_attention_mask"]))
    return cfg, transformer, batch, context


def _loss(transformer, strategy, batch, context, seed=0):
    inputs = strategy.inputs(batch, context, generator=torch.Generator().manual_seed(seed))
    video_pred, audio_pred = transformer(**inputs.model_kwargs)
    return strategy.loss(video_pred, audio_pred, inputs)[0]


def test_one_optimisation_step_on_a_fixed_batch_lowers_the_loss(tiny_workspace, tmp_path):
    cfg, transformer, batch, context = _modules_and_batch(tiny_workspace, tmp_path)
    params = add_lora(transformer, cfg.lora)
    strategy = build_strategy(cfg)
    optimizer = build_optimizer(params, cfg.optimizer)
    before = _loss(transformer, strategy, batch, context).item()
    optimizer.zero_grad()
    _loss(transformer, strategy, batch, context).backward()
    optimizer.step()
    after = _loss(transformer, strategy, batch, context).item()
    assert after < before, (before, after)
    # Only the adapter trained: base weights have no gradient.
    assert all(p.grad is None for n, p in transformer.named_parameters() if "lora_" not in n)


def test_masked_out_tokens_get_no_gradient(tiny_workspace, tmp_path):
    cfg, transformer, batch, context = _modules_and_batch(tiny_workspace, tmp_path)
    add_lora(transformer, cfg.lora)
    strategy = build_strategy(cfg)
    inputs = strategy.inputs(batch, context, generator=torch.Generator().manual_seed(0))
    video_pred, audio_pred = transformer(**inputs.model_kwargs)
    video_pred.retain_grad()
    audio_pred.retain_grad()
    inputs.video_loss_mask[:, ::2] = 0  # e.g. conditioning tokens
    inputs.audio_loss_mask[0] = 0
    loss, _ = strategy.loss(video_pred, audio_pred, inputs)
    loss.backward()
    assert torch.all(video_pred.grad[:, ::2] == 0) and torch.all(video_pred.grad[:, 1::2].abs().sum(-1) > 0)
    assert torch.all(audio_pred.grad[0] == 0) and torch.all(audio_pred.grad[1].abs().sum(-1) > 0)


def test_masked_mse_is_a_mean_over_unmasked_tokens():
    pred, target = torch.zeros(1, 4, 3), torch.ones(1, 4, 3)
    target[0, 2:] = 10.0
    mask = torch.tensor([[1, 1, 0, 0]])
    assert masked_mse(pred, target, mask).item() == pytest.approx(1.0)


def test_sigma_shift_grows_with_token_count(tiny_workspace, tmp_path):
    cfg = tiny_config(tiny_workspace, tmp_path / "run").objective
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    small, large = sample_sigmas(4096, 256, cfg, g()), sample_sigmas(4096, 8192, cfg, g())
    assert 0 < small.min() and large.max() < 1
    assert large.mean() > small.mean() + 0.1  # more tokens -> noisier timesteps, like the inference scheduler


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_lr_schedule_warms_up_and_ends_at_max_steps(schedule):
    factors = [lr_factor(s, warmup_steps=10, max_steps=100, schedule=schedule) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[100] == pytest.approx(0.0, abs=1e-9) and factors[99] > 0
    assert lr_factor(50, warmup_steps=10, max_steps=100, schedule="constant") == 1.0


def test_lr_scheduler_steps_once_per_optimizer_step():
    param = torch.nn.Parameter(torch.zeros(1))

    class Opt:
        name, lr, betas, eps, weight_decay, warmup_steps, scheduler = "adamw", 1.0, (0.9, 0.99), 1e-8, 0.0, 0, "cosine"
        fused = None

    optimizer = build_optimizer([param], Opt)
    scheduler = build_lr_scheduler(optimizer, Opt, max_steps=8)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_fused_adamw_is_the_gpu_default_and_steps_as_the_loop_does():
    """optimizer.fused: null = fused on a GPU only; true gives torch's fused kernel (on CPU too), whose steps match
    the per-tensor loop's; with adamw8bit it is refused."""
    from ltx2train.config import Config, OptimizerConfig
    from ltx2train.training.optim import uses_fused_adamw

    auto = OptimizerConfig()
    assert uses_fused_adamw(auto, torch.device("cuda")) and not uses_fused_adamw(auto, torch.device("cpu"))
    assert not uses_fused_adamw(OptimizerConfig(fused=False), torch.device("cuda"))
    weights = [torch.nn.Parameter(torch.randn(16, 32, generator=torch.Generator().manual_seed(0))) for _ in range(2)]
    fused = build_optimizer([weights[0]], OptimizerConfig(fused=True, lr=1e-2))
    loop = build_optimizer([weights[1]], OptimizerConfig(lr=1e-2))
    assert fused.defaults["fused"] and not loop.defaults["fused"]
    for _ in range(3):
        for w, opt in ((weights[0], fused), (weights[1], loop)):
            w.grad = torch.sin(w.detach() * 3)
            opt.step()
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-6, atol=1e-7)
    from ltx2train.config.rules import validate

    problems = validate(Config(optimizer=OptimizerConfig(name="adamw8bit", fused=True)))
    assert any("optimizer.fused=true is torch's fused AdamW" in p for p in problems), problems
    assert not any("optimizer.fused" in p for p in validate(Config(optimizer=OptimizerConfig(fused=True))))


def test_gradient_checkpointing_changes_memory_not_gradients(tiny_workspace, tmp_path):
    cfg, transformer, batch, context = _modules_and_batch(tiny_workspace, tmp_path)
    params = add_lora(transformer, cfg.lora)
    with torch.no_grad():
        for p in params:  # LoRA B starts at zero; give every adapter weight a value so all grads flow
            p.normal_(0, 0.05)
    strategy = build_strategy(cfg)
    transformer.train()

    def grads():
        for p in params:
            p.grad = None
        _loss(transformer, strategy, batch, context).backward()
        return [p.grad.clone() for p in params]

    plain = grads()
    transformer.enable_gradient_checkpointing()
    checkpointed = grads()
    assert transformer.is_gradient_checkpointing
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))
    assert all(g.abs().sum() > 0 for g in plain)


def test_loss_is_tracked_per_sigma_bucket():
    from ltx2train.training.objective import SigmaBucketLoss, masked_mse_per_sample

    pred, target = torch.zeros(3, 4, 2), torch.ones(3, 4, 2)
    target[1] *= 3.0
    per_sample = masked_mse_per_sample(pred, target, torch.ones(3, 4))
    assert per_sample.tolist() == [1.0, 9.0, 1.0]
    buckets = SigmaBucketLoss(num_buckets=4)
    buckets.add(torch.tensor([0.1, 0.9, 0.2]), per_sample)
    assert buckets.metrics() == {"loss_sigma_0.00-0.25": 1.0, "loss_sigma_0.75-1.00": 9.0}


def test_adamw8bit_keeps_large_moments_in_8_bits_and_trains_a_lora(tiny_workspace, tmp_path, monkeypatch):
    """optimizer.name=adamw8bit: bitsandbytes' AdamW8bit on CPU; a tensor of 8192 elements gets uint8 moments
    and steps close to torch's AdamW; a tiny LoRA trains with it; without bitsandbytes, a clear error."""
    import sys

    from ltx2train.config import ConfigError, load_config
    from ltx2train.training.trainer import Trainer

    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            "optimizer.name=adamw8bit",
            "optimizer.lr=1e-2",
            "validation.prompts=[]",
            "validation.loss_sigmas=[]",
            "train.max_steps=8",
            "train.log_every=1",
            "optimizer.warmup_steps=0",
            "optimizer.scheduler=constant",
        ],
    )
    weights = [torch.nn.Parameter(torch.randn(64, 128, generator=torch.Generator().manual_seed(0))) for _ in range(2)]
    ours, reference = build_optimizer([weights[0]], cfg.optimizer), torch.optim.AdamW([weights[1]], lr=1e-2)
    for _ in range(3):
        for w, opt in ((weights[0], ours), (weights[1], reference)):
            w.grad = torch.sin(w.detach() * 3)
            opt.step()
    state = ours.state[weights[0]]
    assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8
    assert (weights[0] - weights[1]).abs().max() < 5e-3
    result = Trainer(cfg, log=lambda _: None).train()
    losses = [loss for _, loss in result.losses]
    assert np.isfinite(losses).all() and np.mean(losses[-3:]) < np.mean(losses[:3])
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # not installed
    monkeypatch.setitem(sys.modules, "bitsandbytes.optim", None)
    with pytest.raises(ValueError, match="adamw8bit needs bitsandbytes"):
        build_optimizer([weights[0]], cfg.optimizer)
    with pytest.raises(ConfigError, match="adamw8bit: tested with the ddp backend only"):
        load_config(tmp_path / "run" / "config.yaml", ["optimizer.name=adamw8bit", "distributed.backend=fsdp2"])


def test_num_epochs_sets_max_steps_from_the_data(tiny_workspace, tmp_path):
    """6 clips, batch 2, one process, accumulation 1: 3 optimizer steps an epoch; 2 epochs train 6 steps, and the
    log says so."""
    from conftest import tiny_config
    from ltx2train.training.trainer import Trainer

    lines = []
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            "train.num_epochs=2",
            "data.batch_size=2",
            "train.max_steps=1000",
            "validation.prompts=[]",
            "validation.every=0",
            "validation.loss_sigmas=[]",
        ],
    )
    result = Trainer(cfg, log=lines.append).train()
    assert result.step == 6 == cfg.train.max_steps
    assert any("train.num_epochs=2: 3 optimizer step(s) per epoch" in line for line in lines)
    with pytest.raises(ConfigError, match="train.num_epochs: must be >= 1"):
        tiny_config(tiny_workspace, tmp_path / "bad", ["train.num_epochs=0"])


def test_a_preset_lora_is_merged_into_the_base_and_only_the_new_lora_is_saved(tiny_workspace, tmp_path):
    """``lora.preset``: the preset's effect is in the base from step 0 (its merge equals the preset loaded as an
    adapter), the checkpoint holds the new LoRA alone, and ``sample`` with the recipe reproduces validation."""
    import numpy as np

    from ltx2train.inference.sample import sample
    from ltx2train.lora.adapters import merge_into_base
    from ltx2train.lora.files import read_lora
    from ltx2train.training import checkpoint as ckpt
    from ltx2train.training.trainer import Trainer
    from test_inference_pipeline import _stage2_lora

    base = load_component("tiny", "transformer", tiny_workspace / "model")
    preset = _stage2_lora(base, tmp_path / "preset.safetensors")
    merged = load_component("tiny", "transformer", tiny_workspace / "model")
    assert merge_into_base(preset, merged) == 3 * base.config.num_layers
    changed = [n for n, p in merged.named_parameters() if not torch.equal(p, base.get_parameter(n))]
    assert changed and all(".attn1.to_q." in n or ".attn1.to_v." in n or ".audio_attn1.to_k." in n for n in changed)
    short = [
        "validation.at_start=false",
        "validation.every=0",
        "train.max_steps=2",
        "optimizer.lr=1e-2",
        "validation.prompts=[a red circle]",
        "validation.steps=2",
    ]  # alpha = rank: the file is the adapter
    cfg = tiny_config(tiny_workspace, tmp_path / "run", [*short, f"lora.preset=[{preset}]"])
    result = Trainer(cfg, log=lambda _: None).train()
    saved = read_lora(result.checkpoint / ckpt.LORA_FILE)
    assert saved.ranks == [cfg.lora.rank]  # the new LoRA only (the preset's rank is 4 on other modules)
    _, clips = sample(cfg, lora=result.checkpoint / ckpt.LORA_FILE, output_dir=tmp_path / "sample")
    assert np.array_equal(clips[0].video, result.last_validation[0].video)
    without = tiny_config(tiny_workspace, tmp_path / "run2", short)
    _, plain = sample(without, lora=result.checkpoint / ckpt.LORA_FILE, output_dir=tmp_path / "plain")
    assert not np.array_equal(plain[0].video, clips[0].video)


def test_two_runs_in_one_process_may_ask_for_different_mixed_precision(tiny_workspace, tmp_path):
    """A notebook (or this test session) trains twice in one process: the second run's train.mixed_precision is
    not refused because Accelerate's per-process state was made by the first."""
    from ltx2train.training.trainer import Trainer

    for precision in ("no", "bf16"):
        cfg = tiny_config(
            tiny_workspace,
            tmp_path / precision,
            [
                f"train.mixed_precision={precision}",
                "train.max_steps=1",
                "validation.prompts=[]",
                "validation.every=0",
                "validation.loss_sigmas=[]",
            ],
        )
        assert Trainer(cfg, log=lambda _: None).train().step == 1
