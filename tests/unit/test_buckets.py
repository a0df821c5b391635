"""Resolution buckets (data/buckets.py) and the bucket-aware batch sampler (training/data.py)."""

import math

import pytest

from ltx2train.data.buckets import Bucket, assign, fit_area, generate
from ltx2train.training.data import BucketBatchSampler

ASPECTS = [1 / 3, 0.5, 9 / 16, 2 / 3, 0.75, 1.0, 4 / 3, 1.5, 16 / 9, 2.0, 3.0]


def test_generated_buckets_are_valid_shapes_within_the_pixel_budget():
    buckets = generate(768 * 512, ASPECTS, [49, 121])
    assert len(buckets) == 2 * len(ASPECTS)
    for b in buckets:
        assert b.problem() is None
        assert b.height * b.width <= 768 * 512
        assert b.height * b.width >= 0.8 * 768 * 512  # close to the budget, not a small corner of it
    # each requested aspect ratio has a bucket within 5% of it
    for a in ASPECTS:
        assert min(abs(math.log(b.aspect / a)) for b in buckets) < 0.05
    assert fit_area(1.5, 768 * 512) == (512, 768)  # the 19B recipe's default shape comes out exactly


def test_a_clip_goes_to_the_nearest_aspect_ratio_and_the_most_frames_it_has():
    buckets = generate(768 * 512, ASPECTS, [25, 49, 121])
    wide = assign(buckets, 360, 1080, frames_available=300)  # 3:1
    assert wide.aspect == pytest.approx(3.0, rel=0.05) and wide.frames == 121
    hd = assign(buckets, 1088, 1920, frames_available=60)  # 16:9, 2.5 s at 24 fps
    assert hd.aspect == pytest.approx(16 / 9, rel=0.05) and hd.frames == 49
    portrait = assign(buckets, 1920, 1080, frames_available=121)
    assert portrait.aspect == pytest.approx(9 / 16, rel=0.05) and portrait.frames == 121
    assert assign(buckets, 512, 512, frames_available=24) is None  # shorter than every bucket


@pytest.mark.parametrize(
    "text, problem", [("512x768x121", None), ("500x768x121", "multiples of 32"), ("512x768x120", "8k+1")]
)
def test_bucket_shapes_parse_and_are_checked(text, problem):
    bucket = Bucket.parse(text)
    assert bucket.name == text
    assert (bucket.problem() is None) if problem is None else (problem in bucket.problem())


def test_a_malformed_bucket_is_a_clear_error():
    with pytest.raises(ValueError, match="expected HEIGHTxWIDTHxFRAMES"):
        Bucket.parse("512x768")


# 23 clips over three buckets (11, 8 and 4 clips): the sampler's own view of a cache
LABELS = ["a"] * 11 + ["b"] * 8 + ["c"] * 4
LABELS = [LABELS[(7 * i) % 23] for i in range(23)]  # interleaved, as clips of every shape come in a real cache


def _take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("world_size", [1, 2, 4])
def test_every_rank_gets_as_many_one_bucket_batches_and_no_clip_twice_in_an_epoch(world_size):
    batch = 2
    samplers = [BucketBatchSampler(LABELS, batch, rank=r, world_size=world_size, seed=5) for r in range(world_size)]
    per_rank = samplers[0].batches_per_epoch
    assert all(s.batches_per_epoch == per_rank for s in samplers) and per_rank > 0
    epoch = [_take(s, per_rank) for s in samplers]
    seen = [i for rank in epoch for b in rank for i in b]
    assert len(seen) == len(set(seen))  # no clip twice in an epoch, across all ranks
    for rank in epoch:
        assert all(len(b) == batch and len({LABELS[i] for i in b}) == 1 for b in rank)  # one bucket per batch
    # step k on every rank draws from the same bucket (one latent shape per global step)
    for k in range(per_rank):
        assert len({LABELS[epoch[r][k][0]] for r in range(world_size)}) == 1
    # everything but each bucket's remainder (< one global batch) is trained each epoch
    global_batch = batch * world_size
    assert len(seen) == sum(LABELS.count(b) // global_batch * global_batch for b in "abc")


def test_the_sampler_resumes_at_the_exact_next_batch_and_reshuffles_each_epoch():
    full = _take(BucketBatchSampler(LABELS, 2, seed=3), 40)  # several epochs
    for start in (1, 7, 11, 23):
        assert _take(BucketBatchSampler(LABELS, 2, seed=3, start_batch=start), 10) == full[start : start + 10]
    per_epoch = BucketBatchSampler(LABELS, 2, seed=3).batches_per_epoch
    assert full[:per_epoch] != full[per_epoch : 2 * per_epoch]


def test_one_process_with_batch_2b_takes_what_two_with_batch_b_take():
    one = _take(BucketBatchSampler(LABELS, 4, seed=9), 6)
    two = [_take(BucketBatchSampler(LABELS, 2, rank=r, world_size=2, seed=9), 6) for r in (0, 1)]
    assert one == [two[0][k] + two[1][k] for k in range(6)]


def test_buckets_smaller_than_a_global_batch_are_named():
    sampler = BucketBatchSampler(LABELS, 3, world_size=2, seed=0)
    assert sampler.skipped() == {"c": 4}
    with pytest.raises(
        ValueError,
        match=r"no bucket holds a global batch of data.batch_size=8 x 2 process\(es\) "
        r"\(clips per bucket: a: 11, b: 8, c: 4\)",
    ):
        BucketBatchSampler(LABELS, 8, world_size=2)


def test_one_window_of_each_clip_per_epoch_a_new_draw_each_epoch():
    """data.window=random: the 3 cached windows of a clip form a group; an epoch trains each clip once through one
    of its windows, and over epochs every window comes up."""
    buckets = ["a"] * 12  # 4 clips x 3 windows
    groups = [i // 3 for i in range(12)]
    sampler = BucketBatchSampler(buckets, 2, groups=groups, seed=1)
    assert sampler.batches_per_epoch == 2
    seen_windows = set()
    for epoch in range(8):
        drawn = [
            i for b in _take(BucketBatchSampler(buckets, 2, groups=groups, seed=1, start_batch=2 * epoch), 2) for i in b
        ]
        assert sorted(groups[i] for i in drawn) == [0, 1, 2, 3]  # each clip once
        seen_windows.update(drawn)
    assert seen_windows == set(range(12))  # a new window per epoch, all of them in time
    assert _take(sampler, 16) == [
        b for e in range(8) for b in _take(BucketBatchSampler(buckets, 2, groups=groups, seed=1, start_batch=2 * e), 2)
    ]  # resumes at any epoch


def test_repeats_and_weights_set_each_datasets_share_of_an_epoch():
    buckets = ["a"] * 12  # dataset 0: clips 0-9, dataset 1: clips 10-11
    sources = [0] * 10 + [1] * 2
    repeated = BucketBatchSampler(buckets, 2, sources=sources, repeats=[1, 3], seed=0)
    epoch = [i for b in _take(repeated, repeated.batches_per_epoch) for i in b]
    assert len(epoch) == 16 and sorted(epoch)[10:] == [10, 10, 10, 11, 11, 11]  # small set three times, big once
    weighted = BucketBatchSampler(buckets, 2, sources=sources, weights=[1.0, 1.0], seed=0)
    epochs = [
        [
            i
            for b in _take(
                BucketBatchSampler(buckets, 2, sources=sources, weights=[1.0, 1.0], seed=0, start_batch=6 * e), 6
            )
            for i in b
        ]
        for e in range(4)
    ]
    assert weighted.batches_per_epoch == 6  # as many draws as clips: 12
    for drawn in epochs:  # half of each epoch's draws from each dataset
        assert sorted(i for i in drawn if i >= 10) == [10, 10, 10, 11, 11, 11]  # the small one cycled
        assert len({i for i in drawn if i < 10}) == 6  # the big one subsampled, no clip twice
    assert len({i for drawn in epochs for i in drawn if i < 10}) > 6  # a different subset each epoch
