"""The training loop: Accelerate, PEFT LoRA on the LTX-2 transformer, flow matching on cached latents.

    setup   load transformer + connectors (frozen) -> add LoRA -> optimizer / schedule -> resume -> prepare
    step    connectors(text) -> strategy builds noisy inputs + targets -> transformer -> masked losses ->
            backward (accumulated) -> clip -> optimizer + schedule step
    every N checkpoint (official-layout LoRA with alpha folded, exact adapter state, optimizer/RNG/data state)
            and validation samples (pipeline on the live modules)
"""

from __future__ import annotations

import gc
import json
import logging
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ltx2train.data.cache import CachedDataset, collate
from ltx2train.data.prepare import settings_from_config
from ltx2train.models.adapters import export_lora, load_into_adapter
from ltx2train.models.lora_files import read_lora, to_state_dict
from ltx2train.models.loading import load_component
from ltx2train.models.specs import load_variant, torch_dtype
from ltx2train.models.text_encoder import ProjectedText, connect_text
from ltx2train.training import checkpoint as ckpt
from ltx2train.training.data import ResumableBatchSampler
from ltx2train.training.objective import SigmaBucketLoss
from ltx2train.training.optim import build_lr_scheduler, build_optimizer
from ltx2train.training.strategies import TextToAudioVideo
from ltx2train.training.tracking import Tracker

logger = logging.getLogger(__name__)
ADAPTER = "default"


@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None
    samples: list[Path] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    last_validation: list = field(default_factory=list)  # GeneratedClip of the last validation run
    interrupted: str | None = None  # the signal that stopped the run early, if one did
    validation_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, fixed-sigma loss)


class StopRequest:
    """SIGTERM / SIGUSR1 (Slurm preemption, ``scancel``, ``kill``) ask for a stop: the loop finishes its
    step, writes a checkpoint and returns, instead of dying with up to ``checkpoint_every`` steps lost."""

    SIGNALS = ("SIGTERM", "SIGUSR1")

    def __init__(self):
        self.requested = False
        self.signal_name: str | None = None
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        for name in self.SIGNALS:
            sig = getattr(signal, name, None)
            if sig is None:
                continue
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def add_lora(transformer: torch.nn.Module, lora_cfg) -> list[torch.nn.Parameter]:
    """PEFT LoRA on ``lora_cfg.target_modules``; adapter weights kept in float32 whatever the base dtype."""
    from peft import LoraConfig

    transformer.requires_grad_(False)
    config = LoraConfig(r=lora_cfg.rank, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                        target_modules=list(lora_cfg.target_modules), init_lora_weights=True)
    try:
        transformer.add_adapter(config, adapter_name=ADAPTER)
    except ValueError as exc:
        raise ValueError(f"lora.target_modules={list(lora_cfg.target_modules)} match no transformer module: {exc}") from exc
    params = [p for n, p in transformer.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def load_lora_into(transformer: torch.nn.Module, path: Path) -> None:
    """Resume the ``default`` adapter from a checkpoint: its exact adapter state where present, else its
    LoRA file in whatever form (folded, or with ``.alpha`` from another tool) unfolded by this adapter's alpha."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    exact = path / ckpt.ADAPTER_FILE
    if not exact.is_file():
        load_into_adapter(transformer, read_lora(path / ckpt.LORA_FILE), adapter_name=ADAPTER, require_all=True,
                          source=f"checkpoint {path / ckpt.LORA_FILE}")
        return
    result = set_peft_model_state_dict(transformer, load_file(str(exact)), adapter_name=ADAPTER)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if missing or unexpected:
        raise ValueError(f"checkpoint {exact} does not fit this recipe's LoRA: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]} (other lora.target_modules?)")


def adapter_state(transformer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors exactly as trained, under PEFT's names (what resume reads back)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(transformer, adapter_name=ADAPTER).items()}


class Trainer:
    def __init__(self, cfg, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.log = log
        self.spec = load_variant(cfg.model.variant)
        self.strategy = TextToAudioVideo(cfg.objective, fps=cfg.data.fps)
        self.output_dir = Path(cfg.train.output_dir)
        self.bucket_loss = SigmaBucketLoss()

    # ----------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        from ltx2train.config import config_to_dict, save_config

        cfg = self.cfg
        self.accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision, cpu=not torch.cuda.is_available())
        acc = self.accelerator
        self.rank, self.world_size = acc.process_index, acc.num_processes
        self.device = acc.device
        set_seed(cfg.train.seed, device_specific=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if acc.is_main_process:
            save_config(cfg, self.output_dir / "config.yaml")
        self.dataset = CachedDataset(cfg.data.cache_dir, settings_from_config(cfg))
        if not self.dataset.settings["with_audio"]:
            raise ValueError(f"the {self.strategy.name} strategy trains video and audio jointly, but {cfg.data.cache_dir} "
                             "was prepared with data.with_audio=false")
        self.weight_dtype = torch_dtype(cfg.model.dtype)
        load = lambda name, dtype=self.weight_dtype: load_component(  # noqa: E731
            self.spec, name, cfg.model.checkpoint, dtype=dtype, device=self.device, distilled=cfg.model.distilled)
        # Only the main process samples: Gemma (encoding the prompts, then freed before the transformer
        # loads, so the two never share memory), the decoders and the vocoder are loaded there alone.
        self.validates = bool(cfg.validation.prompts) or bool(cfg.validation.loss_sigmas)
        self.validation_sampler = self._build_validation(load) if acc.is_main_process else None
        self.validation_clips = ([self.dataset[i] for i in range(min(cfg.validation.loss_clips, len(self.dataset)))]
                                 if acc.is_main_process else [])
        self.transformer = load("transformer")
        self.connectors = load("connectors")
        self.trainable = add_lora(self.transformer, cfg.lora)
        if cfg.train.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.optimizer = build_optimizer(self.trainable, cfg.optimizer)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, cfg.optimizer, cfg.train.max_steps)
        self.step, rng = self._resume()
        if self.step == 0 and cfg.lora.init_from:
            count = load_into_adapter(self.transformer, read_lora(cfg.lora.init_from), adapter_name=ADAPTER,
                                      source=f"lora.init_from {cfg.lora.init_from}")
            self.log(f"[ltx2train] LoRA initialised from {cfg.lora.init_from} ({count} modules)")
        self.transformer, self.optimizer = acc.prepare(self.transformer, self.optimizer)
        self.loader = self._build_loader(start_batch=self.step * cfg.train.gradient_accumulation_steps)
        if rng is not None:  # last: building the loader draws from the global RNG
            ckpt.set_rng_state(rng)
        self.tracker = Tracker(cfg.tracker, self.output_dir, config_to_dict(cfg) if acc.is_main_process else {},
                               enabled=acc.is_main_process)
        n_train = sum(p.numel() for p in self.trainable)
        self.log(f"[ltx2train] {self.spec.name}: LoRA rank {cfg.lora.rank} on {cfg.lora.target_modules} "
                 f"({n_train:,} trainable parameters), {len(self.dataset)} cached clips, "
                 f"{self.world_size} process(es), starting at step {self.step}")

    def _build_validation(self, load):
        cfg = self.cfg
        if not cfg.validation.prompts:
            return None
        from ltx2train.models.text_encoder import load_text_encoder
        from ltx2train.inference.sampler import PromptSampler, encode_prompts

        text_encoder = load_text_encoder(cfg.model.text_encoder, dtype=self.weight_dtype, device=self.device,
                                         max_sequence_length=cfg.data.max_sequence_length)
        prompts = encode_prompts(text_encoder, list(cfg.validation.prompts), cfg.validation.negative_prompt,
                                 cfg.data.max_sequence_length)
        del text_encoder  # encoded once: Gemma does not stay in memory during training
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return PromptSampler(cfg.validation, prompts, video_vae=load("video_vae"), audio_vae=load("audio_vae"),
                                 vocoder=load("vocoder", torch.float32), samples_dir=self.output_dir / "samples")

    def _build_loader(self, start_batch: int):
        cfg = self.cfg
        sampler = ResumableBatchSampler(len(self.dataset), cfg.data.batch_size, rank=self.rank,
                                        world_size=self.world_size, seed=cfg.train.seed, shuffle=cfg.data.shuffle,
                                        start_batch=start_batch)
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=cfg.data.num_workers, pin_memory=torch.cuda.is_available())
        return iter(loader)

    def _resume(self) -> tuple[int, dict | None]:
        """Adapter weights, optimizer and schedule from a checkpoint; (step, this rank's RNG state)."""
        cfg = self.cfg
        if cfg.train.resume == "none":
            return 0, None
        path = ckpt.latest_checkpoint(self.output_dir) if cfg.train.resume == "latest" else Path(cfg.train.resume)
        if path is None:
            return 0, None
        self._check_compatible(path)
        load_lora_into(self.transformer, path)
        state, rng = ckpt.load_training_state(path, self.rank)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        # The LR of the restored step comes from this recipe's schedule (e.g. a longer max_steps).
        self.lr_scheduler.last_epoch = int(state["step"]) - 1
        self.lr_scheduler.step()
        if state["world_size"] != self.world_size:
            rng = None  # another process count: data order is re-split, noise streams start afresh
        self.log(f"[ltx2train] resumed from {path} (step {state['step']})")
        return int(state["step"]), rng

    def _check_compatible(self, path: Path) -> None:
        from safetensors import safe_open

        with safe_open(str(path / ckpt.LORA_FILE), framework="pt") as f:
            meta = f.metadata() or {}
        cfg = self.cfg
        expected = {"base_variant": self.spec.name, "rank": str(cfg.lora.rank),
                    "target_modules": json.dumps(list(cfg.lora.target_modules))}
        diffs = [f"{k}: checkpoint {meta.get(k)!r} vs recipe {v!r}" for k, v in expected.items() if meta.get(k) != v]
        if diffs:
            raise ValueError(f"cannot resume from {path}: {'; '.join(diffs)} "
                             "(set train.resume=none or use another train.output_dir)")

    # ----------------------------------------------------------------------------------------- loop
    def text_context(self, batch: dict[str, torch.Tensor]):
        """Cached projected text features -> the connectors (run in the step) -> video/audio context."""
        to = lambda t: None if t is None else t.to(self.device, self.weight_dtype)  # noqa: E731
        projected = ProjectedText(to(batch["text_video"]), to(batch.get("text_audio")),
                                  batch["text_attention_mask"].to(self.device))
        return connect_text(self.connectors, projected)

    def train_step(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        acc, accum = self.accelerator, len(batches)
        self.transformer.train()
        totals: dict[str, float] = {"loss": 0.0, "video_loss": 0.0, "audio_loss": 0.0, "sigma": 0.0}
        for i, batch in enumerate(batches):
            with torch.no_grad():
                context = self.text_context(batch)
            inputs = self.strategy.inputs(batch, context)
            for key in ("hidden_states", "audio_hidden_states"):
                inputs.model_kwargs[key] = inputs.model_kwargs[key].to(self.weight_dtype)
            sync = nullcontext() if i == accum - 1 else acc.no_sync(self.transformer)
            with sync:
                with acc.autocast():
                    video_pred, audio_pred = self.transformer(**inputs.model_kwargs)
                    loss, parts = self.strategy.loss(video_pred, audio_pred, inputs)
                acc.backward(loss / accum)
            totals["loss"] += loss.item() / accum
            totals["video_loss"] += parts["video_loss"].item() / accum
            totals["audio_loss"] += parts["audio_loss"].item() / accum
            totals["sigma"] += inputs.sigma.mean().item() / accum
            self.bucket_loss.add(inputs.sigma, parts["per_sample"].cpu())
        if self.cfg.optimizer.max_grad_norm > 0:
            totals["grad_norm"] = float(acc.clip_grad_norm_(self.trainable, self.cfg.optimizer.max_grad_norm))
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals["lr"] = self.lr_scheduler.get_last_lr()[0]
        reduced = acc.reduce(torch.tensor([totals["loss"], totals["video_loss"], totals["audio_loss"]],
                                          device=self.device), reduction="mean")
        totals["loss"], totals["video_loss"], totals["audio_loss"] = reduced.tolist()
        return totals

    def train(self) -> TrainResult:
        if not hasattr(self, "accelerator"):
            self.setup()
        with StopRequest() as stop:
            result = self._loop(stop)
        self.tracker.finish()
        return result

    def _loop(self, stop: "StopRequest") -> TrainResult:
        cfg = self.cfg
        result = TrainResult(step=self.step, checkpoint=ckpt.latest_checkpoint(self.output_dir))
        if self.validates and cfg.validation.at_start and self.step == 0:
            self._validate(result)
        started, window = time.perf_counter(), []
        while self.step < cfg.train.max_steps:
            batches = [next(self.loader) for _ in range(cfg.train.gradient_accumulation_steps)]
            metrics = self.train_step(batches)
            self.step += 1
            window.append(metrics["loss"])
            result.losses.append((self.step, metrics["loss"]))
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(f"loss is {metrics['loss']} at step {self.step}; last checkpoint: {result.checkpoint}")
            last = self.step == cfg.train.max_steps
            if last or self.step % cfg.train.log_every == 0:
                rate = len(window) / (time.perf_counter() - started)
                self.tracker.log({**metrics, **self._bucket_metrics(), "steps_per_s": rate}, self.step)
                self.log(f"step {self.step:>6}/{cfg.train.max_steps}  loss {sum(window) / len(window):.4f}  "
                         f"(video {metrics['video_loss']:.4f}, audio {metrics['audio_loss']:.4f})  "
                         f"lr {metrics['lr']:.2e}  {rate:.2f} steps/s")
                started, window = time.perf_counter(), []
            stopping = self._any_process(stop.requested)
            if last or stopping or (cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0):
                result.checkpoint = self.save_checkpoint()
            if stopping:
                result.interrupted = stop.signal_name or "stop request"
                self.log(f"[ltx2train] {result.interrupted} at step {self.step}: checkpoint written; "
                         "run the same command again to resume")
                break
            if self.validates and (last or (cfg.validation.every and self.step % cfg.validation.every == 0)):
                self._validate(result)
        result.step = self.step
        return result

    def _any_process(self, flag: bool) -> bool:
        """True on every process if it is true on one (so that all ranks checkpoint and stop together)."""
        if self.world_size == 1:
            return flag
        return bool(self.accelerator.reduce(torch.tensor([float(flag)], device=self.device), reduction="sum").item())

    def _bucket_metrics(self) -> dict[str, float]:
        """Loss per sigma bucket over the logging window, summed over all processes."""
        sums = self.accelerator.reduce(self.bucket_loss.sums.to(self.device, torch.float32), reduction="sum").cpu()
        counts = self.accelerator.reduce(self.bucket_loss.counts.to(self.device, torch.float32), reduction="sum").cpu()
        metrics = self.bucket_loss.metrics(sums, counts)
        self.bucket_loss.reset()
        return metrics

    # ----------------------------------------------------------------------------------------- outputs
    def export_lora(self) -> dict[str, torch.Tensor]:
        """The adapter as users get it: official layout, alpha/rank folded into lora_B, float32."""
        transformer = self.accelerator.unwrap_model(self.transformer)
        return to_state_dict(export_lora(transformer, adapter_name=ADAPTER), "official", dtype=torch.float32)

    def save_checkpoint(self) -> Path:
        cfg, acc = self.cfg, self.accelerator
        metadata = ckpt.lora_metadata(variant=self.spec.name, family=self.spec.family, rank=cfg.lora.rank,
                                      alpha=cfg.lora.alpha, targets=cfg.lora.target_modules, step=self.step,
                                      strategy=self.strategy.name)
        state = {"step": self.step, "optimizer": self.optimizer.state_dict(),
                 "lr_scheduler": self.lr_scheduler.state_dict()}
        path = ckpt.save_checkpoint(self.output_dir, self.step, lora=self.export_lora(), lora_metadata=metadata,
                                    adapter_state=adapter_state(acc.unwrap_model(self.transformer)),
                                    training_state=state, rank=self.rank, world_size=self.world_size,
                                    barrier=acc.wait_for_everyone, keep_last=cfg.train.keep_last)
        self.log(f"[ltx2train] checkpoint {path}")
        return path

    def _validate(self, result: TrainResult) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            transformer = acc.unwrap_model(self.transformer)
            if self.cfg.validation.loss_sigmas:
                losses = self.validation_loss(transformer)
                self.tracker.log(losses, self.step)
                result.validation_losses.append((self.step, losses["val_loss"]))
                self.log(f"[ltx2train] validation loss at step {self.step}: {losses['val_loss']:.4f} (sigmas "
                         + ", ".join(f"{s:g}: {losses[f'val_loss_sigma_{s:g}']:.4f}" for s in self.cfg.validation.loss_sigmas)
                         + ")")
            if self.validation_sampler is not None:
                paths, clips = self.validation_sampler.run(self.step, transformer, self.connectors)
                result.samples.extend(paths)
                result.last_validation = clips
                self.tracker.log_videos(paths, self.validation_sampler.prompts.prompts, self.step)
                self.log(f"[ltx2train] validation samples: {', '.join(str(p) for p in paths)}")
        acc.wait_for_everyone()

    @torch.no_grad()
    def validation_loss(self, transformer: torch.nn.Module) -> dict[str, float]:
        """The loss of the first cached clips at fixed sigmas with fixed noise: a deterministic curve."""
        from ltx2train.inference.sampler import preserved_training_state

        cfg = self.cfg.validation
        per_sigma = {s: 0.0 for s in cfg.loss_sigmas}
        with preserved_training_state(transformer, self.connectors):
            for clip in self.validation_clips:
                batch = collate([clip])
                context = self.text_context(batch)
                for sigma in cfg.loss_sigmas:
                    inputs = self.strategy.inputs(batch, context, generator=torch.Generator().manual_seed(cfg.seed),
                                                  sigma=torch.tensor([sigma]))
                    for key in ("hidden_states", "audio_hidden_states"):
                        inputs.model_kwargs[key] = inputs.model_kwargs[key].to(self.weight_dtype)
                    with self.accelerator.autocast():
                        video_pred, audio_pred = transformer(**inputs.model_kwargs)
                        loss, _ = self.strategy.loss(video_pred, audio_pred, inputs)
                    per_sigma[sigma] += loss.item() / len(self.validation_clips)
        metrics = {f"val_loss_sigma_{s:g}": v for s, v in per_sigma.items()}
        metrics["val_loss"] = sum(per_sigma.values()) / len(per_sigma)
        return metrics
