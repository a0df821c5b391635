"""How ``prepare`` splits its work: the processes of a launcher (each encodes its share), the ``--shard`` parts of
a job array, and what each part records so that the last one writes the manifest with every part's rejects."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ltx2train.data import cache
from ltx2train.data.metadata import ClipRecord
from ltx2train.utils.errors import UserError


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


def record_shard(cache_dir: Path, shard: Shard, run: str, rejected: list[dict]) -> list[dict] | None:
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


def gather_parts(cache_dir: Path, part: dict, rank: int, world_size: int, barrier) -> dict:
    """Every process' ``part`` (lists under each key: its encoded, skipped and rejected clips) merged and sorted
    for the main process, through small files (no collective needed); the other processes get their own back."""
    if world_size == 1:
        return part
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache.write_json_atomic(cache_dir / f".part.rank{rank}.json", part)
    barrier()
    if rank != 0:
        return part
    merged: dict[str, list] = {key: [] for key in part}
    for r in range(world_size):
        path = cache_dir / f".part.rank{r}.json"
        for key, items in json.loads(path.read_text()).items():
            merged[key].extend(items)
        path.unlink()
    return {key: sorted(items, key=lambda x: x["index"] if isinstance(x, dict) else x) for key, items in merged.items()}
