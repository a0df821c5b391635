"""Batches from the cache: a bucket-aware, resumable, rank-sharded, epoch-seeded batch sampler."""

from __future__ import annotations

from typing import Sequence

import torch


class BucketBatchSampler(torch.utils.data.Sampler):
    """Endless index batches for one rank, each batch from one bucket (one latent shape).

    Epoch ``e`` (seeded by ``seed + e``): each bucket's samples are shuffled and cut into global batches of
    ``batch_size x world_size`` (a bucket's remainder waits for a later epoch's shuffle), the global batches are
    shuffled, and rank ``r`` takes slice ``r`` of each. So every rank gets the same number of batches, no sample
    is seen twice in an epoch, and one process with batch ``2b`` takes what two processes with batch ``b`` take
    together. ``start_batch`` skips the batches this rank already consumed (exact data resume).
    """

    def __init__(self, buckets: Sequence[str], batch_size: int, *, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, start_batch: int = 0):
        self.buckets = list(buckets)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.shuffle, self.start_batch = seed, shuffle, start_batch
        self.global_batch = batch_size * world_size
        members: dict[str, list[int]] = {}
        for index, bucket in enumerate(self.buckets):
            members.setdefault(bucket, []).append(index)
        self.members = dict(sorted(members.items()))
        self.batches_per_epoch = sum(len(m) // self.global_batch for m in self.members.values())
        if self.batches_per_epoch == 0:
            sizes = ", ".join(f"{b}: {len(m)}" for b, m in self.members.items())
            raise ValueError(f"no bucket holds a global batch of data.batch_size={batch_size} x {world_size} "
                             f"process(es) (clips per bucket: {sizes})")

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        batches = []
        for indices in self.members.values():
            order = [indices[i] for i in torch.randperm(len(indices), generator=generator)] if self.shuffle else indices
            whole = len(order) // self.global_batch * self.global_batch
            batches += [order[i:i + self.global_batch] for i in range(0, whole, self.global_batch)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        lo = self.rank * self.batch_size
        return [batch[lo:lo + self.batch_size] for batch in batches]

    def __iter__(self):
        epoch, offset = divmod(self.start_batch, self.batches_per_epoch)
        while True:
            for batch in self._epoch_batches(epoch)[offset:]:
                yield batch
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # one epoch; the iterator itself never ends
        return self.batches_per_epoch

    def skipped(self) -> dict[str, int]:
        """Buckets too small for one global batch: never trained (bucket -> clips)."""
        return {b: len(m) for b, m in self.members.items() if len(m) < self.global_batch}
