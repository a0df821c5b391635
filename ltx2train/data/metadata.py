"""Dataset metadata: csv / json / jsonl files with a video path and a caption per clip."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ClipRecord:
    index: int  # position in the metadata file: the clip's name in the cache
    video: Path  # absolute
    caption: str


def _rows(path: Path) -> list[tuple[str, dict]]:
    """(location for error messages, row) pairs."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as f:
            return [(f"row {i + 2}", row) for i, row in enumerate(csv.DictReader(f))]
    if suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON ({exc})") from exc
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
        return [(f"item {i}", row) for i, row in enumerate(data)]
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                rows.append((f"line {i + 1}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {i + 1} is not valid JSON ({exc})") from exc
        return rows
    raise ValueError(f"{path}: unknown metadata format {suffix!r}; expected .csv, .json or .jsonl")


def read_metadata(path: str | Path, video_column: str = "video", caption_column: str = "caption",
                  root: str | Path | None = None) -> list[ClipRecord]:
    """Clip records; relative video paths resolve against ``root`` or the metadata file's directory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metadata file {path} does not exist")
    base = Path(root) if root is not None else path.parent
    records = []
    for index, (where, row) in enumerate(_rows(path)):
        if not isinstance(row, dict):
            raise ValueError(f"{path}: {where} is not an object with {video_column!r} and {caption_column!r}")
        for column in (video_column, caption_column):
            if column not in row:
                raise ValueError(f"{path}: {where} has no column {column!r} (columns: {sorted(row)})")
        caption = str(row[caption_column] or "").strip()
        if not caption:
            raise ValueError(f"{path}: {where} has an empty caption")
        video = Path(str(row[video_column])).expanduser()
        records.append(ClipRecord(index, (video if video.is_absolute() else base / video).resolve(), caption))
    return records
