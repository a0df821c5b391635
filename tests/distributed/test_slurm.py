"""launch/slurm on a real Slurm cluster started on this machine (2 nodes on localhost, slurm-wlm + munge; see
tests/distributed/slurm_cluster.py): a 2-node x 1-process training job preempted with USR1 checkpoints, requeues itself
and resumes to the weights of an uninterrupted run; a job with a config error is not requeued; the prepare job
array writes the cache a single prepare writes, and a rerun skips every finished clip."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config
from ltx2train.config import save_config
from ltx2train.training import checkpoint as ckpt
from slurm_cluster import SlurmCluster, Unavailable

pytestmark = pytest.mark.slow

LAUNCH = Path(__file__).resolve().parents[2] / "launch" / "slurm"
STEPS = 200  # ~25 steps/s on the tiny model: long enough to be preempted twice
TRAIN = [
    f"train.max_steps={STEPS}",
    "train.checkpoint_every=100",
    "train.keep_last=10",
    "train.log_every=1",
    "data.batch_size=1",
    "validation.at_start=false",
    "validation.every=0",
    "validation.prompts=[]",
    "validation.loss_sigmas=[]",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
            yield running
    except Unavailable as exc:
        pytest.skip(f"no Slurm cluster on this machine: {exc}")


def _job_env():
    return {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "LTX2TRAIN_PYTHON": sys.executable}


def _steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if '"loss"' in line]


def _wait_for(condition, what: str, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(what)


def _preempt(cluster, job: str, run: Path, log: Path, after_step: int, how: str, restarts: int) -> None:
    """Once the run passed ``after_step``: USR1 to the job (``how``: full = batch shell + every process, as
    ``scancel --signal=USR1 --full``; batch = the batch shell alone, as Slurm's ``--signal=B:USR1@T`` before a
    time limit), then wait for the requeued job to run again (after the cluster's credential lifetime, 10 s here)."""
    _wait_for(lambda: _steps(run) and max(_steps(run)) > after_step, f"job {job} past step {after_step}: {log}")
    cluster.run(["scancel", "--signal=USR1", f"--{how}", job])
    _wait_for(
        lambda: cluster.job(job).get("Restarts") == str(restarts) and cluster.job(job)["JobState"] == "RUNNING",
        f"job {job} requeued and running again: {cluster.job(job)}",
    )


def test_a_preempted_job_checkpoints_requeues_and_resumes_to_the_uninterrupted_weights(
    cluster, tiny_workspace, tmp_path
):
    run, log = tmp_path / "run", tmp_path / "train.log"
    recipe = save_config(tiny_config(tiny_workspace, run, TRAIN), tmp_path / "recipe.yaml")
    job = cluster.sbatch(["--nodes=2", f"--output={log}", str(LAUNCH / "train.sbatch"), str(recipe)], _job_env())
    _preempt(cluster, job, run, log, after_step=3, how="full", restarts=1)
    first_stop = max(_steps(run))
    _preempt(cluster, job, run, log, after_step=first_stop + 3, how="batch", restarts=2)
    info = cluster.wait(job, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=600)
    text = log.read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "2", text[-3000:]

    # both runs stopped at a step boundary with a checkpoint, and the requeued runs resumed from it
    stops = [int(s) for s in re.findall(r"SIGUSR1 at step (\d+): checkpoint written", text)]
    assert len(stops) == 2 and stops[0] == first_stop and 3 < stops[0] < stops[1] < STEPS
    for stop in stops:
        assert f"resumed from {ckpt.checkpoint_dir(run, stop)} (step {stop})" in text
    assert text.count("stopped with a checkpoint: requeueing job") == 2
    assert "2 node(s) x 1 process(es), rendezvous 127.0.0.1:" in text
    assert _steps(run) == list(range(1, STEPS + 1))  # every step logged once across the three runs

    # the same recipe, uninterrupted, 2 processes: the same final LoRA, bit for bit
    reference = tmp_path / "reference"
    reference_recipe = save_config(tiny_config(tiny_workspace, reference, TRAIN), tmp_path / "reference.yaml")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29611",
            "-m",
            "ltx2train",
            "train",
            str(reference_recipe),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **_job_env()},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = load_file(str(ckpt.checkpoint_dir(run, STEPS) / "lora.safetensors"))
    theirs = load_file(str(ckpt.checkpoint_dir(reference, STEPS) / "lora.safetensors"))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_a_job_that_fails_with_a_config_error_is_not_requeued(cluster, tiny_workspace, tmp_path):
    log = tmp_path / "bad.log"
    recipe = save_config(tiny_config(tiny_workspace, tmp_path / "run", TRAIN), tmp_path / "recipe.yaml")
    job = cluster.sbatch(
        [f"--output={log}", str(LAUNCH / "train.sbatch"), str(recipe), "train.max_stpes=3"], _job_env()
    )
    info = cluster.wait(job, ("COMPLETED", "FAILED", "CANCELLED"), timeout=300)
    text = log.read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0" and info["Restarts"] == "0", text[-2000:]
    assert "did you mean 'train.max_steps'" in text and "not requeued" in text
    assert "Traceback" not in text


def test_the_prepare_array_writes_the_cache_of_one_prepare_and_a_rerun_skips_finished_clips(
    cluster, tiny_workspace, tmp_path
):
    single = tiny_config(tiny_workspace, tmp_path / "run")
    recipe = save_config(
        tiny_config(tiny_workspace, tmp_path / "run", [f"data.cache_dir={tmp_path / 'cache'}"]),
        tmp_path / "recipe.yaml",
    )

    def array(tag: str) -> list[str]:
        job = cluster.sbatch(
            ["--array=0-1", f"--output={tmp_path}/{tag}-%a.log", str(LAUNCH / "prepare.sbatch"), str(recipe)],
            _job_env(),
        )
        for task in ("0", "1"):
            info = cluster.wait(f"{job}_{task}", ("COMPLETED", "FAILED", "CANCELLED"), timeout=300)
            assert info["JobState"] == "COMPLETED", (tmp_path / f"{tag}-{task}.log").read_text()[-2000:]
        return [(tmp_path / f"{tag}-{task}.log").read_text() for task in ("0", "1")]

    logs = array("first")
    assert [
        re.search(r"prepare \(shard (\d)/2\): 3 kept \((\d+) encoded, (\d+) already cached\)", text).groups()
        for text in logs
    ] == [("0", "3", "0"), ("1", "3", "0")]  # 6 clips, index % 2
    assert sum("manifest written: every shard is done" in text for text in logs) >= 1
    ours, theirs = (
        json.loads((tmp_path / "cache" / "manifest.json").read_text()),
        json.loads((Path(single.data.cache_dir) / "manifest.json").read_text()),
    )
    assert ours == theirs
    for sample in theirs["samples"]:
        a = load_file(str(tmp_path / "cache" / sample["file"]))
        b = load_file(str(Path(single.data.cache_dir) / sample["file"]))
        assert a.keys() == b.keys()
        for k in a:  # the jobs run 1 thread, the reference prepare torch's default: reductions may round differently
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=f"{sample['file']}: {k}")

    logs = array("again")
    assert [re.search(r"(\d+) encoded, (\d+) already cached", text).groups() for text in logs] == [("0", "3")] * 2
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text()) == theirs
