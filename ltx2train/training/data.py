"""Batches from the cache: a bucket-aware, resumable, rank-sharded, epoch-seeded batch sampler over one or several
datasets (repeats, weights) whose clips may hold several windows (one trained per epoch)."""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from ltx2train.config import Config
from ltx2train.utils.errors import UserError


def batch_sampler(cfg: Config, dataset, rank: int, world_size: int, start_batch: int = 0) -> "BucketBatchSampler":
    """The recipe's batch plan over ``dataset`` (a :class:`~ltx2train.data.cache.CachedDataset`) for one process."""
    from ltx2train.config import dataset_sources

    sources = dataset_sources(cfg.data)
    weights = [s.weight for s in sources] if sources[0].weight is not None else None
    return BucketBatchSampler(
        dataset.buckets,
        cfg.data.batch_size,
        rank=rank,
        world_size=world_size,
        seed=cfg.train.seed,
        shuffle=cfg.data.shuffle,
        start_batch=start_batch,
        groups=dataset.groups,
        sources=dataset.sources,
        repeats=[s.repeats for s in sources],
        weights=weights,
    )


def steps_per_epoch(cfg: Config, dataset, world_size: int) -> int:
    """Optimizer steps in one epoch (the first: weighted datasets may make others differ by a batch)."""
    return max(1, batch_sampler(cfg, dataset, 0, world_size).batches_per_epoch // cfg.train.gradient_accumulation_steps)


class BucketBatchSampler(torch.utils.data.Sampler):
    """Endless index batches for one rank, each batch from one bucket (one latent shape).

    A *clip* is a group of samples (``groups``: its cached windows under ``data.window: random``, else one sample);
    each epoch draws clips per dataset (``sources``) -- every clip ``repeats`` times, or with ``weights`` the
    dataset's share of the epoch's draws (a small dataset's clips come round more often, a large one's less) --
    and one window of each drawn clip. Epoch ``e`` is seeded by ``seed + e``: the drawn samples of each bucket are
    cut into global batches of ``batch_size x world_size`` (a remainder waits for a later epoch), the global
    batches are shuffled, and rank ``r`` takes slice ``r`` of each. So every rank gets the same number of batches,
    no sample is drawn twice in an epoch unless repeats or weights ask for it, and one process with batch ``2b``
    takes what two processes with batch ``b`` take together. ``start_batch`` skips the batches this rank already
    consumed (exact data resume, also when epochs differ in length).
    """

    def __init__(
        self,
        buckets: Sequence[str],
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        start_batch: int = 0,
        groups: Sequence[int] | None = None,
        sources: Sequence[int] | None = None,
        repeats: Sequence[int] = (1,),
        weights: Sequence[float] | None = None,
    ):
        self.buckets = list(buckets)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.seed, self.shuffle, self.start_batch = seed, shuffle, start_batch
        self.global_batch = batch_size * world_size
        self.clips = _clips(self.buckets, groups, sources)  # source -> [(bucket, [sample, ...]), ...]
        self.draws = _draws({s: len(c) for s, c in self.clips.items()}, repeats, weights)
        self.batches_per_epoch = self.epoch_length(0)
        if self.batches_per_epoch == 0:
            sizes = ", ".join(f"{b}: {n}" for b, n in self._bucket_sizes().items())
            raise UserError(
                f"no bucket holds a global batch of data.batch_size={batch_size} x {world_size} "
                f"process(es) (clips per bucket: {sizes})"
            )

    def _bucket_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for source, clips in self.clips.items():
            share = self.draws[source] / len(clips)
            for bucket, _ in clips:
                sizes[bucket] = sizes.get(bucket, 0) + share
        return {b: round(n) for b, n in sorted(sizes.items())}

    def _drawn(self, epoch: int, generator: torch.Generator) -> list[int]:
        """The epoch's samples in drawn order: clips per source, one window per clip."""
        chosen = []
        for source, clips in self.clips.items():
            order: list[int] = []
            while len(order) < self.draws[source]:
                order += torch.randperm(len(clips), generator=generator).tolist() if self.shuffle else range(len(clips))
            for c in order[: self.draws[source]]:
                members = clips[c][1]
                pick = int(torch.randint(len(members), (1,), generator=generator)) if self.shuffle else epoch
                chosen.append(members[pick % len(members)])
        return chosen

    @functools.lru_cache(maxsize=4)
    def _epoch_global_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        members: dict[str, list[int]] = {}
        for index in self._drawn(epoch, generator):
            members.setdefault(self.buckets[index], []).append(index)
        batches = []
        for bucket in sorted(members):
            order = members[bucket]
            whole = len(order) // self.global_batch * self.global_batch
            batches += [order[i : i + self.global_batch] for i in range(0, whole, self.global_batch)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
        return batches

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        lo = self.rank * self.batch_size
        return [batch[lo : lo + self.batch_size] for batch in self._epoch_global_batches(epoch)]

    def epoch_length(self, epoch: int) -> int:
        """Batches per rank in ``epoch`` (the same in every epoch unless weights subsample or cycle a dataset)."""
        return len(self._epoch_global_batches(epoch))

    def __iter__(self):
        epoch, offset = 0, self.start_batch
        while offset >= self.epoch_length(epoch):
            offset -= self.epoch_length(epoch)
            epoch += 1
        while True:
            for batch in self._epoch_batches(epoch)[offset:]:
                yield batch
            epoch, offset = epoch + 1, 0

    def __len__(self) -> int:  # one epoch; the iterator itself never ends
        return self.batches_per_epoch

    def skipped(self) -> dict[str, int]:
        """Buckets too small for one global batch: never trained (bucket -> clips drawn per epoch)."""
        return {b: n for b, n in self._bucket_sizes().items() if n < self.global_batch}


def _clips(buckets: list[str], groups, sources) -> dict[int, list[tuple[str, list[int]]]]:
    """source -> its clips, each (bucket, its samples), in order of first appearance."""
    groups = list(range(len(buckets))) if groups is None else list(groups)
    sources = [0] * len(buckets) if sources is None else list(sources)
    by_key: dict[tuple[int, int], tuple[str, list[int]]] = {}
    for index, (bucket, group, source) in enumerate(zip(buckets, groups, sources)):
        clip = by_key.setdefault((source, group), (bucket, []))
        if clip[0] != bucket:
            raise ValueError(f"samples {clip[1][0]} and {index} of one clip have different buckets")
        clip[1].append(index)
    out: dict[int, list[tuple[str, list[int]]]] = {}
    for (source, _), clip in by_key.items():
        out.setdefault(source, []).append(clip)
    return dict(sorted(out.items()))


def _draws(sizes: dict[int, int], repeats: Sequence[int], weights: Sequence[float] | None) -> dict[int, int]:
    """Clips drawn per epoch from each source: ``repeats`` times its clips, or with ``weights`` its share of
    as many draws as there are clips in all (at least one each)."""
    if weights is None:
        return {s: n * repeats[s] for s, n in sizes.items()}
    total, weight_sum = sum(sizes.values()), sum(weights[s] for s in sizes)
    return {s: max(1, round(total * weights[s] / weight_sum)) for s in sizes}
