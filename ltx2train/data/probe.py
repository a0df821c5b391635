"""``ltx2train data validate METADATA``: probe every row before spending GPU time on it.

For each row: the metadata checks of ``read_metadata`` (columns, caption, duplicates), then the file itself --
opens, has a video stream, size, frame count, duration and real frame timing by timestamps (variable frame
rate flagged), rotation, audio stream channels / rate / duration (of the row's external audio file where the
recipe's ``audio_column`` names one); a reference video (``reference_video_column``) must decode too. With a recipe, also what ``prepare`` would
do: the bucket each clip gets, and a clip too short for every bucket is a reject. Nothing a file does crashes
it: each problem is a reason in ``rejects.jsonl`` (path as written, reason), decoder chatter included.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ltx2train.data.media import MediaError, decoder_summary, native_messages, probe_video, video_rotation
from ltx2train.data.metadata import ClipRecord, Columns, read_metadata
from ltx2train.utils.atomic import write_text_atomic


@dataclass
class ValidationReport:
    clips: list[dict] = field(default_factory=list)  # one per usable row: what the probe found
    rejects: list[dict] = field(default_factory=list)  # {"index", "path", "reason"}

    def summary(self) -> dict:
        return {
            "rows": len(self.clips) + len(self.rejects),
            "kept": len(self.clips),
            "rejected": len(self.rejects),
            "variable_frame_rate": sum(c["variable_frame_rate"] for c in self.clips),
            "without_audio": sum(c["audio"] is None for c in self.clips),
            "rotated": sum(c["rotation"] != 0 for c in self.clips),
            "buckets": dict(Counter(c["bucket"] for c in self.clips if c.get("bucket"))),
        }


def _audio(path: Path) -> dict | None:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        audio = container.streams.audio[0]
        seconds = float(audio.duration * audio.time_base) if audio.duration else float(container.duration or 0) / 1e6
        return {
            "channels": audio.codec_context.channels,
            "sample_rate": audio.codec_context.sample_rate,
            "duration": round(seconds, 3),
        }


def probe_clip(record: ClipRecord, settings=None) -> dict:
    """What the file holds (MediaError when it cannot be used); with cache ``settings``, its bucket too."""
    info = probe_video(record.video)
    if record.audio is not None and not record.audio.is_file():
        raise MediaError(f"{record.audio}: file does not exist")
    audio, rotation = _audio(record.audio or record.video), video_rotation(record.video)
    if record.audio is not None and audio is None:
        raise MediaError(f"{record.audio}: the row's audio file has no audio stream")
    if record.reference is not None:
        probe_video(record.reference)  # the IC-LoRA reference: it must decode too
    clip = {
        "index": record.index,
        "path": record.path,
        "height": info.height,
        "width": info.width,
        "frames": info.frames,
        "duration": round(info.duration, 3),
        "fps": round(info.fps, 3),
        "variable_frame_rate": info.variable_rate,
        "rotation": rotation,
        "audio": audio,
    }
    if settings is not None:
        from ltx2train.data.encode import choose_bucket

        clip["bucket"] = choose_bucket(record, settings).name
    return clip


def validate(
    metadata: str | Path, columns: Columns | None = None, root: str | Path | None = None, settings=None
) -> ValidationReport:
    rows = read_metadata(metadata, root=root, columns=columns)
    report = ValidationReport(rejects=list(rows.rejects))
    for record in rows.records:
        noise: list[str] = []
        try:
            with native_messages(noise):
                report.clips.append(probe_clip(record, settings))
        except MediaError as exc:
            said = decoder_summary(noise)
            report.rejects.append(
                {
                    "index": record.index,
                    "path": record.path,
                    "reason": str(exc) + (f" (decoder said: {said})" if said else ""),
                }
            )
        except Exception as exc:  # a file no decoder expected: still a reject, never a crash
            report.rejects.append(
                {
                    "index": record.index,
                    "path": record.path,
                    "reason": f"{record.video}: cannot probe ({type(exc).__name__}: {exc})",
                }
            )
    report.rejects.sort(key=lambda r: r["index"])
    return report


def write_report(report: ValidationReport, directory: str | Path) -> tuple[Path, Path]:
    """``DIR/report.json`` (summary + every clip) and ``DIR/rejects.jsonl``."""
    directory = Path(directory)
    summary = write_text_atomic(
        directory / "report.json",
        json.dumps({"summary": report.summary(), "clips": report.clips, "rejects": report.rejects}, indent=1),
    )
    rejects = write_text_atomic(directory / "rejects.jsonl", "".join(json.dumps(r) + "\n" for r in report.rejects))
    return summary, rejects
