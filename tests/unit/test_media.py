"""Media decode/encode and metadata on real files (decord, PyAV), and the synthetic dataset."""

import json

import numpy as np
import pytest
import torch

from conftest import write_vfr_clip
from ltx2train.data.media import (
    MediaError,
    log_mel_spectrogram,
    read_audio,
    read_video_frames,
    fit_frames,
    write_video_with_audio,
)
from ltx2train.data.metadata import read_metadata
from ltx2train.data.synthetic import COLOURS, make_synthetic_dataset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), num_clips=4, num_frames=17, seed=1)


def _dominant_hz(x, sample_rate=16000):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * sample_rate / len(x)


def test_synthetic_clips_show_the_caption(synthetic):
    records = read_metadata(synthetic).records
    assert len(records) == 4 and all(r.video.is_file() for r in records)
    for record in records:
        frames = read_video_frames(record.video, 17, 24.0)
        assert frames.shape == (17, 64, 64, 3) and frames.dtype == torch.uint8
        colour = next(c for c in COLOURS if f" {c} " in record.caption)
        brightest = frames[0].reshape(-1, 3).float()
        shape_pixels = brightest[brightest.sum(-1) > 200]
        assert torch.allclose(shape_pixels.mean(0), torch.tensor(COLOURS[colour], dtype=torch.float32), atol=25)
        audio = read_audio(record.video, duration_s=17 / 24)
        assert audio.shape == (2, round(17 / 24 * 16000))
        mono = audio.mean(0).numpy()
        early, late = _dominant_hz(mono[:3000]), _dominant_hz(mono[-3000:])
        assert (late > early * 1.3) if "rising" in record.caption else (early > late * 1.3), (
            record.caption,
            early,
            late,
        )


def test_log_mel_peaks_at_the_tone_frequency():
    sr, hz = 16000, 1000.0
    t = torch.arange(sr) / sr
    wave = torch.sin(2 * np.pi * hz * t).repeat(2, 1) * 0.5
    mel = log_mel_spectrogram(wave, sample_rate=sr, mel_bins=64)
    assert mel.shape == (2, sr // 160 + 1, 64)
    from transformers.audio_utils import hertz_to_mel, mel_to_hertz

    centres = mel_to_hertz(np.linspace(hertz_to_mel(0.0, "slaney"), hertz_to_mel(sr / 2, "slaney"), 66), "slaney")[1:-1]
    peak = int(mel[0, 50].argmax())
    assert peak == int(np.argmin(np.abs(centres - hz)))


def test_fit_frames_covers_and_centres():
    frames = torch.zeros(3, 40, 80, 3, dtype=torch.uint8)
    frames[:, :, 30:50] = 255  # a white band in the middle of a wide frame: 2:1 -> 1:1 keeps the centre
    out = fit_frames(frames, 32, 32)
    assert out.shape == (3, 3, 32, 32) and out.min() >= -1 and out.max() <= 1
    assert out[:, :, :, 10:22].mean() > 0.9 and out[:, :, :, :4].mean() < -0.9 and out[:, :, :, -4:].mean() < -0.9


def test_letterbox_keeps_the_whole_frame_and_random_crop_is_seeded():
    frames = torch.full((1, 40, 80, 3), 255, dtype=torch.uint8)  # all white, 2:1
    boxed = fit_frames(frames, 32, 32, crop="letterbox")
    assert boxed.shape == (3, 1, 32, 32)
    assert boxed[:, :, 9:23].min() > 0.99  # the whole frame, scaled to 16 x 32 in the middle
    assert boxed[:, :, :7].max() < -0.99 and boxed[:, :, -7:].max() < -0.99  # black borders
    ramp = torch.arange(80, dtype=torch.uint8).mul(3).view(1, 1, 80, 1).expand(1, 40, 80, 3).contiguous()
    crops = [fit_frames(ramp, 32, 32, crop="random", generator=torch.Generator().manual_seed(s)) for s in range(6)]
    assert torch.equal(crops[0], fit_frames(ramp, 32, 32, crop="random", generator=torch.Generator().manual_seed(0)))
    assert len({round(float(c[0, 0, 0, 0]), 3) for c in crops}) > 1  # different offsets for different seeds


def test_bad_media_is_a_clear_error(tmp_path):
    silent = write_video_with_audio(tmp_path / "silent.mp4", np.zeros((9, 32, 32, 3), np.uint8), 24.0, None)
    with pytest.raises(MediaError, match="silent.mp4: has no audio stream"):
        read_audio(silent)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 1000)
    with pytest.raises(MediaError, match="garbage.mp4"):
        read_video_frames(garbage, 9, 24.0)
    with pytest.raises(MediaError, match="garbage.mp4"):
        read_audio(garbage)
    with pytest.raises(MediaError, match="shorter than the 25 frames"):
        read_video_frames(silent, 25, 24.0)
    with pytest.raises(MediaError, match="does not exist"):
        read_video_frames(tmp_path / "nope.mp4", 9, 24.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.mp4", "silent.mp4"]  # no temp files left


def test_metadata_formats_agree_and_bad_rows_are_rejected_with_their_reason(tmp_path):
    rows = [{"video": "a.mp4", "caption": "a red box"}, {"video": "/abs/b.mp4", "caption": "a blue disk"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "m.json").write_text(json.dumps(rows))
    (tmp_path / "m.csv").write_text("video,caption\na.mp4,a red box\n/abs/b.mp4,a blue disk\n")
    parsed = [read_metadata(tmp_path / f"m.{ext}").records for ext in ("jsonl", "json", "csv")]
    assert parsed[0] == parsed[1] == parsed[2]
    assert parsed[0][0].video == tmp_path / "a.mp4" and str(parsed[0][1].video) == "/abs/b.mp4"
    assert parsed[0][0].path == "a.mp4"  # as written, for the rejects report
    wrong_column = read_metadata(tmp_path / "m.csv", video_column="clip")
    assert wrong_column.records == [] and len(wrong_column.rejects) == 2
    assert "no 'clip' (columns: ['caption', 'video'])" in wrong_column.rejects[0]["reason"]
    # one bad row of each kind: the good rows still come through, each bad one with its reason
    lines = [
        b'{"video": "good.mp4", "caption": "a cat"}',
        b"{oops",
        b'{"video": "empty.mp4", "caption": "  "}',
        b'{"video": "nocap.mp4"}',
        b'{"video": "bytes.mp4", "caption": "caf\xe9 au lait"}',
        b'{"video": "./good.mp4", "caption": "the same clip again"}',
        b'{"video": "last.mp4", "caption": "a dog"}',
    ]
    (tmp_path / "mixed.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    mixed = read_metadata(tmp_path / "mixed.jsonl")
    assert [r.path for r in mixed.records] == ["good.mp4", "last.mp4"]
    reasons = {r["index"]: r["reason"] for r in mixed.rejects}
    assert sorted(reasons) == [1, 2, 3, 4, 5]
    assert "line 2: not valid JSON" in reasons[1] and "empty caption" in reasons[2] and "no 'caption'" in reasons[3]
    assert "not valid UTF-8" in reasons[4] and "duplicate of line 1" in reasons[5]
    assert [r["path"] for r in mixed.rejects] == ["", "empty.mp4", "nocap.mp4", "bytes.mp4", "./good.mp4"]
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "missing.csv")


def test_a_diffsynth_metadata_csv_reads_with_no_overrides(tmp_path):
    """DiffSynth's ``metadata.csv`` (``video,prompt[,input_audio]``, IC-LoRA's ``in_context_videos`` as a path or a
    one-element list): its columns are read where the recipe keeps the defaults; a missing column names the closest."""
    (tmp_path / "metadata.csv").write_text(
        "video,prompt,input_audio,in_context_videos\n"
        "a.mp4,a red box,a.wav,depth_a.mp4\n"
        "b.mp4,a blue disk,b.wav,\"['depth_b.mp4']\"\n"
        "c.mp4,two of them,c.wav,\"['x.mp4', 'y.mp4']\"\n"
    )
    parsed = read_metadata(tmp_path / "metadata.csv")
    assert [(r.path, r.caption) for r in parsed.records] == [("a.mp4", "a red box"), ("b.mp4", "a blue disk")]
    assert [r.audio for r in parsed.records] == [tmp_path / "a.wav", tmp_path / "b.wav"]
    assert [r.reference for r in parsed.records] == [tmp_path / "depth_a.mp4", tmp_path / "depth_b.mp4"]
    assert "'in_context_videos' holds 2 paths" in parsed.rejects[0]["reason"]
    (tmp_path / "lists.jsonl").write_text(
        '{"video": ["p.mp4", "q.mp4"], "prompt": "two"}\n{"video": ["r.mp4"], "prompt": "one"}\n'
    )
    lists = read_metadata(tmp_path / "lists.jsonl")
    assert [r.path for r in lists.records] == ["r.mp4"] and "'video' holds 2 paths" in lists.rejects[0]["reason"]
    (tmp_path / "typo.csv").write_text("video,captions\na.mp4,a red box\n")
    reason = read_metadata(tmp_path / "typo.csv").rejects[0]["reason"]
    assert "no 'caption' (columns: ['captions', 'video']; the closest is 'captions'" in reason


def test_a_variable_frame_rate_clip_decodes_by_timestamps(tmp_path):
    """4 fps for a second, then 30 fps: each 24 fps instant shows the frame on screen at that time (real motion),
    where the average frame rate would have held the slow part far too long."""
    from ltx2train.data.media import probe_video

    times = [k / 4 for k in range(4)] + [1 + k / 30 for k in range(26)]
    path = write_vfr_clip(tmp_path / "vfr.mp4", times)
    info = probe_video(path)
    assert info.frames == 30 and info.duration == pytest.approx(1 + 26 / 30, abs=0.04)
    frames = read_video_frames(path, 41, 24.0)  # 0 .. 1.667 s
    shown = [round((float(f.float().mean()) - 10) / 8) for f in frames]
    stamps = [round(t * 1000) / 1000 for t in times]  # as written: millisecond timestamps
    expected = [max(k for k, t in enumerate(stamps) if t <= i / 24 + 1e-6) for i in range(41)]
    assert shown == expected
    nominal = [round(i / 24 * info.fps) for i in range(41)]  # what an average-fps index map would take
    assert sum(a != b for a, b in zip(nominal, expected)) > 20
    assert len(set(shown[24:])) == 17  # after 1 s: a new frame at every instant, i.e. motion


@pytest.mark.parametrize("start_s", [0.0, 0.5])
def test_audio_and_video_of_a_window_are_aligned(tmp_path, start_s):
    """A flash at frame 30 and a click at the same instant (1.25 s, AAC): read over the same window, the click
    lands within one audio latent frame (40 ms) of the flash."""
    fps, sr = 24.0, 16000
    video = np.full((60, 32, 32, 3), 16, np.uint8)
    video[30] = 240
    audio = np.zeros((2, int(2.5 * sr)), np.float32)
    click = int(30 / fps * sr)
    audio[:, click : click + 80] = 0.9
    path = write_video_with_audio(tmp_path / "click.mp4", video, fps, audio, sr)
    frames = read_video_frames(path, 41, fps, start_s=start_s)
    flash_s = int(frames.float().mean(dim=(1, 2, 3)).argmax()) / fps
    wave = read_audio(path, sample_rate=sr, channels=2, start_s=start_s, duration_s=41 / fps)
    click_s = int(wave.abs().mean(0).argmax()) / sr
    assert abs(flash_s - (1.25 - start_s)) < 1e-6
    assert abs(click_s - flash_s) <= 0.040, f"click at {click_s:.3f} s, flash at {flash_s:.3f} s"


def test_parquet_and_datasets_directories_read_through_datasets_with_sidecar_captions(tmp_path):
    """Metadata through Hugging Face ``datasets``: a parquet file and a ``save_to_disk`` directory give the rows a
    jsonl gives; a row without a caption takes the sidecar NAME.txt beside its video; the HF cache stays clean."""
    import os

    import datasets

    (tmp_path / "c.txt").write_text("a caption from the sidecar file\n")
    rows = [
        {"video": "a.mp4", "caption": "a red box"},
        {"video": "c.mp4", "caption": None},
        {"video": "d.mp4", "caption": ""},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = datasets.Dataset.from_list(rows)
    table.to_parquet(str(tmp_path / "m.parquet"))
    table.save_to_disk(str(tmp_path / "m_dataset"))
    hf_cache = os.listdir(datasets.config.HF_DATASETS_CACHE) if os.path.isdir(datasets.config.HF_DATASETS_CACHE) else []
    parsed = [read_metadata(tmp_path / name, root=tmp_path) for name in ("m.jsonl", "m.parquet", "m_dataset")]
    for metadata in parsed:
        assert [(r.path, r.caption) for r in metadata.records] == [
            ("a.mp4", "a red box"),
            ("c.mp4", "a caption from the sidecar file"),
        ]
        assert [(r["path"], "empty caption" in r["reason"]) for r in metadata.rejects] == [("d.mp4", True)]
    after = os.listdir(datasets.config.HF_DATASETS_CACHE) if os.path.isdir(datasets.config.HF_DATASETS_CACHE) else []
    assert after == hf_cache
    (tmp_path / "not_a_dataset").mkdir()
    with pytest.raises(ValueError, match="must be a datasets directory"):
        read_metadata(tmp_path / "not_a_dataset")


def _media(path, container, video_codec, audio_codec, layout, rate, video=True, seconds=1.0):
    """A clip (or an audio-only file) whose first audio channel carries a 440 Hz tone, the others silence."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w", format=container) as out:
        if video:
            stream = out.add_stream(video_codec, rate=24)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        audio = out.add_stream(audio_codec, rate=rate)
        audio.layout = layout
        if video:
            black = np.zeros((32, 32, 3), np.uint8)
            for _ in range(int(24 * seconds)):
                for packet in stream.encode(av.VideoFrame.from_ndarray(black, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        t = np.arange(int(rate * seconds)) / rate
        channels = len(av.AudioLayout(layout).channels)
        tone = np.stack([0.5 * np.sin(2 * np.pi * 440 * t) * (c == 0) for c in range(channels)]).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        for packet in [*audio.encode(frame), *audio.encode()]:
            out.mux(packet)
    return path


@pytest.mark.parametrize(
    "name, container, video_codec, audio_codec, layout, rate, both",
    [
        ("surround.mp4", "mp4", "libx264", "aac", "5.1", 48000, False),  # 6 channels down-mixed: the tone stays left
        ("mono8k.mp4", "mp4", "libx264", "aac", "mono", 8000, True),  # 8 kHz mono: upsampled, on both channels
        ("clip.webm", "webm", "libvpx", "libopus", "stereo", 48000, False),
        ("clip.mkv", "matroska", "libx264", "aac", "stereo", 44100, False),
    ],
)
def test_any_layout_rate_and_container_becomes_16_khz_stereo_of_the_window(
    tmp_path, name, container, video_codec, audio_codec, layout, rate, both
):
    path = _media(tmp_path / name, container, video_codec, audio_codec, layout, rate)
    wave = read_audio(path, sample_rate=16000, channels=2, duration_s=0.5)
    assert wave.shape == (2, 8000)
    left, right = (float(wave[c].abs().max()) for c in (0, 1))
    assert left > 0.2 and (right > 0.2 if both else right < 0.02)
    assert _dominant_hz(wave[0].numpy()) == pytest.approx(440, abs=4)
    assert read_video_frames(path, 9, 24.0).shape == (9, 32, 32, 3)


def test_an_audio_only_file_is_rejected_as_having_no_video(tmp_path):
    path = _media(tmp_path / "song.m4a", "mp4", None, "aac", "stereo", 16000, video=False)
    with pytest.raises(MediaError, match="song.m4a: has no video stream"):
        read_video_frames(path, 9, 24.0)


def _turned_clip(path, ccw_degrees=None, rotate_tag=None, frames=9):
    """A 64 x 32 clip (W x H; decord 0.6 cannot read some tiny widths such as 48) whose stored frames have a bright
    8 x 12 block in the top-left corner, with a display matrix turning it ``ccw_degrees`` counter-clockwise (PyAV's
    convention, read back as ``frame.rotation``) and/or an old-style ``rotate`` tag."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
        if ccw_degrees is not None:
            stream.set_display_rotation(ccw_degrees)
        if rotate_tag is not None:
            stream.metadata["rotate"] = rotate_tag
        image = np.full((32, 64, 3), 20, np.uint8)
        image[:8, :12] = 240
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path)) as written:  # the rotation really is in the file
        stream = written.streams.video[0]
        assert (next(written.decode(stream)).rotation - (ccw_degrees or 0)) % 360 == 0  # 180 reads back as -180
        assert rotate_tag is None or {k.lower(): v for k, v in stream.metadata.items()}["rotate"] == rotate_tag
    return path


def _block_corner(frame):
    rows, cols = torch.nonzero(frame.float().mean(-1) > 128, as_tuple=True)
    height, width = frame.shape[:2]
    assert len(rows) == 96 and rows.max() - rows.min() + 1 in (8, 12)  # the whole block, not smeared
    return (
        ("top" if rows.float().mean() < height / 2 else "bottom")
        + "-"
        + ("left" if cols.float().mean() < width / 2 else "right")
    )


_TURNS = [  # (display matrix counter-clockwise, rotate tag, clockwise degrees a player turns by, block shown at)
    (None, None, 0, "top-left"),
    # a phone held upright: av_display_rotation_get() = -90, a player turns the frame 90 degrees clockwise, so
    # the stored top-left corner shows top-right (ffmpeg's autorotate: transpose=clock)
    (-90, None, 90, "top-right"),
    (180, None, 180, "bottom-right"),
    (90, None, 270, "bottom-left"),  # 90 counter-clockwise: the top-left corner goes to the bottom-left
]


# decord turns mp4's frames itself (not twice, then), Matroska's not; the old tag (clockwise degrees) only
# survives in Matroska: ffmpeg 8's mp4 muxer drops it
@pytest.mark.parametrize(
    "suffix, ccw, rotate_tag, shown, corner",
    [*[(suffix, *turn) for suffix in (".mp4", ".mkv") for turn in _TURNS], (".mkv", None, "90", 90, "top-right")],
)
def test_a_rotated_clip_is_probed_and_read_as_a_player_shows_it(tmp_path, suffix, ccw, rotate_tag, shown, corner):
    from ltx2train.data.media import probe_video, video_rotation

    path = _turned_clip(tmp_path / f"clip{suffix}", ccw, rotate_tag)
    displayed = (64, 32) if shown in (90, 270) else (32, 64)  # (height, width)
    assert video_rotation(path) == shown
    info = probe_video(path)
    assert (info.height, info.width, info.frames) == (*displayed, 9)
    frames = read_video_frames(path, 9, 24.0)
    assert frames.shape == (9, *displayed, 3) and frames.is_contiguous()
    assert {_block_corner(f) for f in frames} == {corner}


def test_validate_reports_the_rotation_and_the_displayed_size(tmp_path):
    from ltx2train.data.probe import validate

    _turned_clip(tmp_path / "portrait.mkv", -90), _turned_clip(tmp_path / "landscape.mp4")
    rows = [{"video": "portrait.mkv", "caption": "a phone clip"}, {"video": "landscape.mp4", "caption": "a clip"}]
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = validate(tmp_path / "meta.jsonl")
    assert [(c["rotation"], c["height"], c["width"]) for c in report.clips] == [(90, 64, 32), (0, 32, 64)]
    assert report.summary()["rotated"] == 1
