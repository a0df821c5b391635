"""The LoRA files ltx2train writes, loaded by the consumers people run, with those consumers' own code.

The LoRA is trained with alpha != rank (scale 3), so a consumer that drops or double-applies alpha misses by
3x. Each consumer must give the effect ltx2train itself applies (``apply_lora``), at the stated tolerance:

- diffusers 0.42.1 ``LTX2Pipeline.load_lora_weights``;
- Lightricks' ltx-core ``apply_loras`` — the fusion ``ltx-pipelines`` runs (test-only install, ``--no-deps``);
- DiffSynth-Studio's ``GeneralLoRALoader`` from the PyPI ``diffsynth`` wheel (test-only, ``--no-deps``). The package's
  ``__init__`` imports torchvision, modelscope and pandas, which are not installed here, so the loader's own
  file ``diffsynth/utils/lora/general.py`` (it imports only torch) is loaded from the installed wheel by path;
- ComfyUI cannot be installed here: its rule is restated from its source and applied (see the test).

Every consumer test runs on four LoRAs (the ``reference`` fixture's params): ``2.0`` (``trained_lora``, the tiny
LTX-2.0), ``2.3`` (``trained_lora23``, the same recipe on the tiny LTX-2.3: the same 50 module names, on a model
with gated attention), ``2.3-gates`` (trained here on the tiny LTX-2.3 with ``lora.gate_logits`` and the prompt
AdaLN linears as extra targets: the modules only 2.3 has) and ``2.5`` (the recipe on the tiny LTX-2.5, whose video
feed-forward layers have no bias and whose keyframe embedding is not a LoRA target). What each consumer does with the 2.3-only modules,
read from its source:

- diffusers: ``_convert_non_diffusers_ltx2_lora_to_diffusers`` (loaders/lora_conversion_utils.py) strips
  ``diffusion_model.`` and renames ``audio_prompt_adaln_single`` -> ``audio_prompt_adaln`` and
  ``prompt_adaln_single`` -> ``prompt_adaln`` ("LTX-2.3" entries of its rename table); ``to_gate_logits`` has the
  same name in both layouts and passes through. All 64 modules load and act as in ltx2train.
- ltx-core: ``LTXV_LORA_COMFY_RENAMING_MAP`` only strips ``diffusion_model.``; ``apply_loras`` fuses a LoRA pair
  into the model key ``<m>.weight``; ltx-core's model names its modules as the checkpoint (``prompt_adaln_single``,
  ``attn1.to_gate_logits``), so every module fuses.
- DiffSynth and ComfyUI name their LTX-2 modules as the checkpoint too, top-level ones included (DiffSynth's
  ``LTXModel.prompt_adaln_single``; ComfyUI's ``diffusion_model.X.weight``), where diffusers says ``prompt_adaln``:
  their rules are therefore applied to the diffusers modules seen under their checkpoint names
  (:func:`_checkpoint_named`). Applied by name to the diffusers module itself, DiffSynth would skip
  ``prompt_adaln_single.linear`` silently — a fact of that wrong set-up, not of DiffSynth.
- Every module name ltx2train writes is a module of the published checkpoint (``ltx2-19b`` / ``ltx2.3-22b`` /
  ``ltx2.5`` key lists in tests/data/reference), the names all four consumers match against.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import LORA_ALPHA, LORA_RANK, load_reference, train_lora, transformer_inputs, transformer_outputs
from ltx2train.lora.export import export_lora_file
from ltx2train.lora.adapters import apply_lora
from ltx2train.models.key_maps import build_key_map
from ltx2train.models.loading import load_component
from ltx2train.lora.files import from_state_dict, read_lora
from ltx2train.models.specs import load_variant
from ltx2train.models.writing import original_state_dict
from ltx2train.training import checkpoint as ckpt

SCALE = LORA_ALPHA / LORA_RANK
# reference param -> (LoRA fixture, workspace fixture, modules in the LoRA, published checkpoint of that family)
CASES = {
    "2.0": ("trained_lora", "tiny_workspace", 50, "ltx2-19b"),
    "2.3": ("trained_lora23", "tiny23_workspace", 50, "ltx2.3-22b"),
    # + 2 blocks x 6 attentions' to_gate_logits + prompt_adaln_single.linear + audio_prompt_adaln_single.linear
    "2.3-gates": ("trained_lora23_gates", "tiny23_workspace", 64, "ltx2.3-22b"),
    "2.5": ("trained_lora25", "tiny25_workspace", 50, "ltx2.5"),  # the video ff.net.0.proj has no bias here
}


@pytest.fixture(scope="module")
def trained_lora25(tiny25_workspace, tmp_path_factory):
    """The ``trained_lora23`` recipe on the tiny LTX-2.5."""
    return train_lora(tiny25_workspace, tmp_path_factory.mktemp("lora25_run"))


@pytest.fixture(scope="module")
def trained_lora23_gates(tiny23_workspace, tmp_path_factory):
    """The ``trained_lora23`` recipe with LTX-2.3's own modules adapted too: the attention gates
    (``lora.gate_logits``) and the prompt AdaLN linears."""
    return train_lora(
        tiny23_workspace,
        tmp_path_factory.mktemp("lora23_gates_run"),
        [
            "lora.gate_logits=true",
            "lora.target_modules=[to_q,to_k,to_v,to_out.0,ff.net.0.proj,prompt_adaln.linear,audio_prompt_adaln.linear]",
        ],
    )


@pytest.fixture(scope="module", params=list(CASES))
def reference(request, tmp_path_factory):
    """(config, checkpoint, fixed inputs, outputs of the base + LoRA as ltx2train applies it)."""
    lora_fixture, workspace_fixture, _, _ = CASES[request.param]
    cfg, path = request.getfixturevalue(lora_fixture)
    kwargs = transformer_inputs(request.getfixturevalue(workspace_fixture), tmp_path_factory.mktemp("inputs"))
    ours = _base(cfg)
    apply_lora(ours, path / ckpt.LORA_FILE, family=_family(cfg))
    return cfg, path, kwargs, transformer_outputs(ours, kwargs)


def _family(cfg):
    return load_variant(cfg.model.variant).family


@pytest.fixture
def case(request, reference):
    """The ``CASES`` entry of the reference this test runs on."""
    return CASES[request.node.callspec.params["reference"]]


def _assert_outputs(got, expected, tol=1e-5):
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol)


def _base(cfg):
    return load_component(cfg.model.variant, "transformer", cfg.model.checkpoint)


def _checkpoint_named(model, family):
    """The Linear modules of a diffusers transformer under their original checkpoint names (no
    ``model.diffusion_model.`` prefix), the same module objects: how DiffSynth's and ComfyUI's LTX-2 models name
    them (``prompt_adaln_single.linear`` where diffusers says ``prompt_adaln.linear``)."""
    to_original = build_key_map("transformer", model, family).to_original
    view = torch.nn.Module()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            original = to_original[f"{name}.weight"].removeprefix("model.diffusion_model.").removesuffix(".weight")
            parent = view
            *parents, leaf = original.split(".")
            for part in parents:
                if not hasattr(parent, part):
                    parent.add_module(part, torch.nn.Module())
                parent = getattr(parent, part)
            parent.add_module(leaf, module)
    return view


def test_every_module_we_write_is_a_module_of_the_published_checkpoint(reference, case):
    """The names every consumer matches on: each LoRA module is ``model.diffusion_model.<m>.weight`` of the real
    LTX-2 (19B) / LTX-2.3 (22B) checkpoint (tests/data/reference)."""
    _, path, _, _ = reference
    published, _ = load_reference(case[3])
    modules = read_lora(path / ckpt.LORA_FILE).modules
    assert len(modules) == case[2]
    assert [m for m in modules if f"model.diffusion_model.{m}.weight" not in published] == []


def test_diffusers_load_lora_weights_gives_our_outputs(reference, case, tmp_path):
    from diffusers import LTX2Pipeline
    from peft.tuners.tuners_utils import BaseTunerLayer

    cfg, path, kwargs, expected = reference
    base_out = transformer_outputs(_base(cfg), kwargs)
    diffusers_file = export_lora_file(path / ckpt.LORA_FILE, tmp_path / "diffusers.safetensors", fmt="diffusers").path
    for lora in (path / ckpt.LORA_FILE, diffusers_file):  # the default file as written, and the diffusers export
        pipe = LTX2Pipeline(
            scheduler=None,
            vae=None,
            audio_vae=None,
            text_encoder=None,
            tokenizer=None,
            connectors=None,
            transformer=_base(cfg),
            vocoder=None,
        )
        pipe.load_lora_weights(str(lora))
        # every module of the file became a PEFT layer (prompt_adaln_single -> prompt_adaln, gates as they are)
        assert sum(isinstance(m, BaseTunerLayer) for m in pipe.transformer.modules()) == case[2]
        got = transformer_outputs(pipe.transformer, kwargs)
        _assert_outputs(got, expected)
        assert not torch.allclose(got[0], base_out[0], atol=1e-3)  # the LoRA acts
    # what the fold is for: a file with .alpha tensors is refused by diffusers
    alpha_file = export_lora_file(path / ckpt.LORA_FILE, tmp_path / "alpha.safetensors", fmt="official-alpha").path
    pipe = LTX2Pipeline(
        scheduler=None,
        vae=None,
        audio_vae=None,
        text_encoder=None,
        tokenizer=None,
        connectors=None,
        transformer=_base(cfg),
        vocoder=None,
    )
    with pytest.raises(ValueError, match="Invalid LoRA checkpoint"):
        pipe.load_lora_weights(str(alpha_file))


def _ltx_core_fuse(cfg, lora_path):
    """ltx-core's own path: model keys and LoRA keys renamed by its Comfy maps, then ``apply_loras`` on bf16
    weights (it fuses into bf16/fp8 weights only)."""
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, apply_loras
    from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP

    original = original_state_dict("transformer", _base(cfg), _family(cfg))
    model = {LTXV_MODEL_COMFY_RENAMING_MAP.apply_to_key(k): v.to(torch.bfloat16) for k, v in original.items()}
    lora = {LTXV_LORA_COMFY_RENAMING_MAP.apply_to_key(k): v for k, v in load_file(str(lora_path)).items()}
    fused = apply_loras(
        StateDict(model, torch.device("cpu"), 0, {torch.bfloat16}),
        [LoraStateDictWithStrength(StateDict(lora, torch.device("cpu"), 0, set()), 1.0)],
    )
    return model, fused.sd


def test_ltx_core_fuses_our_default_file_at_alpha_over_rank(reference, case, tmp_path):
    cfg, path, _, _ = reference
    lora = read_lora(path / ckpt.LORA_FILE)
    model, fused = _ltx_core_fuse(cfg, path / ckpt.LORA_FILE)
    alpha_model, alpha_fused = _ltx_core_fuse(
        cfg, export_lora_file(path / ckpt.LORA_FILE, tmp_path / "a.safetensors", fmt="official-alpha").path
    )
    checked = 0
    for name, weights in lora.modules.items():
        key = f"{name}.weight"
        expected = model[key].float() + weights.delta()  # W + (alpha/r) B A
        torch.testing.assert_close(fused[key].float(), expected, rtol=0, atol=2**-7 * expected.abs().max().item())
        # the same LoRA with .alpha tensors: ltx-core ignores them and fuses at scale 1 instead of 3
        wrong = alpha_fused[key].float() - alpha_model[key].float()
        torch.testing.assert_close(wrong, weights.delta() / SCALE, rtol=0, atol=2**-7 * expected.abs().max().item())
        checked += 1
    assert checked == len(lora.modules) == case[2]


def _diffsynth_loader():
    spec = importlib.util.find_spec("diffsynth")
    if spec is None:
        pytest.skip("diffsynth is not installed (scripts/setup.sh installs it with --no-deps)")
    path = Path(spec.origin).parent / "utils" / "lora" / "general.py"
    module_spec = importlib.util.spec_from_file_location("diffsynth_general_lora", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.GeneralLoRALoader


def test_diffsynth_loader_gives_our_outputs_with_and_without_alpha(reference, case, tmp_path, capsys):
    cfg, path, kwargs, expected = reference
    loader = _diffsynth_loader()(device="cpu", torch_dtype=torch.float32)
    alpha_file = export_lora_file(path / ckpt.LORA_FILE, tmp_path / "alpha.safetensors", fmt="official-alpha").path
    for lora in (path / ckpt.LORA_FILE, alpha_file):
        # DiffSynth's LTX-2 DiT (diffsynth/models/ltx2_dit.py LTXModel) names its modules as the original
        # checkpoint (attn1.to_q, ff.net.0.proj, prompt_adaln_single.linear): its loader matches them by name on
        # our modules under those names.
        model = _base(cfg)
        capsys.readouterr()
        loader.fuse_lora_to_base_model(_checkpoint_named(model, _family(cfg)), load_file(str(lora)), alpha=1.0)
        assert f"{case[2]} tensors are fused by LoRA" in capsys.readouterr().out  # every module matched
        _assert_outputs(transformer_outputs(model, kwargs), expected)


def _comfyui_fuse(model, lora_state):
    """ComfyUI's rule, from Comfy-Org/ComfyUI (read at commit 17358c8):
    - comfy/lora.py ``model_lora_keys_unet``: for LTXV/LTXAV models a LoRA module ``diffusion_model.X`` (and bare
      ``X``) maps to the weight ``diffusion_model.X.weight``; ``load_lora`` reads ``X.alpha`` when present;
    - comfy/weight_adapter/lora.py ``calculate_weight``: ``alpha = v[2] / mat2.shape[0]`` (alpha / rank, rank =
      lora_down rows) when an alpha was read, else 1.0; ``weight += strength * alpha * (up @ down)``.
    Applied here to the diffusers module carrying that original name (:func:`_checkpoint_named`)."""
    with torch.no_grad():
        for key in [k for k in lora_state if k.endswith(".lora_A.weight")]:
            module = key[: -len(".lora_A.weight")]
            down, up = lora_state[key], lora_state[f"{module}.lora_B.weight"]
            alpha = lora_state.get(f"{module}.alpha")
            scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
            model.get_submodule(module.removeprefix("diffusion_model.")).weight += scale * (up @ down)
    return model


def test_comfyui_rule_gives_our_outputs_with_and_without_alpha(reference, tmp_path):
    cfg, path, kwargs, expected = reference
    alpha_file = export_lora_file(path / ckpt.LORA_FILE, tmp_path / "alpha.safetensors", fmt="official-alpha").path
    for lora in (path / ckpt.LORA_FILE, alpha_file):
        model = _base(cfg)
        _comfyui_fuse(_checkpoint_named(model, _family(cfg)), load_file(str(lora)))
        _assert_outputs(transformer_outputs(model, kwargs), expected)


@pytest.mark.parametrize("lora_fixture", ["trained_lora23", "trained_lora23_gates", "trained_lora25"])
def test_23_and_25_loras_round_trip_in_every_format_to_the_same_effective_weights(lora_fixture, request, tmp_path):
    """``test_every_format_round_trips_to_the_same_effective_weights`` (test_lora_files.py) on LTX-2.3 and 2.5 LoRAs,
    gates and prompt AdaLN included: each format reads back to the same W + (alpha/r) B A per module."""
    _, path = request.getfixturevalue(lora_fixture)
    source = read_lora(path / ckpt.LORA_FILE)
    assert source.dialect == "official" and all(w.alpha is None for w in source.modules.values())
    for fmt in ("official", "official-alpha", "diffusers"):
        out = export_lora_file(path / ckpt.LORA_FILE, tmp_path / f"{fmt}.safetensors", fmt=fmt).path
        back = read_lora(out)
        assert back.dialect == fmt and back.modules.keys() == source.modules.keys()
        for name, weights in source.modules.items():
            torch.testing.assert_close(back.modules[name].delta(), weights.delta(), rtol=1e-5, atol=1e-7)
        if lora_fixture == "trained_lora23_gates":  # the 2.3-only names in each layout
            keys = set(load_file(str(out)))
            head = "transformer." if fmt == "diffusers" else "diffusion_model."
            prompt = "prompt_adaln" if fmt == "diffusers" else "prompt_adaln_single"
            assert {
                f"{head}{prompt}.linear.lora_A.weight",
                f"{head}audio_{prompt}.linear.lora_B.weight",
                f"{head}transformer_blocks.1.audio_to_video_attn.to_gate_logits.lora_A.weight",
            } <= keys
    # an .alpha file from another tool (alpha != rank, B unfolded) reads to the same effect
    with_alpha = {}
    for name, w in source.modules.items():
        with_alpha[f"diffusion_model.{name}.lora_A.weight"] = w.down
        with_alpha[f"diffusion_model.{name}.lora_B.weight"] = w.up / SCALE
        with_alpha[f"diffusion_model.{name}.alpha"] = torch.tensor(LORA_ALPHA)
    read = from_state_dict(with_alpha)
    assert read.dialect == "official-alpha" and read.modules.keys() == source.modules.keys()
    for name, weights in read.modules.items():
        torch.testing.assert_close(weights.delta(), source.modules[name].delta(), rtol=1e-5, atol=1e-7)
