"""``ltx2train prepare``: clips + captions -> cached latents and text embeddings.

metadata (csv/json/jsonl) -> the clip's bucket (``data/buckets.py``: a fixed size, or the nearest aspect ratio
under dynamic resolution; the most 8k+1 frames it has) -> decode video (decord) and audio (PyAV) over the same
time window -> fit to the bucket (``data.crop``) -> video VAE latents, 16 kHz log-mel -> audio VAE
latents, Gemma hidden states through the frozen text projection -> one safetensors file per clip (see ``cache.py``). A clip that cannot be
read is reported by path and skipped; finished clips are never encoded twice.

Two phases, so that Gemma (12B) and the VAEs never share the device: every caption first (Gemma and the text
projection loaded, their features left in ``.prepare/text/``, Gemma freed), then the media (VAEs loaded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ltx2train.data import buckets, cache
from ltx2train.data.buckets import Bucket
from ltx2train.data.media import (
    MediaError, VideoInfo, audio_window, decoder_summary, fit_frames, log_mel_spectrogram, native_messages, probe_video,
    read_video_frames,
)
from ltx2train.data.metadata import ClipRecord, Columns, read_metadata
from ltx2train.models.text_encoder import project_text
from ltx2train.utils.progress import on_terminal
from ltx2train.utils.errors import UserError

logger = logging.getLogger(__name__)

AUDIO_N_FFT = 1024


@dataclass
class Encoders:
    """The frozen encoders of prepare: video VAE, audio VAE (optional), Gemma and the text projection. Prepare
    loads the text ones, encodes every caption, frees them, then loads the media ones (``None`` meanwhile)."""

    video_vae: torch.nn.Module | None
    audio_vae: torch.nn.Module | None
    text_encoder: object | None  # ltx2train.models.text_encoder.GemmaTextEncoder
    connectors: torch.nn.Module | None  # only its frozen feature extractor runs here (project_text)


@dataclass
class PrepareReport:
    encoded: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # {"index", "path" as written, "reason"}
    seconds: float = 0.0
    manifest: bool = False  # this call wrote the manifest (a shard only once every part of its split is done)


def settings_from_config(cfg) -> cache.CacheSettings:
    d = cfg.data
    return cache.CacheSettings(
        variant=cfg.model.variant, buckets=",".join(b.name for b in buckets.from_config(d)), crop=d.crop,
        window=d.window, max_windows=d.max_windows if d.window != "first" else 1,
        fps=float(d.fps), with_audio=d.with_audio, max_sequence_length=d.max_sequence_length,
        extras=",".join(sorted(set(d.extras))),
        reference_downscale=d.reference_downscale if "reference" in d.extras else 0,
    )


# the parts whose weights make the cache's tensors: the VAEs' encoders (their decoders never touch it), the connectors
ENCODING_PARTS = {"video_vae_encoder": ("video_vae", "encoder"), "audio_vae_encoder": ("audio_vae", "encoder"),
                  "connectors": ("connectors", None)}


def producer(cfg, text_encoder: bool = True, present_only: bool = False) -> dict[str, str]:
    """What the cache's tensors come from: the code version, the model variant and its version, and the fingerprint
    of each part that makes them (``models.loading.tensor_fingerprint``: names, shapes and first bytes of its
    tensors). ``present_only``: leave out a part whose files are not there (training needs no VAE encoder)."""
    from importlib.metadata import version

    from ltx2train.models.loading import component_fingerprint, tensor_fingerprint
    from ltx2train.models.specs import load_variant

    out = {"ltx2train": version("ltx2train"), "variant": cfg.model.variant,
           "version": f"LTX-{load_variant(cfg.model.variant).family}"}
    for key, (component, part) in ENCODING_PARTS.items():
        if component == "audio_vae" and not cfg.data.with_audio:
            continue
        try:
            out[key] = component_fingerprint(cfg.model.checkpoint, component, part=part)
        except FileNotFoundError:
            if not present_only:
                raise
    if text_encoder:
        out["text_encoder"] = tensor_fingerprint(sorted(Path(cfg.model.text_encoder).glob("*.safetensors")))
    return out


def load_encoders(cfg, device: str | torch.device = "cpu") -> Encoders:
    """All of them at once (tests, notebooks); ``prepare`` loads them a phase at a time."""
    text, media = load_text_encoders(cfg, device), load_media_encoders(cfg, device)
    return Encoders(media.video_vae, media.audio_vae, text.text_encoder, text.connectors)


def load_text_encoders(cfg, device: str | torch.device = "cpu") -> Encoders:
    """Gemma and the text projection."""
    from ltx2train.models.loading import load_component
    from ltx2train.models.specs import torch_dtype
    from ltx2train.models.text_encoder import load_text_encoder

    dtype = torch_dtype(cfg.model.dtype)
    text_encoder = load_text_encoder(cfg.model.text_encoder, dtype=dtype, device=device,
                                     max_sequence_length=cfg.data.max_sequence_length)
    connectors = load_component(cfg.model.variant, "connectors", cfg.model.checkpoint, dtype=dtype, device=device)
    _frozen_in_fp8(cfg, {"text_encoder": text_encoder.model, "connectors": connectors})
    return Encoders(None, None, text_encoder, connectors)


def _frozen_in_fp8(cfg, modules: dict[str, torch.nn.Module]) -> None:
    """``memory.fp8_frozen``: the listed ones stored in FP8, computed in bfloat16."""
    from ltx2train.memory.fp8 import store_fp8

    for name, module in modules.items():
        if name in cfg.memory.fp8_frozen and module is not None:  # computed in the dtype it was loaded in
            report = store_fp8(module, name, compute_dtype=next(module.parameters()).dtype)
            logger.info("prepare: %s stored in FP8", report.describe())


def load_media_encoders(cfg, device: str | torch.device = "cpu") -> Encoders:
    """The video VAE and (with audio) the audio VAE."""
    from ltx2train.models.loading import load_component
    from ltx2train.models.specs import torch_dtype

    dtype = torch_dtype(cfg.model.dtype)
    video_vae = load_component(cfg.model.variant, "video_vae", cfg.model.checkpoint, dtype=dtype, device=device,
                               part="encoder")
    audio_vae = None
    if cfg.data.with_audio:
        # The audio VAE is small; its mel front end is precision-sensitive, so it runs in float32.
        audio_vae = load_component(cfg.model.variant, "audio_vae", cfg.model.checkpoint, dtype=torch.float32,
                                   device=device, part="encoder")
    if cfg.memory.tiled_vae:
        from ltx2train.memory.tiling import enable_vae_tiling

        enable_vae_tiling(video_vae)
    _frozen_in_fp8(cfg, {"video_vae": video_vae, "audio_vae": audio_vae})
    return Encoders(video_vae, audio_vae, None, None)


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
    mel = log_mel_spectrogram(waveform.float(), sample_rate=cfg.sample_rate, n_fft=AUDIO_N_FFT,
                              hop_length=cfg.mel_hop_length, mel_bins=cfg.mel_bins)  # (2, T, mel_bins)
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
        raise MediaError(f"{record.video}: {info.frames} frames over {info.duration:.2f} s is shorter than the "
                         f"shortest bucket ({shortest} frames at {settings.fps:g} fps)")
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


def encode_clip_audio(audio_vae, record: ClipRecord, frames: int, fps: float,
                      start_s: float = 0.0) -> dict[str, torch.Tensor]:
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
    return {"audio_latents": encode_audio(audio_vae, waveform, length),
            "audio_valid": (torch.arange(length) < covered).to(torch.float32)}


def clip_pixels(record: ClipRecord, settings: cache.CacheSettings, bucket: Bucket, start_s: float = 0.0,
                window: int = 0) -> torch.Tensor:
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


def reference_pixels(record: ClipRecord, settings: cache.CacheSettings, bucket: Bucket, start_s: float = 0.0,
                     window: int = 0) -> torch.Tensor:
    """The IC-LoRA reference video over the same window, fitted like the clip (the same crop draw) to the bucket's
    size / ``reference_downscale``: (3, F, H / d, W / d)."""
    if record.reference is None:
        raise MediaError(f"{record.path}: the row names no reference video (data.reference_video_column)")
    frames = read_video_frames(record.reference, bucket.frames, settings.fps, start_s=start_s)
    crop_draw = torch.Generator().manual_seed(record.index * 1000 + window)
    d = settings.reference_downscale
    return fit_frames(frames, bucket.height // d, bucket.width // d, settings.crop, generator=crop_draw)


def encode_extras(encoders: Encoders, record: ClipRecord, settings: cache.CacheSettings, bucket: Bucket,
                  pixels: torch.Tensor, start_s: float, window: int) -> dict[str, torch.Tensor]:
    """What ``data.extras`` asks for beyond the latents: the first frame alone, the reference video."""
    extras = settings.extras.split(",")
    out = {}
    if "first_frame" in extras:
        out["first_frame_latents"] = encode_video(encoders.video_vae, pixels[:, :1])
    if "reference" in extras:
        reference = reference_pixels(record, settings, bucket, start_s, window)
        out["reference_latents"] = encode_video(encoders.video_vae, reference)
    return out


def encode_clip(encoders: Encoders, record: ClipRecord, settings: cache.CacheSettings,
                bucket: Bucket | None = None) -> list[dict[str, torch.Tensor]]:
    """One sample per window of the clip (``data.window``), each with the caption's text features."""
    bucket = bucket or choose_bucket(record, settings)
    return encode_clip_media(encoders, record, settings, bucket, encode_caption(encoders, record.caption, settings))


def encode_clip_media(encoders: Encoders, record: ClipRecord, settings: cache.CacheSettings, bucket: Bucket,
                      text: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
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


def process_group() -> tuple[int, int, Callable[[], None], torch.device | None]:
    """(rank, world size, barrier, device) under torchrun / accelerate launch; one process otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        state = PartialState(cpu=not torch.cuda.is_available())
        return state.process_index, state.num_processes, state.wait_for_everyone, state.device
    return 0, 1, lambda: None, None


SHARDS_DIR = ".prepare"


@dataclass(frozen=True)
class Shard:
    """One part of a prepare split over separate jobs (a Slurm job array): the clips with ``index % count ==
    index``. A finished part leaves a marker with its rejects and the fingerprint of the metadata and settings
    it ran with, so that a part done against other metadata is never counted as done."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise UserError(f"--shard {text!r}: expected INDEX/COUNT, e.g. 0/4") from None
        if not 0 <= index < count:
            raise UserError(f"--shard {text!r}: INDEX must be in 0..COUNT-1")
        return cls(index, count)

    def takes(self, record: ClipRecord) -> bool:
        return record.index % self.count == self.index

    def path(self, cache_dir: Path, index: int | None = None) -> Path:
        i = self.index if index is None else index
        return cache_dir / SHARDS_DIR / f"shard-{i:05d}-of-{self.count:05d}.json"


def prepare(
    cfg,
    encoders: Encoders | None = None,
    *,
    device: str | torch.device | None = None,
    on_sample: Callable[[int], None] | None = None,
    shard: Shard | None = None,
    overwrite: bool = False,
    source=None,
) -> PrepareReport:
    """Encode every clip of ``cfg.data.metadata`` not already in ``cfg.data.cache_dir`` (of ``shard`` only, if
    given), then write the manifest. ``source`` (``metadata``, ``cache_dir``, ``root``: one of the recipe's
    datasets) replaces the first dataset.

    Under ``torchrun`` / ``accelerate launch`` each process encodes every ``world_size``-th clip on its own
    device; the main process then writes the manifest (with the rejects of all processes) and ``rejects.jsonl``. With
    ``shard`` the part records its rejects, and whichever part finds every part of its split done writes the manifest.
    """
    start = time.perf_counter()
    rank, world_size, barrier, group_device = process_group()
    device = device or group_device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = settings_from_config(cfg)
    source = source or cfg.data
    cache_dir = Path(source.cache_dir)
    if overwrite:
        if shard is not None:
            raise UserError("--overwrite with --shard: one task would delete what the others write; rebuild with "
                             "one `ltx2train prepare RECIPE --overwrite`, or delete data.cache_dir before the array")
        if rank == 0:
            cache.remove_cache(cache_dir)
        barrier()
    from ltx2train.models.loading import require_model_files
    from ltx2train.models.specs import load_variant

    # every file prepare reads (the cache's producer fingerprints them first), listed before one loads
    require_model_files(cfg.model.checkpoint, ["connectors", "video_vae"] + (["audio_vae"] if cfg.data.with_audio
                                                                              else []), text_encoder=cfg.model.text_encoder,
                        variant=load_variant(cfg.model.variant), parts={"video_vae": "encoder", "audio_vae": "encoder"})
    made_by = producer(cfg)
    cache.check_settings(cache_dir, settings)
    cache.check_producer(cache_dir, made_by)
    metadata = read_metadata(source.metadata, root=source.root, columns=Columns.of(cfg.data))
    records = metadata.records
    report = PrepareReport()
    share = [r for r in records if shard is None or shard.takes(r)]
    todo = [r for r in share if not cache.sample_path(cache_dir, r.index).is_file()]
    report.skipped = [r.index for r in share if r not in todo]
    mine = [r for r in todo if r.index % world_size == rank]
    _encode_captions(cfg, cache_dir, encoders, mine, settings, device, empty_prompt=rank == 0)
    if mine and (encoders is None or encoders.video_vae is None):
        encoders = load_media_encoders(cfg, device)
    _encode(cache_dir, encoders, mine, settings, report, on_sample)
    rejected = _gather_rejects(cache_dir, report.rejected, rank, world_size, barrier)
    if rank == 0 and shard is None:  # every process is past its clips (other shards may still be writing)
        _remove_empty(text_part(cache_dir, 0).parent, cache_dir / SHARDS_DIR)
    if rank == 0:
        # the main process reports every process' rejects (and, once per split, the metadata's)
        report.rejected = sorted((metadata.rejects if shard is None or shard.index == 0 else []) + rejected,
                                 key=lambda f: f["index"])
        if shard is not None:
            rejected = _record_shard(cache_dir, shard, _fingerprint(source.metadata, settings), rejected)
        if rejected is not None:
            _write_manifest(cache_dir, settings, records, sorted(metadata.rejects + rejected, key=lambda f: f["index"]),
                            made_by)
            report.manifest = True
    barrier()
    report.seconds = time.perf_counter() - start
    return report


def _needs_empty_prompt(cache_dir: Path, settings: cache.CacheSettings) -> bool:
    return "empty_prompt" in settings.extras.split(",") and not (cache_dir / cache.EMPTY_PROMPT).is_file()


def text_part(cache_dir: Path, index: int) -> Path:
    """Where the text phase leaves clip ``index``'s caption features for the media phase (then deleted)."""
    return cache_dir / SHARDS_DIR / "text" / f"{index:06d}.safetensors"


def _encode_captions(cfg, cache_dir: Path, encoders, records, settings, device, empty_prompt: bool) -> None:
    """Phase 1: every caption still to do (and the empty prompt), with Gemma loaded on its own -- and freed
    before the VAEs load, so that the two never share the device's memory."""
    todo = [r for r in records if not text_part(cache_dir, r.index).is_file()]
    empty = empty_prompt and _needs_empty_prompt(cache_dir, settings)
    if not todo and not empty:
        return
    text_encoders = encoders if encoders is not None and encoders.text_encoder is not None else \
        load_text_encoders(cfg, device)
    for record in todo:
        cache.write_tensors(text_part(cache_dir, record.index), encode_caption(text_encoders, record.caption,
                                                                                settings), {})
    if empty:
        cache.write_tensors(cache_dir / cache.EMPTY_PROMPT, encode_caption(text_encoders, "", settings), {"caption": ""})
    if text_encoders is not encoders:
        del text_encoders
        _release_memory()


def _remove_empty(*directories: Path) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:  # absent, or holds shard markers / another part's captions
            pass


def _release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _encode(cache_dir: Path, encoders, records, settings, report: PrepareReport, on_sample) -> None:
    """Encode ``records`` one clip at a time, a bad clip a reject; a progress bar on a terminal."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(records, desc=f"prepare {cache_dir.name}", unit="clip", disable=not on_terminal(),
               dynamic_ncols=True)
    with logging_redirect_tqdm():
        for record in bar:
            _encode_one(cache_dir, encoders, record, settings, report)
            bar.set_postfix(kept=len(report.encoded), rejected=len(report.rejected), refresh=False)
            if on_sample is not None and report.encoded and report.encoded[-1] == record.index:
                on_sample(record.index)


def _encode_one(cache_dir: Path, encoders, record: ClipRecord, settings, report: PrepareReport) -> None:
    noise: list[str] = []
    try:
        with native_messages(noise):  # decoder chatter goes into the reason, not onto the terminal
            bucket = choose_bucket(record, settings)
            text = cache.read_tensors(text_part(cache_dir, record.index))
            windows = encode_clip_media(encoders, record, settings, bucket, text)
    except MediaError as exc:
        said = decoder_summary(noise)
        reason = str(exc) + (f" (decoder said: {said})" if said else "")
        logger.warning("rejected clip %d: %s", record.index, reason)
        report.rejected.append({"index": record.index, "path": record.path, "reason": reason})
        text_part(cache_dir, record.index).unlink(missing_ok=True)
        return
    _write_windows(cache_dir, record, bucket, windows)
    text_part(cache_dir, record.index).unlink()
    report.encoded.append(record.index)


def _write_windows(cache_dir: Path, record: ClipRecord, bucket: Bucket, windows: list[dict]) -> None:
    """Window 0 last, with the window count: a clip whose window 0 exists is complete."""
    for k in [*range(1, len(windows)), 0]:
        metadata = {"video": str(record.video), "caption": record.caption, "bucket": bucket.name,
                    "audio": _audio_kind(windows[k]), "window": str(k), "windows": str(len(windows))}
        cache.write_sample(cache_dir, record.index, windows[k], metadata, window=k)


def _audio_kind(tensors: dict[str, torch.Tensor]) -> str:
    """``full`` / ``partial`` (short audio, padding masked) / ``none`` (no audio stream: video only) / ``off``."""
    valid = tensors.get("audio_valid")
    if valid is None:
        return "off"
    return "full" if bool(valid.all()) else ("none" if not bool(valid.any()) else "partial")


def _fingerprint(metadata: str, settings) -> str:
    digest = hashlib.sha256(Path(metadata).read_bytes())
    digest.update(json.dumps(asdict(settings), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _record_shard(cache_dir: Path, shard: Shard, run: str, rejected: list[dict]) -> list[dict] | None:
    """Mark ``shard`` done (with its rejects); every part's rejects once all parts of ``run`` are done."""
    cache.write_json_atomic(shard.path(cache_dir), {"run": run, "rejected": rejected})
    merged = []
    for i in range(shard.count):
        path = shard.path(cache_dir, i)
        part = json.loads(path.read_text()) if path.is_file() else None
        if part is None or part.get("run") != run:
            return None  # another part is still running (or ran on other metadata): it writes the manifest
        merged.extend(part["rejected"])
    return sorted(merged, key=lambda f: f["index"])


def _write_manifest(cache_dir: Path, settings, records: list[ClipRecord], rejected: list[dict],
                    made_by: dict[str, str]) -> None:
    samples = []
    for r in records:
        first = cache.sample_path(cache_dir, r.index)
        if not first.is_file():
            continue
        for k in range(int(cache.sample_metadata(first).get("windows", 1))):
            path = cache.sample_path(cache_dir, r.index, window=k)
            stored = cache.sample_metadata(path)
            samples.append({"index": r.index, "window": k, "file": str(path.relative_to(cache_dir)),
                            "video": str(r.video), "caption": r.caption, "bucket": stored["bucket"],
                            "audio": stored.get("audio", "off")})
    cache.write_manifest(cache_dir, settings, samples, rejected, made_by)


def _gather_rejects(cache_dir: Path, rejected: list[dict], rank: int, world_size: int, barrier) -> list[dict]:
    """Every process' rejects, for the main process' manifest (through small files: no collective needed)."""
    if world_size == 1:
        return rejected
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_json_atomic(cache_dir / f".rejected.rank{rank}.json", rejected)
    barrier()
    merged = []
    if rank == 0:
        for r in range(world_size):
            path = cache_dir / f".rejected.rank{r}.json"
            merged.extend(json.loads(path.read_text()))
            path.unlink()
    return sorted(merged, key=lambda f: f["index"])
