"""Media decode and encode: video frames with decord, audio with PyAV, LTX-2's log-mel front end.

decord's stereo audio is corrupt (discontinuities every 1024 samples), so audio always comes from PyAV.
Every failure a user can cause (missing, corrupt, too short, no audio) is a ``MediaError`` naming the file.

Over 400 lines: decoding and writing share the container handling, the rotation rules and the decoder-message
capture that every ``MediaError`` quotes; apart, each half would import the other's internals.
"""

from __future__ import annotations

import functools
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ltx2train.utils.atomic import atomic_path
from ltx2train.utils.errors import UserError


class MediaError(UserError):
    """A clip that cannot be used, with the path and the reason."""


class NoAudioStream(MediaError):
    """The file has no audio stream (its video may still be good training data)."""


@contextmanager
def native_messages(into: list[str]):
    """Route what C decoders (ffmpeg inside decord and PyAV) print on stderr into ``into`` while the block runs,
    instead of the user's terminal; on an unexpected error the text is printed after all."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield into
        except MediaError:
            raise
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", errors="replace").strip()
            if text:
                into.append(text)
                if failed:
                    print(text, file=sys.stderr)


@dataclass(frozen=True)
class VideoInfo:
    height: int
    width: int
    frames: int
    duration: float  # seconds from the first frame's start to the last frame's end, by timestamps
    variable_rate: bool = False  # frame intervals differ by more than 10% of the typical one

    @property
    def fps(self) -> float:
        """The average frame rate (a variable-frame-rate clip has no other)."""
        return self.frames / self.duration


_NATIVE_PREFIX = re.compile(r"^(\[\d\d:\d\d:\d\d\] \S+:\d+: |\[[^\]]* @ 0x[0-9a-f]+\] )+")


def decoder_summary(messages: list[str], limit: int = 400) -> str:
    """What the decoders printed, as one line: their own prefixes (time, source file, ``[mov @ 0x...]``) dropped,
    each distinct message once."""
    lines = []
    for text in messages:
        for line in text.splitlines():
            line = _NATIVE_PREFIX.sub("", line.strip())
            if line and line not in lines:
                lines.append(line)
    summary = "; ".join(lines)
    return summary if len(summary) <= limit else summary[: limit - 3] + "..."


def video_rotation(path: str | Path) -> int:
    """Clockwise degrees (0, 90, 180, 270) a player turns the first video stream's stored frames by: its display
    matrix (PyAV puts it on decoded frames, ``frame.rotation`` counter-clockwise), else an old ``rotate`` tag;
    0 for neither, any other angle, or a file PyAV cannot read."""
    return _rotations(Path(path))[0]


def _rotations(path: Path) -> tuple[int, int, tuple[int, int] | None]:
    """(video_rotation, the part of it decord 0.6 applies itself: its libavformat 4.1 honours a ``rotate`` tag,
    else the mov/mp4 display matrix, never Matroska/WebM's; the size of the first frame as stored)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1  # one frame: a decoder thread pool costs more than it decodes
            tag = _right_angle(next((v for k, v in stream.metadata.items() if k.lower() == "rotate"), 0))
            frame = next(container.decode(stream))
            matrix = _right_angle(-frame.rotation)
            mov = "mp4" in container.format.name
    except Exception:  # no video stream, nothing decodable: decord reports the real error
        return 0, 0, None
    return matrix or tag, tag or (matrix if mov else 0), (frame.height, frame.width)


def _right_angle(degrees) -> int:
    try:
        angle = round(float(degrees)) % 360
    except (TypeError, ValueError, OverflowError):
        return 0
    return angle if angle % 90 == 0 else 0


def _open_video(path: Path):
    """(reader, frame start times in seconds from the first frame, end time of the last frame)."""
    return _open_clip(path)[:3]


def _open_clip(path: Path):
    """``_open_video``, the clockwise degrees decord's frames still need to be turned by to show as a player
    shows them, and the size as displayed. The last two files opened stay open: prepare probes a clip, then reads
    its window."""
    if not path.is_file():
        raise MediaError(f"{path}: file does not exist")
    stat = path.stat()
    return _open_video_file(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=2)
def _open_video_file(name: str, mtime_ns: int, size: int):
    import decord

    path = Path(name)
    try:
        reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
        stamps = reader.get_frame_timestamp(list(range(len(reader)))) if len(reader) else None
    except Exception as exc:  # decord raises its own DECORDError / RuntimeError on corrupt input
        if "cannot find video stream" in str(exc):
            raise MediaError(f"{path}: has no video stream (an audio-only file?)") from None
        first_line = str(exc).splitlines()[0][:200]
        raise MediaError(f"{path}: cannot decode video ({exc.__class__.__name__}: {first_line})") from exc
    if stamps is None or len(stamps) == 0:
        raise MediaError(f"{path}: video has no frames")
    starts = np.asarray(stamps[:, 0], dtype=np.float64) - float(stamps[0, 0])
    end = float(stamps[-1, 1]) - float(stamps[0, 0])
    if end <= 0 or not np.all(np.diff(starts) >= 0):
        raise MediaError(f"{path}: video frames have no usable timestamps")
    shown, applied, stored = _rotations(path)
    if stored is None:  # PyAV could not decode it, decord could: decord's frame gives the size
        stored, shown, applied = reader[0].shape[:2], 0, 0
    displayed = stored[::-1] if shown in (90, 270) else stored
    return reader, starts, end, (shown - applied) % 360, tuple(displayed)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
IMAGE_SECONDS = 1e-3  # an image is one frame: it holds one instant at any frame rate


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | Path) -> np.ndarray:
    """An image file (PyAV's image decoders) as uint8 (H, W, 3)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file does not exist")
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(container.streams.video[0]))
            return frame.to_ndarray(format="rgb24")
    except Exception as exc:  # av.error.*, StopIteration, IndexError on a file that is not an image
        raise MediaError(f"{path}: cannot decode image ({exc.__class__.__name__}: {str(exc)[:200]})") from exc


def probe_video(path: str | Path) -> VideoInfo:
    """Size (as displayed: see ``video_rotation``), frame count and duration (by timestamps) of the first video
    stream; an image is one frame."""
    if is_image(path):
        height, width = read_image(path).shape[:2]
        return VideoInfo(int(height), int(width), 1, IMAGE_SECONDS)
    _, starts, end, _, (height, width) = _open_clip(Path(path))
    intervals = np.diff(np.append(starts, end))
    typical = float(np.median(intervals))
    variable = bool(len(intervals) > 1 and np.abs(intervals[:-1] - typical).max() > 0.1 * typical)
    return VideoInfo(int(height), int(width), len(starts), end, variable)


def frame_indices(starts: np.ndarray, end: float, num_frames: int, fps: float, start_s: float = 0.0) -> list[int]:
    """The source frame shown at each instant ``start_s + i / fps`` (by timestamps, so variable-frame-rate
    clips keep their real motion); ValueError when the window runs past ``end``."""
    instants = start_s + np.arange(num_frames) / fps
    if instants[-1] >= end - 1e-6:
        raise UserError("past the end")
    return np.clip(np.searchsorted(starts, instants + 1e-6, side="right") - 1, 0, len(starts) - 1).tolist()


def read_video_frames(path: str | Path, num_frames: int, fps: float, start_s: float = 0.0) -> torch.Tensor:
    """The frames shown at ``start_s + i / fps`` seconds from the first frame, turned the way a player shows them:
    uint8 (F, H, W, 3); an image gives its one frame."""
    path = Path(path)
    if is_image(path):
        if num_frames != 1 or start_s:
            raise MediaError(f"{path}: an image is one frame, {num_frames} requested")
        return torch.from_numpy(np.ascontiguousarray(read_image(path)[None]))
    reader, starts, end, turn, _ = _open_clip(path)
    try:
        indices = frame_indices(starts, end, num_frames, fps, start_s)
    except ValueError:
        raise MediaError(
            f"{path}: {len(starts)} frames over {end:.2f} s is shorter than the {num_frames} frames at "
            f"{fps:g} fps requested (from {start_s:g} s)"
        ) from None
    try:
        frames = reader.get_batch(indices).asnumpy()
    except Exception as exc:
        raise MediaError(f"{path}: cannot decode frames ({exc})") from exc
    frames = torch.from_numpy(np.ascontiguousarray(frames))
    return torch.rot90(frames, -(turn // 90), dims=(1, 2)).contiguous() if turn else frames  # k < 0: clockwise


def read_audio(
    path: str | Path, sample_rate: int = 16000, channels: int = 2, start_s: float = 0.0, duration_s: float | None = None
) -> torch.Tensor:
    """The first audio stream, resampled by PyAV: float32 (channels, samples) in [-1, 1], from ``start_s`` seconds
    after the first video frame (an audio stream that starts later is padded with silence before it)."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: file does not exist")
    layout = {1: "mono", 2: "stereo"}[channels]
    chunks = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise NoAudioStream(f"{path}: has no audio stream")
            offset = _start_seconds(container.streams.audio[0]) - (
                _start_seconds(container.streams.video[0]) if container.streams.video else 0.0
            )
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
    except MediaError:
        raise
    except Exception as exc:  # av.error.* on corrupt input
        raise MediaError(f"{path}: cannot decode audio ({exc})") from exc
    if not chunks:
        raise MediaError(f"{path}: audio stream holds no samples")
    audio = np.concatenate(chunks, axis=1).astype(np.float32)  # (channels, samples)
    start = round((start_s - offset) * sample_rate)  # the window in the video's time: its first frame is 0
    audio = np.pad(audio, ((0, 0), (-start, 0))) if start < 0 else audio[:, start:]
    if duration_s is not None:
        want = round(duration_s * sample_rate)
        missing = want - audio.shape[1]
        if missing > 0.1 * sample_rate:
            raise MediaError(
                f"{path}: audio lasts {audio.shape[1] / sample_rate:.2f} s from {start_s:g} s, "
                f"{duration_s:.2f} s needed"
            )
        audio = np.pad(audio, ((0, 0), (0, max(0, missing))))[:, :want]
    return torch.from_numpy(np.clip(audio, -1.0, 1.0))


def audio_window(
    path: str | Path, sample_rate: int, channels: int, start_s: float, duration_s: float
) -> tuple[torch.Tensor, int]:
    """Exactly the window's audio, (channels, duration_s * sample_rate), and how many of its samples are real:
    short audio is padded with silence and a file without an audio stream gives silence with 0 real samples,
    so that the caller can keep the padding out of the loss instead of training it as real silence."""
    want = round(duration_s * sample_rate)
    try:
        wave = read_audio(path, sample_rate=sample_rate, channels=channels, start_s=start_s)
    except NoAudioStream:
        return torch.zeros(channels, want), 0
    real = min(wave.shape[1], want)
    return F.pad(wave[:, :want], (0, want - real)), real


def _start_seconds(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def fit_frames(
    frames: torch.Tensor, height: int, width: int, crop: str = "center", generator: torch.Generator | None = None
) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> float32 (3, F, height, width) in [-1, 1]. ``center`` / ``random``: scaled to cover
    the target, then cropped (in the middle, or at an offset drawn from ``generator``); ``letterbox``: scaled to
    fit inside, the borders black. Frames already at the target scale are cropped as bytes, then converted once."""
    video = frames.permute(3, 0, 1, 2)  # (3, F, H, W): each colour plane of every frame resized alike
    src_h, src_w = video.shape[-2:]
    cover = crop != "letterbox"
    scale = (max if cover else min)(height / src_h, width / src_w)
    new_h, new_w = round(src_h * scale), round(src_w * scale)
    new_h, new_w = (max(height, new_h), max(width, new_w)) if cover else (min(height, new_h), min(width, new_w))
    if (new_h, new_w) == (src_h, src_w):
        return _place(video, height, width, cover, crop, generator, black=0).float().div_(127.5).sub_(1.0)
    video = video.float().div_(127.5).sub_(1.0)
    video = F.interpolate(video, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    return _place(video.clamp_(-1.0, 1.0), height, width, cover, crop, generator, black=-1.0).contiguous()


def _place(video: torch.Tensor, height: int, width: int, cover: bool, crop: str, generator, black) -> torch.Tensor:
    """Crop (cover) or pad (letterbox) (3, F, h, w) to (3, F, height, width)."""
    new_h, new_w = video.shape[-2:]
    if cover:
        top, left = (new_h - height) // 2, (new_w - width) // 2
        if crop == "random":  # a fraction of the slack: one draw gives the same relative crop at any scale
            u, v = torch.rand(2, generator=generator).tolist()
            top, left = round(u * (new_h - height)), round(v * (new_w - width))
        return video[:, :, top : top + height, left : left + width]
    top, left = (height - new_h) // 2, (width - new_w) // 2
    return F.pad(video, (left, width - new_w - left, top, height - new_h - top), value=black)


def log_mel_spectrogram(
    waveform: torch.Tensor, sample_rate: int = 16000, n_fft: int = 1024, hop_length: int = 160, mel_bins: int = 64
) -> torch.Tensor:
    """(C, N) -> (C, N // hop + 1, mel_bins): LTX-2's audio VAE input.

    Magnitude STFT (Hann window, centred, reflect padding), Slaney mel filterbank, log(clamp(1e-5)) — the
    front end of Lightricks' reference (torchaudio's ``MelSpectrogram(power=1, norm/mel_scale="slaney")``).
    """
    from transformers.audio_utils import mel_filter_bank

    filters = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=mel_bins,
        min_frequency=0.0,
        max_frequency=sample_rate / 2,
        sampling_rate=sample_rate,
        norm="slaney",
        mel_scale="slaney",
    )
    window = torch.hann_window(n_fft, dtype=torch.float32, device=waveform.device)
    spec = torch.stft(
        waveform.float(),
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    ).abs()  # (C, freq, T)
    mel = torch.einsum("cft,fm->ctm", spec, torch.from_numpy(filters).float().to(waveform.device))
    return torch.log(torch.clamp(mel, min=1e-5))


def write_video_with_audio(
    path: str | Path,
    frames: torch.Tensor | np.ndarray,
    fps: float,
    audio: torch.Tensor | None = None,
    sample_rate: int = 16000,
) -> Path:
    """mp4 (h264 yuv420p + AAC) via PyAV, written to a temp name then renamed."""
    import av

    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    rate = Fraction(fps).limit_denominator(1001)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w") as container:
            video_stream = container.add_stream("libx264", rate=rate)
            video_stream.width, video_stream.height = frames.shape[2], frames.shape[1]
            video_stream.pix_fmt = "yuv420p"
            video_stream.options = {"crf": "18"}
            audio_stream = None
            if audio is not None:
                audio_np = np.asarray(audio, dtype=np.float32)
                audio_stream = container.add_stream("aac", rate=sample_rate)
                audio_stream.layout = "stereo" if audio_np.shape[0] == 2 else "mono"
            for frame in frames:
                for packet in video_stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in video_stream.encode():
                container.mux(packet)
            if audio_stream is not None:
                audio_frame = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(audio_np), format="fltp", layout=audio_stream.layout.name
                )
                audio_frame.sample_rate = sample_rate
                # a timestamp lets the encoder mark its priming samples (pts < 0): the muxer then writes an edit
                # list and decoders drop them; without it the sound plays 1024 samples (64 ms) late
                audio_frame.pts, audio_frame.time_base = 0, Fraction(1, sample_rate)
                for packet in audio_stream.encode(audio_frame):
                    container.mux(packet)
                for packet in audio_stream.encode():
                    container.mux(packet)
    return path


def write_wav(path: str | Path, audio: torch.Tensor | np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV of ``audio`` (channels, samples) in [-1, 1], written to a temp name then renamed."""
    import wave

    samples = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    pcm = (samples.T * 32767.0).round().astype("<i2")  # interleaved
    with atomic_path(path) as tmp:
        with wave.open(str(tmp), "wb") as f:
            f.setnchannels(samples.shape[0])
            f.setsampwidth(2)
            f.setframerate(sample_rate)
            f.writeframes(pcm.tobytes())
    return Path(path)
