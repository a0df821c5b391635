"""Stop requests from outside: Slurm preemption and time limits (SIGUSR1 via ``--signal``), ``scancel``, ``kill``."""

from __future__ import annotations

import signal


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
