"""``ltx2train inspect memory``: the per-GPU memory estimate, from the variant spec alone."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REFERENCE, load_reference

REPO = Path(__file__).resolve().parents[2]
FAST = ["validation.prompts=[]", "data.max_sequence_length=16"]


def _cfg(*overrides, recipe="demo.yaml"):
    from ltx2train.config import load_config

    return load_config(REPO / "recipes" / recipe, [*FAST, *overrides])


def _estimate(*overrides, world_size=1):
    from ltx2train.analysis.estimate import estimate_memory

    return estimate_memory(_cfg(*overrides), world_size=world_size, prepare=False)


def _variant(tmp_path, layers: int) -> Path:
    """The tiny variant with ``layers`` transformer blocks, as a variant JSON file."""
    from ltx2train.models.specs import load_variant

    spec = load_variant("tiny")
    data = {
        "name": f"tiny-{layers}",
        "family": spec.family,
        "description": "test",
        "components": {n: {"class": c.class_name, "config": dict(c.config)} for n, c in spec.components.items()},
    }
    data["components"]["transformer"]["config"]["num_layers"] = layers
    path = tmp_path / f"tiny-{layers}.json"
    path.write_text(json.dumps(data))
    return path


def _real_transformer(cfg):
    """The transformer as the builder has it before the backend: ``model.dtype``, the real method applied."""
    from ltx2train.models.specs import load_variant, torch_dtype
    from ltx2train.training.methods import build_method

    spec = load_variant(cfg.model.variant)
    model = spec.component("transformer").build().to(torch_dtype(cfg.model.dtype))
    build_method(cfg, spec).apply(model, lambda _: None, fresh=True)
    if cfg.train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    return model.train()


def _inputs(model, tokens):
    """Random transformer inputs and velocity targets for an estimate's ``tokens`` (the estimator's own builder)."""
    from ltx2train.analysis.fake import step_inputs, step_targets
    from ltx2train.analysis.tokens import Tokens

    tokens = Tokens.described(tokens)
    return step_inputs(model, tokens, model.dtype), step_targets(model, tokens)


def _loss(model, kwargs, targets, mixed: bool):
    with torch.autocast("cpu", dtype=torch.bfloat16) if mixed else torch.autocast("cpu", enabled=False):
        video, audio = model(**kwargs)
        return ((video.float() - targets[0]) ** 2).mean() + ((audio.float() - targets[1]) ** 2).mean()


def _storage_bytes(tensors) -> int:
    return sum({t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}.values())


# ---------------------------------------------------------------------------------------------- exact parts
@pytest.mark.parametrize("method,precision", [("lora", "no"), ("lora", "bf16"), ("full", "no"), ("full", "bf16")])
def test_weights_gradients_and_optimizer_state_equal_a_real_step(method, precision):
    """On the tiny model, the estimate's parameter, gradient and AdamW state bytes equal the bytes a real model
    holds after one optimizer step (built the builder's way: model.dtype, the real method, the real optimizer)."""
    from ltx2train.training.optim import build_optimizer

    overrides = [f"train.method={method}", f"train.mixed_precision={precision}", "model.dtype=bfloat16"]
    cfg, est = _cfg(*overrides), _estimate(*overrides)
    model = _real_transformer(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, cfg.optimizer)
    kwargs, targets = _inputs(model, est.tokens)
    _loss(model, kwargs, targets, precision == "bf16").backward()
    gradients = _storage_bytes([p.grad for p in params])
    optimizer.step()
    state = _storage_bytes([t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)])
    frozen = _storage_bytes([p for p in model.parameters() if not p.requires_grad]) if method == "lora" else 0

    assert est.parts["transformer_frozen"] == frozen
    assert est.parts["transformer_trained"] == _storage_bytes(params)
    assert est.parts["gradients"] == gradients
    assert est.parts["optimizer_state"] == state


def test_the_19b_estimate_needs_no_weights():
    """LTX-2 19B LoRA from recipes/t2av_lora.yaml, whose model.checkpoint is not on this machine: the frozen base
    is every transformer tensor of the original checkpoint's key list, in bfloat16."""
    from ltx2train.analysis.estimate import estimate_memory
    from ltx2train.models.layout import owner_of

    cfg = _cfg("train.gradient_checkpointing=true", recipe="t2av_lora.yaml")
    assert not Path(cfg.model.checkpoint).exists()
    est = estimate_memory(cfg, world_size=1, prepare=False)
    main, _ = load_reference("ltx2-19b")
    numel = sum(math.prod(shape) for key, shape in main.items() if owner_of(key) == "transformer")
    assert est.parts["transformer_frozen"] == 2 * numel
    assert est.tokens["video"] == 16 * 16 * 24 and est.tokens["audio"] == 126  # 512x768x121 at 24 fps
    assert est.parts["activations"] > 0 and est.total_bytes > est.parts["transformer_frozen"]


def test_the_25_diffusion_decoder_adds_its_published_weights_to_validation():
    """``validation.video_decoder=diffusion`` keeps LTX-2.5's diffusion decoder beside the VAEs: its bf16 weights are
    the published file's decoder tensors (type_emb aside, which is not loaded)."""
    from ltx2train.analysis.estimate import estimate_memory

    published = json.loads((REFERENCE / "ltx25_22b_official_files.json").read_text())[
        "vae/ltx-2.5-video-vae-bf16.safetensors"
    ]
    numel = sum(
        math.prod(shape)
        for key, shape in published.items()
        if key.startswith(("decoder.", "per_channel")) and key != "decoder.type_emb"
    )
    conv = estimate_memory(
        _cfg("validation.prompts=[a cat]", recipe="ltx2.5_t2av_lora.yaml"), world_size=1, prepare=False
    )
    diffusion = estimate_memory(
        _cfg("validation.prompts=[a cat]", "validation.video_decoder=diffusion", recipe="ltx2.5_t2av_lora.yaml"),
        world_size=1,
        prepare=False,
    )
    assert diffusion.parts["validation_decoders"] - conv.parts["validation_decoders"] == 2 * numel
    assert any("video_decoder=diffusion" in note for note in diffusion.notes)


def test_optimizer_state_formulas():
    from ltx2train.analysis.estimate import optimizer_state_bytes

    assert optimizer_state_bytes([10, 4096], "adamw") == 2 * 4 * 4106 + 2 * 4
    # adamw8bit: below 4096 elements 2 x float32; from 4096 on 2 x uint8 + a float32 absmax per 256 elements (x2)
    assert optimizer_state_bytes([4095, 4097], "adamw8bit") == 2 * 4 * 4095 + 2 * 4097 + 2 * 4 * 17 + 2 * 256 * 4


# ---------------------------------------------------------------------------------------------- sharding
def test_fsdp2_divides_parameters_gradients_and_optimizer_state_by_the_world_size(monkeypatch):
    one = _estimate("distributed.backend=fsdp2", world_size=1)
    monkeypatch.setenv("WORLD_SIZE", "4")  # read when no --world-size is given
    four = _estimate("distributed.backend=fsdp2", world_size=None)
    assert four.world_size == 4
    for part in ("transformer_frozen", "transformer_trained", "gradients", "optimizer_state"):
        # dim-0 chunks of ceil(rows / 4): a quarter, plus the padding of tensors whose rows 4 does not divide
        assert one.parts[part] / 4 <= four.parts[part] < one.parts[part] / 4 * 1.3, part
    assert four.parts["fsdp_unsharded"] > 0


def test_deepspeed_zero2_divides_gradients_and_optimizer_state_zero3_parameters_too():
    ds = ["distributed.backend=deepspeed", "train.mixed_precision=bf16"]
    one = _estimate(*ds, "distributed.zero_stage=2", world_size=1)
    zero2 = _estimate(*ds, "distributed.zero_stage=2", world_size=4)
    zero3 = _estimate(*ds, "distributed.zero_stage=3", world_size=4)
    trained = one.parts["gradients"] // 4  # float32 gradient partition of every trained element
    assert zero2.parts["gradients"] == 4 * math.ceil(trained / 4)
    assert zero2.parts["master_weights"] == zero2.parts["gradients"]
    assert zero2.parts["optimizer_state"] < one.parts["optimizer_state"] / 3
    assert zero2.parts["transformer_frozen"] == one.parts["transformer_frozen"]  # ZeRO-2: the module is whole
    assert zero2.parts["transformer_trained"] == one.parts["gradients"] // 2  # the module's copy in bfloat16
    assert zero3.parts["transformer_frozen"] == math.ceil(one.parts["transformer_frozen"] / 4)
    offloaded = _estimate(*ds, "distributed.offload_optimizer=true", world_size=4)
    assert (
        offloaded.parts["optimizer_state"] == 0 and offloaded.host["optimizer_state"] == zero2.parts["optimizer_state"]
    )


def test_ddp_replicates_and_keeps_gradient_buckets():
    one, four = _estimate(world_size=1), _estimate(world_size=4)
    for part in ("transformer_frozen", "transformer_trained", "gradients", "optimizer_state"):
        assert four.parts[part] == one.parts[part]
    assert one.parts["ddp_buckets"] == 0 and four.parts["ddp_buckets"] == four.parts["gradients"]


# ---------------------------------------------------------------------------------------------- directions
def test_memory_options_change_their_parts_in_the_right_direction():
    base = _estimate("train.gradient_checkpointing=true")
    fp8 = _estimate("train.gradient_checkpointing=true", "memory.fp8_frozen=[transformer,connectors]")
    assert fp8.parts["transformer_frozen"] < base.parts["transformer_frozen"]
    assert fp8.parts["connectors"] < base.parts["connectors"] and fp8.parts["fp8_compute_copies"] > 0

    swap = _estimate("train.gradient_checkpointing=true", "memory.block_swap=1")
    assert swap.parts["transformer_frozen"] < base.parts["transformer_frozen"]
    assert swap.host["block_swap_weights"] == base.parts["transformer_frozen"] - swap.parts["transformer_frozen"]
    assert swap.parts["block_swap_buffers"] == swap.host["block_swap_weights"]  # one block: its one device copy
    # full fine-tuning: the swapped block's master weights, gradients and optimizer state move to the host
    full = _estimate("train.method=full", "train.gradient_checkpointing=true")
    full_swap = _estimate("train.method=full", "train.gradient_checkpointing=true", "memory.block_swap=1")
    for part, moved in (
        ("transformer_trained", "block_swap_weights"),
        ("gradients", "block_swap_gradients"),
        ("optimizer_state", "block_swap_optimizer_state"),
    ):
        assert 0 < full_swap.host[moved] == full.parts[part] - full_swap.parts[part]
    from ltx2train.memory.offload import enable_block_swap

    model = _real_transformer(_cfg("train.method=full", "train.gradient_checkpointing=true"))
    hosts = [
        h for block in enable_block_swap(model, 1, "cpu", trained_on_host=True)._weights.values() for _, h in block
    ]
    assert full_swap.host["block_swap_weights"] == sum(h.numel() * h.element_size() for h in hosts)
    # AdamW: two float32 moments per element and a float32 step per tensor
    assert full_swap.host["block_swap_optimizer_state"] == 2 * full_swap.host["block_swap_weights"] + 4 * len(hosts)
    assert full_swap.total_bytes < full.total_bytes

    no_ckpt = _estimate("train.gradient_checkpointing=false")
    assert base.parts["activations"] < no_ckpt.parts["activations"]

    offload = _estimate("train.gradient_checkpointing=true", "memory.activation_offload=true")
    assert offload.parts["activations"] < base.parts["activations"] and offload.host["activations_offloaded"] > 0

    wide = ["lora.rank=256", "lora.alpha=256"]  # adapters of 4096+ elements: what bitsandbytes stores in 8 bits
    adamw, eight = _estimate(*wide), _estimate(*wide, "optimizer.name=adamw8bit")
    assert eight.parts["optimizer_state"] < adamw.parts["optimizer_state"]  # exact bytes: test_optimizer_state_formulas


# ---------------------------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("checkpointing", [False, True])
def test_activations_match_a_measured_step_of_a_deeper_tiny_model(tmp_path, checkpointing):
    """The activation parts come from a simulated two-block step; a real three-block step on CPU, its live tensor
    bytes counted as storages come and go, ends its forward and peaks within 5% of the estimate (the per-block
    part scales)."""
    from ltx2train.analysis.fake import LiveBytes

    overrides = [
        f"model.variant={_variant(tmp_path, 3)}",
        "data.height=128",
        "data.width=128",
        "data.num_frames=17",
        f"train.gradient_checkpointing={str(checkpointing).lower()}",
        "train.mixed_precision=bf16",
        "model.dtype=bfloat16",
    ]
    cfg, est = _cfg(*overrides), _estimate(*overrides)
    model = _real_transformer(cfg)
    kwargs, targets = _inputs(model, est.tokens)
    given = [t for t in [*kwargs.values(), *targets] if torch.is_tensor(t)]
    live = LiveBytes([*model.parameters(), *given])
    for p in model.parameters():
        if p.requires_grad:
            p.register_post_accumulate_grad_hook(lambda q: live.forget(q.grad))
    with live:
        loss = _loss(model, kwargs, targets, mixed=True)
        end_of_forward = live.bytes
        loss.backward()
    measured_peak = live.peak + _storage_bytes(given)
    estimated_peak = est.parts["step_inputs"] + est.parts["activations"] + est.parts["activation_transient"]
    assert est.parts["activations"] == pytest.approx(end_of_forward, rel=0.05)
    assert estimated_peak == pytest.approx(measured_peak, rel=0.05)


# ---------------------------------------------------------------------------------------------- command line
def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "ltx2train", "inspect", "memory", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )


def test_cli_prints_a_table_and_json():
    text = _cli("recipes/demo.yaml", "validation.prompts=[]")
    assert text.returncode == 0, text.stderr[-2000:]
    assert "peak:" in text.stdout and "transformer, frozen weights" in text.stdout and "KiB" in text.stdout
    data = _cli("recipes/demo.yaml", "distributed.backend=fsdp2", "--json", "--world-size", "2")
    assert data.returncode == 0, data.stderr[-2000:]
    report = json.loads(data.stdout)
    assert report["world_size"] == 2 and report["total_bytes"] == max(
        v for k, v in report["phases"].items() if not k.startswith("prepare")
    )
    assert {"transformer_frozen", "gradients", "optimizer_state", "activations"} <= set(report["parts"])


def test_cli_bad_key_is_a_user_error_without_traceback():
    proc = _cli("recipes/demo.yaml", "train.max_step=3")
    assert proc.returncode == 2
    assert "train.max_step" in proc.stderr and "train.max_steps" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli()
    assert proc.returncode == 2 and "name a recipe" in proc.stderr
