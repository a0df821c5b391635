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
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [
            "train.max_steps=4",
            "train.checkpoint_every=2",
            "train.log_every=1",
            "optimizer.warmup_steps=1",
            "data.batch_size=1",
            "validation.prompts=[a red circle moves right]",
            "validation.every=2",
            "validation.steps=2",
            "validation.at_start=false",
        ],
    )
    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "ltx2train",
            "train",
            str(recipe),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    # validation runs on the main process only while the other waits: one sample per validation step
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == [
        "step_000002_prompt0.mp4",
        "step_000004_prompt0.mp4",
    ]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    metrics = [m for m in logged if "lr" in m]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]  # logged once, by the main process
    assert [m["step"] for m in logged if "val_loss" in m] == [2, 4]
    # Stepped once per optimizer step (not once per process): the cosine ends exactly at max_steps.
    expected = [cfg.optimizer.lr * 0.5 * (1 + math.cos(math.pi * (s - 1) / 3)) for s in (1, 2, 3, 4)]
    assert [m["lr"] for m in metrics] == pytest.approx(expected)
    last = ckpt.checkpoint_dir(tmp_path / "run", 4)
    assert (last / "rng_rank0.pt").is_file() and (last / "rng_rank1.pt").is_file()
    state = torch.load(last / ckpt.STATE_FILE, weights_only=True)
    assert state["world_size"] == 2 and state["step"] == 4
    r0, r1 = (torch.load(last / f"rng_rank{r}.pt", weights_only=True)["torch"] for r in (0, 1))
    assert not torch.equal(r0, r1)  # each rank draws its own noise


@pytest.mark.slow
def test_two_processes_prepare_disjoint_halves_and_one_manifest(tiny_workspace, tmp_path):
    import shutil

    from ltx2train.data import cache

    data = tmp_path / "data"
    shutil.copytree(tiny_workspace / "data", data)
    (data / "clips" / "clip_003.mp4").write_bytes(b"corrupt")
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [f"data.cache_dir={tmp_path / 'cache'}", f"data.metadata={data / 'metadata.jsonl'}"],
    )
    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    # torchrun turns prepare's "some rows rejected" (4) into 1: the main process says it through the exit file
    exit_file = tmp_path / "exit.json"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "LTX2TRAIN_EXIT_FILE": str(exit_file)}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29518",
            "-m",
            "ltx2train",
            "prepare",
            str(recipe),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(exit_file.read_text())["exit_code"] == 4
    # rank 0 encodes clips 0, 2, 4; rank 1 encodes 1, 5 (3 is corrupt): one report, the main one, of every clip
    assert proc.stdout.count("prepare: ") == 1, proc.stdout
    assert "prepare: 5 kept (5 encoded, 0 already cached), 1 rejected" in proc.stdout, proc.stdout
    manifest = cache.read_manifest(tmp_path / "cache")
    assert [s["index"] for s in manifest["samples"]] == [0, 1, 2, 4, 5]
    assert [f["index"] for f in manifest["rejected"]] == [3] and "clip_003.mp4" in manifest["rejected"][0]["reason"]
    assert not list((tmp_path / "cache").glob(".*"))  # no temp or per-rank files left
    # again: nothing to encode, the same clips counted once each, the corrupt one still named
    again = subprocess.run(proc.args, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "prepare: 5 kept (0 encoded, 5 already cached), 1 rejected" in again.stdout, again.stdout


@pytest.mark.slow
def test_accelerate_cpu_launch_of_n_processes_is_reported_as_one(tiny_workspace, tmp_path):
    """`accelerate launch --cpu --num_processes 2` really starts one process: the run says so and names the
    command that starts two."""
    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        ["train.max_steps=1", "validation.prompts=[]", "validation.loss_sigmas=[]", "validation.at_start=false"],
    )
    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "2",
            "-m",
            "ltx2train",
            "train",
            str(recipe),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1 process(es)" in proc.stdout
    assert "started ONE process" in proc.stdout and "torchrun --nproc_per_node N" in proc.stdout


def _compare_replicas(rank: int, store: str, flip: bool, out: dict) -> None:
    import torch.distributed as dist

    from ltx2train.training.backends.collectives import disagreeing

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)  # the same tensors on both processes
    tensors = {"a": torch.randn(7, 5), "b": torch.randn(64).bfloat16(), "c": torch.arange(6)}
    if flip and rank == 1:  # one bit of one element: the lowest mantissa bit of b[40]
        words = tensors["b"].view(torch.int16)
        words[40] ^= 1
    out[rank] = disagreeing(tensors, torch.device("cpu"))
    dist.destroy_process_group()


@pytest.mark.parametrize("flip", [False, True])
def test_replicas_that_differ_by_one_bit_are_named_on_every_process(tmp_path, flip):
    """The check behind "N processes agree on ..." at each checkpoint, with a real two-process gloo group."""
    import torch.multiprocessing as mp

    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_compare_replicas, args=(str(tmp_path / "store"), flip, out), nprocs=2)
    assert dict(out) == ({0: ["b"], 1: ["b"]} if flip else {0: [], 1: []})
