"""How fast a run goes, over a logging window: step time, samples/s, video and audio tokens/s, model TFLOP/s per
device and MFU (FLOPs counted from the architecture: analysis/flops.py), summed over every process."""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import torch

from ltx2train.models.forward import text_length


class Throughput:
    """Counts what each micro-batch fed the transformer; ``metrics`` closes the window (a collective)."""

    def __init__(self, flops_of: Callable[[int, int, int, int], int] | None, peak: float | None):
        self.flops_of, self.peak = flops_of, peak  # flops_of(batch, video, audio, text); peak FLOP/s per device
        self.total_steps, self.total_seconds = 0, 0.0
        self._reset()

    def _reset(self) -> None:
        self.started, self.steps = time.perf_counter(), 0
        self.counts = torch.zeros(4, dtype=torch.float64)  # samples, video tokens, audio tokens, FLOPs

    def micro_batch(self, model_kwargs: dict) -> None:
        batch, video = model_kwargs["hidden_states"].shape[:2]
        audio, text = model_kwargs["audio_hidden_states"].shape[1], text_length(model_kwargs)
        with self.paused():  # counted once per token count; not training time
            flops = self.flops_of(batch, video, audio, text) if self.flops_of else 0
        self.counts += torch.tensor([batch, batch * video, batch * audio, flops], dtype=torch.float64)

    @contextlib.contextmanager
    def paused(self):
        """Time spent inside (checkpoints, validation) is left out of the window."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.started += time.perf_counter() - started

    def step(self) -> None:
        self.steps += 1

    def metrics(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor], world_size: int) -> dict[str, float]:
        """The window's rates (every process calls it at the same step), then a new window."""
        seconds = time.perf_counter() - self.started
        samples, video, audio, flops = reduce_sum(self.counts).cpu().tolist()
        out = {
            "step_time_s": seconds / max(self.steps, 1),
            "steps_per_s": self.steps / seconds,
            "samples_per_s": samples / seconds,
            "video_tokens_per_s": video / seconds,
            "audio_tokens_per_s": audio / seconds,
        }
        if self.flops_of:
            out["tflops_per_device"] = flops / seconds / world_size / 1e12
            if self.peak:
                out["mfu"] = flops / seconds / world_size / self.peak
        self.total_steps += self.steps
        self.total_seconds += seconds
        self._reset()
        return out

    def eta_s(self, steps_left: int) -> float | None:
        """Seconds to go at this run's average step time so far (None before the first window closes)."""
        return steps_left * self.total_seconds / self.total_steps if self.total_steps else None
