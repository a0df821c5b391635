"""The benchmark suite runs (P1 step overhead, P2 data path, P3 memory estimate, P4 real-size step) on the tiny
model: each script completes and prints its ratios. Their numbers are not asserted -- benchmarks are not tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


RATIO = r"x\d+\.\d+"


@pytest.mark.slow
def test_p1_step_overhead_runs_on_tiny(tmp_path):
    out = _run(
        "step_overhead.py",
        "--workdir",
        str(tmp_path),
        "--cases",
        "tiny-lora",
        "tiny-full",
        "--steps",
        "2",
        "--rounds",
        "1",
    )
    for case in ("tiny-lora", "tiny-full"):
        assert re.search(rf"{case}: ours .* ms/step, bare .* ms/step, ours/bare {RATIO}", out), out
    assert re.search(rf"largest ours/bare: {RATIO}", out)


@pytest.mark.slow
def test_p2_data_path_runs_on_tiny(tmp_path):
    out = _run(
        "data_path.py",
        "--workdir",
        str(tmp_path),
        "--clips",
        "4",
        "--frames",
        "9",
        "--height",
        "64",
        "--width",
        "64",
        "--repeats",
        "1",
    )
    assert re.search(RATIO, out), out


@pytest.mark.slow
def test_p3_memory_estimate_vs_measured_runs_on_tiny():
    out = _run("memory.py", "--cases", "tiny-lora")
    assert "tiny-lora" in out and re.search(r"\d\.\d{2,}", out), out


@pytest.mark.slow
def test_p4_train_step_runs_every_mode_on_tiny():
    out = _run(
        "train_step.py",
        "--variant",
        "tiny",
        "--height",
        "64",
        "--width",
        "64",
        "--frames",
        "9",
        "--text-tokens",
        "32",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--modes",
        "bf16,ckpt,fp8+ckpt,ckpt+swap1",
        "--layers",  # a shallower transformer than the variant's (it once crashed the build)
        "1",
    )
    assert "(1 blocks)" in out, out
    for method in ("lora", "full"):
        for mode in ("bf16", "ckpt", "ckpt+swap1"):
            assert re.search(rf"{method} +{re.escape(mode)}: [\d.]+ s/step \({RATIO}\), [\d,]+ video tokens/s", out), (
                out
            )
    assert re.search(r"lora +fp8\+ckpt: [\d.]+ s/step", out) and re.search(
        r"full +fp8\+ckpt: fp8 stores a frozen base", out
    )


@pytest.mark.slow
def test_p5_video_decode_runs_on_tiny():
    out = _run("video_decode.py", "--dry-run", "--repeats", "1")
    assert re.search(r"conv decoder: +[\d.]+ s/clip", out) and re.search(
        rf"diffusion decoder: +[\d.]+ s/clip \({RATIO} of conv\)", out
    ), out


@pytest.mark.slow
def test_p6_vram_limit_runs_on_tiny():
    out = _run("vram_limit.py", "--dry-run")
    assert re.search(r"vram_limit 2e-05 GB: 0/2 blocks resident", out) and re.search(r"vram_limit 1 GB: 2/2", out), out
