"""Dataset metadata: a video path (or a still image) and a caption per clip, optionally an external audio file and
an IC-LoRA reference video (``Columns``), from csv / json / jsonl (read here, row by row, so that
one bad row is a reject and not the file's end), parquet or a ``datasets`` directory (``Dataset.save_to_disk``),
both read with Hugging Face ``datasets``. A row without a caption takes it from a sidecar ``NAME.txt`` beside
its video.

A file that cannot be read at all (missing, not JSON, unknown format) is an error. A row that cannot be used
(no video column, an empty or non-UTF-8 caption, the same video twice) is a *reject*: reported with the path as
written and the reason, while every other row goes on.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ltx2train.utils.errors import UserError


@dataclass
class ClipRecord:
    index: int  # position in the metadata file: the clip's name in the cache
    video: Path  # absolute (a still image when the row gave one)
    caption: str
    path: str = ""  # the video path as written in the metadata
    audio: Path | None = None  # an external audio file: replaces the video's own audio stream
    reference: Path | None = None  # the IC-LoRA reference video


@dataclass(frozen=True)
class Columns:
    """Which metadata column holds what: ``video`` and ``caption`` always; ``image`` (a still image for rows
    without a video), ``audio`` (an external audio file) and ``reference_video`` where the dataset has them."""

    video: str = "video"
    caption: str = "caption"
    audio: str | None = None
    image: str | None = None
    reference_video: str | None = None

    @classmethod
    def of(cls, data) -> "Columns":
        """The columns of a ``data`` recipe section."""
        return cls(
            data.video_column, data.caption_column, data.audio_column, data.image_column, data.reference_video_column
        )


@dataclass
class Metadata:
    records: list[ClipRecord] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)  # {"index", "path", "reason"} per unusable row


def _text(path: Path) -> str:
    # undecodable bytes survive as lone surrogates, so that one bad caption rejects its row, not the file
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


def _rows(path: Path) -> list[tuple[str, object]]:
    """(location for messages, row) pairs."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return [(f"row {i + 2}", row) for i, row in enumerate(csv.DictReader(_text(path).splitlines()))]
    if suffix == ".json":
        try:
            data = json.loads(_text(path))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: invalid JSON ({exc})") from exc
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
        return [(f"item {i}", row) for i, row in enumerate(data)]
    if suffix == ".jsonl":
        rows = []
        for i, line in enumerate(_text(path).splitlines()):
            if not line.strip():
                continue
            try:
                rows.append((f"line {i + 1}", json.loads(line)))
            except json.JSONDecodeError as exc:
                rows.append((f"line {i + 1}", f"not valid JSON ({exc})"))
        return rows
    if suffix == ".parquet" or path.is_dir():
        return [(f"row {i}", row) for i, row in enumerate(_dataset_rows(path))]
    raise UserError(
        f"{path}: unknown metadata format {suffix!r}; expected .csv, .json, .jsonl, .parquet or a datasets directory"
    )


def _dataset_rows(path: Path) -> list[dict]:
    """Rows of a parquet file or a ``save_to_disk`` directory through ``datasets`` (its arrow cache in a
    temporary directory: nothing is left in the user's Hugging Face cache)."""
    import tempfile

    import datasets

    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            if not (path / "state.json").is_file():
                raise UserError(
                    f"{path}: a directory of metadata must be a datasets directory (Dataset.save_to_disk: "
                    "state.json, *.arrow)"
                )
            return datasets.load_from_disk(str(path), keep_in_memory=True).to_list()
        with tempfile.TemporaryDirectory(prefix="ltx2train-metadata-") as cache:
            return datasets.Dataset.from_parquet(str(path), cache_dir=cache, keep_in_memory=True).to_list()
    except (OSError, ValueError, TypeError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(str(path)):
            raise
        raise UserError(f"{path}: cannot read it with datasets ({type(exc).__name__}: {exc})") from exc


# DiffSynth-Studio's column names, read where the recipe keeps the defaults and a row has no column of ours
DIFFSYNTH_COLUMNS = {"caption": "prompt", "audio": "input_audio", "reference_video": "in_context_videos"}


def _with_aliases(columns: Columns, row: object) -> Columns:
    """``columns`` for this row: DiffSynth's ``prompt`` when the default ``caption`` is absent, its ``input_audio``
    and ``in_context_videos`` when no audio / reference column is set."""
    if not isinstance(row, dict):
        return columns
    changes = {}
    if columns.caption == "caption" and "caption" not in row and DIFFSYNTH_COLUMNS["caption"] in row:
        changes["caption"] = DIFFSYNTH_COLUMNS["caption"]
    for field_name in ("audio", "reference_video"):
        if getattr(columns, field_name) is None and DIFFSYNTH_COLUMNS[field_name] in row:
            changes[field_name] = DIFFSYNTH_COLUMNS[field_name]
    return dataclasses.replace(columns, **changes) if changes else columns


def _cell(row: object, column: str | None) -> str:
    """A path cell, stripped; '' when the column is not used, absent or empty. A one-element list (DiffSynth's
    ``in_context_videos``, also written as ``["a.mp4"]`` in a CSV cell) is its element."""
    if column is None or not isinstance(row, dict) or row.get(column) is None:
        return ""
    value = row[column]
    if isinstance(value, str) and value.strip().startswith("[") and value.strip().endswith("]"):
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            pass
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise _CellError(f"{column!r} holds {len(value)} paths; one per row is read")
        value = value[0]
    return str(value).strip()


class _CellError(ValueError):
    """A cell that cannot be read as one path."""


def _media_cell(row: object, columns: Columns) -> str:
    """The row's clip as written: its video, else (an image dataset) its image."""
    return _cell(row, columns.video) or _cell(row, columns.image)


def _problem(row: object, columns: Columns) -> str | None:
    if isinstance(row, str):
        return row
    if not isinstance(row, dict):
        return f"not an object with {columns.video!r} and {columns.caption!r}"
    media = f"{columns.video!r}" + (f" or {columns.image!r}" if columns.image else "")
    if not _media_cell(row, columns):
        present = columns.video in row or (columns.image is not None and columns.image in row)
        return f"empty {media}" if present else f"no {media} (columns: {sorted(row)}{_closest(columns.video, row)})"
    if row.get(columns.caption) is None:
        return f"no {columns.caption!r} (columns: {sorted(row)}{_closest(columns.caption, row)})"
    caption = str(row[columns.caption])
    if not caption.strip():
        return "empty caption"
    try:
        caption.encode("utf-8")
    except UnicodeEncodeError:
        return "caption is not valid UTF-8"
    return None


def _closest(column: str, row: dict) -> str:
    match = difflib.get_close_matches(column, [str(k) for k in row], n=1, cutoff=0.5)
    return (
        f"; the closest is {match[0]!r}: set data.{'video' if column == 'video' else 'caption'}_column" if match else ""
    )


def _with_sidecar_caption(row: dict, video: Path, caption_column: str) -> dict:
    sidecar = video.expanduser().with_suffix(".txt")
    if not sidecar.is_file():
        return row
    return {**row, caption_column: sidecar.read_bytes().decode("utf-8", errors="surrogateescape")}


def _resolve(written: str, base: Path) -> Path | None:
    if not written:
        return None
    path = Path(written).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def read_metadata(
    path: str | Path,
    video_column: str = "video",
    caption_column: str = "caption",
    root: str | Path | None = None,
    columns: Columns | None = None,
) -> Metadata:
    """Records and rejects; relative paths resolve against ``root`` or the metadata file's directory.
    ``columns`` (all of them) replaces ``video_column`` / ``caption_column``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"metadata file {path} does not exist")
    columns = columns or Columns(video_column, caption_column)
    base = Path(root) if root is not None else path.parent
    out, seen = Metadata(), {}
    for index, (where, row) in enumerate(_rows(path)):
        used, written = _with_aliases(columns, row), ""
        try:
            written = _media_cell(row, used)
            if written and not str(row.get(used.caption) or "").strip():
                row = _with_sidecar_caption(row, base / written, used.caption)
            problem = _problem(row, used) or _duplicate(_resolve(written, base), seen)
            audio, reference = _cell(row, used.audio), _cell(row, used.reference_video)
        except _CellError as exc:
            problem = str(exc)
        if problem is None:
            video = _resolve(written, base)
            seen[video] = where
            out.records.append(
                ClipRecord(
                    index,
                    video,
                    str(row[used.caption]).strip(),
                    written,
                    _resolve(audio, base),
                    _resolve(reference, base),
                )
            )
            continue
        out.rejects.append(
            {
                "index": index,
                "path": written.encode("utf-8", "replace").decode(),
                "reason": f"{path.name} {where}: {problem}",
            }
        )
    return out


def _duplicate(video: Path | None, seen: dict) -> str | None:
    return f"duplicate of {seen[video]} (the same video)" if video in seen else None
