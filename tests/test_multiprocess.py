"""Two real processes on CPU (gloo DDP via torchrun): data split, schedule length, one checkpoint."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import tiny_config
from ltx2train.config import save_config
from ltx2train.training import checkpoint as ckpt


@pytest.mark.slow
def test_two_processes_train_with_the_schedule_of_one(tiny_workspace, tmp_path):
    cfg = tiny_config(tiny_workspace, tmp_path / "run",
                      ["train.max_steps=4", "train.checkpoint_every=2", "train.log_every=1", "validation.prompts=[]",
                       "optimizer.warmup_steps=1", "data.batch_size=1"])
    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "ltx2train", "train", str(recipe)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]  # logged once, by the main process
    # Stepped once per optimizer step (not once per process): the cosine ends exactly at max_steps.
    expected = [cfg.optimizer.lr * 0.5 * (1 + math.cos(math.pi * (s - 1) / 3)) for s in (1, 2, 3, 4)]
    assert [m["lr"] for m in metrics] == pytest.approx(expected)
    last = ckpt.checkpoint_dir(tmp_path / "run", 4)
    assert (last / "rng_rank0.pt").is_file() and (last / "rng_rank1.pt").is_file()
    state = torch.load(last / ckpt.STATE_FILE, weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 4
    r0, r1 = (torch.load(last / f"rng_rank{r}.pt", weights_only=True)["torch"] for r in (0, 1))
    assert not torch.equal(r0, r1)  # each rank draws its own noise
