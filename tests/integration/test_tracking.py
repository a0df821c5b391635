"""Tracking, throughput and model FLOPs: a tiny run logged to W&B (offline) and TensorBoard at once, every metric
key read back from each with its own reader, the validation media with their audio, the same run continued after a
resume; FLOPs counted from the architecture (attention included, extrapolated over blocks exactly)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from conftest import tiny_config

TRAIN_KEYS = {
    "loss",
    "video_loss",
    "audio_loss",
    "grad_norm",
    "lr",
    "step_time_s",
    "steps_per_s",
    "samples_per_s",
    "video_tokens_per_s",
    "audio_tokens_per_s",
    "tflops_per_device",
    "mfu",
    "peak_memory_mb",
}


def wandb_records(run_dir: Path) -> list:
    """Every record of a W&B offline run file (LevelDB-style log: 7-byte file header, 32 KiB blocks, each record
    a 7-byte header of crc32, length, type: 1 full, 2 first, 3 middle, 4 last), parsed as wandb's protobuf."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data, pos, records, partial = path.read_bytes(), 7, [], b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(partial + chunk if kind == 4 else chunk)
            records.append(record)
        partial = chunk if kind == 2 else partial + chunk if kind == 3 else b""
    return records


def wandb_history(run_dir: Path) -> dict[str, list]:
    """Logged key -> its values, in order (``_step`` included)."""
    out: dict[str, list] = {}
    for r in wandb_records(run_dir):
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                out.setdefault(item.key or "/".join(item.nested_key), []).append(json.loads(item.value_json))
    return out


def wandb_config(run_dir: Path) -> dict:
    out = {}
    for r in wandb_records(run_dir):
        if r.WhichOneof("record_type") == "config":
            out.update({u.key: json.loads(u.value_json) for u in r.config.update})
    return out


def tensorboard_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "audio": 0, "images": 0, "tensors": 0})
    events.Reload()
    return events


def has_audio_stream(path: Path) -> bool:
    import av

    with av.open(str(path)) as container:
        return len(container.streams.audio) == 1 and container.streams.audio[0].frames > 0


def test_tiny_run_logs_to_wandb_offline_and_tensorboard_and_resumes_the_same_run(tiny_workspace, tmp_path, monkeypatch):
    from ltx2train.training.trainer import Trainer

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("LTX2TRAIN_PEAK_TFLOPS", "0.001")  # a peak for the CPU, so that MFU is logged here too
    run = tmp_path / "run"
    overrides = [
        "train.checkpoint_every=1",
        "validation.every=0",
        "validation.steps=2",
        "validation.at_start=false",
        "validation.prompts=[a red circle moves right]",
        "tracker.backend=wandb,tensorboard",
        "tracker.mode=offline",
        "tracker.run_name=e2e",
        "train.log_every=1",
    ]
    result = Trainer(tiny_config(tiny_workspace, run, [*overrides, "train.max_steps=2"]), log=lambda _: None).train()
    (first,) = (run / "wandb").glob("offline-run-*")
    history = wandb_history(first)
    assert TRAIN_KEYS | {"val_loss"} <= set(history)
    assert any(k.startswith("loss_sigma_") for k in history)
    assert history["_step"][:2] == [1, 2]
    # throughput is consistent with the batches: 64x64x9 clips are 2x2x2 = 8 video tokens each
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "lr" in r]
    for row in train_rows:
        assert row["video_tokens_per_s"] / row["samples_per_s"] == pytest.approx(8.0)
        assert row["samples_per_s"] == pytest.approx(2 * row["steps_per_s"])  # batch 2, no accumulation
        assert row["mfu"] == pytest.approx(row["tflops_per_device"] / 0.001)
        assert row["tflops_per_device"] > 0
    # the validation clip with its audio, and the audio alone, captioned with the prompt
    (video,) = (first / "files" / "media" / "videos").rglob("*.mp4")
    assert has_audio_stream(video) and video.stat().st_size == result.samples[0].stat().st_size
    (wav,) = (first / "files" / "media" / "audio").rglob("*.wav")
    assert wav.stat().st_size > 44
    assert history["validation/video/captions"][0] == ["a red circle moves right"]
    assert history["validation/audio/captions"][0] == ["a red circle moves right"]
    # the resolved config and the data statistics
    config = wandb_config(first)
    assert config["train.max_steps"] == 2 and config["data.0.bucket.64x64x9"] == 6 and config["data.0.rejected"] == 0
    # TensorBoard: the same scalars, the audio and frames of the clip
    tb = tensorboard_events(run / "tensorboard" / "e2e")
    assert TRAIN_KEYS | {"val_loss"} <= set(tb.Tags()["scalars"])
    assert [e.step for e in tb.Scalars("loss")] == [1, 2]
    assert "validation/audio/0" in tb.Tags()["audio"] and "validation/frames/0" in tb.Tags()["images"]

    # Resumed from the step-1 checkpoint (step 2's deleted, as if the run died before it): the same W&B run id,
    # the same TensorBoard directory, step 2 logged once.
    import shutil

    shutil.rmtree(run / "checkpoints" / "step_000002")
    Trainer(tiny_config(tiny_workspace, run, [*overrides, "train.max_steps=3"]), log=lambda _: None).train()
    run_id = (run / "wandb_run_id").read_text().strip()
    runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(run_id) for r in runs)
    assert wandb_history(runs[-1])["_step"][:2] == [2, 3]
    tb = tensorboard_events(run / "tensorboard" / "e2e")
    assert [e.step for e in tb.Scalars("loss")] == [1, 2, 3]
    steps = [
        json.loads(line)["step"]
        for line in (run / "metrics.jsonl").read_text().splitlines()
        if "lr" in json.loads(line)
    ]
    assert steps == [1, 2, 3]


def test_tracker_backend_is_checked_and_tensorboard_names_its_extra(tiny_workspace, tmp_path):
    from ltx2train.config.schema import ConfigError

    with pytest.raises(
        ConfigError, match=r"tracker.backend: expected one of none \| wandb \| tensorboard, got 'tensorbord'"
    ):
        tiny_config(tiny_workspace, tmp_path / "run", ["tracker.backend=wandb,tensorbord"])
    with pytest.raises(ConfigError, match="'none' cannot be combined"):
        tiny_config(tiny_workspace, tmp_path / "run", ["tracker.backend=none,wandb"])


# ---------------------------------------------------------------------------------------------- FLOPs
def _tiny_spec(layers: int):
    from ltx2train.models.specs import ComponentSpec, load_variant

    spec = load_variant("tiny").component("transformer")
    return ComponentSpec(spec.name, spec.class_name, {**spec.config, "num_layers": layers})


def test_step_flops_extrapolate_over_blocks_exactly_and_count_attention(tiny_workspace, tmp_path):
    from torch.utils.flop_counter import FlopCounterMode

    from ltx2train.analysis import fake
    from ltx2train.analysis.flops import _register_cpu_attention, step_flops
    from ltx2train.analysis.tokens import Tokens

    cfg = tiny_config(tiny_workspace, tmp_path / "run")
    spec = _tiny_spec(3)
    counted = step_flops(cfg, spec, batch=2, video=8, audio=9, text=32)
    # the same count done directly on all three blocks
    _register_cpu_attention()
    mode = fake.fake_mode()
    module = fake.fake_parameters(
        fake.build_transformer(cfg, spec, frozen=torch.bfloat16, trained=torch.float32, fp8=False, num_layers=3), mode
    ).train()
    counter = FlopCounterMode(display=False)
    with mode:
        kwargs = fake.step_inputs(module, Tokens(2, 1, 1, 8, 9, 32, 24.0), torch.bfloat16)
        with counter, torch.autocast("cpu", dtype=torch.bfloat16):
            video, audio = module(**kwargs)
            (video.float().square().mean() + audio.float().square().mean()).backward()
    assert counted == counter.get_total_flops() > 0
    # attention is counted: video self-attention makes the FLOPs quadratic in the video tokens
    f1, f2, f3 = (step_flops(cfg, spec, batch=1, video=n, audio=9, text=32) for n in (64, 128, 192))
    assert f3 - 2 * f2 + f1 > 0
    # full fine-tuning adds the base's weight gradients (against a rank-1 LoRA, whose adapters cost next to nothing)
    lora = tiny_config(tiny_workspace, tmp_path / "run", ["lora.rank=1"])
    full = tiny_config(tiny_workspace, tmp_path / "run", ["train.method=full"])
    assert step_flops(full, spec, batch=2, video=8, audio=9, text=32) > step_flops(
        lora, spec, batch=2, video=8, audio=9, text=32
    )


def test_peak_flops_from_the_table_or_the_environment(monkeypatch):
    from ltx2train.analysis.flops import PEAK_BF16_FLOPS, peak_flops

    monkeypatch.delenv("LTX2TRAIN_PEAK_TFLOPS", raising=False)
    assert peak_flops(torch.device("cpu")) is None
    assert dict(PEAK_BF16_FLOPS)["H100"] == 989.4e12
    monkeypatch.setenv("LTX2TRAIN_PEAK_TFLOPS", "312")
    assert peak_flops(torch.device("cpu")) == 312e12
