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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from ltx2train.data import buckets, cache
from ltx2train.data.buckets import Bucket
from ltx2train.data.media import MediaError, decoder_summary, native_messages
from ltx2train.data.metadata import ClipRecord, Columns, read_metadata
from ltx2train.utils.errors import UserError
from ltx2train.utils.progress import on_terminal
from ltx2train.data.encode import choose_bucket, encode_caption, encode_clip_media
from ltx2train.data.encoders import Encoders, load_media_encoders, load_text_encoders, producer
from ltx2train.data.shards import SHARDS_DIR, Shard, gather_parts, process_group, record_shard

if TYPE_CHECKING:
    from ltx2train.config.schema import Config

logger = logging.getLogger(__name__)


@dataclass
class PrepareReport:
    encoded: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)  # {"index", "path" as written, "reason"}
    seconds: float = 0.0
    manifest: bool = False  # this call wrote the manifest (a shard only once every part of its split is done)
    main: bool = True  # the main process of a launcher: its report covers every process' clips (the others' their own)


def settings_from_config(cfg: Config) -> cache.CacheSettings:
    d = cfg.data
    return cache.CacheSettings(
        variant=cfg.model.variant,
        buckets=",".join(b.name for b in buckets.from_config(d)),
        crop=d.crop,
        window=d.window,
        max_windows=d.max_windows if d.window != "first" else 1,
        fps=float(d.fps),
        with_audio=d.with_audio,
        max_sequence_length=d.max_sequence_length,
        extras=",".join(sorted(set(d.extras))),
        reference_downscale=d.reference_downscale if "reference" in d.extras else 0,
    )


def prepare(
    cfg: Config,
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
            raise UserError(
                "--overwrite with --shard: one task would delete what the others write; rebuild with "
                "one `ltx2train prepare RECIPE --overwrite`, or delete data.cache_dir before the array"
            )
        if rank == 0:
            cache.remove_cache(cache_dir)
        barrier()
    from ltx2train.models.loading import require_model_files
    from ltx2train.models.specs import load_variant

    # every file prepare reads (the cache's producer fingerprints them first), listed before one loads
    require_model_files(
        cfg.model.checkpoint,
        ["connectors", "video_vae"] + (["audio_vae"] if cfg.data.with_audio else []),
        text_encoder=cfg.model.text_encoder,
        variant=load_variant(cfg.model.variant),
        parts={"video_vae": "encoder", "audio_vae": "encoder"},
    )
    made_by = producer(cfg)
    cache.check_settings(cache_dir, settings)
    cache.check_producer(cache_dir, made_by)
    metadata = read_metadata(source.metadata, root=source.root, columns=Columns.of(cfg.data))
    records = metadata.records
    report = PrepareReport()
    # this process' clips first, then which of them are cached: only this process writes them (a listing of the
    # whole share would race with the other processes' writes and count their fresh clips as cached)
    share = [r for r in records if (shard is None or shard.takes(r)) and r.index % world_size == rank]
    mine = [r for r in share if not cache.sample_path(cache_dir, r.index).is_file()]
    report.skipped = [r.index for r in share if r not in mine]
    _encode_captions(cfg, cache_dir, encoders, mine, settings, device, empty_prompt=rank == 0)
    if mine and (encoders is None or encoders.video_vae is None):
        encoders = load_media_encoders(cfg, device)
    _encode(cache_dir, encoders, mine, settings, report, on_sample)
    _finish(cache_dir, report, source, shard, metadata, settings, made_by, (rank, world_size, barrier))
    barrier()
    report.seconds = time.perf_counter() - start
    return report


def _finish(cache_dir: Path, report: PrepareReport, source, shard, metadata, settings, made_by, group) -> None:
    """Gather every process' clips into the main process' report, and write the manifest there (a shard's only
    once every part of its split is done)."""
    rank, world_size, barrier = group
    every = gather_parts(
        cache_dir,
        {"encoded": report.encoded, "skipped": report.skipped, "rejected": report.rejected},
        rank,
        world_size,
        barrier,
    )
    report.encoded, report.skipped, rejected = every["encoded"], every["skipped"], every["rejected"]
    report.main = rank == 0
    if rank != 0:
        return
    if shard is None:  # every process is past its clips (other shards may still be writing)
        _remove_empty(text_part(cache_dir, 0).parent, cache_dir / SHARDS_DIR)
    # every process' rejects and, once per split, the metadata's
    report.rejected = sorted(
        (metadata.rejects if shard is None or shard.index == 0 else []) + rejected, key=lambda f: f["index"]
    )
    if shard is not None:
        rejected = record_shard(cache_dir, shard, _fingerprint(source.metadata, settings), rejected)
    if rejected is not None:
        _write_manifest(
            cache_dir,
            settings,
            metadata.records,
            sorted(metadata.rejects + rejected, key=lambda f: f["index"]),
            made_by,
        )
        report.manifest = True


def _needs_empty_prompt(cache_dir: Path, settings: cache.CacheSettings) -> bool:
    return "empty_prompt" in settings.extras.split(",") and not (cache_dir / cache.EMPTY_PROMPT).is_file()


def text_part(cache_dir: Path, index: int) -> Path:
    """Where the text phase leaves clip ``index``'s caption features for the media phase (then deleted)."""
    return cache_dir / SHARDS_DIR / "text" / f"{index:06d}.safetensors"


def _encode_captions(cfg: Config, cache_dir: Path, encoders, records, settings, device, empty_prompt: bool) -> None:
    """Phase 1: every caption still to do (and the empty prompt), with Gemma loaded on its own -- and freed
    before the VAEs load, so that the two never share the device's memory."""
    todo = [r for r in records if not text_part(cache_dir, r.index).is_file()]
    empty = empty_prompt and _needs_empty_prompt(cache_dir, settings)
    if not todo and not empty:
        return
    text_encoders = (
        encoders if encoders is not None and encoders.text_encoder is not None else load_text_encoders(cfg, device)
    )
    for record in todo:
        cache.write_tensors(
            text_part(cache_dir, record.index), encode_caption(text_encoders, record.caption, settings), {}
        )
    if empty:
        cache.write_tensors(
            cache_dir / cache.EMPTY_PROMPT, encode_caption(text_encoders, "", settings), {"caption": ""}
        )
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

    bar = tqdm(records, desc=f"prepare {cache_dir.name}", unit="clip", disable=not on_terminal(), dynamic_ncols=True)
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
        metadata = {
            "video": str(record.video),
            "caption": record.caption,
            "bucket": bucket.name,
            "audio": _audio_kind(windows[k]),
            "window": str(k),
            "windows": str(len(windows)),
        }
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


def _write_manifest(
    cache_dir: Path, settings, records: list[ClipRecord], rejected: list[dict], made_by: dict[str, str]
) -> None:
    samples = []
    for r in records:
        first = cache.sample_path(cache_dir, r.index)
        if not first.is_file():
            continue
        for k in range(int(cache.sample_metadata(first).get("windows", 1))):
            path = cache.sample_path(cache_dir, r.index, window=k)
            stored = cache.sample_metadata(path)
            samples.append(
                {
                    "index": r.index,
                    "window": k,
                    "file": str(path.relative_to(cache_dir)),
                    "video": str(r.video),
                    "caption": r.caption,
                    "bucket": stored["bucket"],
                    "audio": stored.get("audio", "off"),
                }
            )
    cache.write_manifest(cache_dir, settings, samples, rejected, made_by)
