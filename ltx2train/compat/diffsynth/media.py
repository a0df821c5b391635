"""DiffSynth-Studio's LTX-2 media helpers with its signatures: ``write_video_audio_ltx2`` (every LTX-2 script ends
with it) and ``VideoData`` (the reference video of its IC-LoRA scripts)."""

from __future__ import annotations

from pathlib import Path

import torch


AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)


def write_video_audio_ltx2(video, audio, output_path: str, fps: int = 24, audio_sample_rate: int | None = None) -> Path:
    """``video``: PIL frames (or an (F, H, W, 3) array); ``audio``: ``(channels, samples)`` or ``(samples,)`` in
    [-1, 1], or None; ``audio_sample_rate`` None: the AAC rate nearest to the one that makes the audio as long as
    the video, as DiffSynth infers it (LTX-2's 24 kHz, 2.3's 48 kHz). An mp4 with h264 video and AAC audio, written
    to a temp name, then renamed."""
    from ltx2train.inference.av_pipeline import write_video_audio

    if audio is not None and audio_sample_rate is None:
        spanned = audio.shape[-1] / (len(video) / fps)
        audio_sample_rate = min(AAC_RATES, key=lambda rate: abs(rate - spanned))
    return write_video_audio(video, audio, output_path, fps=fps, audio_sample_rate=audio_sample_rate)


class VideoData:
    """A video file's frames at its own frame rate, each fitted to ``height`` x ``width`` (scaled to cover, then
    center-cropped) when given: ``raw_data()`` is the list of RGB PIL images."""

    def __init__(self, video_file: str | Path, height: int | None = None, width: int | None = None, **_ignored):
        self.path, self.height, self.width = Path(video_file), height, width

    def raw_data(self) -> list:
        from PIL import Image

        from ltx2train.data.media import fit_frames, probe_video, read_video_frames

        info = probe_video(self.path)
        frames = read_video_frames(self.path, info.frames, info.fps)  # (F, H, W, 3) uint8
        if self.height is not None and self.width is not None:  # (3, F, h, w) in [-1, 1]
            fitted = fit_frames(frames, self.height, self.width)
            frames = ((fitted.permute(1, 2, 3, 0) + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return [Image.fromarray(frame.numpy()) for frame in frames]

    def __len__(self) -> int:
        return len(self.raw_data())

    def __getitem__(self, index: int):
        return self.raw_data()[index]
