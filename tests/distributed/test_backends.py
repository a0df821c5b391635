"""How training is distributed (distributed.backend): two real CPU processes (gloo, torchrun), the code path a
GPU cluster runs. FSDP2 and DeepSpeed ZeRO-2/3 (+ offload) must train what DDP trains, resume exactly after a
SIGKILL, and validate collectively without deadlock; FSDP2/DDP checkpoints reshard at another world size, a
DeepSpeed one says how it resumes."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import read_trained_state, tiny_config
from ltx2train.config import save_config
from ltx2train.models.loading import load_component
from ltx2train.training import checkpoint as ckpt

pytestmark = pytest.mark.slow

COMMON = [
    "train.max_steps=4",
    "train.checkpoint_every=2",
    "train.keep_last=5",
    "train.log_every=1",
    "data.batch_size=1",
    "validation.at_start=false",
    "validation.every=0",
    "validation.loss_sigmas=[0.5]",
    "validation.prompts=[]",
    "optimizer.warmup_steps=1",
]
_PORT = iter(range(29531, 29600))


def _command(recipe, overrides, nproc=2):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_port",
        str(next(_PORT)),
        "-m",
        "ltx2train",
        "train",
        str(recipe),
        *overrides,
    ]


def _env():
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}


def _train(workspace, out, overrides, nproc=2):
    recipe = save_config(tiny_config(workspace, out, [*COMMON, *overrides]), out.parent / f"{out.name}.yaml")
    proc = subprocess.run(_command(recipe, [], nproc), capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


BACKENDS = {  # name -> overrides
    "ddp": ["distributed.backend=ddp"],
    "fsdp2": ["distributed.backend=fsdp2"],
    "zero2": ["distributed.backend=deepspeed", "distributed.zero_stage=2"],
    "zero3_offload": [
        "distributed.backend=deepspeed",
        "distributed.zero_stage=3",
        "distributed.offload_optimizer=true",
    ],
    # ddp with the last block's weights in host memory (under full fine-tuning its gradients averaged by the swap)
    "ddp_swap": ["distributed.backend=ddp", "memory.block_swap=1", "train.gradient_checkpointing=true"],
}
RUNS = [
    ("lora", "ddp"),
    ("lora", "fsdp2"),
    ("lora", "zero2"),
    ("lora", "zero3_offload"),
    ("full", "ddp"),
    ("full", "fsdp2"),
    ("full", "zero2"),
    ("lora", "ddp_swap"),
    ("full", "ddp_swap"),
]
PROMPT = ["validation.prompts=[a red circle moves right]", "validation.steps=2"]


@pytest.fixture(scope="module")
def runs(tiny_workspace, tmp_path_factory):
    """LoRA and full fine-tuning, 4 steps on 2 processes, under each backend (LoRA validates with a prompt)."""
    root = tmp_path_factory.mktemp("backends")
    out = {}
    for method, backend in RUNS:
        run = root / f"{method}_{backend}"
        lr = "optimizer.lr=1e-3" if method == "full" else "optimizer.lr=2e-3"
        proc = _train(
            tiny_workspace,
            run,
            [f"train.method={method}", *BACKENDS[backend], lr, *(PROMPT if method == "lora" else [])],
        )
        out[method, backend] = (run, proc)
    return out


@pytest.mark.parametrize("method, backend", [r for r in RUNS if r[1] != "ddp"])
def test_each_backend_trains_what_ddp_trains(runs, method, backend):
    (ddp, _), (other, proc) = runs[method, "ddp"], runs[method, backend]
    assert f"2 process(es) ({BACKENDS[backend][0].split('=')[1]})" in proc.stdout
    assert proc.stdout.count("trained to step 4") == 1  # console lines once
    # Same data split, same noise per sample, same initialisation: the same losses and weights up to the order
    # of float reductions (measured on the LoRA: fsdp2 and ZeRO-2/3 within 8e-8 of ddp).
    a, b = _losses(ddp), _losses(other)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    assert [loss for _, loss in b] == pytest.approx([loss for _, loss in a], rel=1e-5)
    name = "lora.safetensors" if method == "lora" else "transformer.safetensors"
    x = load_file(str(ckpt.checkpoint_dir(ddp, 4) / name))
    y = load_file(str(ckpt.checkpoint_dir(other, 4) / name))
    assert x.keys() == y.keys()
    for key in x:
        torch.testing.assert_close(y[key], x[key], rtol=1e-4, atol=1e-6)
    # ranks agree: at each checkpoint (steps 2 and 4) the trained tensors every process holds in full (ddp, and
    # ZeRO-2's module copy; as many as the export holds) were compared bit for bit across the processes; sharded
    # ones (fsdp2, ZeRO-3) have one copy and nothing to compare
    for name, out in (("ddp", runs[method, "ddp"][1].stdout), (backend, proc.stdout)):
        counts = re.findall(r"2 processes agree on (\d+) replicated trained tensors", out)
        if name in ("ddp", "zero2", "ddp_swap"):
            assert len(counts) == 2 and len(set(counts)) == 1 and int(counts[0]) == len(x)
        else:
            assert counts == []
    # validation ran (collectively where the forward is sharded), logged and written once
    assert [
        json.loads(line)["step"] for line in (other / "metrics.jsonl").read_text().splitlines() if "val_loss" in line
    ] == [4]
    if method == "lora":
        assert sorted(p.name for p in (other / "samples").iterdir()) == ["step_000004_prompt0.mp4"]


def test_fsdp2_checkpoint_is_sharded_and_holds_no_frozen_base(runs):
    run, _ = runs["lora", "fsdp2"]
    step = ckpt.checkpoint_dir(run, 4)
    shards = sorted(p.name for p in (step / "state" / "model").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]  # one shard file per rank
    trained = read_trained_state(step)
    assert trained and all(".lora_" in k for k in trained)


def test_deepspeed_checkpoint_holds_its_partitions_and_resumes_only_where_it_can(runs, tiny_workspace, tmp_path):
    run, _ = runs["lora", "zero2"]
    state = ckpt.checkpoint_dir(run, 4) / "state" / "deepspeed" / "state"
    assert len(list(state.glob("*optim_states.pt"))) == 2  # one optimizer partition per rank
    for overrides, nproc, message in (
        (BACKENDS["zero2"], 1, "DeepSpeed ZeRO checkpoint of 2 process"),
        (BACKENDS["fsdp2"], 2, "written by distributed.backend=deepspeed"),
    ):
        out = tmp_path / f"{nproc}_{overrides[0].split('=')[1]}"
        shutil.copytree(ckpt.checkpoint_dir(run, 2), ckpt.checkpoint_dir(out, 2))
        recipe = save_config(tiny_config(tiny_workspace, out, [*COMMON, *overrides]), tmp_path / f"{out.name}.yaml")
        command = (
            _command(recipe, [], nproc) if nproc > 1 else [sys.executable, "-m", "ltx2train", "train", str(recipe)]
        )
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
        assert proc.returncode != 0 and "ltx2train: error:" in proc.stderr
        assert message in proc.stderr and "ltx2train/training" not in proc.stderr, proc.stderr[
            -2000:
        ]  # no traceback of ours
        if nproc == 1:
            assert proc.returncode == 2  # a user's mistake (torchrun reports its children's failure its own way)


@pytest.mark.parametrize("backend", ["fsdp2", "zero2", "ddp_swap"])
def test_full_export_loads_strictly(runs, backend):
    run, _ = runs["full", backend]
    model = load_component("tiny", "transformer", ckpt.checkpoint_dir(run, 4))  # strict: every key and shape
    reference = load_component("tiny", "transformer", ckpt.checkpoint_dir(runs["full", "ddp"][0], 4))
    for (name, param), ref in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(param, ref, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("backend", ["fsdp2", "zero2"])
def test_a_killed_run_resumes_to_the_same_weights(runs, tiny_workspace, tmp_path, backend):
    straight, _ = runs["lora", backend]
    out = tmp_path / "killed"
    recipe = save_config(
        tiny_config(tiny_workspace, out, [*COMMON, *BACKENDS[backend], "optimizer.lr=2e-3", *PROMPT]),
        tmp_path / "killed.yaml",
    )
    proc = subprocess.Popen(
        _command(recipe, []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), start_new_session=True
    )
    deadline = time.time() + 300
    while not ckpt.checkpoint_dir(out, 2).is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # no chance to checkpoint: whatever is complete must do
    proc.wait()
    assert ckpt.list_checkpoints(out), "killed before the first checkpoint"
    rerun = subprocess.run(_command(recipe, []), capture_output=True, text=True, timeout=600, env=_env())
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    a = load_file(str(ckpt.checkpoint_dir(straight, 4) / ckpt.LORA_FILE))
    b = load_file(str(ckpt.checkpoint_dir(out, 4) / ckpt.LORA_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [s for s, _ in _losses(out)] == [1, 2, 3, 4]


def test_full_fine_tuning_with_block_swap_resumes_exactly(runs, tiny_workspace, tmp_path):
    """Full fine-tuning with a swapped block keeps that block's master weights and AdamW state in host memory:
    resumed from the step-2 checkpoint, steps 3-4 give the uninterrupted run's weights bit for bit."""
    straight, _ = runs["full", "ddp_swap"]
    out = tmp_path / "resumed"
    shutil.copytree(ckpt.checkpoint_dir(straight, 2), ckpt.checkpoint_dir(out, 2))
    proc = _train(tiny_workspace, out, ["train.method=full", *BACKENDS["ddp_swap"], "optimizer.lr=1e-3"])
    assert "resumed from" in proc.stdout and "step_000002" in proc.stdout
    a = load_file(str(ckpt.checkpoint_dir(straight, 4) / "transformer.safetensors"))
    b = load_file(str(ckpt.checkpoint_dir(out, 4) / "transformer.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_checkpoints_reshard_onto_one_process_under_either_backend(runs, tiny_workspace, tmp_path):
    """The 2-process fsdp2 checkpoint (two shard files) resumed on one process under fsdp2 and under ddp: the
    same weights one step later, bit for bit; the 2-process ddp checkpoint under ddp: the same within rounding."""
    states = {}
    for source, backend in (("fsdp2", "fsdp2"), ("fsdp2", "ddp"), ("ddp", "ddp")):
        out = tmp_path / f"{source}_to_{backend}"
        shutil.copytree(ckpt.checkpoint_dir(runs["lora", source][0], 2), ckpt.checkpoint_dir(out, 2))
        proc = _train(tiny_workspace, out, [f"distributed.backend={backend}", "train.max_steps=3"], nproc=1)
        assert "resumed from" in proc.stdout and "step_000002" in proc.stdout and "1 process(es)" in proc.stdout
        states[source, backend] = read_trained_state(ckpt.checkpoint_dir(out, 3))
    reference = states["fsdp2", "ddp"]  # the same checkpoint loaded in full by ddp
    assert states["fsdp2", "fsdp2"].keys() == reference.keys()
    assert all(torch.equal(states["fsdp2", "fsdp2"][k], reference[k]) for k in reference)
    for k in reference:  # the ddp run's own checkpoint: equal to the fsdp2 one up to reduction order
        torch.testing.assert_close(states["ddp", "ddp"][k], reference[k], rtol=1e-4, atol=1e-6)


def test_two_processes_with_batch_b_train_what_one_process_with_batch_2b_does(runs, tiny_workspace, tmp_path):
    """The same global batch at any world size: each sample's noise is keyed by (seed, step, sample), and the
    data split hands one process with batch 2b the union of what two processes with batch b take."""
    two, _ = runs["lora", "ddp"]  # 2 processes x batch 1
    one = tmp_path / "one"
    _train(tiny_workspace, one, ["distributed.backend=ddp", "data.batch_size=2", "optimizer.lr=2e-3", *PROMPT], nproc=1)
    a, b = _losses(two), _losses(one)
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    assert [loss for _, loss in b] == pytest.approx([loss for _, loss in a], rel=1e-5)
    x = load_file(str(ckpt.checkpoint_dir(two, 4) / ckpt.LORA_FILE))
    y = load_file(str(ckpt.checkpoint_dir(one, 4) / ckpt.LORA_FILE))
    for key in x:
        torch.testing.assert_close(y[key], x[key], rtol=1e-4, atol=1e-6)
    # and the schedule ends at its end value at either world size (cosine to 0 at max_steps)
    for run in (one, two):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"lr"' in line]
        assert rows[-1]["step"] == 4 and rows[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("backend, trained", [("fsdp2", "float32"), ("zero2", "bfloat16")])
def test_a_bf16_lora_never_upcasts_the_frozen_base(tiny_workspace, tmp_path, backend, trained):
    """bf16 base weights and autocast: the frozen base stays bf16 under every backend. FSDP2 keeps the adapters
    in float32 (gathered in bf16 for compute); DeepSpeed's bf16 engine holds them in bf16 with float32 master
    weights in its optimizer, which is what the export is made from."""
    out = tmp_path / backend
    proc = _train(
        tiny_workspace,
        out,
        [*BACKENDS[backend], "model.dtype=bfloat16", "train.mixed_precision=bf16", "train.max_steps=2"],
    )
    assert f"weights: frozen bfloat16, trained {trained}" in proc.stdout
    losses = [loss for _, loss in _losses(out)]
    assert len(losses) == 2 and all(0 < loss < 10 for loss in losses)
    lora = load_file(str(ckpt.checkpoint_dir(out, 2) / ckpt.LORA_FILE))
    assert {v.dtype for v in lora.values()} == {torch.float32}


@pytest.mark.parametrize("backend", ["ddp", "fsdp2"])
def test_full_fine_tuning_of_a_video_only_strategy_under_two_processes(tiny_workspace, tmp_path, backend):
    """strategy t2v freezes the audio branch under full fine-tuning: the wrapped model then holds trained and
    frozen parameters together, and every trained one gets a gradient (DDP would stop otherwise)."""
    out = tmp_path / "t2v"
    proc = _train(
        tiny_workspace,
        out,
        ["train.method=full", "strategy.name=t2v", f"distributed.backend={backend}", "optimizer.lr=1e-3"],
    )
    assert "the audio branch frozen" in proc.stdout and "trained to step 4" in proc.stdout
    trained = load_file(str(ckpt.checkpoint_dir(out, 4) / "transformer.safetensors"))
    base = load_component("tiny", "transformer", tiny_config(tiny_workspace, out).model.checkpoint)
    from ltx2train.models.key_maps import build_key_map

    original = build_key_map("transformer", base, "2.0").convert_to_original(base.state_dict())
    changed = {k for k, v in trained.items() if not torch.equal(v, original[k].to(v.dtype))}
    assert any(".attn1." in k for k in changed) and not any("audio" in k for k in changed)


CONNECTOR_RUNS = [("lora", "ddp"), ("lora", "fsdp2"), ("lora", "zero3_offload"), ("full", "ddp"), ("full", "fsdp2")]


def test_every_backend_trains_the_connectors_beside_the_dit_as_ddp_does(tiny_workspace, tmp_path):
    """train.trainable=[transformer, connectors]: the step calls the two connector transformers inside the trained
    module's forward (FSDP2 shards each as its own unit, ZeRO-3 partitions them) and validation calls the parts one
    by one; every backend gives DDP's losses and exports (measured: within 1.3e-6 of ddp)."""
    exports = {}
    for method, backend in CONNECTOR_RUNS:
        out = tmp_path / f"{method}_{backend}"
        lr = "optimizer.lr=1e-3" if method == "full" else "optimizer.lr=2e-3"
        _train(
            tiny_workspace,
            out,
            [f"train.method={method}", *BACKENDS[backend], lr, *PROMPT, "train.trainable=[transformer,connectors]"],
        )
        names = (
            ["lora.safetensors"]
            if method == "lora"
            else ["transformer.safetensors", "text_encoder_post_modules.safetensors"]
        )
        exports[method, backend] = (_losses(out), {n: load_file(str(ckpt.checkpoint_dir(out, 4) / n)) for n in names})
        assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000004_prompt0.mp4"]
    for method, backend in CONNECTOR_RUNS:
        (losses, files), (ddp_losses, ddp_files) = exports[method, backend], exports[method, "ddp"]
        assert [loss for _, loss in losses] == pytest.approx([loss for _, loss in ddp_losses], rel=1e-5)
        for name, tensors in files.items():
            assert tensors.keys() == ddp_files[name].keys()
            for key, value in tensors.items():
                torch.testing.assert_close(value, ddp_files[name][key], rtol=1e-4, atol=1e-5)
    lora = exports["lora", "ddp"][1]["lora.safetensors"]
    assert any("video_embeddings_connector" in k for k in lora) and any("audio_embeddings_connector" in k for k in lora)
