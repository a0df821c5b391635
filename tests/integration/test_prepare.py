"""prepare: real decode (decord + PyAV) and real encoders; atomic, resumable, reports bad clips."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from ltx2train.data import cache
from ltx2train.data.cache import CachedDataset
from ltx2train.data.prepare import prepare


def _workspace_copy(tiny_workspace, tmp_path):
    """A fresh cache over the shared model and clips."""
    return tiny_config(tiny_workspace, tmp_path / "run", [f"data.cache_dir={tmp_path / 'cache'}"])


def test_cache_holds_normalised_latents_in_the_pipeline_geometry(tiny_workspace, tmp_path):
    cfg = tiny_config(tiny_workspace, tmp_path / "run")
    dataset = CachedDataset(cfg.data.cache_dir)
    stored = dataset[0]
    assert stored["text_video"].shape[0] == int(stored["text_attention_mask"].sum()) < 32  # real tokens only
    sample = {k: v[0] for k, v in dataset.collate([stored, dataset[1]]).items()}
    assert sample["video_latents"].shape == (8, 2, 2, 2)  # 9 frames -> 2 latent frames, 64 px -> 2
    assert sample["audio_latents"].shape == (2, 9, 4)  # round(9 / 24 s * 25) latent frames, 16 mel bins / 4
    assert sample["text_video"].shape == (32, 32)  # projected features, left-padded back to max_sequence_length
    assert "text_audio" not in sample  # LTX-2.0 projects once for both modalities
    mask = sample["text_attention_mask"]
    assert mask[0] == 0 and mask[-1] == 1 and torch.all(sample["text_video"][mask == 0] == 0)
    assert torch.equal(sample["text_video"][mask == 1], stored["text_video"])
    captions = {s["caption"] for s in dataset.samples}
    assert len(captions) > 1  # real per-clip captions


def test_cached_text_gives_the_inference_conditioning_exactly(tiny_workspace, tmp_path):
    """Cache (projected real tokens, re-padded) + connectors in the step == the pipeline's full connectors."""
    from ltx2train.models.loading import load_component
    from ltx2train.models.text_encoder import ProjectedText, apply_connectors, connect_text, load_text_encoder

    cfg = tiny_config(tiny_workspace, tmp_path / "run")
    dataset = CachedDataset(cfg.data.cache_dir)
    connectors = load_component("tiny", "connectors", cfg.model.checkpoint)
    gemma = load_text_encoder(cfg.model.text_encoder, dtype=torch.float32, max_sequence_length=32)
    batch = dataset.collate([dataset[0], dataset[3]])
    captions = [dataset.samples[0]["caption"], dataset.samples[3]["caption"]]
    with torch.no_grad():
        cached = connect_text(connectors, ProjectedText(batch["text_video"], None, batch["text_attention_mask"]))
        fresh = apply_connectors(connectors, gemma.encode(captions))
    assert torch.equal(cached.video, fresh.video) and torch.equal(cached.audio, fresh.audio)


def test_interrupted_prepare_resumes_without_reencoding_finished_samples(tiny_workspace, tmp_path):
    cfg = _workspace_copy(tiny_workspace, tmp_path)

    def interrupt_after_two(index):
        if index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare(cfg, on_sample=interrupt_after_two)
    done = sorted(p for p in (tmp_path / "cache" / "samples").iterdir())
    assert [p.name for p in done] == ["000000.safetensors", "000001.safetensors"]  # no temp leftovers
    stamps = {p.name: p.stat().st_mtime_ns for p in done}

    encoded = []
    report = prepare(cfg, on_sample=encoded.append)
    assert report.skipped == [0, 1] and encoded == [2, 3, 4, 5] and not report.rejected
    assert {p.name: p.stat().st_mtime_ns for p in done} == stamps
    assert len(CachedDataset(cfg.data.cache_dir)) == 6


def test_bad_clips_are_reported_and_skipped_good_ones_kept(tiny_workspace, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_workspace / "data", data)
    (data / "clips" / "clip_001.mp4").write_bytes(b"not a video at all")
    lines = (data / "metadata.jsonl").read_text().splitlines()
    lines.append(json.dumps({"video": "clips/missing.mp4", "caption": "a red box"}))
    (data / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [f"data.cache_dir={tmp_path / 'cache'}", f"data.metadata={data / 'metadata.jsonl'}"],
    )
    report = prepare(cfg)
    rejected = {f["index"]: f["reason"] for f in report.rejected}
    assert set(rejected) == {1, 6} and "clip_001.mp4" in rejected[1] and "missing.mp4" in rejected[6]
    assert [f["path"] for f in report.rejected] == ["clips/clip_001.mp4", "clips/missing.mp4"]  # as written
    assert sorted(report.encoded) == [0, 2, 3, 4, 5]
    manifest = cache.read_manifest(tmp_path / "cache")
    assert [s["index"] for s in manifest["samples"]] == [0, 2, 3, 4, 5] and manifest["rejected"] == report.rejected
    rejects = [json.loads(line) for line in (tmp_path / "cache" / "rejects.jsonl").read_text().splitlines()]
    assert rejects == report.rejected


def test_a_cache_made_with_other_settings_is_refused(tiny_workspace, tmp_path):
    cfg = tiny_config(tiny_workspace, tmp_path / "run", ["data.num_frames=17"])
    with pytest.raises(ValueError, match="buckets: cache has .64x64x9., recipe has .64x64x17."):
        prepare(cfg)


def test_a_cache_of_another_format_is_refused(tiny_workspace, tmp_path):
    cfg = _workspace_copy(tiny_workspace, tmp_path)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "manifest.json").write_text(json.dumps({"format_version": 1, "settings": {}, "samples": []}))
    with pytest.raises(ValueError, match="has format 1"):
        prepare(cfg)
    with pytest.raises(ValueError, match="has format 1"):
        CachedDataset(tmp_path / "cache")


def test_shards_write_the_manifest_of_one_prepare_once_every_part_is_done(tiny_workspace, tmp_path):
    """``prepare --shard k/N`` (a job array's task): its clips only; the part that completes the split writes
    the manifest, which equals a single prepare's; a part done against other metadata does not count."""
    from ltx2train.data.shards import Shard

    cfg = _workspace_copy(tiny_workspace, tmp_path)
    single = cache.read_manifest(tiny_config(tiny_workspace, tmp_path / "run").data.cache_dir)
    first = prepare(cfg, shard=Shard(1, 2))
    assert first.encoded == [1, 3, 5] and not first.manifest
    assert cache.read_manifest(cfg.data.cache_dir) is None  # not before every part is done
    second = prepare(cfg, shard=Shard.parse("0/2"))
    assert second.encoded == [0, 2, 4] and second.manifest
    assert cache.read_manifest(cfg.data.cache_dir) == single

    # the metadata changes (a clip dropped): part 1's marker is of the old split; part 0 alone completes nothing
    metadata = tmp_path / "metadata.jsonl"
    metadata.write_text("".join(open(cfg.data.metadata).readlines()[:5]))
    shrunk = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            f"data.cache_dir={tmp_path / 'cache'}",
            f"data.metadata={metadata}",
            f"data.root={Path(cfg.data.metadata).parent}",
        ],
    )
    again = prepare(shrunk, shard=Shard(0, 2))
    assert again.encoded == [] and again.skipped == [0, 2, 4] and not again.manifest
    assert prepare(shrunk, shard=Shard(1, 2)).manifest
    assert [s["index"] for s in cache.read_manifest(cfg.data.cache_dir)["samples"]] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("text", ["2/2", "1", "a/b", "-1/2"])
def test_a_bad_shard_is_a_clear_error(text):
    from ltx2train.data.shards import Shard

    with pytest.raises(ValueError, match="--shard"):
        Shard.parse(text)


def _clip_with_a_red_square(path, height, width, frames=17, fps=24.0, square_x=0.9):
    """A dark clip with a red square centred at ``square_x`` of the width (the captioned subject) and a tone."""
    import numpy as np

    from ltx2train.data.media import write_video_with_audio

    video = np.full((frames, height, width, 3), 20, np.uint8)
    side, cx, cy = height // 4, int(square_x * width), height // 2
    video[:, cy - side // 2 : cy + side // 2, cx - side // 2 : cx + side // 2] = (230, 20, 20)
    t = np.arange(int(frames / fps * 16000) + 1600) / 16000
    audio = np.stack([0.2 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
    return write_video_with_audio(path, video, fps, audio)


DYNAMIC = ["data.height=null", "data.width=null", f"data.max_pixels={96 * 96}", "data.frame_buckets=[9, 17]"]


def test_dynamic_resolution_keeps_each_clips_aspect_ratio_and_its_subject(tiny_workspace, tmp_path):
    """data.height/width null: a 3:1 clip, a 16:9 one (1920x1088 scaled down) and a square one each get the bucket
    of their aspect ratio, with the subject near the edge still in every frame; a fixed square crop loses it."""
    from ltx2train.data.encode import choose_bucket, clip_pixels
    from ltx2train.data.prepare import settings_from_config
    from ltx2train.data.metadata import read_metadata

    clips = {"wide": (64, 192), "hd": (68, 120), "square": (96, 96)}  # 3:1, 1920x1088 / 16, 1:1
    rows = [
        {
            "video": str(_clip_with_a_red_square(tmp_path / f"{name}.mp4", h, w, frames=21 if name == "hd" else 11)),
            "caption": f"a red square at the right edge ({name})",
        }
        for name, (h, w) in clips.items()
    ]
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [f"data.cache_dir={tmp_path / 'cache'}", f"data.metadata={tmp_path / 'meta.jsonl'}", *DYNAMIC],
    )
    settings = settings_from_config(cfg)
    records = read_metadata(cfg.data.metadata).records
    chosen = [choose_bucket(r, settings) for r in records]
    assert [b.name for b in chosen] == ["32x96x9", "64x128x17", "96x96x9"]  # 3:1; 16:9 -> 2:1 at 96*96 px; 1:1
    for record, bucket in zip(records, chosen):
        pixels = clip_pixels(record, settings, bucket)
        red = (pixels[0] > 0.5) & (pixels[1] < -0.5)  # (F, H, W)
        assert red.flatten(1).any(1).all(), f"{record.video.name}: the subject left the frame"
    fixed = settings_from_config(tiny_config(tiny_workspace, tmp_path / "run", ["data.height=64", "data.width=64"]))
    square = clip_pixels(records[0], fixed, choose_bucket(records[0], fixed))
    assert not ((square[0] > 0.5) & (square[1] < -0.5)).any()  # the old centre crop of the wide clip: no subject

    report = prepare(cfg)
    assert sorted(report.encoded) == [0, 1, 2]
    dataset = CachedDataset(cfg.data.cache_dir)
    assert dataset.buckets == ["32x96x9", "64x128x17", "96x96x9"]
    for i, bucket in enumerate(chosen):  # latents: /32 in space, (F - 1) / 8 + 1 in time
        assert tuple(dataset[i]["video_latents"].shape[1:]) == (
            (bucket.frames - 1) // 8 + 1,
            bucket.height // 32,
            bucket.width // 32,
        )
        assert dataset[i]["audio_latents"].shape[1] == round(bucket.frames / 24 * 25)


def test_prepare_exit_codes_say_what_was_kept_and_decoder_noise_goes_into_the_reason(tiny_workspace, tmp_path, capfd):
    """`ltx2train prepare`: 4 when some rows were rejected (the rest cached), 5 when nothing was kept; what ffmpeg
    printed about a broken file is in its reason, not on the terminal."""
    from ltx2train import cli
    from ltx2train.config import save_config

    data = tmp_path / "data"
    shutil.copytree(tiny_workspace / "data", data)
    clip = data / "clips" / "clip_002.mp4"
    clip.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])  # truncated: no moov atom
    rows = (data / "metadata.jsonl").read_text().splitlines()
    (data / "two.jsonl").write_text("\n".join([rows[0], rows[2]]) + "\n")
    (data / "bad.jsonl").write_text(rows[2] + "\n" + json.dumps({"video": "clips/clip_000.mp4", "caption": ""}) + "\n")
    (data / "empty.jsonl").write_text("")

    def run(metadata, cache_name):
        cfg = tiny_config(
            tiny_workspace,
            tmp_path / "run",
            [f"data.cache_dir={tmp_path / cache_name}", f"data.metadata={data / metadata}"],
        )
        code = cli.main(["prepare", str(save_config(cfg, tmp_path / f"{cache_name}.yaml"))])
        return code, capfd.readouterr()

    code, out = run("two.jsonl", "c1")
    assert code == 4
    assert "1 kept (1 encoded, 0 already cached), 1 rejected" in out.out
    assert f"rejects: {tmp_path / 'c1' / 'rejects.jsonl'}" in out.out
    (reject,) = [json.loads(line) for line in (tmp_path / "c1" / "rejects.jsonl").read_text().splitlines()]
    assert reject["path"] == "clips/clip_002.mp4" and "moov atom not found" in reject["reason"]
    assert "moov atom" not in out.err.replace(reject["reason"], "")  # only inside our one line, not ffmpeg's own
    code, out = run("bad.jsonl", "c2")
    assert code == 5 and "nothing was kept" in out.err and "empty caption" in out.out
    code, out = run("empty.jsonl", "c3")
    assert code == 5 and "0 kept" in out.out and "Traceback" not in out.err


def test_a_clip_without_audio_trains_its_video_and_short_audio_is_masked_not_silence(tiny_workspace, tmp_path):
    """No audio stream: kept, every audio latent frame out of the loss; audio lasting half the window: the second
    half out of the loss; the strategy gives those tokens no gradient."""
    import numpy as np

    from ltx2train.data.media import write_video_with_audio
    from ltx2train.training.strategies import build_strategy

    frames = np.full((17, 64, 64, 3), 90, np.uint8)
    t = np.arange(int(9 / 24 * 16000 / 2)) / 16000  # half of the recipe's 9-frame window
    half = np.stack([0.3 * np.sin(2 * np.pi * 330 * t)] * 2).astype(np.float32)
    clips = {
        "mute": write_video_with_audio(tmp_path / "mute.mp4", frames, 24.0, None),
        "short": write_video_with_audio(tmp_path / "short.mp4", frames, 24.0, half),
    }
    (tmp_path / "meta.jsonl").write_text(
        "".join(json.dumps({"video": str(p), "caption": f"a grey {n} clip"}) + "\n" for n, p in clips.items())
    )
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [f"data.cache_dir={tmp_path / 'cache'}", f"data.metadata={tmp_path / 'meta.jsonl'}"],
    )
    report = prepare(cfg)
    assert sorted(report.encoded) == [0, 1] and not report.rejected
    manifest = cache.read_manifest(cfg.data.cache_dir)
    assert [s["audio"] for s in manifest["samples"]] == ["none", "partial"]
    dataset = CachedDataset(cfg.data.cache_dir)
    mute, short = dataset[0]["audio_valid"], dataset[1]["audio_valid"]
    length = dataset[0]["audio_latents"].shape[1]
    assert mute.shape == (length,) and mute.sum() == 0
    real = int(short.sum())
    assert short[:real].all() and not short[real:].any() and abs(real - length / 2) <= 1  # half, to a latent frame

    from ltx2train.models.loading import load_component
    from ltx2train.models.text_encoder import ProjectedText, connect_text

    batch = dataset.collate([dataset[0], dataset[1]])
    connectors = load_component(cfg.model.variant, "connectors", cfg.model.checkpoint)
    with torch.no_grad():  # the text context as the training step builds it
        context = connect_text(
            connectors, ProjectedText(batch["text_video"], batch.get("text_audio"), batch["text_attention_mask"])
        )
    inputs = build_strategy(cfg).inputs(batch, context, generator=torch.Generator().manual_seed(0))
    strategy = build_strategy(cfg)
    assert inputs.audio_loss_mask[0].sum() == 0 and int(inputs.audio_loss_mask[1].sum()) == real
    video_pred = torch.zeros_like(inputs.video_target, requires_grad=True)
    audio_pred = torch.zeros_like(inputs.audio_target, requires_grad=True)
    loss, _ = strategy.loss(video_pred, audio_pred, inputs)
    loss.backward()
    assert audio_pred.grad[0].abs().sum() == 0 and audio_pred.grad[1, real:].abs().sum() == 0
    assert audio_pred.grad[1, :real].abs().sum() > 0 and video_pred.grad[0].abs().sum() > 0  # its video trains


def _png(path, height, width):
    import av
    import numpy as np

    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 150, np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def test_images_are_one_frame_clips_that_train(tiny_workspace, tmp_path):
    """With 1 among data.frame_buckets an image row becomes a 1-frame sample (no audio: its audio out of the
    loss) next to the videos, and training takes both."""
    from ltx2train.training.trainer import Trainer

    rows = (tiny_workspace / "data" / "metadata.jsonl").read_text().splitlines()[:2]
    rows = [json.loads(r) for r in rows]
    for row in rows:
        row["video"] = str(tiny_workspace / "data" / row["video"])
    rows.append({"video": str(_png(tmp_path / "still.png", 64, 64)), "caption": "a still grey picture"})
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = [
        f"data.cache_dir={tmp_path / 'cache'}",
        f"data.metadata={tmp_path / 'meta.jsonl'}",
        "data.frame_buckets=[1, 9]",
        "validation.prompts=[]",
        "validation.loss_sigmas=[]",
    ]
    cfg = tiny_config(tiny_workspace, tmp_path / "run", [*common, "train.max_steps=6", "train.checkpoint_every=0"])
    report = prepare(cfg)
    assert sorted(report.encoded) == [0, 1, 2] and not report.rejected
    dataset = CachedDataset(cfg.data.cache_dir)
    assert dataset.buckets == ["64x64x9", "64x64x9", "64x64x1"]
    still = dataset[2]
    assert still["video_latents"].shape[1:] == (1, 2, 2) and not still["audio_valid"].any()
    result = Trainer(cfg, log=lambda _: None).train()
    assert len(result.losses) == 6 and all(torch.isfinite(torch.tensor([loss for _, loss in result.losses])))


def test_spread_windows_make_several_samples_from_one_long_clip(tiny_workspace, tmp_path):
    """data.window=spread: a 2.5 s clip at 9 frames (0.375 s) per window gives max_windows=4 evenly spaced
    samples, 0 to the end, each from its own part of the clip (video and audio)."""
    import numpy as np

    from ltx2train.data.media import write_video_with_audio
    from ltx2train.data.metadata import read_metadata
    from ltx2train.data.encode import choose_bucket, clip_pixels, window_starts
    from ltx2train.data.prepare import settings_from_config

    video = np.stack([np.full((64, 64, 3), 10 + 3 * k, np.uint8) for k in range(60)])  # brightness = time
    t = np.arange(int(2.5 * 16000) + 1600) / 16000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 300 * t)] * 2).astype(np.float32)
    path = write_video_with_audio(tmp_path / "long.mp4", video, 24.0, audio)
    (tmp_path / "meta.jsonl").write_text(json.dumps({"video": str(path), "caption": "a slow fade"}) + "\n")
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [f"data.cache_dir={tmp_path / 'cache'}", "data.window=spread", f"data.metadata={tmp_path / 'meta.jsonl'}"],
    )
    settings = settings_from_config(cfg)
    (record,) = read_metadata(cfg.data.metadata).records
    bucket = choose_bucket(record, settings)
    starts = window_starts(record, settings, bucket)
    assert starts == pytest.approx([0.0, 0.7083, 1.4167, 2.125], abs=2e-3)
    for start in starts:  # each window's first frame is the source frame at its start
        first = clip_pixels(record, settings, bucket, start_s=start)[:, 0].mean()
        assert float((first + 1) * 127.5) == pytest.approx(10 + 3 * round(start * 24), abs=3)
    report = prepare(cfg)
    assert report.encoded == [0]
    manifest = cache.read_manifest(cfg.data.cache_dir)
    assert [(s["index"], s["window"]) for s in manifest["samples"]] == [(0, 0), (0, 1), (0, 2), (0, 3)]
    dataset = CachedDataset(cfg.data.cache_dir)
    assert len(dataset) == 4 and all(dataset[i]["audio_valid"].all() for i in range(4))
    latents = [dataset[i]["video_latents"] for i in range(4)]
    assert all(not torch.equal(latents[0], x) for x in latents[1:])  # four different parts of the clip
    assert prepare(cfg).skipped == [0]  # complete: rerun skips it


def test_a_cache_of_other_weights_is_refused_and_overwrite_rebuilds_it(tiny_workspace, tmp_path, capsys):
    """The manifest records the fingerprints of the VAEs, the text projection and Gemma; prepare into it or train
    on it with other weights is a clear error naming the component; `prepare --overwrite` rebuilds."""
    from ltx2train import cli
    from ltx2train.config import save_config
    from ltx2train.models.tiny import write_tiny_checkpoint
    from ltx2train.training.trainer import Trainer

    cfg = _workspace_copy(tiny_workspace, tmp_path)
    prepare(cfg)
    made = cache.read_manifest(cfg.data.cache_dir)["produced_by"]
    assert sorted(made) == [
        "audio_vae_encoder",
        "connectors",
        "ltx2train",
        "text_encoder",
        "variant",
        "version",
        "video_vae_encoder",
    ]
    other = write_tiny_checkpoint(tmp_path / "other_model", seed=1)
    swapped = tiny_config(
        tiny_workspace, tmp_path / "run", [f"data.cache_dir={tmp_path / 'cache'}", f"model.checkpoint={other}"]
    )
    with pytest.raises(
        ValueError,
        match=r"made with other weights \(video_vae_encoder: cache [0-9a-f]+, recipe "
        r"[0-9a-f]+; audio_vae_encoder: .*connectors: .*--overwrite",
    ):
        prepare(swapped)
    with pytest.raises(ValueError, match="made with other weights"):
        Trainer(swapped, log=lambda _: None).setup()
    recipe = save_config(swapped, tmp_path / "swapped.yaml")
    assert cli.main(["prepare", str(recipe), "--overwrite"]) == 0
    assert "6 kept (6 encoded, 0 already cached)" in capsys.readouterr().out
    rebuilt = cache.read_manifest(cfg.data.cache_dir)["produced_by"]
    assert rebuilt["video_vae_encoder"] != made["video_vae_encoder"] and rebuilt["text_encoder"] == made["text_encoder"]
    assert cli.main(["prepare", str(recipe), "--overwrite", "--shard", "0/2"]) == 2  # would race the other tasks


def _wav(path, wave, sample_rate=16000):
    """A PCM wav file of float (channels, samples) audio."""
    import av
    import numpy as np

    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate, layout="stereo")
        pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)  # packed s16: interleaved
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm), format="s16", layout="stereo")
        frame.sample_rate = sample_rate
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def test_columns_and_extras_external_audio_images_reference_first_frame_and_empty_prompt(tiny_workspace, tmp_path):
    """audio / image / reference_video columns and data.extras: a mute video takes its row's wav (the same
    latents as a video carrying that audio); an image row becomes a 1-frame clip; the reference video is encoded
    over the same window at half the bucket's size; the first frame alone; the empty caption once per cache.
    A missing reference or audio file rejects its row with the path."""
    import numpy as np

    from ltx2train.data.media import write_video_with_audio
    from ltx2train.data.encode import encode_caption, encode_video
    from ltx2train.data.encoders import load_encoders

    frames = np.stack([np.full((64, 64, 3), 20 + 8 * k, np.uint8) for k in range(17)])
    t = np.arange(16000) / 16000
    tone = np.stack([0.3 * np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)
    write_video_with_audio(tmp_path / "mute.mp4", frames, 24.0, None)
    voiced = write_video_with_audio(tmp_path / "voiced.mp4", frames, 24.0, tone)
    depth = write_video_with_audio(tmp_path / "depth.mp4", 255 - frames, 24.0, None)
    rows = [
        {"video": "mute.mp4", "sound": "tone.wav", "ref": "depth.mp4", "caption": "a fade with a tone"},
        {"video": str(voiced), "ref": str(depth), "caption": "the same fade, its own audio"},
        {"video": "", "still": "still.png", "ref": "still.png", "caption": "a still"},
        {"video": "mute.mp4 ", "ref": "missing.mp4", "caption": "a duplicate"},
        {"video": str(voiced.with_name("v2.mp4")), "sound": "gone.wav", "ref": "depth.mp4", "caption": "x"},
    ]
    _wav(tmp_path / "tone.wav", tone)
    _png(tmp_path / "still.png", 64, 64)
    shutil.copy(voiced, voiced.with_name("v2.mp4"))
    (tmp_path / "meta.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            f"data.cache_dir={tmp_path / 'cache'}",
            f"data.metadata={tmp_path / 'meta.jsonl'}",
            "data.audio_column=sound",
            "data.image_column=still",
            "data.reference_video_column=ref",
            "data.frame_buckets=[1,9]",
            "data.extras=[first_frame,reference,empty_prompt]",
            "data.reference_downscale=2",
        ],
    )
    report = prepare(cfg)
    assert report.encoded == [0, 1, 2]
    reasons = {r["index"]: r["reason"] for r in report.rejected}
    assert "duplicate" in reasons[3] and "gone.wav: file does not exist" in reasons[4]
    dataset = CachedDataset(cfg.data.cache_dir)
    external, own, still = (dataset[i] for i in range(3))
    assert external["audio_valid"].all()  # the mute video's audio: the wav (AAC in the other: close, not equal)
    assert (external["audio_latents"] - own["audio_latents"]).abs().max() < 0.1
    assert still["video_latents"].shape == (8, 1, 2, 2) and still["reference_latents"].shape == (8, 1, 1, 1)
    assert own["reference_latents"].shape == (8, 2, 1, 1)  # 9 frames at 32x32
    encoders = load_encoders(cfg)
    settings = cache.read_manifest(cfg.data.cache_dir)["settings"]
    assert settings["extras"] == "empty_prompt,first_frame,reference" and settings["reference_downscale"] == 2
    from ltx2train.data.encode import clip_pixels, reference_pixels
    from ltx2train.data.prepare import settings_from_config
    from ltx2train.data.buckets import Bucket
    from ltx2train.data.metadata import read_metadata, Columns

    record = read_metadata(cfg.data.metadata, columns=Columns.of(cfg.data)).records[1]
    s, bucket = settings_from_config(cfg), Bucket(64, 64, 9)
    first = encode_video(encoders.video_vae, clip_pixels(record, s, bucket)[:, :1])
    assert torch.equal(own["first_frame_latents"], first)
    reference = reference_pixels(record, s, bucket)
    assert reference.shape == (3, 9, 32, 32) and float(reference[:, 0].mean()) > 0.5  # 255 - 20: the depth clip
    assert torch.equal(own["reference_latents"], encode_video(encoders.video_vae, reference))
    empty = dataset.empty_prompt()
    fresh = cache.pad_text(encode_caption(encoders, "", s), cfg.data.max_sequence_length)
    assert torch.equal(empty["text_video"], fresh["text_video"]) and empty["text_attention_mask"].sum() >= 1


def test_random_windows_are_distinct_reproducible_starts_grouped_as_one_clip(tiny_workspace, tmp_path):
    """data.window=random: max_windows windows at distinct starting frames of the target rate, the same on every
    prepare of that clip, cached as one clip's group (an epoch trains one of them: see test_buckets)."""
    import numpy as np

    from ltx2train.data.media import write_video_with_audio
    from ltx2train.data.metadata import read_metadata
    from ltx2train.data.encode import choose_bucket, window_starts
    from ltx2train.data.prepare import settings_from_config

    video = np.stack([np.full((64, 64, 3), 10 + 3 * k, np.uint8) for k in range(60)])
    path = write_video_with_audio(tmp_path / "long.mp4", video, 24.0, None)
    (tmp_path / "meta.jsonl").write_text(json.dumps({"video": str(path), "caption": "a slow fade"}) + "\n")
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.window=random",
            "data.max_windows=3",
            f"data.metadata={tmp_path / 'meta.jsonl'}",
        ],
    )
    settings = settings_from_config(cfg)
    (record,) = read_metadata(cfg.data.metadata).records
    bucket = choose_bucket(record, settings)
    starts = window_starts(record, settings, bucket)
    span = 60 / 24 - 9 / 24
    assert len(set(starts)) == 3 and starts == sorted(starts) and all(0 <= s <= span for s in starts)
    assert all(abs(s * 24 - round(s * 24)) < 1e-4 for s in starts)  # on frames of the target rate
    assert window_starts(record, settings, bucket) == starts
    assert starts != [0.0, span / 2, span]  # not spread
    prepare(cfg)
    dataset = CachedDataset(cfg.data.cache_dir)
    assert len(dataset) == 3 and len(set(dataset.groups)) == 1
    means = [float(dataset[i]["video_latents"].mean()) for i in range(3)]
    assert len(set(means)) == 3  # three different parts of the clip


def test_prepare_shows_a_progress_bar_on_a_terminal_and_none_in_a_log(tiny_workspace, tmp_path, capfd):
    """stderr a terminal (a pty): a bar per clip with kept/rejected counts; redirected to a file: no bar."""
    import os
    import pty
    import subprocess
    import sys

    from ltx2train.config import save_config

    rows = (tiny_workspace / "data" / "metadata.jsonl").read_text().splitlines()[:2]
    (tmp_path / "meta.jsonl").write_text("\n".join(rows) + "\n")

    def config(name):
        return tiny_config(
            tiny_workspace,
            tmp_path / "run",
            [
                f"data.cache_dir={tmp_path / name}",
                f"data.metadata={tmp_path / 'meta.jsonl'}",
                f"data.root={tiny_workspace / 'data'}",
            ],
        )

    def run(name, stderr):
        recipe = save_config(config(name), tmp_path / f"{name}.yaml")
        return subprocess.run(
            [sys.executable, "-m", "ltx2train", "prepare", str(recipe)],
            stderr=stderr,
            stdout=subprocess.DEVNULL,
            timeout=300,
        )

    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal has a size
    assert run("tty", follower).returncode == 0
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the pty is closed once everything was read
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert b"prepare tty: 100%" in seen and b"2/2" in seen and b"kept=2, rejected=0" in seen
    assert len(prepare(config("log")).encoded) == 2  # stderr captured here: not a terminal
    assert "prepare log" not in capfd.readouterr().err


def test_gemma_is_freed_before_the_vaes_load(tiny_workspace, tmp_path, monkeypatch):
    """Phase 1 encodes every caption, then Gemma is gone (no reference left) when the VAEs are loaded; the
    captions' features wait in .prepare/text and are deleted once their clip is cached."""
    import gc
    import weakref

    from ltx2train.data import prepare as prepare_module

    cfg = _workspace_copy(tiny_workspace, tmp_path)
    alive = []
    load_text, load_media = prepare_module.load_text_encoders, prepare_module.load_media_encoders

    def text_encoders(*args, **kwargs):
        encoders = load_text(*args, **kwargs)
        alive.append(weakref.ref(encoders.text_encoder.model))
        return encoders

    def media_encoders(*args, **kwargs):
        gc.collect()
        assert alive and all(ref() is None for ref in alive), "Gemma still loaded when the VAEs load"
        parts = sorted((Path(cfg.data.cache_dir) / ".prepare" / "text").glob("*.safetensors"))
        assert len(parts) == 6  # every caption encoded first
        return load_media(*args, **kwargs)

    monkeypatch.setattr(prepare_module, "load_text_encoders", text_encoders)
    monkeypatch.setattr(prepare_module, "load_media_encoders", media_encoders)
    assert len(prepare(cfg).encoded) == 6
    assert not list((Path(cfg.data.cache_dir) / ".prepare" / "text").glob("*"))


def test_fp8_frozen_encoders_and_a_tiled_vae_prepare_a_cache_close_to_the_plain_one(tiny_workspace, tmp_path):
    """memory.fp8_frozen=[text_encoder, connectors, video_vae, audio_vae] + memory.tiled_vae: the same clips,
    every latent close to the plain cache's (the 64 px clips are below one tile: tiling changes nothing here; its
    bound on memory is tests/unit/test_memory_tiling.py)."""
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            f"data.cache_dir={tmp_path / 'cache'}",
            "memory.tiled_vae=true",
            "memory.fp8_frozen=[text_encoder,connectors,video_vae,audio_vae]",
        ],
    )
    assert len(prepare(cfg).encoded) == 6
    plain, fp8 = (
        CachedDataset(tiny_config(tiny_workspace, tmp_path / "run").data.cache_dir),
        CachedDataset(cfg.data.cache_dir),
    )
    for i in range(6):
        for key in ("video_latents", "audio_latents", "text_video"):
            a, b = plain[i][key], fp8[i][key]
            assert a.shape == b.shape
            assert (a - b).abs().max() < 0.25 * a.abs().max(), key  # FP8 weights: within a quarter of the range


def _model_with(tiny_workspace, tmp_path, names) -> Path:
    """A repackaged directory holding only ``names`` of the tiny model's files (and its Gemma directory)."""
    model = tmp_path / "model"
    model.mkdir(parents=True)
    for name in [*names, "gemma"]:
        (model / name).symlink_to(tiny_workspace / "model" / name)
    return model


def test_each_command_needs_only_the_files_it_uses(tiny_workspace, tmp_path):
    """prepare reads the VAE encoders (no decoder: the files DiffSynth's data-processing pass fetches), training
    from the cache the transformer and the connectors only; the cache records the encoders' fingerprints, the same
    whatever else the directory holds."""
    from ltx2train.training.trainer import Trainer

    encoders = _model_with(
        tiny_workspace,
        tmp_path / "a",
        ["text_encoder_post_modules.safetensors", "video_vae_encoder.safetensors", "audio_vae_encoder.safetensors"],
    )
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            f"model.checkpoint={encoders}",
            f"model.text_encoder={encoders / 'gemma'}",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )
    assert len(prepare(cfg).encoded) == 6
    made = cache.read_manifest(cfg.data.cache_dir)["produced_by"]
    full = cache.read_manifest(tiny_config(tiny_workspace, tmp_path).data.cache_dir)["produced_by"]
    assert all(made[k] == full[k] for k in ("video_vae_encoder", "audio_vae_encoder", "connectors"))
    assert all(
        torch.equal(
            CachedDataset(cfg.data.cache_dir)[i]["video_latents"],
            CachedDataset(tiny_config(tiny_workspace, tmp_path).data.cache_dir)[i]["video_latents"],
        )
        for i in range(2)
    )
    trains = _model_with(
        tiny_workspace, tmp_path / "b", ["transformer.safetensors", "text_encoder_post_modules.safetensors"]
    )
    run = tiny_config(
        tiny_workspace,
        tmp_path / "train",
        [
            f"model.checkpoint={trains}",
            "train.max_steps=2",
            f"data.cache_dir={tmp_path / 'cache'}",
            "validation.prompts=[]",
            "validation.every=0",
            "validation.at_start=false",
        ],
    )
    assert Trainer(run, log=lambda _: None).train().step == 2
