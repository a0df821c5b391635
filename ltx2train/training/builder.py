"""Everything a training run needs, built in one fixed, visible order.

    processes (backend) -> checkpoint to resume (read, not applied) -> validation inputs (Gemma, VAEs: before
    the transformer, so the two never share memory) -> transformer + connectors loaded on meta, filled in
    ``model.dtype`` -> method (freeze, adapters, init_from) -> activation checkpointing -> backend
    (parallelize) -> optimizer + LR schedule -> resume (trained state, optimizer, schedule)

Three axes stay independent: the method (what is trained), the backend (how it is distributed) and the
strategy (how a batch becomes a loss); none of them knows which of the others it is combined with.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ltx2train.data.cache import CachedDataset
from ltx2train.data.prepare import settings_from_config
from ltx2train.models.loading import load_component
from ltx2train.models.specs import load_variant, torch_dtype
from ltx2train.training import checkpoint as ckpt
from ltx2train.training.backends import build_backend
from ltx2train.training.methods import build_method
from ltx2train.training.optim import build_lr_scheduler, build_optimizer
from ltx2train.training.strategies import build_strategy


@dataclass
class TrainingRun:
    cfg: object
    spec: object
    backend: object
    method: object
    strategy: object
    dataset: CachedDataset
    transformer: torch.nn.Module  # as the backend wrapped it
    connectors: torch.nn.Module  # frozen, run in the step
    params: list[torch.nn.Parameter]  # what the optimizer steps
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    weight_dtype: torch.dtype
    step: int  # 0, or the resumed checkpoint's
    rng: dict | None  # this rank's RNG state to restore once the data loader exists
    validation_sampler: object | None  # main process only
    validation_clips: list


def build(cfg, log: Callable[[str], None]) -> TrainingRun:
    from accelerate.utils import set_seed

    from ltx2train.config import save_config

    backend = build_backend(cfg)
    set_seed(cfg.train.seed, device_specific=True)
    spec = load_variant(cfg.model.variant)
    output_dir = Path(cfg.train.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if backend.is_main:
        save_config(cfg, output_dir / "config.yaml")
    dataset = CachedDataset(cfg.data.cache_dir, settings_from_config(cfg))
    strategy = build_strategy(cfg)
    if not dataset.settings["with_audio"]:
        raise ValueError(f"the {strategy.name} strategy trains video and audio jointly, but {cfg.data.cache_dir} "
                         "was prepared with data.with_audio=false")
    resumed = find_checkpoint(cfg, backend.rank, log)
    weight_dtype = torch_dtype(cfg.model.dtype)
    load = lambda name, dtype=weight_dtype: load_component(  # noqa: E731
        spec, name, cfg.model.checkpoint, dtype=dtype, device=backend.device, distilled=cfg.model.distilled)
    sampler = build_validation(cfg, load, weight_dtype, backend.device, output_dir) if backend.is_main else None
    clips = [dataset[i] for i in range(min(cfg.validation.loss_clips, len(dataset)))] if backend.is_main else []

    transformer, connectors = load("transformer"), load("connectors")
    method = build_method(cfg, spec)
    method.apply(transformer, log, fresh=resumed is None)
    if cfg.train.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer = backend.parallelize(transformer)
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = backend.wrap_optimizer(build_optimizer(params, cfg.optimizer))
    lr_scheduler = build_lr_scheduler(optimizer, cfg.optimizer, cfg.train.max_steps)
    run = TrainingRun(cfg, spec, backend, method, strategy, dataset, transformer, connectors, params, optimizer,
                      lr_scheduler, weight_dtype, 0, None, sampler, clips)
    if resumed is not None:
        apply_checkpoint(run, resumed)
        log(f"[ltx2train] resumed from {resumed.path} (step {run.step})")
    return run


def build_validation(cfg, load, dtype: torch.dtype, device, output_dir: Path):
    """Validation prompts encoded by Gemma, which is then freed; the decoders stay for sampling."""
    if not cfg.validation.prompts:
        return None
    from ltx2train.inference.sampler import PromptSampler, encode_prompts
    from ltx2train.models.text_encoder import load_text_encoder

    text_encoder = load_text_encoder(cfg.model.text_encoder, dtype=dtype, device=device,
                                     max_sequence_length=cfg.data.max_sequence_length)
    prompts = encode_prompts(text_encoder, list(cfg.validation.prompts), cfg.validation.negative_prompt,
                             cfg.data.max_sequence_length)
    del text_encoder
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return PromptSampler(cfg.validation, prompts, video_vae=load("video_vae"), audio_vae=load("audio_vae"),
                         vocoder=load("vocoder", torch.float32), samples_dir=output_dir / "samples")


def find_checkpoint(cfg, rank: int, log) -> ckpt.LoadedCheckpoint | None:
    """The checkpoint to resume, read into memory: the newest readable one (a damaged one is reported and
    the previous one taken), an explicit ``train.resume`` path, or None."""
    if cfg.train.resume == "none":
        return None
    if cfg.train.resume != "latest":
        return ckpt.read_checkpoint(cfg.train.resume, rank)
    candidates = [path for _, path in reversed(ckpt.list_checkpoints(cfg.train.output_dir))]
    for path in candidates:
        try:
            return ckpt.read_checkpoint(path, rank)
        except ckpt.DamagedCheckpoint as exc:
            log(f"[ltx2train] warning: checkpoint {path} is damaged ({exc}); trying the previous one")
    if candidates:
        raise ValueError(f"no readable checkpoint in {Path(cfg.train.output_dir) / ckpt.CHECKPOINTS_DIR}; "
                         "set train.resume=none to start over (or train.resume=<a checkpoint directory>)")
    return None


def apply_checkpoint(run: TrainingRun, loaded: ckpt.LoadedCheckpoint) -> None:
    """Trained state, optimizer and schedule from a checkpoint read by :func:`find_checkpoint`."""
    check_signature(run.method, loaded)
    model = run.backend.unwrap(run.transformer)
    if loaded.trainable is not None:
        run.method.load_trainable_state(model, loaded.trainable, f"checkpoint {loaded.path}")
    else:  # a checkpoint without the exact state: the export, in whatever form it is
        run.method.load_export(model, loaded.path / run.method.export_file, source=f"checkpoint {loaded.path}")
    state = loaded.state
    run.optimizer.load_state_dict(state["optimizer"])
    run.lr_scheduler.load_state_dict(state["lr_scheduler"])
    # The LR of the restored step comes from this recipe's schedule (e.g. a longer max_steps).
    run.lr_scheduler.last_epoch = int(state["step"]) - 1
    run.lr_scheduler.step()
    run.step = int(state["step"])
    # another process count: data order is re-split, noise streams start afresh
    run.rng = loaded.rng if state["world_size"] == run.backend.world_size else None


def check_signature(method, loaded: ckpt.LoadedCheckpoint) -> None:
    """The checkpoint was made by the same method on the same model (older checkpoints: the LoRA metadata)."""
    saved = loaded.state.get("signature")
    if saved is None:
        saved = {"method": "lora", **_lora_file_metadata(loaded.path / ckpt.LORA_FILE)}
    expected = method.signature()
    diffs = [f"{k}: checkpoint {saved.get(k)!r} vs recipe {v!r}" for k, v in expected.items() if saved.get(k) != v]
    if diffs:
        raise ValueError(f"cannot resume from {loaded.path}: {'; '.join(diffs)} "
                         "(set train.resume=none or use another train.output_dir)")


def _lora_file_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    if not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {k: meta[k] for k in ("base_variant", "rank", "target_modules") if k in meta}


def describe(run: TrainingRun) -> str:
    n_train = sum(p.numel() for p in run.params)
    return (f"[ltx2train] {run.spec.name}: {run.method.describe()} ({n_train:,} trainable parameters), "
            f"{len(run.dataset)} cached clips, {run.backend.world_size} process(es) ({run.backend.name}), "
            f"starting at step {run.step}")

