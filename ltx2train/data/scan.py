"""``ltx2train data scan DIR``: metadata from a folder of clips with sidecar captions.

Every video file under DIR (``.mp4 .mov .mkv .webm .avi .m4v``, and images as 1-frame clips; recursively, in
name order) becomes a row
``{"video": <path relative to DIR>, "caption": <the text of NAME.txt beside it>}``; a video without a caption
file, or with an empty or non-UTF-8 one, is a reject with its reason. The metadata goes to ``DIR/metadata.jsonl``
by default, where its relative paths resolve with ``data.root`` unset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ltx2train.data.media import IMAGE_SUFFIXES
from ltx2train.utils.atomic import write_text_atomic

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", *IMAGE_SUFFIXES)  # images: 1-frame clips


@dataclass
class ScanReport:
    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)  # {"path", "reason"}


def _caption(video: Path) -> tuple[str | None, str | None]:
    """(caption, None) or (None, why not)."""
    sidecar = video.with_suffix(".txt")
    if not sidecar.is_file():
        return None, f"no caption file {sidecar.name} beside it"
    try:
        text = sidecar.read_bytes().decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, f"caption file {sidecar.name} is not valid UTF-8"
    if not text:
        return None, f"caption file {sidecar.name} is empty"
    return " ".join(text.split()), None


def scan(directory: str | Path) -> ScanReport:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory")
    report = ScanReport()
    for video in sorted(p for p in directory.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()):
        relative = str(video.relative_to(directory))
        caption, problem = _caption(video)
        if problem:
            report.rejects.append({"path": relative, "reason": problem})
        else:
            report.rows.append({"video": relative, "caption": caption})
    return report


def write_metadata(report: ScanReport, path: str | Path) -> Path:
    return write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in report.rows))
