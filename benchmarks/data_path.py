"""The data path against bare reads of the same bytes, measured side by side in one run (ratios printed, nothing
asserted). Not a test.

- Cached batches: the trainer's loader (``BucketBatchSampler`` -> ``CachedDataset`` -> text padding -> collate)
  over every cached sample vs a bare ``safetensors.torch.load_file`` of the same files in the same order
  (goal: ours >= 0.9x the bare throughput).
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


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _workspace(work: Path, clips: int, frames: int, height: int, width: int):
    from ltx2train.demo import demo_config
    from ltx2train.data.cache import read_manifest
    from ltx2train.data.prepare import prepare
    from ltx2train.data.synthetic import make_synthetic_dataset
    from ltx2train.models.tiny import write_tiny_checkpoint

    cfg = demo_config(work, [f"train.output_dir={work / 'run'}", f"data.num_frames={frames}",
                             f"data.height={height}", f"data.width={width}"])
    if read_manifest(cfg.data.cache_dir) is None:
        write_tiny_checkpoint(work / "model")
        make_synthetic_dataset(work / "data", num_clips=clips, num_frames=frames, height=height, width=width)
        prepare(cfg)
    return cfg


def cached_batches(cfg, repeats: int) -> tuple[float, float]:
    """(ours, bare) seconds for one pass over every cached sample."""
    import torch
    from safetensors.torch import load_file

    from ltx2train.data.cache import CachedDataset, collate
    from ltx2train.training.data import BucketBatchSampler

    dataset = CachedDataset(cfg.data.cache_dir)
    sampler = BucketBatchSampler(dataset.buckets, cfg.data.batch_size, seed=0, shuffle=True)
    order = [batch for _, batch in zip(range(len(sampler)), iter(sampler))]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=order, collate_fn=collate, num_workers=0)
    files = [Path(cfg.data.cache_dir) / dataset.samples[i]["file"] for batch in order for i in batch]
    ours = _best(lambda: [None for _ in loader], repeats)
    bare = _best(lambda: [load_file(str(f)) for f in files], repeats)
    return ours, bare


def preprocessing_decode(cfg, repeats: int) -> tuple[float, float]:
    """(ours, bare) seconds to decode every clip's window: frames + audio, before the encoders."""
    import av
    import decord

    from ltx2train.data.media import audio_window, frame_indices, _open_video
    from ltx2train.data.metadata import read_metadata
    from ltx2train.data.prepare import choose_bucket, clip_pixels, settings_from_config

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

    return _best(ours, repeats), _best(bare, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="outputs/bench_data")
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = _workspace(Path(args.workdir), args.clips, args.frames, args.height, args.width)
    print(f"{args.clips} clips, {args.height}x{args.width}x{args.frames}; best of {args.repeats}")
    for name, (ours, bare), goal in (("cached batches", cached_batches(cfg, args.repeats), 0.9),
                                     ("preprocessing decode", preprocessing_decode(cfg, args.repeats), 0.8)):
        ratio = bare / ours  # our throughput relative to the bare reads
        print(f"{name:>22}: ours {ours * 1e3:8.1f} ms, bare {bare * 1e3:8.1f} ms -> throughput x{ratio:.2f} "
              f"(goal >= {goal}: {'met' if ratio >= goal else 'NOT met'})")


if __name__ == "__main__":
    main()
