"""Experiment tracking through Accelerate's tracker interface (``accelerate.tracking``): W&B, TensorBoard, both
(``tracker.backend: wandb,tensorboard``) or none, on the global main process only, and always a local
``metrics.jsonl``. A resumed training continues the same run: the same W&B run id (kept in the output directory),
the same TensorBoard directory with the steps after the resume point purged, and ``metrics.jsonl`` rows after it
dropped.

What is logged: the resolved config and the data statistics (clips per bucket, rejects) once per start, the
metrics the trainer passes (loss, per-modality and per-sigma-bucket losses, grad norm, LR, throughput, memory),
and each validation's clips: the mp4 with its audio and the audio alone as WAV, captioned with their prompts."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from accelerate.tracking import GeneralTracker

from ltx2train.config import TrackerConfig
from ltx2train.utils.atomic import write_text_atomic
from ltx2train.utils.errors import UserError

BACKENDS = ("wandb", "tensorboard")


def tracker_names(backend: str) -> list[str]:
    """``tracker.backend`` as a list: ``none`` -> [], ``wandb,tensorboard`` -> both."""
    names = [name.strip() for name in backend.split(",") if name.strip()]
    return [] if names == ["none"] else names


class MetricsFile(GeneralTracker):
    """``metrics.jsonl`` in the run directory, one row per logged step (read back by tests and scripts)."""

    name, requires_logging_directory, main_process_only = "metrics_file", True, False

    def __init__(self, run_dir: Path, resume_step: int):
        super().__init__()
        self.path = Path(run_dir) / "metrics.jsonl"
        self._drop_rows_after(resume_step)

    @property
    def tracker(self):
        return self.path

    def _drop_rows_after(self, step: int) -> None:
        """A run resumed at ``step`` (perhaps an older checkpoint than the last logged step) logs those steps
        again: the rows after it go, so ``metrics.jsonl`` never holds a step twice (a fresh start keeps none)."""
        if not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [line for line in lines if step > 0 and line.strip() and json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            write_text_atomic(self.path, "".join(line + "\n" for line in kept))

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")


def flatten(values: dict, prefix: str = "") -> dict:
    """Nested config -> ``{"train.max_steps": 100, ...}`` with scalar values (lists and None as text)."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def data_statistics(datasets: list[dict]) -> dict:
    """``dataset_statistics`` as flat tracker values: clips, rejects and clips per bucket of each dataset."""
    out = {}
    for i, d in enumerate(datasets):
        prefix = f"data.{i}."
        out[prefix + "cache_dir"] = d["cache_dir"]
        out[prefix + "clips"] = d.get("clips", 0)
        out[prefix + "rejected"] = d.get("rejected", 0)
        out.update({f"{prefix}bucket.{b}": n for b, n in d.get("buckets", {}).items()})
    return out


class Tracker:
    """The trainer's one tracking object: every configured Accelerate tracker plus ``metrics.jsonl``."""

    def __init__(
        self,
        tracker_cfg: TrackerConfig,
        run_dir: str | Path,
        config: dict,
        enabled: bool = True,
        resume_step: int = 0,
        data: dict | None = None,
    ):
        self.enabled, self.run_dir = enabled, Path(run_dir)
        self.names = tracker_names(tracker_cfg.backend) if enabled else []
        self.trackers: list[GeneralTracker] = []
        if not enabled:
            return
        self.trackers.append(MetricsFile(self.run_dir, resume_step))
        for name in self.names:
            self.trackers.append(self._build(name, tracker_cfg, resume_step))
        for tracker in self.trackers[1:]:
            tracker.start()
            tracker.store_init_configuration({**flatten(config), **(data or {})})

    def _build(self, name: str, tracker_cfg: TrackerConfig, resume_step: int) -> GeneralTracker:
        if name == "wandb":
            from accelerate.tracking import WandBTracker

            return WandBTracker(
                tracker_cfg.project,
                name=tracker_cfg.run_name,
                entity=tracker_cfg.entity,
                mode=tracker_cfg.mode,
                dir=str(self.run_dir),
                id=self._wandb_run_id(),
                resume="allow",
            )
        if name == "tensorboard":
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                raise UserError("tracker.backend=tensorboard needs TensorBoard: pip install 'ltx2train[tensorboard]'")
            from accelerate.tracking import TensorBoardTracker

            # purge_step: events of steps after the resume point (logged before an interruption) are dropped
            return TensorBoardTracker(
                tracker_cfg.run_name or "run",
                self.run_dir / "tensorboard",
                purge_step=resume_step + 1 if resume_step else None,
            )
        raise UserError(f"tracker.backend: unknown tracker {name!r}; allowed: none, {', '.join(BACKENDS)}")

    def _wandb_run_id(self) -> str:
        """One W&B run per output directory: a resumed training continues its run instead of starting one."""
        path = self.run_dir / "wandb_run_id"
        if path.is_file():
            return path.read_text().strip()
        run_id = secrets.token_hex(4)
        write_text_atomic(path, run_id + "\n")
        return run_id

    def tracker(self, name: str):
        """The underlying run object of one tracker (``wandb.Run``, ``SummaryWriter``), or None."""
        return next((t.tracker for t in self.trackers if t.name == name), None)

    def log(self, metrics: dict, step: int) -> None:
        for tracker in self.trackers:
            tracker.log(metrics, step=step)

    def log_clips(self, paths: list[Path], clips: list, captions: list[str], step: int) -> None:
        """Each validation clip: the mp4 (with its audio) and the audio alone (a WAV beside the mp4)."""
        if not self.enabled or not self.names:
            return
        from ltx2train.data.media import write_wav

        wavs = [write_wav(p.with_suffix(".wav"), c.audio, c.sample_rate) for p, c in zip(paths, clips)]
        run = self.tracker("wandb")
        if run is not None:
            import wandb

            run.log(
                {
                    "validation/video": [wandb.Video(str(p), caption=c, format="mp4") for p, c in zip(paths, captions)],
                    "validation/audio": [wandb.Audio(str(w), caption=c) for w, c in zip(wavs, captions)],
                },
                step=step,
            )
        writer = self.tracker("tensorboard")
        if writer is not None:
            for i, (clip, caption) in enumerate(zip(clips, captions)):
                writer.add_audio(f"validation/audio/{i}", clip.audio.mean(0).clamp(-1, 1), step, clip.sample_rate)
                writer.add_images(
                    f"validation/frames/{i}", clip.video[:: max(1, len(clip.video) // 4)], step, dataformats="NHWC"
                )
                writer.add_text(f"validation/prompt/{i}", caption, step)
            writer.flush()

    def finish(self) -> None:
        """Close every tracker; with W&B, also wait for its service to write the run out (``wandb.teardown``:
        its atexit hook is not reliable under multiprocessing, and an offline run is complete only after it)."""
        for tracker in self.trackers:
            tracker.finish()
        if self.tracker("wandb") is not None:
            import wandb

            wandb.teardown()
