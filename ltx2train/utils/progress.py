"""What a command shows while it works: a progress bar on a terminal, a line every N steps in a log file, nothing
but warnings and errors under ``--quiet``."""

from __future__ import annotations

import sys
from typing import TextIO

_quiet = False


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no bars and no progress lines (warnings, errors and each command's result still print)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether bars belong on ``stream`` (stderr by default): a terminal, and not ``--quiet``."""
    stream = stream or sys.stderr
    return not _quiet and hasattr(stream, "isatty") and stream.isatty()


def console(line: str) -> None:
    """A progress or status line (suppressed by ``--quiet``; warnings are not)."""
    if not _quiet or "warning:" in line:
        print(line, flush=True)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class StepBar:
    """The training bar (step, loss, it/s, ETA from tqdm) on a terminal; ``write`` prints a line above it, or
    plainly when there is no bar."""

    def __init__(self, total: int, initial: int, log=print, desc: str = "train", enabled: bool = True):
        self.log, self.bar = log, None
        if enabled and on_terminal():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", leave=True, **_width())

    def update(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            self.log(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress(iterable, desc: str, unit: str = "it", total: int | None = None):
    """``iterable`` under a tqdm bar on a terminal (not under ``--quiet``), else as is."""
    if not on_terminal():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, unit=unit, total=total, leave=False, **_width())


def _width() -> dict:
    """Follow the terminal's size; one that reports none (a bare pty, some CI consoles) is taken as 100 x 24
    (tqdm draws nothing on a terminal of 0 rows)."""
    import os

    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    return {"dynamic_ncols": True} if size.columns and size.lines else {"ncols": 100, "nrows": 24}
