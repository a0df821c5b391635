"""Media decode/encode and metadata on real files (decord, PyAV), and the synthetic dataset."""

import json

import numpy as np
import pytest
import torch

from ltx2train.data.media import (
    MediaError, log_mel_spectrogram, read_audio, read_video_frames, fit_frames, write_video_with_audio,
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
    records = read_metadata(synthetic)
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
        assert (late > early * 1.3) if "rising" in record.caption else (early > late * 1.3), (record.caption, early, late)


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


def test_metadata_formats_agree_and_errors_name_the_problem(tmp_path):
    rows = [{"video": "a.mp4", "caption": "a red box"}, {"video": "/abs/b.mp4", "caption": "a blue disk"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "m.json").write_text(json.dumps(rows))
    (tmp_path / "m.csv").write_text("video,caption\na.mp4,a red box\n/abs/b.mp4,a blue disk\n")
    parsed = [read_metadata(tmp_path / f"m.{ext}") for ext in ("jsonl", "json", "csv")]
    assert parsed[0] == parsed[1] == parsed[2]
    assert parsed[0][0].video == tmp_path / "a.mp4" and str(parsed[0][1].video) == "/abs/b.mp4"
    with pytest.raises(ValueError, match=r"no column 'clip'.*\['caption', 'video'\]"):
        read_metadata(tmp_path / "m.csv", video_column="clip")
    (tmp_path / "bad.jsonl").write_text('{"video": "a.mp4", "caption": "x"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metadata(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "missing.csv")
