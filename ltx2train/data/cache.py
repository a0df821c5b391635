"""The preprocessed cache: one safetensors file per clip plus a manifest.

Each ``samples/<index>.safetensors`` holds, for one clip:

- ``video_latents``  (C, F', H', W')  normalised video VAE latents (what the transformer denoises)
- ``audio_latents``  (C, L, M)        normalised audio VAE latents (absent when ``with_audio`` is off)
- ``audio_valid``    (L,)             1 where the clip's real audio covers the latent frame, 0 for padding
                                      (short audio) or all of it (no audio stream): kept out of the loss
- ``text_video`` (T, Dv)              Gemma features after the frozen text projection (``project_text``),
- ``text_audio`` (T, Da)              ... and the audio ones where the model projects per modality (LTX-2.3)
- ``text_attention_mask`` (T,)        1 for real tokens
- ``first_frame_latents`` (C, 1, H', W')  ``extras: [first_frame]``: the window's first frame encoded alone (the
                                      image-to-video condition, as inference encodes the input image)
- ``reference_latents`` (C, F', H'/d, W'/d)  ``extras: [reference]``: the reference video over the same window at
                                      1/d of the bucket's size (d = ``reference_downscale``, in the settings)

``empty_prompt.safetensors`` (``extras: [empty_prompt]``) holds the empty caption's ``text_*`` features once per
cache, for caption dropout.

Clips of one bucket (``HEIGHTxWIDTHxFRAMES``, recorded per sample in the manifest and in the file's header)
share their latent shapes; a batch is drawn from one bucket. Only the caption's real tokens are stored; the dataset left-pads them back to ``max_sequence_length``
(the connectors replace padded positions with learnable registers, so only their count matters).

Files are written to a temporary name and renamed, so a file that exists is complete: an interrupted
``prepare`` resumes by skipping the files that are there. ``manifest.json`` records the settings the cache
was made with; a cache is never silently mixed with samples made at other settings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import load, load_file, save_file
from ltx2train.utils.atomic import atomic_path, write_text_atomic
from ltx2train.utils.errors import UserError

FORMAT_VERSION = 4  # 4: extras, random windows (3: resolution buckets; 2: projected text; 1: Gemma hidden states)
TEXT_KEYS = ("text_video", "text_audio")
MANIFEST = "manifest.json"
REJECTS = "rejects.jsonl"
SAMPLES_DIR = "samples"
EMPTY_PROMPT = "empty_prompt.safetensors"


@dataclass(frozen=True)
class CacheSettings:
    variant: str
    buckets: str  # the bucket shapes clips may take, "HxWxF,HxWxF,..." (see data/buckets.py)
    crop: str
    window: str  # first | random | spread
    max_windows: int
    fps: float
    with_audio: bool
    max_sequence_length: int
    extras: str = ""  # what else is stored, "first_frame,reference,empty_prompt" (sorted)
    reference_downscale: int = 0  # the reference latents' size divisor (0: no reference latents)


def sample_path(cache_dir: str | Path, index: int, window: int = 0) -> Path:
    """Clip ``index``'s sample file; windows after the first (``data.window: spread``) beside it."""
    name = f"{index:06d}.safetensors" if window == 0 else f"{index:06d}_w{window:02d}.safetensors"
    return Path(cache_dir) / SAMPLES_DIR / name


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=1))


def write_sample(
    cache_dir: str | Path, index: int, tensors: dict[str, torch.Tensor], metadata: dict[str, str], window: int = 0
) -> Path:
    return write_tensors(sample_path(cache_dir, index, window), tensors, metadata)


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """A safetensors file of the cache, atomically (a temporary name, then renamed)."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


def sample_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a sample file's header (video, caption, bucket)."""
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def read_manifest(cache_dir: str | Path) -> dict | None:
    path = Path(cache_dir) / MANIFEST
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def dataset_statistics(sources) -> list[dict]:
    """Per dataset of a recipe (``config.dataset_sources``): its cache, clips per bucket and rejected rows, or that it
    is not prepared yet."""
    from collections import Counter

    out = []
    for source in sources:
        cache_dir = Path(source.cache_dir)
        manifest = read_manifest(cache_dir)
        rejects = cache_dir / REJECTS
        entry = {
            "metadata": str(source.metadata),
            "cache_dir": str(cache_dir),
            "prepared": manifest is not None,
            "repeats": source.repeats,
            "weight": source.weight,
        }
        if manifest is not None:
            entry["buckets"] = dict(sorted(Counter(s["bucket"] for s in manifest["samples"]).items()))
            entry["clips"] = len(manifest["samples"])
            entry["rejected"] = len(rejects.read_text().splitlines()) if rejects.is_file() else 0
        out.append(entry)
    return out


def check_settings(cache_dir: str | Path, settings: CacheSettings) -> None:
    """A cache made with other settings must not be extended or trained on by mistake."""
    manifest = read_manifest(cache_dir)
    if manifest is None:
        return
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"cache {cache_dir} has format {manifest.get('format_version')}, this ltx2train writes format "
            f"{FORMAT_VERSION}: use another data.cache_dir or delete this one"
        )
    old = manifest.get("settings", {})
    _check_variant(cache_dir, manifest, settings.variant)
    diffs = [f"{k}: cache has {old.get(k)!r}, recipe has {v!r}" for k, v in asdict(settings).items() if old.get(k) != v]
    if diffs:
        raise UserError(
            f"cache {cache_dir} was made with other settings ({'; '.join(diffs)}); "
            "use another data.cache_dir or delete this one"
        )


def _check_variant(cache_dir, manifest: dict, variant: str) -> None:
    """A cache prepared for one model variant (version, size) is never read for another."""
    made_for = manifest.get("settings", {}).get("variant")
    if made_for != variant:
        raise UserError(
            f"cache {cache_dir} was prepared for {_version(made_for)}, but the recipe's model.variant is "
            f"{_version(variant)}: latents and text features of one LTX-2 model do not fit another. "
            "Prepare a cache for this model: `ltx2train prepare RECIPE` into another data.cache_dir, or "
            "`ltx2train prepare RECIPE --overwrite` to rebuild this one"
        )


def _version(variant: str | None) -> str:
    """``tiny-2.3 (LTX-2.3)``: a variant with its version, when the variant is known here."""
    from ltx2train.models.specs import load_variant

    try:
        return f"{variant} (LTX-{load_variant(variant).family})"
    except (ValueError, OSError, TypeError):
        return repr(variant)


def check_producer(cache_dir: str | Path, producer: dict[str, str]) -> None:
    """The cache's latents came from this model variant and these weights (``produced_by``: ``variant``, its
    ``version``, part -> fingerprint; the code version is recorded, not compared). A part only one side records is
    not compared: training leaves out the encoders it has no files of, and caches before the VAE encoders'
    fingerprints recorded whole VAEs (``video_vae``)."""
    manifest = read_manifest(cache_dir)
    if manifest is None:
        return
    _check_variant(cache_dir, manifest, producer["variant"])
    made = manifest.get("produced_by", {})
    diffs = [
        f"{k}: cache {made.get(k)}, recipe {v}"
        for k, v in producer.items()
        if k not in ("ltx2train", "variant", "version") and k in made and made[k] != v
    ]
    if diffs:
        raise UserError(
            f"cache {cache_dir} was made with other weights ({'; '.join(diffs)}): use another "
            "data.cache_dir, or rebuild this one with `ltx2train prepare RECIPE --overwrite`"
        )


def remove_cache(cache_dir: str | Path) -> None:
    """Delete what prepare wrote in ``cache_dir`` (samples, shard markers, manifest, rejects) and nothing else."""
    import shutil

    cache_dir = Path(cache_dir)
    for sub in (SAMPLES_DIR, ".prepare"):
        shutil.rmtree(cache_dir / sub, ignore_errors=True)
    for name in (MANIFEST, REJECTS, EMPTY_PROMPT):
        (cache_dir / name).unlink(missing_ok=True)


def write_manifest(
    cache_dir: str | Path,
    settings: CacheSettings,
    samples: list[dict],
    rejected: list[dict],
    producer: dict[str, str] | None = None,
) -> Path:
    """``manifest.json`` (settings, samples, rejects) and ``rejects.jsonl`` (one object per rejected row: index,
    path as written in the metadata, reason)."""
    path = Path(cache_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(cache_dir) / REJECTS, "".join(json.dumps(r) + "\n" for r in rejected))
    data = {
        "format_version": FORMAT_VERSION,
        "settings": asdict(settings),
        "produced_by": producer or {},
        "samples": samples,
        "rejected": rejected,
    }
    write_json_atomic(path, data)
    return path


class CachedDataset(torch.utils.data.Dataset):
    """The samples listed in the manifests of one or several caches (the recipe's datasets, made at the same
    settings), read lazily (safetensors, no pickle). Each sample records its ``source`` (which cache)."""

    def __init__(self, cache_dirs: str | Path | Sequence[str | Path], settings: CacheSettings | None = None):
        dirs = [cache_dirs] if isinstance(cache_dirs, (str, Path)) else list(cache_dirs)
        self.cache_dirs = [Path(d) for d in dirs]
        self.cache_dir = self.cache_dirs[0]
        self.samples: list[dict] = []
        for source, cache_dir in enumerate(self.cache_dirs):
            manifest = _readable_manifest(cache_dir, settings)
            if source == 0:
                self.settings = manifest["settings"]
            elif manifest["settings"] != self.settings:
                raise UserError(
                    f"caches {self.cache_dir} and {cache_dir} were made with other settings: prepare "
                    "every dataset with the same recipe"
                )
            self.samples += [{**s, "source": source, "file": str(cache_dir / s["file"])} for s in manifest["samples"]]

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def buckets(self) -> list[str]:
        """Each sample's bucket (``HEIGHTxWIDTHxFRAMES``): the samples a batch may be drawn from together."""
        return [s["bucket"] for s in self.samples]

    @property
    def sources(self) -> list[int]:
        """Each sample's dataset: its position in ``cache_dirs``."""
        return [s["source"] for s in self.samples]

    @property
    def groups(self) -> list[int]:
        """Each sample's clip (unique over the datasets): under ``window: random`` the windows of one clip form a
        group, of which each epoch trains one; otherwise every sample is its own."""
        if self.settings["window"] != "random":
            return list(range(len(self.samples)))
        return [s["source"] * (1 << 40) + s["index"] for s in self.samples]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """Sample ``i`` as stored: its text holds the real tokens only; ``collate`` pads them."""
        sample = read_tensors(Path(self.samples[i]["file"]))
        sample["index"] = torch.tensor(i)  # which sample: keys its training noise
        return sample

    def collate(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """A batch, its text left-padded to the cache's ``max_sequence_length`` (the DataLoader's collate_fn)."""
        return collate(samples, self.settings["max_sequence_length"])

    def empty_prompt(self) -> dict[str, torch.Tensor]:
        """The empty caption's text features (``text_*``, padded like a sample's): caption dropout's condition."""
        path = self.cache_dir / EMPTY_PROMPT
        if not path.is_file():
            raise FileNotFoundError(
                f"cache {self.cache_dir} has no {EMPTY_PROMPT}: prepare it with data.extras including empty_prompt"
            )
        return pad_text(read_tensors(path), self.settings["max_sequence_length"])


def _readable_manifest(cache_dir: Path, settings: CacheSettings | None) -> dict:
    """The manifest of a cache this ltx2train can train on (at ``settings`` when given), with samples."""
    manifest = read_manifest(cache_dir)
    if manifest is None:
        raise FileNotFoundError(f"no cache at {cache_dir} (no {MANIFEST}); run `ltx2train prepare` first")
    if settings is not None:
        check_settings(cache_dir, settings)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"cache {cache_dir} has format {manifest.get('format_version')}, this ltx2train reads "
            f"format {FORMAT_VERSION}: run `ltx2train prepare` into a new data.cache_dir"
        )
    if not manifest["samples"]:
        raise UserError(f"cache {cache_dir} holds no samples (every clip rejected? see its {REJECTS})")
    return manifest


def pad_text(sample: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """Left-pad the stored real text tokens back to the tokenizer's fixed length (zeros, mask 0).

    The connectors replace padded positions with their learnable registers, so the padded values never
    reach the transformer; only the count of positions matters, and it matches inference.
    """
    mask = sample["text_attention_mask"]
    pad = length - mask.shape[0]
    if pad < 0:
        raise UserError(f"cached text has {mask.shape[0]} tokens, more than max_sequence_length={length}")
    for key in TEXT_KEYS:
        if key in sample:
            features = sample[key]
            sample[key] = torch.cat([features.new_zeros(pad, features.shape[1]), features])
    sample["text_attention_mask"] = torch.cat([mask.new_zeros(pad), mask])
    return sample


def collate(samples: list[dict[str, torch.Tensor]], text_length: int | None = None) -> dict[str, torch.Tensor]:
    """Stack samples into a batch; their text (real tokens only, or already padded) is left-padded to
    ``text_length`` right into the batch's tensors (one copy, as for every other key); None: to the batch's
    longest, and ``left_pad`` adds the rest on the device (the trainer's loader: 19B-size text padded to 1024 tokens
    on the CPU would cost more than reading the file)."""
    batch = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        text = key in TEXT_KEYS + ("text_attention_mask",)
        length = (text_length or max(v.shape[0] for v in values)) if text else 0
        if text and any(v.shape[0] != length for v in values):
            batch[key] = _left_padded(values, length)
        else:  # one sample: a view, no copy (the copy to the device is the only one)
            batch[key] = values[0].unsqueeze(0) if len(values) == 1 else torch.stack(values)
    return batch


def left_pad(batched: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T, ...) text features or mask -> (B, length, ...), zeros before the tokens (a no-op at ``length``)."""
    pad = length - batched.shape[1]
    if pad < 0:
        raise UserError(f"cached text has {batched.shape[1]} tokens, more than max_sequence_length={length}")
    if pad == 0:
        return batched
    return torch.cat([batched.new_zeros((batched.shape[0], pad, *batched.shape[2:])), batched], dim=1)


def _left_padded(values: list[torch.Tensor], length: int) -> torch.Tensor:
    out = values[0].new_empty((len(values), length, *values[0].shape[1:]))  # written once: padding, then tokens
    for row, value in zip(out, values):
        pad = length - value.shape[0]
        if pad < 0:
            raise UserError(f"cached text has {value.shape[0]} tokens, more than max_sequence_length={length}")
        row[:pad].zero_()
        row[pad:] = value
    return out


SMALL_FILE = 1 << 20  # bytes: below, one whole read + parse (x3 faster at 10 KB); above, memory-mapped


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A cache file's tensors (safetensors only): small files are read whole and parsed, larger ones mapped."""
    if path.stat().st_size < SMALL_FILE:
        return load(path.read_bytes())
    return load_file(str(path))
