"""Resolution buckets (data/buckets.py) and the bucket-aware batch sampler (training/data.py)."""

import math

import pytest

from ltx2train.data.buckets import Bucket, assign, fit_area, generate

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


@pytest.mark.parametrize("text, problem", [("512x768x121", None), ("500x768x121", "multiples of 32"),
                                           ("512x768x120", "8k+1")])
def test_bucket_shapes_parse_and_are_checked(text, problem):
    bucket = Bucket.parse(text)
    assert bucket.name == text
    assert (bucket.problem() is None) if problem is None else (problem in bucket.problem())


def test_a_malformed_bucket_is_a_clear_error():
    with pytest.raises(ValueError, match="expected HEIGHTxWIDTHxFRAMES"):
        Bucket.parse("512x768")
