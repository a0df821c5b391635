"""FP8 storage of frozen weights (memory.fp8_frozen) on the tiny model's real components, on CPU: what is stored
in float8 and how much it saves, how close each component stays to bfloat16, and a LoRA trained, exported and
resumed over an FP8 base."""

import copy

import pytest
import torch
from safetensors import safe_open

from conftest import LORA_TRAIN, tiny_config, transformer_inputs, transformer_outputs
from ltx2train.memory.fp8 import STORAGE_DTYPE, fp8_layers, param_bytes, redraw_lora_init, store_fp8
from ltx2train.models.loading import load_component
from ltx2train.training.trainer import Trainer

BF16 = torch.bfloat16


def _rel(out, ref) -> float:
    """Relative L2 error of ``out`` against ``ref``."""
    out, ref = out.float(), ref.float()
    return ((out - ref).norm() / ref.norm()).item()


def _component(root, name):
    return load_component("tiny", name, tiny_config(root, root / "unused").model.checkpoint, dtype=BF16)


def _transformer_run(root, tmp_path):
    kwargs = transformer_inputs(root, tmp_path)
    for key in ("hidden_states", "audio_hidden_states", "encoder_hidden_states", "audio_encoder_hidden_states"):
        kwargs[key] = kwargs[key].to(BF16)
    return lambda m: transformer_outputs(m, kwargs)


def _connectors_run(root, tmp_path):
    from ltx2train.models.text_encoder import TextEmbeddings, apply_connectors

    g = torch.Generator().manual_seed(0)
    mask = torch.cat([torch.zeros(2, 4), torch.ones(2, 12)], dim=1).long()  # left-padded, as Gemma's prompts
    embeddings = TextEmbeddings(torch.randn(2, 16, 96, generator=g), mask)  # (B, T, hidden 32 x 3 stacked)
    return lambda m: (lambda c: (c.video, c.audio))(apply_connectors(m, embeddings))


def _vae_run(pixels):
    @torch.no_grad()
    def run(m):
        latents = m.encode(pixels).latent_dist.mode()
        return latents, m.decode(latents).sample

    return run


def _video_vae_run(root, tmp_path):
    g = torch.Generator().manual_seed(0)
    return _vae_run((torch.rand(1, 3, 9, 64, 64, generator=g) * 2 - 1).to(BF16))  # (B, C, F, H, W) in [-1, 1]


def _audio_vae_run(root, tmp_path):
    g = torch.Generator().manual_seed(0)
    return _vae_run(torch.randn(1, 2, 32, 16, generator=g).to(BF16))  # (B, stereo, mel frames, mel bins)


RUNS = {
    "transformer": _transformer_run,
    "connectors": _connectors_run,
    "video_vae": _video_vae_run,
    "audio_vae": _audio_vae_run,
}
# Relative L2 error of each output against the same component in bf16, measured on the tiny random-weight model
# (whose random stacks amplify the rounding of the weights); each limit is ~1.5x the measured value.
TOLERANCE = {
    "transformer": [0.09, 0.05],  # (video, audio) velocity: measured 0.062, 0.034
    "connectors": [0.025, 0.025],  # (video, audio) context: measured 0.015, 0.016
    "video_vae": [0.18, 0.27],  # (latents, decoded video): measured 0.119, 0.178
    "audio_vae": [0.13, 0.26],  # (latents, decoded mel): measured 0.085, 0.172
    "text_encoder": [0.085],  # stacked hidden states (embeddings + each layer): measured 0.057
}
# The whole component's parameter bytes after / before (only the cast layers halve), measured on the tiny model:
TOTAL_RATIO = {"transformer": 0.84, "connectors": 0.57, "video_vae": 0.50, "audio_vae": 0.50, "text_encoder": 0.63}


@pytest.mark.parametrize("component", sorted(RUNS))
def test_each_component_halves_its_cast_weights_and_stays_close_to_bf16(tiny_workspace, tmp_path, component):
    run = RUNS[component](tiny_workspace, tmp_path)
    reference = _component(tiny_workspace, component)
    stored = copy.deepcopy(reference)
    report = store_fp8(stored, component)
    _check_report(report, stored, component)
    outputs, expected = run(stored), run(reference)
    errors = [_rel(o, r) for o, r in zip(outputs, expected)]
    print(component, report, errors)
    assert len(errors) == len(TOLERANCE[component])
    assert all(e <= t for e, t in zip(errors, TOLERANCE[component])), (errors, TOLERANCE[component])
    assert all(e > 0 for e in errors)  # the weights were rounded: FP8 is really in the path
    # ... and that rounding is the only difference: bf16 weights equal to the stored ones give the same outputs
    rounded = copy.deepcopy(reference)
    rounded.load_state_dict({k: v.to(BF16) for k, v in stored.state_dict().items()})
    assert all(torch.equal(o, r) for o, r in zip(outputs, run(rounded)))


def test_gemma_keeps_its_embedding_and_stays_close_to_bf16(tiny_workspace):
    from ltx2train.models.text_encoder import load_text_encoder

    text_encoder = load_text_encoder(
        tiny_config(tiny_workspace, tiny_workspace / "unused").model.text_encoder, dtype=BF16, max_sequence_length=16
    )
    prompts = ["a red circle moves right with a rising tone", "a blue square"]
    reference = copy.deepcopy(text_encoder.model)
    expected = text_encoder.encode(prompts).hidden_states
    report = store_fp8(text_encoder.model, "text_encoder")
    _check_report(report, text_encoder.model, "text_encoder")
    embed = text_encoder.model.model.language_model.embed_tokens
    assert embed.weight.dtype == BF16 and embed.embed_scale.dtype == BF16  # the scale is not rounded to 5.5
    assert "lm_head" not in fp8_layers(text_encoder.model)  # tied to the embedding
    outputs = text_encoder.encode(prompts).hidden_states
    assert 0 < _rel(outputs, expected) <= TOLERANCE["text_encoder"][0], _rel(outputs, expected)
    reference.load_state_dict({k: v.to(BF16) for k, v in text_encoder.model.state_dict().items()})
    text_encoder.model = reference  # bf16 weights equal to the stored ones: the same hidden states
    assert torch.equal(text_encoder.encode(prompts).hidden_states, outputs)


@pytest.mark.parametrize(
    "component, most", [("transformer", 0.52), ("connectors", 0.76), ("video_vae", 0.50), ("audio_vae", 0.50)]
)
def test_ltx2_19b_components_keep_what_the_skip_patterns_name(component, most):
    """On the real 19B architecture (on meta, no weights): the share of the bytes FP8 keeps. The transformer keeps
    only its blocks' layers (98% of its weights); the connectors keep their 0.72B-weight text projection."""
    from ltx2train.models.specs import load_variant

    module = load_variant("ltx2-19b").component(component).build(meta=True).to(BF16)
    report = store_fp8(module, component)
    assert report.cast_bytes_after * 2 == report.cast_bytes_before
    assert report.bytes_after / report.bytes_before <= most, report
    names = fp8_layers(module)
    if component == "transformer":
        assert all(n.startswith("transformer_blocks.") for n in names)
    if component == "connectors":
        assert not [n for n in names if "text_proj_in" in n] and next(module.parameters()).dtype == BF16


def _check_report(report, module, component):
    layers = fp8_layers(module)
    assert report.layers == len(layers) > 0
    assert all(p.dtype == STORAGE_DTYPE for m in layers.values() for p in m.parameters())
    assert report.cast_bytes_after <= 0.55 * report.cast_bytes_before  # the cast layers: cut by >= 45%
    assert (
        report.bytes_after == param_bytes(module) and report.saved == report.cast_bytes_before - report.cast_bytes_after
    )
    assert report.bytes_after / report.bytes_before <= TOTAL_RATIO[component]


def test_redraw_lora_init_gives_back_the_continuous_kaiming_draw():
    from peft import LoraConfig, inject_adapter_in_model

    model = torch.nn.Sequential(torch.nn.Linear(4096, 8)).to(BF16)  # LTX-2 19B's width
    store_fp8(model, "video_vae")
    inject_adapter_in_model(LoraConfig(r=4, target_modules=["0"]), model)
    down = model[0].lora_A["default"].weight
    # PEFT drew it in the base's float8: below 2**-6 (the Kaiming bound 1/64) float8 is subnormal, 17 levels
    assert down.dtype == STORAGE_DTYPE and down.float().unique().numel() <= 17
    down.data = down.data.float()  # what the LoRA method does
    assert redraw_lora_init(model) == 1
    down = model[0].lora_A["default"].weight
    assert down.dtype == torch.float32 and down.unique().numel() > 10000
    assert down.abs().max() <= 1 / 64 and down.std().item() == pytest.approx(1 / 64 / 3**0.5, rel=0.05)


def test_store_fp8_refuses_adapters_a_second_pass_and_unknown_components(tiny_workspace):
    from ltx2train.training.methods.lora import add_lora

    transformer = _component(tiny_workspace, "transformer")
    with pytest.raises(ValueError, match="unknown component 'vocoder'"):
        store_fp8(transformer, "vocoder")
    store_fp8(transformer, "transformer")
    with pytest.raises(ValueError, match="already stored in FP8"):
        store_fp8(transformer, "transformer")
    lora = tiny_config(tiny_workspace, tiny_workspace / "unused").lora
    add_lora(transformer, lora)
    with pytest.raises(ValueError, match="before adapters are added"):
        store_fp8(copy.deepcopy(transformer), "transformer")


# bf16 base (FP8 computed in bf16); train.mixed_precision stays "no": Accelerate's state is one per process and
# the other in-process tests run without mixed precision.
FP8_LORA = [
    *LORA_TRAIN,
    "memory.fp8_frozen=[transformer,connectors]",
    "model.dtype=bfloat16",
    "train.gradient_checkpointing=true",
    "train.max_steps=6",
    "train.checkpoint_every=3",
    "train.keep_last=5",
]


@pytest.fixture(scope="module")
def fp8_lora_run(tiny_workspace, tmp_path_factory):
    """A tiny LoRA trained 6 steps over an FP8 transformer and FP8 connectors (checkpoints at 3 and 6)."""
    cfg = tiny_config(tiny_workspace, tmp_path_factory.mktemp("fp8_lora"), FP8_LORA)
    messages = []
    trainer = Trainer(cfg, log=messages.append)
    return cfg, trainer, trainer.train(), messages


def _stored(root, name):
    module = _component(root, name)
    store_fp8(module, name)
    return module


def test_a_lora_trains_over_an_fp8_base_that_never_changes(tiny_workspace, fp8_lora_run):
    _, trainer, result, messages = fp8_lora_run
    losses = [loss for _, loss in result.losses]
    assert losses[-1] < 0.85 * losses[0], losses
    model = trainer.model
    assert {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    # the base: its blocks' layers float8, and bit for bit what was loaded and stored
    fresh = _stored(tiny_workspace, "transformer").state_dict()
    trained = {k.replace(".base_layer", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert trained.keys() == fresh.keys() and all(torch.equal(trained[k], fresh[k]) for k in fresh)
    assert {k.split(".")[0] for k, v in trained.items() if v.dtype == STORAGE_DTYPE} == {"transformer_blocks"}
    fresh = _stored(tiny_workspace, "connectors").state_dict()
    connectors = trainer.run.connectors.state_dict()
    assert any(v.dtype == STORAGE_DTYPE for v in connectors.values())
    assert all(torch.equal(connectors[k], fresh[k]) for k in fresh)
    logged = [m for m in messages if "stored in FP8" in m]
    assert len(logged) == 1 and "transformer" in logged[0] and "connectors" in logged[0] and "saved" in logged[0]
    assert not [m for m in messages if "warning" in m]


def test_the_lora_exported_over_an_fp8_base_loads_into_a_bf16_base(tiny_workspace, fp8_lora_run, tmp_path):
    from ltx2train.lora.adapters import apply_lora

    _, trainer, result, _ = fp8_lora_run
    path = result.checkpoint / "lora.safetensors"
    with safe_open(str(path), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    # a bf16 base whose weights equal the FP8 ones, plus the file: what the trained model computes
    rounded = _component(tiny_workspace, "transformer")
    rounded.load_state_dict({k: v.to(BF16) for k, v in _stored(tiny_workspace, "transformer").state_dict().items()})
    run = _transformer_run(tiny_workspace, tmp_path)
    base_only = run(rounded)
    adapted = sum(1 for n, _ in trainer.model.named_parameters() if "lora_A" in n)
    assert apply_lora(rounded, path)["transformer"] == adapted
    reloaded, trained = run(rounded), run(trainer.model)
    for r, t, b in zip(reloaded, trained, base_only):
        assert _rel(r, t) < 0.01 and _rel(b, t) > 10 * _rel(r, t)  # the same effect, and the LoRA matters


def test_a_lora_over_an_fp8_base_resumes_exactly(tiny_workspace, fp8_lora_run, tmp_path):
    _, _, straight, _ = fp8_lora_run
    first = straight.checkpoint.parent / "step_000003"
    messages = []
    cfg = tiny_config(tiny_workspace, tmp_path / "resumed", [*FP8_LORA, f"train.resume={first}"])
    resumed = Trainer(cfg, log=messages.append).train()
    assert any("resumed from" in m for m in messages)
    assert resumed.losses == straight.losses[3:]
    with (
        safe_open(str(straight.checkpoint / "lora.safetensors"), framework="pt") as a,
        safe_open(str(resumed.checkpoint / "lora.safetensors"), framework="pt") as b,
    ):
        assert a.keys() == b.keys() and all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())


def test_fresh_adapters_over_an_fp8_base_are_float32_draws_and_no_checkpointing_is_warned(tiny_workspace, tmp_path):
    overrides = [o for o in FP8_LORA if "gradient_checkpointing" not in o]
    messages = []
    trainer = Trainer(tiny_config(tiny_workspace, tmp_path / "run", overrides), log=messages.append)
    trainer.setup()
    downs = [p for n, p in trainer.model.named_parameters() if "lora_A" in n]
    assert downs and not any(torch.equal(p, p.to(STORAGE_DTYPE).float()) for p in downs)  # not float8 values
    assert any("warning: memory.fp8_frozen: transformer without train.gradient_checkpointing" in m for m in messages)


@pytest.mark.slow
@pytest.mark.distributed  # launches 2 processes
def test_two_ddp_processes_train_a_lora_over_an_fp8_base(tiny_workspace, tmp_path):
    """gloo has no float8: DDP must not broadcast the FP8 base when it wraps the model (it would fail with
    "Invalid scalar type"). torchrun --standalone picks a free port."""
    import json
    import os
    import subprocess
    import sys

    from ltx2train.config import save_config

    cfg = tiny_config(
        tiny_workspace,
        tmp_path / "run",
        [*FP8_LORA, "train.max_steps=2", "train.checkpoint_every=2", "data.batch_size=1"],
    )
    recipe = save_config(cfg, tmp_path / "recipe.yaml")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "ltx2train",
            "train",
            str(recipe),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es) (ddp)" in proc.stdout and proc.stdout.count("stored in FP8") == 1
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged if "loss" in m] == [1, 2]


@pytest.mark.parametrize("backend", ["distributed.backend=fsdp2", "distributed.backend=deepspeed"])
def test_an_fp8_transformer_under_a_sharding_backend_is_refused_before_anything_starts(
    tiny_workspace, tmp_path, monkeypatch, backend
):
    from ltx2train.training import builder

    def no_backend(cfg):
        raise AssertionError("a backend was started")

    monkeypatch.setattr(builder, "build_backend", no_backend)
    name = backend.split("=")[1]
    with pytest.raises(
        ValueError,
        match=f"memory.fp8_frozen: transformer with distributed.backend={name} is not "
        "supported yet .*use distributed.backend=ddp",
    ):  # the recipe's rules
        Trainer(tiny_config(tiny_workspace, tmp_path / "run", [*FP8_LORA, backend]), log=lambda _: None).setup()


def test_an_fp8_transformer_under_full_fine_tuning_is_refused(tiny_workspace, tmp_path):
    with pytest.raises(ValueError, match="memory.fp8_frozen: transformer is stored in FP8 only as the frozen base"):
        tiny_config(tiny_workspace, tmp_path / "run", ["train.method=full", "memory.fp8_frozen=[transformer]"])
