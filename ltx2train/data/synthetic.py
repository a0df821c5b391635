"""A synthetic audio-video dataset made on the fly: coloured shapes that move, with a tone that follows.

Each clip is a real mp4 (h264 + AAC): a circle or square of one colour slides across a dark background
while a stereo sine tone glides in pitch with the shape's position (up/right = higher), panned with it.
Captions use only words of the tiny tokenizer's vocabulary, so the demo's text conditioning is real.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ltx2train.data.media import write_video_with_audio
from ltx2train.utils.atomic import write_text_atomic

COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 240),
    "yellow": (240, 220, 40),
    "cyan": (40, 220, 230),
    "magenta": (220, 50, 220),
    "white": (240, 240, 240),
}
SHAPES = ("circle", "square")
DIRECTIONS = {"right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1)}
LOW_HZ, HIGH_HZ = 300.0, 1200.0


def _draw(height: int, width: int, shape: str, colour, cx: float, cy: float, radius: float) -> np.ndarray:
    frame = np.full((height, width, 3), 20, dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    if shape == "circle":
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    else:
        inside = (np.abs(xx - cx) <= radius) & (np.abs(yy - cy) <= radius)
    frame[inside] = colour
    return frame


def _progress_to_pitch(progress: np.ndarray, rising: bool) -> np.ndarray:
    """Pitch glides exponentially between LOW_HZ and HIGH_HZ as the shape moves."""
    p = progress if rising else 1.0 - progress
    return LOW_HZ * (HIGH_HZ / LOW_HZ) ** p


def make_clip(rng: np.random.Generator, num_frames: int, fps: float, height: int, width: int, sample_rate: int):
    """(frames uint8 (F, H, W, 3), audio float32 (2, N), caption)."""
    colour_name = str(rng.choice(list(COLOURS)))
    shape = str(rng.choice(SHAPES))
    direction = str(rng.choice(list(DIRECTIONS)))
    dx, dy = DIRECTIONS[direction]
    rising = direction in ("right", "up")
    radius = min(height, width) * rng.uniform(0.12, 0.2)
    start = np.array([width / 2 - dx * width * 0.3, height / 2 - dy * height * 0.3])
    travel = np.array([dx * width * 0.6, dy * height * 0.6])
    progress = np.linspace(0.0, 1.0, num_frames)
    frames = np.stack(
        [_draw(height, width, shape, COLOURS[colour_name], *(start + p * travel), radius) for p in progress]
    )

    n = int(round(num_frames / fps * sample_rate))
    t_progress = np.linspace(0.0, 1.0, n)
    pitch = _progress_to_pitch(t_progress, rising)
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    tone = 0.4 * np.sin(phase)
    pan = 0.5 + 0.4 * dx * (t_progress - 0.5)  # follows horizontal motion
    audio = np.stack([tone * (1 - pan), tone * pan]).astype(np.float32)
    trend = "rising" if rising else "falling"
    caption = f"a {colour_name} {shape} moves {direction} with a {trend} tone on a dark background"
    return frames, audio, caption


def make_synthetic_dataset(
    out_dir: str | Path,
    num_clips: int = 12,
    num_frames: int = 25,
    fps: float = 24.0,
    height: int = 64,
    width: int = 64,
    sample_rate: int = 16000,
    seed: int = 0,
) -> Path:
    """Write ``clips/clip_NNN.mp4`` and ``metadata.jsonl``; returns the metadata path.

    Clips carry 8 frames of margin beyond ``num_frames`` so that readers never come up short.
    """
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(num_clips):
        frames, audio, caption = make_clip(rng, num_frames + 8, fps, height, width, sample_rate)
        relative = f"clips/clip_{i:03d}.mp4"
        write_video_with_audio(out_dir / relative, frames, fps, audio, sample_rate)
        lines.append(json.dumps({"video": relative, "caption": caption}))
    metadata = out_dir / "metadata.jsonl"
    return write_text_atomic(metadata, "\n".join(lines) + "\n")
