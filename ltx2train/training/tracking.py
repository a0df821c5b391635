"""Experiment tracking: W&B, TensorBoard or none; a local ``metrics.jsonl`` is always written."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from ltx2train.utils.atomic import write_text_atomic


class Tracker:
    def __init__(self, cfg, run_dir: str | Path, config: dict, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.backend = cfg.backend if enabled else "none"
        self.run_dir = Path(run_dir)
        self._metrics = self.run_dir / "metrics.jsonl"
        if enabled:
            self._drop_rows_after(resume_step)
        self._wandb = None
        self._tb = None
        if self.backend == "wandb":
            import wandb

            self._wandb = wandb.init(project=cfg.project, name=cfg.run_name, entity=cfg.entity, mode=cfg.mode,
                                     dir=str(self.run_dir), config=config, id=self._wandb_run_id(),
                                     resume="allow")
        elif self.backend == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # tensorboard is optional
                raise ValueError("tracker.backend=tensorboard needs `pip install tensorboard`") from exc
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        elif self.backend != "none":
            raise ValueError(f"unknown tracker backend {self.backend!r}")

    def _drop_rows_after(self, step: int) -> None:
        """A run resumed at ``step`` (perhaps an older checkpoint than the last logged step) logs those steps
        again: the rows after it go, so ``metrics.jsonl`` never holds a step twice (a fresh start keeps none)."""
        if not self._metrics.is_file():
            return
        lines = self._metrics.read_text().splitlines()
        kept = [line for line in lines if step > 0 and line.strip() and json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            write_text_atomic(self._metrics, "".join(line + "\n" for line in kept))

    def _wandb_run_id(self) -> str:
        """One W&B run per output directory: a resumed training continues its run instead of starting one."""
        path = self.run_dir / "wandb_run_id"
        if path.is_file():
            return path.read_text().strip()
        run_id = secrets.token_hex(4)
        write_text_atomic(path, run_id + "\n")
        return run_id

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        with self._metrics.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(key, value, step)

    def log_videos(self, paths: list[Path], captions: list[str], step: int) -> None:
        if not self.enabled:
            return
        if self._wandb is not None:
            import wandb

            self._wandb.log({"validation": [wandb.Video(str(p), caption=c, format="mp4") for p, c in zip(paths, captions)]},
                            step=step)

    def finish(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
        if self._tb is not None:
            self._tb.close()
