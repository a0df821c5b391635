"""Step time and peak memory of each distributed backend against DDP, same model and global batch, measured
side by side in one run (ratios printed; nothing asserted). Not a test.

Each backend trains the same recipe for ``--steps`` steps on ``--nproc`` processes (CPU: gloo through
``ACCELERATE_USE_CPU=1 torchrun``; on a GPU node the same command uses NCCL); the figures are the trainer's own
``metrics.jsonl`` rows of the last logging window (``steps_per_s``; ``peak_memory_mb`` of global rank 0:
allocated GPU memory, or the process' peak RSS on CPU).

    python benchmarks/backends.py --workdir /tmp/bench            # tiny model, 2 CPU processes
    python benchmarks/backends.py --method full --steps 40
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BACKENDS = {
    "ddp": ["distributed.backend=ddp"],
    "fsdp2": ["distributed.backend=fsdp2"],
    "zero2": ["distributed.backend=deepspeed", "distributed.zero_stage=2"],
    "zero3": ["distributed.backend=deepspeed", "distributed.zero_stage=3"],
    "zero2_offload": [
        "distributed.backend=deepspeed",
        "distributed.zero_stage=2",
        "distributed.offload_optimizer=true",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="outputs/bench_backends")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--method", default="lora", choices=("lora", "full"))
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS))
    args = parser.parse_args()
    work = Path(args.workdir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not __import__("torch").cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "1"
    if not (work / "demo" / "run" / "config.yaml").is_file():  # the tiny model + a prepared cache, once
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ltx2train",
                "demo",
                "--output",
                str(work / "demo"),
                "train.max_steps=1",
                "validation.at_start=false",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
    recipe = work / "demo" / "run" / "config.yaml"
    results = {}
    for i, name in enumerate(args.backends):
        out = work / name
        overrides = [
            f"train.output_dir={out}",
            f"train.max_steps={args.steps}",
            f"train.log_every={args.steps // 2}",
            "train.checkpoint_every=0",
            "train.resume=none",
            "validation.prompts=[]",
            "validation.loss_sigmas=[]",
            "validation.at_start=false",
            f"train.method={args.method}",
            *BACKENDS[name],
        ]
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(args.nproc),
            "--master_port",
            str(29700 + i),
            "-m",
            "ltx2train",
            "train",
            str(recipe),
            *overrides,
        ]
        proc = subprocess.run(command, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}")
            continue
        last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "steps_per_s" in line][
            -1
        ]
        results[name] = (last["steps_per_s"], last["peak_memory_mb"])
    base_rate, base_mem = results.get("ddp", (None, None))
    print(f"{args.method}, {args.nproc} processes, {args.steps} steps (second half timed):")
    for name, (rate, mem) in results.items():
        ratio = f"time x{base_rate / rate:.2f}, peak memory x{mem / base_mem:.2f} vs ddp" if base_rate else ""
        print(f"  {name:14s} {1 / rate * 1000:8.1f} ms/step  peak {mem:8.0f} MB   {ratio}")


if __name__ == "__main__":
    main()
