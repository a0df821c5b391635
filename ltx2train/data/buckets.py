"""Resolution buckets: the (height, width, frames) shapes clips are prepared at.

With ``data.height`` / ``data.width`` left null (dynamic resolution, DiffSynth's convention), each clip keeps
its aspect ratio: it goes to the bucket whose aspect ratio is nearest (in log scale, so 1:2 and 2:1 are as far
from 1:1), with the most frames the clip has, and is scaled to cover that bucket with the least crop. Buckets
come from ``data.max_pixels`` x ``data.aspect_ratios`` x ``data.frame_buckets``, or are listed explicitly
(``data.buckets: [768x512x121, ...]``). Heights and widths are multiples of 32, frame counts 8k+1. A fixed
height and width is one bucket per frame count.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ltx2train.utils.errors import UserError

MULTIPLE = 32
_SHAPE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class Bucket:
    height: int
    width: int
    frames: int

    @property
    def name(self) -> str:
        return f"{self.height}x{self.width}x{self.frames}"

    @property
    def aspect(self) -> float:
        return self.width / self.height

    @classmethod
    def parse(cls, text: str) -> "Bucket":
        match = _SHAPE.match(str(text))
        if not match:
            raise UserError(f"bucket {text!r}: expected HEIGHTxWIDTHxFRAMES, e.g. 512x768x121")
        return cls(*(int(x) for x in match.groups()))

    def problem(self) -> str | None:
        """Why this shape cannot be a bucket, or None."""
        if self.height <= 0 or self.width <= 0 or self.height % MULTIPLE or self.width % MULTIPLE:
            return f"bucket {self.name}: height and width must be positive multiples of {MULTIPLE}"
        if self.frames < 1 or (self.frames - 1) % 8:
            return f"bucket {self.name}: frames must be of the form 8k+1 (1, 9, 17, ..., 121)"
        return None


def fit_area(aspect: float, max_pixels: int) -> tuple[int, int]:
    """The largest (height, width), multiples of 32, with width/height close to ``aspect`` and at most
    ``max_pixels`` pixels."""
    height = math.sqrt(max_pixels / aspect)
    h = max(MULTIPLE, int(height // MULTIPLE) * MULTIPLE)
    w = max(MULTIPLE, int((h * aspect) // MULTIPLE) * MULTIPLE)
    # rounding both down may leave room: grow the side that brings the ratio closest to ``aspect``
    best = (h, w)
    for dh, dw in ((MULTIPLE, 0), (0, MULTIPLE), (MULTIPLE, MULTIPLE)):
        hh, ww = h + dh, w + dw
        if hh * ww <= max_pixels and abs(math.log(ww / hh / aspect)) < abs(math.log(best[1] / best[0] / aspect)):
            best = (hh, ww)
    return best


def generate(max_pixels: int, aspect_ratios: list[float], frame_counts: list[int]) -> list[Bucket]:
    shapes = {fit_area(a, max_pixels) for a in aspect_ratios}
    return sorted({Bucket(h, w, f) for h, w in shapes for f in frame_counts})


def from_config(data) -> list[Bucket]:
    """The buckets of a ``data`` recipe section."""
    frames = sorted(set(data.frame_buckets or [data.num_frames]))
    if data.buckets:
        return sorted({Bucket.parse(b) for b in data.buckets})
    if data.height is not None and data.width is not None:
        return [Bucket(data.height, data.width, f) for f in frames]
    return generate(data.max_pixels, list(data.aspect_ratios), frames)


def assign(buckets: list[Bucket], height: int, width: int, frames_available: int) -> Bucket | None:
    """The bucket for a clip of ``height`` x ``width`` with ``frames_available`` frames at the target rate: the
    nearest aspect ratio, then the most frames that fit; None when the clip is shorter than every bucket of
    that shape."""
    aspect = math.log(width / height)
    distance = lambda b: abs(math.log(b.aspect) - aspect)  # noqa: E731
    nearest = min(distance(b) for b in buckets)
    shape = [b for b in buckets if math.isclose(distance(b), nearest, abs_tol=1e-9)]
    fitting = [b for b in shape if b.frames <= frames_available]
    if not fitting:
        return None
    return max(fitting, key=lambda b: (b.frames, b.height * b.width))
