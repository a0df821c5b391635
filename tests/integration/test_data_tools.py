"""data_tools/ (= `ltx2train data ...`): scan a folder into metadata, validate every row before prepare."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from conftest import tiny_config, write_vfr_clip
from ltx2train import cli
from ltx2train.config import save_config
from ltx2train.data.media import write_video_with_audio

TOOLS = Path(__file__).resolve().parents[2] / "data_tools"


def _clip(path, frames=12, audio=True, size=(32, 48)):
    video = np.full((frames, *size, 3), 100, np.uint8)
    sound = np.zeros((2, int(frames / 24 * 16000) + 800), np.float32) if audio else None
    return write_video_with_audio(path, video, 24.0, sound)


def test_scan_writes_metadata_from_sidecar_captions_and_rejects_the_rest(tmp_path):
    (tmp_path / "sub").mkdir()
    for name, caption in (("a", "a grey field"), ("sub/b", "  another\ngrey field "), ("c", None), ("d", "")):
        _clip(tmp_path / f"{name}.mp4")
        if caption is not None:
            (tmp_path / f"{name}.txt").write_text(caption)
    (tmp_path / "notes.txt").write_text("not a caption of anything")
    proc = subprocess.run([sys.executable, str(TOOLS / "scan.py"), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 4, proc.stderr  # some videos have no usable caption
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert rows == [
        {"video": "a.mp4", "caption": "a grey field"},
        {"video": "sub/b.mp4", "caption": "another grey field"},
    ]
    assert (
        "c.mp4: no caption file c.txt beside it" in proc.stdout and "d.mp4: caption file d.txt is empty" in proc.stdout
    )
    assert cli.main(["data", "scan", str(tmp_path / "sub")]) == 0


def test_validate_probes_every_row_rejects_the_bad_ones_with_reasons_and_never_crashes(tiny_workspace, tmp_path, capfd):
    _clip(tmp_path / "good.mp4"), _clip(tmp_path / "mute.mp4", audio=False)
    write_vfr_clip(tmp_path / "vfr.mp4", [0, 0.25, 0.5, 0.75] + [1 + i / 30 for i in range(20)])  # 4 fps, then 30
    _clip(tmp_path / "short.mp4", frames=4)
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is a text file renamed .mp4\n")
    truncated = _clip(tmp_path / "truncated.mp4", frames=24)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    names = ["good", "mute", "vfr", "short", "empty", "text", "truncated", "missing"]
    rows = [{"video": f"{n}.mp4", "caption": f"clip {n}"} for n in names]
    rows += [{"video": "good.mp4", "caption": "the same file again"}, {"video": "mute.mp4", "caption": ""}]
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = save_config(tiny_config(tiny_workspace, tmp_path / "run"), tmp_path / "recipe.yaml")  # 9-frame buckets
    code = cli.main(
        [
            "data",
            "validate",
            str(tmp_path / "meta.jsonl"),
            "--report",
            str(tmp_path / "report"),
            "--recipe",
            str(recipe),
        ]
    )
    out = capfd.readouterr()
    assert code == 4
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert [c["path"] for c in report["clips"]] == ["good.mp4", "mute.mp4", "vfr.mp4"]
    clips = {c["path"]: c for c in report["clips"]}
    assert clips["vfr.mp4"]["variable_frame_rate"] and not clips["good.mp4"]["variable_frame_rate"]
    assert clips["mute.mp4"]["audio"] is None and clips["good.mp4"]["audio"]["channels"] == 2
    assert clips["good.mp4"]["audio"]["sample_rate"] == 16000 and clips["good.mp4"]["bucket"] == "64x64x9"
    assert (clips["good.mp4"]["height"], clips["good.mp4"]["width"], clips["good.mp4"]["frames"]) == (32, 48, 12)
    assert report["summary"] == {
        "rows": 10,
        "kept": 3,
        "rejected": 7,
        "variable_frame_rate": 1,
        "without_audio": 2,
        "rotated": 0,
        "buckets": {"64x64x9": 3},
    }
    rejects = [json.loads(line) for line in (tmp_path / "report" / "rejects.jsonl").read_text().splitlines()]
    reasons = {r["path"]: r["reason"] for r in rejects}
    assert set(reasons) == {
        "short.mp4",
        "empty.mp4",
        "text.mp4",
        "truncated.mp4",
        "missing.mp4",
        "good.mp4",
        "mute.mp4",
    }
    assert "shorter than the shortest bucket" in reasons["short.mp4"]
    assert "does not exist" in reasons["missing.mp4"] and "duplicate of line 1" in reasons["good.mp4"]
    assert "empty caption" in reasons["mute.mp4"] and "moov atom not found" in reasons["truncated.mp4"]
    assert "cannot decode video" in reasons["text.mp4"] and "cannot decode video" in reasons["empty.mp4"]
    assert "moov atom" not in out.err and "Traceback" not in out.err  # decoder noise only inside the reasons
    assert "3 of 10 row(s) usable, 7 rejected (1 variable frame rate, 2 without audio, 0 rotated)" in out.out


def test_validate_probes_the_rows_external_audio_and_reference_video(tmp_path):
    """With audio / reference_video columns: the audio reported is the external file's; a missing audio file, an
    audio file without audio and an undecodable reference each reject their row with the path."""
    from ltx2train.data.metadata import Columns
    from ltx2train.data.probe import validate

    _clip(tmp_path / "mute.mp4", audio=False)
    _clip(tmp_path / "voiced.mp4", audio=True)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    rows = [
        {"video": "mute.mp4", "sound": "voiced.mp4", "ref": "voiced.mp4", "caption": "ok"},
        {"video": "voiced.mp4", "sound": "gone.wav", "caption": "missing audio"},
        {"video": "a.mp4", "sound": "mute.mp4", "caption": "audio without audio"},
        {"video": "b.mp4", "ref": "broken.mp4", "caption": "bad reference"},
    ]
    for name in ("a", "b"):
        _clip(tmp_path / f"{name}.mp4")
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = validate(tmp_path / "meta.jsonl", Columns(audio="sound", reference_video="ref"))
    (clip,) = report.clips
    assert clip["path"] == "mute.mp4" and clip["audio"]["channels"] == 2  # the external file's audio
    reasons = {r["index"]: r["reason"] for r in report.rejects}
    assert "gone.wav: file does not exist" in reasons[1]
    assert "mute.mp4: the row's audio file has no audio stream" in reasons[2]
    assert "broken.mp4" in reasons[3] and "cannot decode video" in reasons[3]
