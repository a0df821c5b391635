"""launch/accelerate: the shipped accelerate configs start the processes they say, on CPU with gloo (the GPU
path is the same launcher with NCCL): one node x 2 processes, and 2 "nodes" (two launchers on this machine, machine
ranks 0 and 1) x 1 process. The recipe decides the precision; a different one in the config is named."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from ltx2train.config import save_config

pytestmark = pytest.mark.slow

CONFIGS = Path(__file__).resolve().parents[2] / "launch" / "accelerate"
TRAIN = [
    "train.max_steps=2",
    "train.checkpoint_every=2",
    "data.batch_size=1",
    "validation.at_start=false",
    "validation.every=0",
    "validation.prompts=[]",
    "validation.loss_sigmas=[]",
    "train.mixed_precision=no",
]


def _accelerate(config: str, port: int, recipe: Path, *flags: str) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS / config),
        "--main_process_port",
        str(port),
        *flags,
        "-m",
        "ltx2train",
        "train",
        str(recipe),
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


def test_the_one_node_config_starts_its_processes(tiny_workspace, tmp_path):
    recipe = save_config(tiny_config(tiny_workspace, tmp_path / "run", TRAIN), tmp_path / "recipe.yaml")
    out = _finish(_accelerate("one_node.yaml", 29671, recipe, "--num_processes", "2"))
    assert "2 process(es) (ddp)" in out and out.count("trained to step 2") == 1
    assert (
        "the launcher asks for mixed precision 'bf16' (accelerate config or --mixed_precision); the recipe's "
        "train.mixed_precision='no' is what runs"
    ) in out


def test_the_multi_node_config_joins_two_machines(tiny_workspace, tmp_path):
    recipe = save_config(tiny_config(tiny_workspace, tmp_path / "run", TRAIN), tmp_path / "recipe.yaml")
    nodes = [
        _accelerate(
            "multi_node.yaml",
            29672,
            recipe,
            "--num_machines",
            "2",
            "--num_processes",
            "2",
            "--machine_rank",
            str(rank),
            "--main_process_ip",
            "127.0.0.1",
        )
        for rank in (0, 1)
    ]
    first, second = (_finish(node) for node in nodes)
    assert "2 process(es) (ddp)" in first and "trained to step 2" in first
    assert "trained to step" not in second  # console lines once, from the global main process
    assert (tmp_path / "run" / "checkpoints" / "step_000002" / "lora.safetensors").is_file()
