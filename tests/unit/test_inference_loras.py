"""LoraStack: several LoRAs at their strengths, in every dialect, unloaded back to the exact base model."""

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from conftest import load_reference, tiny_config, transformer_inputs, transformer_outputs
from ltx2train.lora.stacking import LoraStack
from ltx2train.models.key_maps import lora_module_to_diffusers
from ltx2train.models.loading import load_component
from ltx2train.lora.files import LoraFile, LoraModule, detect_dialect, save_lora, to_state_dict
from ltx2train.models.specs import load_variant
from ltx2train.models.text_encoder import ProjectedText, connect_text

# Original module names (no diffusion_model. prefix) of the tiny model, renamed ones included.
FIRST = [
    "transformer_blocks.0.attn1.to_q",
    "transformer_blocks.1.ff.net.0.proj",
    "patchify_proj",
    "transformer_blocks.0.audio_attn2.to_v",
]
SECOND = ["transformer_blocks.0.attn1.to_q", "transformer_blocks.1.audio_to_video_attn.to_out.0", "audio_patchify_proj"]
CONNECTOR = ["video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k", "transformer_blocks.1.attn2.to_k"]
# Tolerance of a stacked LoRA against the same deltas merged into the weights: float32, two paths of rounding
# (x @ A^T @ B^T added to x @ W^T, against x @ (W + B @ A)^T) through two blocks. Measured: 5e-7 on outputs of
# size ~2; a strength off by 0.1 is off by 3e-2.
MERGE_TOL = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def checkpoint(tiny_workspace, tmp_path_factory):
    return tiny_config(tiny_workspace, tmp_path_factory.mktemp("unused")).model.checkpoint


@pytest.fixture(scope="module")
def kwargs(tiny_workspace, tmp_path_factory):
    return transformer_inputs(tiny_workspace, tmp_path_factory.mktemp("inputs"))


def _load(checkpoint, component="transformer"):
    return load_component(load_variant("tiny"), component, checkpoint)


def _random_lora(model, names, seed, rank=4, alphas=(8.0, None, 2.0, 12.0)):
    """Random A/B (alpha != rank on some modules) shaped for the tiny model; ``model``: component -> module."""
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for name, alpha in zip(names, alphas):
        component, path = lora_module_to_diffusers(name)
        linear = model[component].get_submodule(path)
        modules[name] = LoraModule(
            torch.randn(rank, linear.in_features, generator=g) * 0.2,
            torch.randn(linear.out_features, rank, generator=g) * 0.2,
            alpha,
        )
    return LoraFile(modules)


@torch.no_grad()
def _merged(checkpoint, weighted):
    """Fresh transformer and connectors with ``sum strength * (alpha/r) * B @ A`` added to the weights."""
    model = {c: _load(checkpoint, c) for c in ("transformer", "connectors")}
    for lora, strength in weighted:
        for name, w in lora.modules.items():
            component, path = lora_module_to_diffusers(name)
            weight = model[component].get_submodule(path).weight
            weight += strength * w.delta()
    return model


def _outputs(transformer, kwargs):
    return [t.clone() for t in transformer_outputs(transformer, kwargs)]


@torch.no_grad()
def _context(connectors):
    g = torch.Generator().manual_seed(5)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])  # left padding, a multiple of the 8 learnable registers
    projected = ProjectedText(torch.randn(1, 8, 32, generator=g), None, mask)
    context = connect_text(connectors.eval(), projected)
    return [context.video.clone(), context.audio.clone()]


def _close(got, expected, **tol):
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **tol)


def _peft_free(module):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return not any(isinstance(m, BaseTunerLayer) for m in module.modules()) and not getattr(module, "peft_config", None)


def test_two_loras_at_strengths_equal_the_weighted_merge(checkpoint, kwargs):
    model = {c: _load(checkpoint, c) for c in ("transformer", "connectors")}
    first, second = _random_lora(model, FIRST, 1), _random_lora(model, SECOND, 2)
    with_connectors = _random_lora(model, CONNECTOR, 3)
    stack = LoraStack(model["transformer"], model["connectors"])
    assert stack.load(first, 0.7) == "lora1"
    assert stack.load(second, -1.3, name="second") == "second"
    assert stack.names == ["lora1", "second"]
    merged = _merged(checkpoint, [(first, 0.7), (second, -1.3)])
    _close(_outputs(model["transformer"], kwargs), _outputs(merged["transformer"], kwargs), **MERGE_TOL)

    # A third LoRA that also touches the connectors: the text context follows it, at its strength.
    stack.load(with_connectors, 0.5, name="third")
    merged = _merged(checkpoint, [(first, 0.7), (second, -1.3), (with_connectors, 0.5)])
    _close(_outputs(model["transformer"], kwargs), _outputs(merged["transformer"], kwargs), **MERGE_TOL)
    _close(_context(model["connectors"]), _context(merged["connectors"]), **MERGE_TOL)

    # set_strength is the same as loading at that strength; 0 is the same as not loaded.
    stack.set_strength("lora1", 0.0)
    stack.set_strength("second", 2.0)
    merged = _merged(checkpoint, [(second, 2.0), (with_connectors, 0.5)])
    _close(_outputs(model["transformer"], kwargs), _outputs(merged["transformer"], kwargs), **MERGE_TOL)
    assert stack.strength("second") == 2.0


def _diffsynth(lora):
    """DiffSynth-Studio's trainer layout: original names, no prefix, PEFT's ``.default`` kept, alpha folded."""
    return {
        f"{m}.lora_{k}.default.weight": t
        for m, w in lora.modules.items()
        for k, t in (("A", w.down), ("B", w.folded_up()))
    }


def test_every_format_loads_to_the_same_outputs(checkpoint, kwargs, tmp_path):
    transformer = _load(checkpoint)
    lora = _random_lora({"transformer": transformer}, FIRST, 4)
    sources = {
        fmt: save_lora(lora, tmp_path / f"{fmt}.safetensors", fmt)
        for fmt in ("official", "official-alpha", "diffusers")
    }
    save_file(_diffsynth(lora), str(tmp_path / "diffsynth.safetensors"))
    sources.update(
        {
            "diffsynth": tmp_path / "diffsynth.safetensors",
            "LoraFile": lora,
            "state dict": to_state_dict(lora, "official-alpha"),
        }
    )
    expected = _outputs(_merged(checkpoint, [(lora, 0.8)])["transformer"], kwargs)
    stack = LoraStack(transformer)
    for label, source in sources.items():
        if label in ("official", "official-alpha", "diffusers", "diffsynth"):
            with safe_open(str(source), framework="pt") as f:
                assert detect_dialect(f.keys()) == label
        with stack.applied([(source, 0.8)]) as names:
            assert names == ([label] if label not in ("LoraFile", "state dict") else ["lora1"])
            _close(_outputs(transformer, kwargs), expected, **MERGE_TOL)


def test_unloading_every_lora_gives_back_the_exact_base_model(checkpoint, kwargs):
    model = {c: _load(checkpoint, c) for c in ("transformer", "connectors")}
    model["transformer"].transformer_blocks[0].attn1.to_q.weight.requires_grad_(True)  # restored too
    params = {c: {n: (p.detach().clone(), p.requires_grad) for n, p in m.named_parameters()} for c, m in model.items()}
    base, base_context = _outputs(model["transformer"], kwargs), _context(model["connectors"])
    stack = LoraStack(model["transformer"], model["connectors"])
    a = stack.load(_random_lora(model, CONNECTOR, 5), 1.0)
    b = stack.load(_random_lora(model, FIRST, 6), 0.5)
    assert not torch.equal(_outputs(model["transformer"], kwargs)[0], base[0])
    stack.unload(a)  # the connectors lose their only adapter: unwrapped at once, the transformer keeps b
    assert _peft_free(model["connectors"]) and not _peft_free(model["transformer"])
    assert all(torch.equal(g, e) for g, e in zip(_context(model["connectors"]), base_context))
    stack.unload(b)
    assert stack.names == [] and _peft_free(model["transformer"])
    for component, module in model.items():
        now = {n: (p.detach(), p.requires_grad) for n, p in module.named_parameters()}
        assert now.keys() == params[component].keys()
        assert all(torch.equal(now[n][0], p) and now[n][1] == grad for n, (p, grad) in params[component].items())
    assert all(torch.equal(g, e) for g, e in zip(_outputs(model["transformer"], kwargs), base))
    # and again, after a clear()
    stack.load(_random_lora(model, SECOND, 7), 2.0)
    stack.clear()
    assert _peft_free(model["transformer"])
    assert all(torch.equal(g, e) for g, e in zip(_outputs(model["transformer"], kwargs), base))


def test_applied_unloads_after_an_exception(checkpoint, kwargs):
    transformer = _load(checkpoint)
    base = _outputs(transformer, kwargs)
    stack = LoraStack(transformer)
    loras = [
        (_random_lora({"transformer": transformer}, FIRST, 8), 1.0),
        (_random_lora({"transformer": transformer}, SECOND, 9), 0.5),
    ]
    with pytest.raises(RuntimeError, match="inside the block"):
        with stack.applied(loras) as names:
            assert names == ["lora1", "lora2"] and stack.names == names
            assert not torch.equal(_outputs(transformer, kwargs)[0], base[0])
            raise RuntimeError("inside the block")
    assert stack.names == [] and _peft_free(transformer)
    assert all(torch.equal(g, e) for g, e in zip(_outputs(transformer, kwargs), base))
    # a LoRA that fails to load in the list: the ones before it are unloaded as well
    bad = LoraFile({"transformer_blocks.0.attn1.to_q": LoraModule(torch.zeros(4, 4096), torch.zeros(4096, 4))})
    with pytest.raises(ValueError, match="another model"):
        with stack.applied([loras[0], (bad, 1.0)]):
            pass
    assert stack.names == [] and _peft_free(transformer)


def test_errors_name_the_lora_and_what_to_do(checkpoint, kwargs, monkeypatch):
    model = {c: _load(checkpoint, c) for c in ("transformer", "connectors")}
    transformer = model["transformer"]
    stack = LoraStack(transformer)
    good = _random_lora(model, FIRST, 10)
    with pytest.raises(
        ValueError,
        match=r"LoRA 'lora1' .*2 of 2 modules match nothing.*transformer_blocks\.7\.attn1"
        r"\.to_q.*ltx2train inspect",
    ):
        stack.load(
            {
                "diffusion_model.transformer_blocks.7.attn1.to_q.lora_A.weight": torch.zeros(2, 16),
                "diffusion_model.transformer_blocks.7.attn1.to_q.lora_B.weight": torch.zeros(16, 2),
                "diffusion_model.not_a_module.lora_A.weight": torch.zeros(2, 16),
                "diffusion_model.not_a_module.lora_B.weight": torch.zeros(16, 2),
            }
        )
    with pytest.raises(ValueError, match="match nothing.*lora_unet_blocks_0"):  # kohya naming: not LTX-2's
        stack.load(
            {
                "lora_unet_blocks_0.lora_down.weight": torch.zeros(2, 16),
                "lora_unet_blocks_0.lora_up.weight": torch.zeros(16, 2),
            }
        )
    with pytest.raises(ValueError, match="is not a LoRA file ltx2train reads.*'model.weight'"):
        stack.load({"model.weight": torch.zeros(2, 2)})
    with pytest.raises(
        ValueError,
        match=r"text connectors \(video_embeddings_connector\.transformer_1d_blocks\.0"
        r"\.attn1\.to_k\).*pass connectors= to LoraStack",
    ):
        stack.load(_random_lora(model, CONNECTOR, 11), name="with_connectors")
    with pytest.raises(
        ValueError,
        match=r"another model.*transformer_blocks\.0\.attn1\.to_q: lora_B \[4096, 4\] x "
        r"lora_A \[4, 4096\] for a 16x16 weight",
    ):
        stack.load(
            LoraFile({"transformer_blocks.0.attn1.to_q": LoraModule(torch.zeros(4, 4096), torch.zeros(4096, 4))}),
            name="big",
        )
    assert stack.names == [] and _peft_free(transformer)  # nothing half-loaded

    stack.load(good, 0.6, name="style")
    stack.load(_random_lora(model, SECOND, 13), 0.3, name="extra")
    styled = _outputs(transformer, kwargs)
    with pytest.raises(ValueError, match="a LoRA named .style. is already loaded; pass another adapter_name="):
        stack.load(good, name="style")
    with pytest.raises(ValueError, match="adapter name 'a.b' may hold only"):
        stack.load(good, name="a.b")
    with pytest.raises(ValueError, match=r"no LoRA named 'nope' is loaded \(loaded: \['style', 'extra'\]\)"):
        stack.unload("nope")
    with pytest.raises(ValueError, match="no LoRA named 'nope'"):
        stack.set_strength("nope", 1.0)

    # A failure inside PEFT after the adapter was made: reported with the LoRA's name, the adapter removed.
    import ltx2train.lora.stacking as loras

    def failing(*args, **kw):
        loras_apply(*args, **kw)
        raise RuntimeError("size mismatch for lora_A")

    loras_apply = loras.apply_lora
    monkeypatch.setattr(loras, "apply_lora", failing)
    with pytest.raises(ValueError, match="LoRA 'broken' .*could not be attached: size mismatch"):
        stack.load(_random_lora(model, SECOND, 12), name="broken")
    assert stack.names == ["style", "extra"] and "broken" not in transformer.peft_config
    assert all(torch.equal(g, e) for g, e in zip(_outputs(transformer, kwargs), styled))  # both still active
    stack.clear()
    assert _peft_free(transformer)
    with pytest.raises(ValueError, match="already carries PEFT adapters"):
        loras_apply(transformer, good)
        LoraStack(transformer)


CAMERA_FILE = "ltx-2-19b-lora-camera-control-dolly-left.safetensors"


def test_camera_control_layout_loads(checkpoint, kwargs, tmp_path):
    """Lightricks' camera-control LoRAs (ltx-trainer output): ``diffusion_model.<module>.lora_A/B.weight``, bf16,
    no ``.alpha`` (ltx-core applies ``strength * B @ A``), no other keys; every block's video self-attention,
    text cross-attention (to_q/k/v/out.0) and feed-forward; rank 32 (what their 327 MB size gives for 19B)."""
    transformer = _load(checkpoint)
    targets = [f"{a}.{p}" for a in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")]
    targets += ["ff.net.0.proj", "ff.net.2"]
    g, state = torch.Generator().manual_seed(13), {}
    for block in range(len(transformer.transformer_blocks)):
        for target in targets:
            linear = transformer.transformer_blocks[block].get_submodule(target)
            prefix = f"diffusion_model.transformer_blocks.{block}.{target}"
            state[f"{prefix}.lora_A.weight"] = (torch.randn(32, linear.in_features, generator=g) * 0.1).bfloat16()
            state[f"{prefix}.lora_B.weight"] = (torch.randn(linear.out_features, 32, generator=g) * 0.1).bfloat16()
    save_file(state, str(tmp_path / CAMERA_FILE))
    assert detect_dialect(state) == "official"
    stack = LoraStack(transformer)
    name = stack.load(tmp_path / CAMERA_FILE, 0.8)
    assert name == "ltx-2-19b-lora-camera-control-dolly-left"
    with pytest.raises(ValueError, match="already loaded"):  # the same file twice would double its effect
        stack.load(tmp_path / CAMERA_FILE, 0.8)
    as_file = LoraFile(
        {
            k[len("diffusion_model.") : -len(".lora_A.weight")]: LoraModule(v, state[k.replace("lora_A", "lora_B")])
            for k, v in state.items()
            if k.endswith(".lora_A.weight")
        }
    )
    expected = _outputs(_merged(checkpoint, [(as_file, 0.8)])["transformer"], kwargs)
    _close(_outputs(transformer, kwargs), expected, **MERGE_TOL)
    stack.unload(name)
    assert _peft_free(transformer)

    # The same names on the 19B checkpoint: 48 blocks x 10 modules, each a 2-D weight there. At rank 32 in bf16
    # their A/B tensors take 327,155,712 bytes; the published file is 327,309,208: room for the header of these
    # 960 tensors and some metadata, not for 480 more .alpha entries.
    reference, _ = load_reference("ltx2-19b")
    shapes = [reference[f"model.diffusion_model.transformer_blocks.{b}.{t}.weight"] for b in range(48) for t in targets]
    assert all(len(s) == 2 for s in shapes)
    assert "model.diffusion_model.transformer_blocks.48.attn1.to_q.weight" not in reference
    assert sum(32 * (out + inp) * 2 for out, inp in shapes) == 327_155_712


def test_checkpoint_loras_of_two_runs_load_together_under_their_own_names(checkpoint, kwargs, tmp_path):
    """Every checkpoint's file is ``lora.safetensors``: the second (and third) gets a name from its folders, so
    several load together, and the result is their merge."""
    model = {c: _load(checkpoint, c) for c in ("transformer", "connectors")}
    loras = [_random_lora(model, FIRST, 1), _random_lora(model, SECOND, 2), _random_lora(model, FIRST, 3)]
    paths = []
    for run, lora in zip(("run_a", "run_b", "run_a_copy"), loras):
        path = tmp_path / run / "checkpoints" / "step_000006" / "lora.safetensors"
        path.parent.mkdir(parents=True)
        save_lora(lora, path)
        paths.append(path)
    stack = LoraStack(model["transformer"], model["connectors"])
    names = [stack.load(path, 0.5) for path in paths]
    assert names == ["lora", "step_000006_lora", "checkpoints_step_000006_lora"]
    merged = _merged(checkpoint, [(lora, 0.5) for lora in loras])
    _close(_outputs(model["transformer"], kwargs), _outputs(merged["transformer"], kwargs), **MERGE_TOL)
