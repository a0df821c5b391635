"""The training loop: a paragraph over the pieces the builder assembled (training/builder.py).

step    connectors(text) -> strategy builds noisy inputs + targets -> transformer -> masked losses ->
        backend.backward (accumulated) -> backend.step (clip + optimizer) -> schedule step
every N checkpoint (the method's export for users, the exact trained state, optimizer/RNG/data state)
        and validation (samples through the inference pipeline on the live modules + a fixed-sigma loss)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ltx2train.config import Config
from ltx2train.data.cache import collate, left_pad
from ltx2train.memory.offload import offload_activations
from ltx2train.models.text_encoder import ProjectedText, connect_text
from ltx2train.models.trained import trained_parts, transformer_of
from ltx2train.training import checkpoint as ckpt
from ltx2train.training.backends.collectives import disagreeing
from ltx2train.training.builder import build, describe
from ltx2train.training.data import batch_sampler
from ltx2train.training.interfaces import Backend
from ltx2train.training.objective import SigmaBucketLoss
from ltx2train.training.signals import StopRequest
from ltx2train.training.throughput import Throughput
from ltx2train.training.tracking import Tracker, data_statistics
from ltx2train.utils.progress import StepBar, format_duration


@dataclass
class TrainResult:
    step: int
    checkpoint: Path | None
    samples: list[Path] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)
    last_validation: list = field(default_factory=list)  # GeneratedClip of the last validation run
    interrupted: str | None = None  # the signal that stopped the run early, if one did
    validation_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, fixed-sigma loss)
    main: bool = True  # this process is the main one (it reports)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: allocated on the GPU, resident set size (RSS) on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


class Trainer:
    def __init__(self, cfg: Config, log: Callable[[str], None] = print):
        self.cfg = cfg
        self.log = log
        self.output_dir = Path(cfg.train.output_dir)
        self.bucket_loss = SigmaBucketLoss()

    # ----------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg = self.cfg
        self.run = run = build(cfg, self.log)
        if not run.backend.is_main:  # console lines once, from the main process
            self.log = lambda _: None
        run.model.train()  # once: validation restores every module's mode (a train() per step walks them all)
        self.trains_connectors = "connectors" in trained_parts(self.model)
        self.step = run.step  # the loop's position: the run's is where it started
        self.validates = bool(cfg.validation.prompts) or bool(cfg.validation.loss_sigmas)
        self.input_dtype = self.model.dtype
        self.loader = self._build_loader(start_batch=self.step * cfg.train.gradient_accumulation_steps)
        if run.rng is not None:  # last: building the loader draws from the global RNG
            ckpt.set_rng_state(run.rng)
        self.tracker = self._build_tracker()
        self.throughput = self._build_throughput()
        self.log(describe(run))

    def _build_tracker(self) -> Tracker:
        from ltx2train.config import config_to_dict, dataset_sources
        from ltx2train.data.cache import dataset_statistics

        main, cfg = self.backend.is_main, self.cfg
        data = data_statistics(dataset_statistics(dataset_sources(cfg.data))) if main else None
        return Tracker(
            cfg.tracker,
            self.output_dir,
            config_to_dict(cfg) if main else {},
            enabled=main,
            resume_step=self.step,
            data=data,
        )

    def _build_throughput(self) -> Throughput:
        """FLOPs are counted (for TFLOP/s and MFU) where the device's peak is known: a GPU of the table in
        analysis/flops.py, or any device with $LTX2TRAIN_PEAK_TFLOPS."""
        from ltx2train.analysis.flops import peak_flops, step_flops

        cfg, peak = self.cfg, peak_flops(self.backend.device)
        spec = self.run.spec.component("transformer")
        flops_of = (
            (lambda b, v, a, t: step_flops(cfg, spec, batch=b, video=v, audio=a, text=t, fps=cfg.data.fps))
            if peak
            else None
        )
        return Throughput(flops_of, peak)

    @property
    def backend(self) -> Backend:
        return self.run.backend

    @property
    def model(self) -> torch.nn.Module:
        """The trained module (the transformer, or it with the text connectors: ``models/trained.py``), unwrapped
        from the backend."""
        return self.backend.unwrap(self.run.model)

    def _build_loader(self, start_batch: int):
        cfg = self.cfg
        sampler = batch_sampler(cfg, self.run.dataset, self.backend.rank, self.backend.world_size, start_batch)
        self.sampler = sampler  # the plan of batches (its state: start_batch, from the step)
        for bucket, clips in sampler.skipped().items():
            self.log(
                f"[ltx2train] warning: bucket {bucket} holds {clips} clip(s), fewer than a global batch "
                f"({cfg.data.batch_size} x {self.backend.world_size} process(es)): they are not trained"
            )
        loader = torch.utils.data.DataLoader(
            self.run.dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=cfg.data.num_workers,
            pin_memory=torch.cuda.is_available(),
        )
        return iter(loader)

    # ----------------------------------------------------------------------------------------- loop
    def text_context(self, batch: dict[str, torch.Tensor]):
        """Cached projected text features -> left-padded to ``max_sequence_length`` on the device -> the frozen
        connectors -> video/audio context; or, when the connectors are trained, the projected text itself (the
        trained module runs them in its forward, with their graph)."""
        length = self.cfg.data.max_sequence_length
        to = lambda t: None if t is None else left_pad(t.to(self.backend.device, self.run.weight_dtype), length)  # noqa: E731
        projected = ProjectedText(
            to(batch["text_video"]),
            to(batch.get("text_audio")),
            left_pad(batch["text_attention_mask"].to(self.backend.device), length),
        )
        return projected if self.trains_connectors else connect_text(self.run.connectors, projected)

    @torch.no_grad()
    def frozen_text_context(self, batch: dict[str, torch.Tensor]):
        """:meth:`text_context` without a graph (frozen connectors need none); the strategy calls it once it has
        chosen the batch's captions (caption dropout)."""
        return self.text_context(batch)

    def _cast_inputs(self, inputs) -> None:
        """Token and context tensors in the transformer's dtype (the frozen base's for LoRA, the float32 master
        weights' for full fine-tuning: autocast then computes in ``mixed_precision``). Timesteps stay float32."""
        for key in ("hidden_states", "audio_hidden_states", "encoder_hidden_states", "audio_encoder_hidden_states"):
            if key in inputs.model_kwargs:  # trained connectors make the context in the trained module's forward
                inputs.model_kwargs[key] = inputs.model_kwargs[key].to(self.input_dtype)

    def noise_generators(self, batch) -> list[torch.Generator]:
        """One generator per sample, seeded by (seed, step, sample index): the same noise and sigma for a sample
        at a step whatever the world size, per-process batch size or resume point."""
        seed, step = self.cfg.train.seed, self.step
        return [torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_000_033 + int(i)) for i in batch["index"]]

    def train_step(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        backend, accum = self.backend, len(batches)
        losses, sigmas, per_sample = [], [], []
        for i, batch in enumerate(batches):
            inputs = self.run.strategy.inputs(batch, self.frozen_text_context, generator=self.noise_generators(batch))
            self._cast_inputs(inputs)
            self.throughput.micro_batch(inputs.model_kwargs)
            with backend.accumulating(self.run.model, last=i == accum - 1):
                with backend.autocast(), offload_activations(self.cfg.memory.activation_offload):
                    video_pred, audio_pred = self.run.model(**inputs.model_kwargs)
                    loss, parts = self.run.strategy.loss(video_pred, audio_pred, inputs)
                backend.backward(loss / accum)
            losses.append(torch.stack([loss.detach(), parts["video_loss"], parts["audio_loss"]]).float())
            sigmas.append(inputs.sigma.float().cpu())
            per_sample.append(parts["per_sample"].float())
        grad_norm = backend.step(self.run.optimizer, self.run.params, self.cfg.optimizer.max_grad_norm)
        self.run.lr_scheduler.step()
        return self._step_metrics(losses, torch.cat(sigmas), per_sample, grad_norm)

    def _step_metrics(
        self, losses: list[torch.Tensor], sigmas: torch.Tensor, per_sample: list[torch.Tensor], grad_norm
    ) -> dict[str, float]:
        """The step's values, read from the device once per optimizer step: a host sync per micro-batch would
        drain the GPU's queue between micro-batches. Losses are averaged over micro-batches and processes."""
        mean = self.backend.reduce(torch.stack(losses).mean(0))
        norm = torch.as_tensor(math.nan if grad_norm is None else grad_norm, dtype=torch.float32)
        values = torch.cat([mean, norm.to(mean.device).reshape(1), *(t.to(mean.device) for t in per_sample)]).cpu()
        self.bucket_loss.add(sigmas, values[4:])
        metrics = {
            "loss": values[0].item(),
            "video_loss": values[1].item(),
            "audio_loss": values[2].item(),
            "sigma": sigmas.mean().item(),
            "lr": self.run.lr_scheduler.get_last_lr()[0],
        }
        if grad_norm is not None:
            metrics["grad_norm"] = values[3].item()
        return metrics

    def train(self) -> TrainResult:
        with StopRequest() as stop:  # from the start: a stop asked during setup is honoured after the first step
            if not hasattr(self, "run"):
                self.setup()
            result = self._loop(stop)
        self.tracker.finish()
        return result

    def _loop(self, stop: "StopRequest") -> TrainResult:
        cfg = self.cfg
        result = TrainResult(
            step=self.step, checkpoint=ckpt.latest_checkpoint(self.output_dir), main=self.backend.is_main
        )
        if self.validates and cfg.validation.at_start and self.step == 0:
            self._validate(result)
        bar, window = StepBar(cfg.train.max_steps, self.step, self.log, enabled=self.backend.is_main), []
        log, self.log = self.log, bar.write  # lines go above the bar
        try:
            while self.step < cfg.train.max_steps:
                self._one_step(result, window, bar)
                if self._after_step(result, stop, bar):
                    break
        finally:
            bar.close()
            self.log = log
        result.step = self.step
        return result

    def _one_step(self, result: TrainResult, window: list[float], bar: StepBar) -> None:
        cfg = self.cfg
        batches = [next(self.loader) for _ in range(cfg.train.gradient_accumulation_steps)]
        metrics = self.train_step(batches)
        self.step += 1
        self.throughput.step()
        window.append(metrics["loss"])
        result.losses.append((self.step, metrics["loss"]))
        bar.update(metrics["loss"])
        if not math.isfinite(metrics["loss"]):
            raise FloatingPointError(
                f"loss is {metrics['loss']} at step {self.step}; last checkpoint: {result.checkpoint}"
            )
        if self.step == cfg.train.max_steps or self.step % cfg.train.log_every == 0:
            rates = self.throughput.metrics(lambda t: self.backend.reduce(t, op="sum"), self.backend.world_size)
            self.tracker.log(
                {**metrics, **self._bucket_metrics(), **rates, "peak_memory_mb": peak_memory_mb(self.backend.device)},
                self.step,
            )
            if bar.bar is None:  # a terminal has the bar; a log file gets a line every log_every steps
                eta = format_duration(self.throughput.eta_s(cfg.train.max_steps - self.step))
                bar.write(
                    f"step {self.step:>6}/{cfg.train.max_steps}  loss {sum(window) / len(window):.4f}  "
                    f"(video {metrics['video_loss']:.4f}, audio {metrics['audio_loss']:.4f})  "
                    f"lr {metrics['lr']:.2e}  {rates['steps_per_s']:.2f} steps/s  "
                    f"{rates['samples_per_s']:.2f} samples/s  ETA {eta}"
                )
            window.clear()

    def _after_step(self, result: TrainResult, stop: "StopRequest", bar: StepBar) -> bool:
        """Checkpoint, stop and validation after a step; True when the run stops here."""
        cfg = self.cfg
        last = self.step == cfg.train.max_steps
        stopping = self._any_process(stop.requested)
        if last or stopping or (cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0):
            with self.throughput.paused():  # throughput counts training only
                result.checkpoint = self.save_checkpoint()
        if stopping:
            result.interrupted = stop.signal_name or "stop request"
            bar.write(
                f"[ltx2train] {result.interrupted} at step {self.step}: checkpoint written; "
                "run the same command again to resume"
            )
            return True
        if self.validates and (last or (cfg.validation.every and self.step % cfg.validation.every == 0)):
            with self.throughput.paused():
                self._validate(result)
        return False

    def _any_process(self, flag: bool) -> bool:
        """True on every process if it is true on one (so that all ranks checkpoint and stop together)."""
        if self.backend.world_size == 1:
            return flag
        return bool(self.backend.reduce(torch.tensor([float(flag)]), op="sum").item())

    def _bucket_metrics(self) -> dict[str, float]:
        """Loss per sigma bucket over the logging window, summed over all processes."""
        sums = self.backend.reduce(self.bucket_loss.sums.to(torch.float32), op="sum").cpu()
        counts = self.backend.reduce(self.bucket_loss.counts.to(torch.float32), op="sum").cpu()
        metrics = self.bucket_loss.metrics(sums, counts)
        self.bucket_loss.reset()
        return metrics

    # ----------------------------------------------------------------------------------------- outputs
    def save_checkpoint(self) -> Path:
        cfg, backend, method = self.cfg, self.backend, self.run.method
        names = method.trainable_names(self.model)
        agreed = self._check_replicas(names)
        gathered = backend.gather(self.run.model, names)  # collective: full tensors on the main process
        metadata = {
            "base_variant": self.run.spec.name,
            "family": self.run.spec.family,
            "strategy": self.run.strategy.name,
            "step": str(self.step),
        }
        state = {
            "step": self.step,
            "lr_scheduler": self.run.lr_scheduler.state_dict(),
            "signature": method.signature(),
            "backend": backend.name,
        }
        path = ckpt.save_checkpoint(
            self.output_dir,
            self.step,
            exports=method.exports(self.model, gathered, metadata) if backend.is_main else {},
            training_state=state,
            save_state=lambda d: backend.save_state(d, self.run.model, self.run.optimizer, names),
            rank=self.backend.rank,
            world_size=self.backend.world_size,
            barrier=backend.barrier,
            keep_last=cfg.train.keep_last,
        )
        self.log(
            f"[ltx2train] checkpoint {path}"
            + (f" ({self.backend.world_size} processes agree on {agreed} replicated trained tensors)" if agreed else "")
        )
        return path

    def _check_replicas(self, names: set[str]) -> int:
        """Collective: the replicated trained tensors hold the same bits on every process (a checkpoint keeps one
        copy of them); the number checked. Sharded tensors have one copy and nothing to compare."""
        replicas = self.backend.replicas(self.run.model, names)
        diverged = disagreeing(replicas, self.backend.device)
        if diverged:
            raise RuntimeError(
                f"at step {self.step} the processes hold different values of {len(diverged)} of {len(replicas)} "
                f"replicated trained tensors (first: {diverged[0]}) under distributed.backend={self.backend.name}; no "
                f"checkpoint was written for this step. Resume from the last one; if it happens again, report it"
            )
        return len(replicas) if self.backend.world_size > 1 else 0

    def _validate(self, result: TrainResult) -> None:
        """The main process validates; under a sharded backend every process runs the forward passes with it
        (identical inputs and seeds) and only the main one logs and writes."""
        backend, main = self.backend, self.backend.is_main
        if main or backend.collective_forward:
            model = backend.full_model(self.run.model)
            transformer = transformer_of(model)
            if self.cfg.validation.loss_sigmas:
                losses = self.validation_loss(model)
                self.tracker.log(losses, self.step)
                result.validation_losses.append((self.step, losses["val_loss"]))
                self.log(
                    f"[ltx2train] validation loss at step {self.step}: {losses['val_loss']:.4f} (sigmas "
                    + ", ".join(
                        f"{s:g}: {losses[f'val_loss_sigma_{s:g}']:.4f}" for s in self.cfg.validation.loss_sigmas
                    )
                    + ")"
                )
            if self.run.validation_sampler is not None and main:
                paths, clips = self.run.validation_sampler.run(self.step, transformer, self.run.connectors)
                result.samples.extend(paths)
                result.last_validation = clips
                self.tracker.log_clips(paths, clips, self.run.validation_sampler.prompts.prompts, self.step)
                self.log(f"[ltx2train] validation samples: {', '.join(str(p) for p in paths)}")
            elif self.run.validation_sampler is not None:
                self.run.validation_sampler.sample(transformer, self.run.connectors)
        backend.barrier()

    @torch.no_grad()
    def validation_loss(self, model: torch.nn.Module) -> dict[str, float]:
        """The loss of the first cached clips at fixed sigmas with fixed noise: a deterministic curve. ``model``:
        the trained module, whole (:meth:`backend.full_model`)."""
        from ltx2train.inference.prompt_sampler import preserved_training_state

        cfg = self.cfg.validation
        per_sigma = {s: 0.0 for s in cfg.loss_sigmas}
        with preserved_training_state(model, self.run.connectors):
            for clip in self.run.validation_clips:
                batch = self.run.dataset.collate([clip])
                context = self.text_context(batch)
                for sigma in cfg.loss_sigmas:
                    inputs = self.run.strategy.inputs(
                        batch, context, generator=torch.Generator().manual_seed(cfg.seed), sigma=torch.tensor([sigma])
                    )
                    self._cast_inputs(inputs)
                    with self.backend.autocast():
                        video_pred, audio_pred = model(**inputs.model_kwargs)
                        loss, _ = self.run.strategy.loss(video_pred, audio_pred, inputs)
                    per_sigma[sigma] += loss.item() / len(self.run.validation_clips)
        metrics = {f"val_loss_sigma_{s:g}": v for s, v in per_sigma.items()}
        metrics["val_loss"] = sum(per_sigma.values()) / len(per_sigma)
        return metrics
