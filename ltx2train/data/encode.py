"""The encoding primitives of ``prepare``: a clip's bucket and windows, its pixels and audio over one window, the
VAE latents, the caption's projected text features. Inference encodes its conditions with the same functions."""

from __future__ import annotations


import torch

from ltx2train.data import buckets, cache
from ltx2train.data.buckets import Bucket
from ltx2train.data.media import (
    MediaError,
    VideoInfo,
    audio_window,
    fit_frames,
    log_mel_spectrogram,
    probe_video,
    read_video_frames,
)
from ltx2train.data.metadata import ClipRecord
from ltx2train.models.text_encoder import project_text
from ltx2train.utils.errors import UserError

from ltx2train.data.encoders import Encoders


AUDIO_N_FFT = 1024


def _compute_device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in which dtype ``module`` computes: its parameters' (those stored in FP8 are cast up to the
    others' dtype as they run)."""
    from diffusers.hooks.layerwise_casting import _LAYERWISE_CASTING_HOOK

    from ltx2train.memory.fp8 import fp8_layers

    param = next(module.parameters())
    layers = fp8_layers(module)
    if not layers:
        return param.device, param.dtype
    return param.device, next(iter(layers.values()))._diffusers_hook.get_hook(_LAYERWISE_CASTING_HOOK).compute_dtype


@torch.no_grad()
def encode_video(video_vae: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """(3, F, H, W) in [-1, 1] -> normalised latents (C, F', H', W'), as ``LTX2Pipeline`` denormalises them."""
    device, dtype = _compute_device_dtype(video_vae)
    latents = video_vae.encode(pixels[None].to(device, dtype)).latent_dist.mode().float()
    mean = video_vae.latents_mean.view(1, -1, 1, 1, 1).float()
    std = video_vae.latents_std.view(1, -1, 1, 1, 1).float()
    return ((latents - mean) * video_vae.config.scaling_factor / std)[0]


def audio_latent_length(num_frames: int, fps: float, audio_vae: torch.nn.Module) -> int:
    """Audio latents for a clip of ``num_frames`` at ``fps``: the pipeline's own formula (25 per second)."""
    per_second = audio_vae.config.sample_rate / audio_vae.config.mel_hop_length / audio_vae.temporal_compression_ratio
    return round(num_frames / fps * per_second)


@torch.no_grad()
def encode_audio(audio_vae: torch.nn.Module, waveform: torch.Tensor, latent_length: int) -> torch.Tensor:
    """(2, N) 16 kHz waveform -> normalised latents (C, L, M) with ``L == latent_length``."""
    cfg = audio_vae.config
    mel = log_mel_spectrogram(
        waveform.float(),
        sample_rate=cfg.sample_rate,
        n_fft=AUDIO_N_FFT,
        hop_length=cfg.mel_hop_length,
        mel_bins=cfg.mel_bins,
    )  # (2, T, mel_bins)
    device, dtype = _compute_device_dtype(audio_vae)
    latents = audio_vae.encode(mel[None].to(device, dtype)).latent_dist.mode().float()  # (1, C, L', M)
    if latents.shape[2] < latent_length:
        raise UserError(f"audio gave {latents.shape[2]} latent frames, {latent_length} needed")
    latents = latents[:, :, :latent_length]
    channels, mel_latent = latents.shape[1], latents.shape[3]
    packed = latents.transpose(1, 2).flatten(2, 3)  # (1, L, C * M): the statistics are per packed feature
    packed = (packed - audio_vae.latents_mean.float()) / audio_vae.latents_std.float()
    return packed.unflatten(2, (channels, mel_latent)).transpose(1, 2)[0]


def frames_at(info: VideoInfo, fps: float) -> int:
    """How many frames at ``fps`` the clip holds: instants ``i / fps`` before the end of its last frame."""
    return int(info.duration * fps - 1e-6) + 1


def choose_bucket(record: ClipRecord, settings: cache.CacheSettings) -> Bucket:
    """The clip's bucket: nearest aspect ratio, most frames it has; a clip too short for all is a MediaError."""
    info = probe_video(record.video)
    shapes = [Bucket.parse(b) for b in settings.buckets.split(",")]
    available = frames_at(info, settings.fps)
    bucket = buckets.assign(shapes, info.height, info.width, available)
    if bucket is None:
        shortest = min(b.frames for b in shapes)
        raise MediaError(
            f"{record.video}: {info.frames} frames over {info.duration:.2f} s is shorter than the "
            f"shortest bucket ({shortest} frames at {settings.fps:g} fps)"
        )
    return bucket


def window_starts(record: ClipRecord, settings: cache.CacheSettings, bucket: Bucket) -> list[float]:
    """Where the clip's windows start (seconds): ``first``: at 0; ``spread``: up to ``max_windows`` evenly
    spaced windows that do not overlap, the last one ending with the clip; ``random``: up to ``max_windows``
    distinct starting frames drawn uniformly (reproducibly per clip), in order."""
    if settings.window == "first" or settings.max_windows <= 1:
        return [0.0]
    length = bucket.frames / settings.fps
    span = probe_video(record.video).duration - length
    if settings.window == "random":
        choices = max(1, int(span * settings.fps + 1e-6) + 1)  # target-rate frames a window may start on
        draw = torch.randperm(choices, generator=torch.Generator().manual_seed(record.index))
        return sorted(round(int(k) / settings.fps, 6) for k in draw[: settings.max_windows])
    count = max(1, min(settings.max_windows, int((span + length) / length + 1e-6)))
    if count == 1 or span <= 0:
        return [0.0]
    return [round(span * k / (count - 1), 6) for k in range(count)]


def encode_clip_audio(
    audio_vae, record: ClipRecord, frames: int, fps: float, start_s: float = 0.0
) -> dict[str, torch.Tensor]:
    """``audio_latents`` for the video window and ``audio_valid`` (L,): 1 for latent frames fully covered by
    the clip's real audio, 0 for padding (short audio) or for every frame (no audio stream): masked in the loss.
    The audio is the row's external audio file where it names one (its start = the video's first frame)."""
    sample_rate = audio_vae.config.sample_rate
    source = record.audio or record.video
    waveform, real = audio_window(source, sample_rate, channels=2, start_s=start_s, duration_s=frames / fps)
    if record.audio is not None and real == 0:
        raise MediaError(f"{record.audio}: the row's audio file has no audio stream")
    length = audio_latent_length(frames, fps, audio_vae)
    covered = min(length, int(real / sample_rate * length / (frames / fps) + 1e-6))
    return {
        "audio_latents": encode_audio(audio_vae, waveform, length),
        "audio_valid": (torch.arange(length) < covered).to(torch.float32),
    }


def clip_pixels(
    record: ClipRecord, settings: cache.CacheSettings, bucket: Bucket, start_s: float = 0.0, window: int = 0
) -> torch.Tensor:
    """The clip's frames fitted to its bucket: (3, F, H, W) in [-1, 1], what the video VAE encodes."""
    frames = read_video_frames(record.video, bucket.frames, settings.fps, start_s=start_s)
    # data.crop=random: one crop per window, reproducible
    crop_draw = torch.Generator().manual_seed(record.index * 1000 + window)
    return fit_frames(frames, bucket.height, bucket.width, settings.crop, generator=crop_draw)


def encode_caption(encoders: Encoders, caption: str, settings: cache.CacheSettings) -> dict[str, torch.Tensor]:
    """The caption's projected text features, real tokens only (the dataset left-pads them, see cache.py)."""
    text = encoders.text_encoder.encode([caption], max_sequence_length=settings.max_sequence_length)
    projected = project_text(encoders.connectors, text)
    mask = text.attention_mask[0].bool()
    tensors = {"text_video": projected.video[0][mask]}
    if projected.audio is not None:
        tensors["text_audio"] = projected.audio[0][mask]
    tensors["text_attention_mask"] = torch.ones(int(mask.sum()), dtype=torch.int64)
    return tensors


def reference_pixels(
    record: ClipRecord, settings: cache.CacheSettings, bucket: Bucket, start_s: float = 0.0, window: int = 0
) -> torch.Tensor:
    """The IC-LoRA reference video over the same window, fitted like the clip (the same crop draw) to the bucket's
    size / ``reference_downscale``: (3, F, H / d, W / d)."""
    if record.reference is None:
        raise MediaError(f"{record.path}: the row names no reference video (data.reference_video_column)")
    frames = read_video_frames(record.reference, bucket.frames, settings.fps, start_s=start_s)
    crop_draw = torch.Generator().manual_seed(record.index * 1000 + window)
    d = settings.reference_downscale
    return fit_frames(frames, bucket.height // d, bucket.width // d, settings.crop, generator=crop_draw)


def encode_extras(
    encoders: Encoders,
    record: ClipRecord,
    settings: cache.CacheSettings,
    bucket: Bucket,
    pixels: torch.Tensor,
    start_s: float,
    window: int,
) -> dict[str, torch.Tensor]:
    """What ``data.extras`` asks for beyond the latents: the first frame alone, the reference video."""
    extras = settings.extras.split(",")
    out = {}
    if "first_frame" in extras:
        out["first_frame_latents"] = encode_video(encoders.video_vae, pixels[:, :1])
    if "reference" in extras:
        reference = reference_pixels(record, settings, bucket, start_s, window)
        out["reference_latents"] = encode_video(encoders.video_vae, reference)
    return out


def encode_clip(
    encoders: Encoders, record: ClipRecord, settings: cache.CacheSettings, bucket: Bucket | None = None
) -> list[dict[str, torch.Tensor]]:
    """One sample per window of the clip (``data.window``), each with the caption's text features."""
    bucket = bucket or choose_bucket(record, settings)
    return encode_clip_media(encoders, record, settings, bucket, encode_caption(encoders, record.caption, settings))


def encode_clip_media(
    encoders: Encoders, record: ClipRecord, settings: cache.CacheSettings, bucket: Bucket, text: dict[str, torch.Tensor]
) -> list[dict[str, torch.Tensor]]:
    """``encode_clip`` with the caption's features already encoded (``text``)."""
    samples = []
    for k, start in enumerate(window_starts(record, settings, bucket)):
        pixels = clip_pixels(record, settings, bucket, start_s=start, window=k)
        tensors = {"video_latents": encode_video(encoders.video_vae, pixels)}
        tensors.update(encode_extras(encoders, record, settings, bucket, pixels, start, k))
        if encoders.audio_vae is not None:
            tensors.update(encode_clip_audio(encoders.audio_vae, record, bucket.frames, settings.fps, start_s=start))
        samples.append({**tensors, **text})
    return samples
