"""Everything a training run needs, built in one fixed, visible order.

    processes (backend) -> checkpoint to resume (read, not applied) -> validation inputs (Gemma, VAEs: before
    the transformer, so the two never share memory) -> transformer + connectors loaded on meta, filled in
    ``model.dtype`` -> FP8 storage of what ``memory.fp8_frozen`` lists (on the host, before the device sees
    it) -> the trained module (the transformer, or it with the connectors: ``train.trainable``) -> method
    (freeze, adapters, init_from) -> activation checkpointing -> backend (parallelize) ->
    optimizer + LR schedule -> resume (trained state, optimizer, schedule)

Three axes stay independent: the method (what is trained), the backend (how it is distributed) and the
strategy (how a batch becomes a loss); none of them knows which of the others it is combined with.
"""

from __future__ import annotations

import gc
import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ltx2train.config import Config, dataset_sources
from ltx2train.data.cache import CachedDataset, check_producer
from ltx2train.data.encoders import producer
from ltx2train.data.prepare import settings_from_config
from ltx2train.memory.fp8 import Fp8Report, redraw_lora_init, store_fp8
from ltx2train.lora.adapters import merge_presets
from ltx2train.models.loading import load_component, require_model_files
from ltx2train.models.specs import VariantSpec, load_variant, torch_dtype
from ltx2train.models.trained import trained_module
from ltx2train.training.backends import build_backend
from ltx2train.training.data import steps_per_epoch
from ltx2train.training.interfaces import Backend, Method, Strategy, ValidationSampler
from ltx2train.training.methods import build_method
from ltx2train.training.optim import build_lr_scheduler, build_optimizer
from ltx2train.training.resume import resume, resume_candidates
from ltx2train.training.strategies import build_strategy, check_strategy
from ltx2train.utils.format import format_bytes


@dataclass
class TrainingRun:
    cfg: Config
    spec: VariantSpec
    backend: Backend
    method: Method
    strategy: Strategy
    dataset: CachedDataset
    model: torch.nn.Module  # the trained module (models/trained.py) as the backend wrapped it
    connectors: torch.nn.Module  # frozen and run in the step, or trained inside ``model`` (train.trainable)
    params: list[torch.nn.Parameter]  # what the optimizer steps
    optimizer: torch.optim.Optimizer
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler
    weight_dtype: torch.dtype
    step: int  # 0, or the resumed checkpoint's
    rng: dict | None  # this rank's RNG state to restore once the data loader exists
    validation_sampler: ValidationSampler | None  # where validation runs: the main process (every one if collective)
    validation_clips: list


def build(cfg: Config, log: Callable[[str], None]) -> TrainingRun:
    from ltx2train.config import save_config

    backend = build_backend(cfg)
    if not backend.is_main:  # console lines once, from the main process
        log = lambda _: None  # noqa: E731
    if backend.world_size == 1 and single_process_cpu_launch(os.environ):
        log(
            "[ltx2train] warning: `accelerate launch --cpu --num_processes N` started ONE process (Accelerate's "
            "CPU launcher does not start N). For N CPU processes: ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N "
            "-m ltx2train train RECIPE"
        )
    launched = launcher_precision(os.environ)
    if backend.is_main and launched and launched != cfg.train.mixed_precision:
        log(
            f"[ltx2train] warning: the launcher asks for mixed precision {launched!r} (accelerate config or "
            f"--mixed_precision); the recipe's train.mixed_precision={cfg.train.mixed_precision!r} is what runs"
        )
    seed_everything(cfg.train.seed)  # the same adapter initialisation on every rank (FSDP2 shards each rank's own)
    spec = load_variant(cfg.model.variant)
    samples = bool(cfg.validation.prompts)  # validation samples need the decoders, the vocoder and Gemma
    from ltx2train.inference.prompt_sampler import decoder_components, sampling_parts

    require_model_files(
        cfg.model.checkpoint,
        ["transformer", "connectors"] + (decoder_components(cfg.validation) if samples else []),
        distilled=cfg.model.distilled,
        text_encoder=cfg.model.text_encoder if samples else None,
        variant=spec,
        parts=sampling_parts(cfg.validation),
    )
    output_dir = Path(cfg.train.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if backend.is_main:
        save_config(cfg, output_dir / "config.yaml")
    dataset = build_dataset(cfg)
    check_strategy(cfg, dataset.settings)
    epochs_to_steps(cfg, dataset, backend.world_size, log)
    candidates = resume_candidates(cfg)
    weight_dtype = torch_dtype(cfg.model.dtype)
    stored: list[Fp8Report] = []
    load = component_loader(cfg, spec, backend.device, weight_dtype, stored)
    # validation inputs where validation runs: the main process, or every process when the forward is collective
    validates_here = backend.is_main or backend.collective_forward
    sampler = build_validation(cfg, load, weight_dtype, backend.device, output_dir, stored) if validates_here else None
    clips = [dataset[i] for i in range(min(cfg.validation.loss_clips, len(dataset)))] if validates_here else []

    transformer, connectors = load("transformer"), load("connectors")
    merge_presets(cfg.lora.preset, transformer, connectors, log)  # lora.preset: into the base, before the method
    strategy = build_strategy(cfg, dataset, transformer)
    method = build_method(cfg, spec, frozen=strategy.frozen_modules)
    model = trained_module(transformer, connectors, cfg.train.trainable)
    method.apply(model, log, fresh=not candidates)
    if "transformer" in cfg.memory.fp8_frozen:  # a LoRA on the FP8 base (the config refuses full fine-tuning)
        if not candidates and not cfg.lora.init_from:
            redraw_lora_init(transformer)  # PEFT drew the adapters in the base's float8
    log_fp8(cfg, stored, log)
    if cfg.train.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    model, optimizer = backend.parallelize(model, lambda params: build_optimizer(params, cfg.optimizer))
    seed_everything(cfg.train.seed + backend.rank)  # per-rank draws (dropout); training noise is keyed per sample
    params = [p for p in model.parameters() if p.requires_grad]
    lr_scheduler = build_lr_scheduler(optimizer, cfg.optimizer, cfg.train.max_steps)
    run = TrainingRun(
        cfg,
        spec,
        backend,
        method,
        strategy,
        dataset,
        model,
        connectors,
        params,
        optimizer,
        lr_scheduler,
        weight_dtype,
        0,
        None,
        sampler,
        clips,
    )
    resume(run, candidates, explicit=cfg.train.resume != "latest", log=log)
    return run


def epochs_to_steps(cfg: Config, dataset: CachedDataset, world_size: int, log: Callable[[str], None]) -> None:
    """``train.num_epochs``: ``train.max_steps`` set to that many epochs of optimizer steps at this world size."""
    if cfg.train.num_epochs is None:
        return
    per_epoch = steps_per_epoch(cfg, dataset, world_size)
    cfg.train.max_steps = cfg.train.num_epochs * per_epoch
    log(
        f"[ltx2train] train.num_epochs={cfg.train.num_epochs}: {per_epoch} optimizer step(s) per epoch on "
        f"{world_size} process(es) -> train.max_steps={cfg.train.max_steps}"
    )


def build_dataset(cfg: Config) -> CachedDataset:
    """Every dataset's cache, made at the recipe's settings with these VAEs and this text projection."""
    sources = dataset_sources(cfg.data)
    made_by = producer(cfg, text_encoder=False, present_only=True)
    for source in sources:
        check_producer(source.cache_dir, made_by)
    return CachedDataset([s.cache_dir for s in sources], settings_from_config(cfg))


def component_loader(cfg: Config, spec, device, dtype: torch.dtype, stored: list[Fp8Report]) -> Callable:
    """``load(name, dtype, part)``: a component (``part``: a VAE half) on ``device``. One that ``memory.fp8_frozen`` lists is filled on the host,
    stored in FP8 there (its report appended to ``stored``), then moved: the device never holds it in ``dtype``."""

    def load(name: str, dtype: torch.dtype = dtype, part: str | None = None) -> torch.nn.Module:
        fp8 = name in cfg.memory.fp8_frozen
        host = name == "transformer" and cfg.memory.block_swap > 0  # the ddp backend places it (memory/offload.py)
        module = load_component(
            spec,
            name,
            cfg.model.checkpoint,
            dtype=dtype,
            device="cpu" if fp8 or host else device,
            distilled=cfg.model.distilled,
            part=part,
        )
        if fp8:
            stored.append(store_fp8(module, name, compute_dtype=dtype))
        if fp8 and not host:
            module.to(device)
        if name == "video_vae" and cfg.memory.tiled_vae:  # validation decodes tile by tile
            from ltx2train.memory.tiling import enable_vae_tiling

            enable_vae_tiling(module)
        return module

    return load


def log_fp8(cfg: Config, stored: list[Fp8Report], log) -> None:
    if not stored:
        return
    log(
        f"[ltx2train] stored in FP8 (memory.fp8_frozen): {', '.join(r.describe() for r in stored)}; "
        f"{format_bytes(sum(r.saved for r in stored))} saved"
    )
    if "transformer" in cfg.memory.fp8_frozen and not cfg.train.gradient_checkpointing:
        log(
            "[ltx2train] warning: memory.fp8_frozen: transformer without train.gradient_checkpointing: autograd keeps "
            "each layer's weights cast up for backward, so the step's peak memory is not lower; set "
            "train.gradient_checkpointing=true"
        )


def single_process_cpu_launch(env) -> bool:
    """``accelerate launch --cpu --num_processes N`` (N > 1) runs one plain process: it exports a rendezvous
    address for N and the CPU flag, but no rank or world size."""
    cpu = env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return cpu and "MASTER_PORT" in env and "WORLD_SIZE" not in env and "KMP_BLOCKTIME" in env


def launcher_precision(env) -> str | None:
    """The mixed precision ``accelerate launch`` was given (its config file or flag), if any."""
    value = env.get("ACCELERATE_MIXED_PRECISION", "").lower()
    return value or None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every device's generator too


def build_validation(cfg: Config, load, dtype: torch.dtype, device, output_dir: Path, stored: list[Fp8Report]):
    """Validation prompts encoded by Gemma, which is then freed; the decoders stay for sampling. Gemma in
    ``memory.fp8_frozen`` is stored in FP8 on the host before it goes to the device."""
    if not cfg.validation.prompts:
        return None
    from ltx2train.inference.prompt_sampler import build_sampler, encode_prompts, read_conditions
    from ltx2train.models.text_encoder import load_text_encoder

    conditions = read_conditions(cfg.validation, cfg.data.reference_downscale)  # a bad file fails before Gemma loads

    fp8 = "text_encoder" in cfg.memory.fp8_frozen
    text_encoder = load_text_encoder(
        cfg.model.text_encoder,
        dtype=dtype,
        device="cpu" if fp8 else device,
        max_sequence_length=cfg.data.max_sequence_length,
    )
    if fp8:
        stored.append(store_fp8(text_encoder.model, "text_encoder", compute_dtype=dtype))
        text_encoder.model.to(device)
    prompts = encode_prompts(
        text_encoder, list(cfg.validation.prompts), cfg.validation.negative_prompt, cfg.data.max_sequence_length
    )
    del text_encoder
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return build_sampler(cfg.validation, prompts, load, samples_dir=output_dir / "samples", conditions=conditions)


def describe(run: TrainingRun) -> str:
    n_train = sum(p.numel() for p in run.params)
    model = run.backend.unwrap(run.model)

    def kinds(trained: bool) -> list[str]:
        return sorted(
            {str(p.dtype).replace("torch.", "") for p in model.parameters() if p.requires_grad == trained}
        ) or ["-"]

    return (
        f"[ltx2train] {run.spec.name}: {run.method.describe()} ({n_train:,} trainable parameters; weights: "
        f"frozen {'/'.join(kinds(False))}, trained {'/'.join(kinds(True))}), {len(run.dataset)} cached clips"
        f"{_bucket_summary(run.dataset.buckets)}{_dataset_summary(run.dataset)}, {run.backend.world_size} "
        f"process(es) ({run.backend.name}), strategy {run.strategy.describe()}, starting at step {run.step}"
    )


def _dataset_summary(dataset: CachedDataset) -> str:
    if len(dataset.cache_dirs) == 1:
        return ""
    counts = Counter(dataset.sources)
    return f" from {len(counts)} datasets (" + ", ".join(str(counts[i]) for i in sorted(counts)) + ")"


def _bucket_summary(buckets: list[str]) -> str:
    counts = Counter(buckets)
    if len(counts) == 1:
        return f" ({next(iter(counts))})"
    return f" in {len(counts)} buckets (" + ", ".join(f"{b}: {n}" for b, n in sorted(counts.items())) + ")"
