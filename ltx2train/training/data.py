"""Batches from the cache: a resumable, rank-sharded, epoch-seeded batch sampler."""

from __future__ import annotations

import torch


class ResumableBatchSampler(torch.utils.data.Sampler):
    """Endless index batches for one rank. Epoch ``e`` is a permutation seeded by ``seed + e``, split
    across ranks; ``start_batch`` skips the batches this rank already consumed (exact data resume)."""

    def __init__(self, num_samples: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, start_batch: int = 0):
        self.per_rank = num_samples // world_size
        self.batches_per_epoch = self.per_rank // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"the cache holds {num_samples} samples: fewer than data.batch_size={batch_size} "
                             f"x {world_size} processes")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        self.start_batch = start_batch

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            order = torch.arange(self.num_samples)
        mine = order[self.rank : self.per_rank * self.world_size : self.world_size].tolist()
        return [mine[i * self.batch_size : (i + 1) * self.batch_size] for i in range(self.batches_per_epoch)]

    def __iter__(self):
        epoch, offset = divmod(self.start_batch, self.batches_per_epoch)
        while True:
            for batch in self._epoch_batches(epoch)[offset:]:
                yield batch
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # one epoch; the iterator itself never ends
        return self.batches_per_epoch
