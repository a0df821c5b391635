"""The data path against bare reads of the same bytes, measured side by side in one run (ratios printed, nothing
asserted). Not a test.

- Cached batches: the trainer's loader (``BucketBatchSampler`` -> ``CachedDataset`` -> collate, which left-pads
  the text to the batch's longest; the rest of the padding is added on the device) over every cached sample vs a
  bare read of the same files in the same order (``safetensors.torch.load_file``); both consume each tensor with
  one copy, as the step's copy to the device does (``load_file`` alone only maps a large file: nothing is read
  until a tensor is touched) (goal: ours >= 0.9x the bare throughput). Run on the tiny model's
  cache and, with ``--shapes 19b``, on a cache of random tensors at the 19B model's shapes (512x768x121: video
  latents 128x16x16x24, 200 text tokens of 3840 padded to 1024, audio latents 8x121x16).
- Preprocessing decode: prepare's way to a clip's pixels and audio (probe by timestamps -> bucket -> frames at
  the window's instants -> fit to the bucket; the audio window) vs a bare decord ``get_batch`` of the same frame
  indices plus a bare PyAV decode of the audio stream (goal: ours >= 0.8x). The VAE and Gemma, the same in
  both, are left out.

    python benchmarks/data_path.py --workdir /tmp/bench_data       # 48 synthetic clips at 128x192, 49 frames
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _paired(ours, bare, repeats: int) -> tuple[float, float]:
    """Best (ours, bare) seconds, the two run alternately so that cache and allocator state favour neither."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for k, fn in enumerate((ours, bare)):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best[0], best[1]


def _workspace(work: Path, clips: int, frames: int, height: int, width: int):
    from ltx2train.demo import demo_config
    from ltx2train.data.cache import read_manifest
    from ltx2train.data.prepare import prepare
    from ltx2train.data.synthetic import make_synthetic_dataset
    from ltx2train.models.tiny import write_tiny_checkpoint

    cfg = demo_config(
        work,
        [
            f"train.output_dir={work / 'run'}",
            f"data.num_frames={frames}",
            f"data.height={height}",
            f"data.width={width}",
        ],
    )
    if read_manifest(cfg.data.cache_dir) is None:
        write_tiny_checkpoint(work / "model")
        make_synthetic_dataset(work / "data", num_clips=clips, num_frames=frames, height=height, width=width)
        prepare(cfg)
    return cfg


def cached_batches(cache_dir: Path, batch_size: int, repeats: int) -> tuple[float, float]:
    """(ours, bare) seconds for one pass over every cached sample."""
    import torch
    from safetensors.torch import load_file

    from ltx2train.data.cache import CachedDataset, collate
    from ltx2train.training.data import BucketBatchSampler

    dataset = CachedDataset(cache_dir)
    sampler = BucketBatchSampler(dataset.buckets, batch_size, seed=0, shuffle=True)
    order = [batch for _, batch in zip(range(len(sampler)), iter(sampler))]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=order, collate_fn=collate, num_workers=0)
    files = [dataset.samples[i]["file"] for batch in order for i in batch]
    # both consume every tensor as the step does: one copy (to the device there, to new memory here)
    return _paired(
        lambda: [[t.clone() for t in batch.values()] for batch in loader],
        lambda: [[t.clone() for t in load_file(f).values()] for f in files],
        repeats,
    )


def synthetic_19b_cache(work: Path, clips: int) -> Path:
    """A cache of random tensors at the 19B model's shapes for one 512x768x121 bucket (the loader does not care
    where the numbers came from)."""
    import torch

    from ltx2train.data import cache

    cache_dir = work / "cache_19b"
    if cache.read_manifest(cache_dir) is not None:
        return cache_dir
    settings = cache.CacheSettings("ltx-2-19b", "512x768x121", "center", "first", 1, 24.0, True, 1024)
    generator = torch.Generator().manual_seed(0)
    samples = []
    for i in range(clips):
        tensors = {
            "video_latents": torch.randn(128, 16, 16, 24, generator=generator),
            "audio_latents": torch.randn(8, 121, 16, generator=generator),
            "audio_valid": torch.ones(121),
            "text_video": torch.randn(200, 3840, generator=generator),
            "text_attention_mask": torch.ones(200, dtype=torch.int64),
        }
        path = cache.write_sample(cache_dir, i, tensors, {"bucket": "512x768x121"})
        samples.append({"index": i, "window": 0, "file": str(path.relative_to(cache_dir)), "bucket": "512x768x121"})
    cache.write_manifest(cache_dir, settings, samples, [])
    return cache_dir


def preprocessing_decode(cfg, repeats: int) -> tuple[float, float]:
    """(ours, bare) seconds to decode every clip's window: frames + audio, before the encoders."""
    import av
    import decord

    from ltx2train.data.media import audio_window, frame_indices, _open_video
    from ltx2train.data.metadata import read_metadata
    from ltx2train.data.encode import choose_bucket, clip_pixels
    from ltx2train.data.prepare import settings_from_config

    settings = settings_from_config(cfg)
    records = read_metadata(cfg.data.metadata).records

    def ours():
        for record in records:
            bucket = choose_bucket(record, settings)
            clip_pixels(record, settings, bucket)
            audio_window(record.video, 16000, 2, 0.0, bucket.frames / settings.fps)

    plans = []
    for record in records:
        bucket = choose_bucket(record, settings)
        _, starts, end = _open_video(record.video)
        plans.append((record.video, frame_indices(starts, end, bucket.frames, settings.fps)))

    def bare():
        for path, indices in plans:
            decord.VideoReader(str(path), ctx=decord.cpu(0)).get_batch(indices).asnumpy()
            with av.open(str(path)) as container:
                for _ in container.decode(container.streams.audio[0]):
                    pass

    return _paired(ours, bare, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="outputs/bench_data")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--shapes",
        choices=["tiny", "19b"],
        default="tiny",
        help="19b: also the cached-batch loader on 19B-shaped samples (16 of them, ~8 MB each)",
    )
    args = parser.parse_args()
    cfg = _workspace(Path(args.workdir), args.clips, args.frames, args.height, args.width)
    print(f"{args.clips} clips, {args.height}x{args.width}x{args.frames}; best of {args.repeats}")
    rows = [("cached batches", cached_batches(Path(cfg.data.cache_dir), cfg.data.batch_size, args.repeats), 0.9)]
    if args.shapes == "19b":
        rows.append(
            ("cached batches, 19B", cached_batches(synthetic_19b_cache(Path(args.workdir), 16), 1, args.repeats), 0.9)
        )
    rows.append(("preprocessing decode", preprocessing_decode(cfg, args.repeats), 0.8))
    for name, (ours, bare), goal in rows:
        ratio = bare / ours  # our throughput relative to the bare reads
        print(
            f"{name:>22}: ours {ours * 1e3:8.1f} ms, bare {bare * 1e3:8.1f} ms -> throughput x{ratio:.2f} "
            f"(goal >= {goal}: {'met' if ratio >= goal else 'NOT met'})"
        )


if __name__ == "__main__":
    main()
