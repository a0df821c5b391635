"""The LoRA files ltx2train writes, loaded by the consumers people run, with those consumers' own code.

The LoRA is trained with alpha != rank (scale 3), so a consumer that drops or double-applies alpha misses by
3x. Each consumer must give the effect ltx2train itself applies (``apply_lora``), at the stated tolerance:

- diffusers 0.42.1 ``LTX2Pipeline.load_lora_weights``;
- Lightricks' ltx-core ``apply_loras`` — the fusion ``ltx-pipelines`` runs (test-only install, ``--no-deps``);
- DiffSynth-Studio's ``GeneralLoRALoader`` from the PyPI ``diffsynth`` wheel (test-only, ``--no-deps``). The package's
  ``__init__`` imports torchvision, modelscope and pandas, which are not installed here, so the loader's own
  file ``diffsynth/utils/lora/general.py`` (it imports only torch) is loaded from the installed wheel by path;
- ComfyUI cannot be installed here: its rule is restated from its source and applied (see the test).
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import LORA_ALPHA, LORA_RANK, transformer_inputs, transformer_outputs
from ltx2train.export.lora import export_lora_file
from ltx2train.models.adapters import apply_lora
from ltx2train.models.loading import load_component
from ltx2train.models.lora_files import read_lora
from ltx2train.models.writing import original_state_dict
from ltx2train.training import checkpoint as ckpt

SCALE = LORA_ALPHA / LORA_RANK


@pytest.fixture(scope="module")
def reference(trained_lora, tiny_workspace, tmp_path_factory):
    """(config, checkpoint, fixed inputs, outputs of the base + LoRA as ltx2train applies it)."""
    cfg, path = trained_lora
    kwargs = transformer_inputs(tiny_workspace, tmp_path_factory.mktemp("inputs"))
    ours = load_component("tiny", "transformer", cfg.model.checkpoint)
    apply_lora(ours, path / ckpt.LORA_FILE)
    return cfg, path, kwargs, transformer_outputs(ours, kwargs)


def _assert_outputs(got, expected, tol=1e-5):
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=tol, atol=tol)


def _base(cfg):
    return load_component("tiny", "transformer", cfg.model.checkpoint)


def test_diffusers_load_lora_weights_gives_our_outputs(reference, tmp_path):
    from diffusers import LTX2Pipeline

    cfg, path, kwargs, expected = reference
    base_out = transformer_outputs(_base(cfg), kwargs)
    diffusers_file = export_lora_file(path / ckpt.LORA_FILE, tmp_path / "diffusers.safetensors", fmt="diffusers").path
    for lora in (path / ckpt.LORA_FILE, diffusers_file):  # the default file as written, and the diffusers export
        pipe = LTX2Pipeline(scheduler=None, vae=None, audio_vae=None, text_encoder=None, tokenizer=None,
                            connectors=None, transformer=_base(cfg), vocoder=None)
        pipe.load_lora_weights(str(lora))
        got = transformer_outputs(pipe.transformer, kwargs)
        _assert_outputs(got, expected)
        assert not torch.allclose(got[0], base_out[0], atol=1e-3)  # the LoRA acts
    # what the fold is for: a file with .alpha tensors is refused by diffusers
    alpha_file = export_lora_file(path / ckpt.LORA_FILE, tmp_path / "alpha.safetensors", fmt="official-alpha").path
    pipe = LTX2Pipeline(scheduler=None, vae=None, audio_vae=None, text_encoder=None, tokenizer=None,
                        connectors=None, transformer=_base(cfg), vocoder=None)
    with pytest.raises(ValueError, match="Invalid LoRA checkpoint"):
        pipe.load_lora_weights(str(alpha_file))


def _ltx_core_fuse(cfg, lora_path):
    """ltx-core's own path: model keys and LoRA keys renamed by its Comfy maps, then ``apply_loras`` on bf16
    weights (it fuses into bf16/fp8 weights only)."""
    from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, apply_loras
    from ltx_core.loader.primitives import LoraStateDictWithStrength, StateDict
    from ltx_core.model.transformer import LTXV_MODEL_COMFY_RENAMING_MAP

    original = original_state_dict("transformer", _base(cfg), "2.0")
    model = {LTXV_MODEL_COMFY_RENAMING_MAP.apply_to_key(k): v.to(torch.bfloat16) for k, v in original.items()}
    lora = {LTXV_LORA_COMFY_RENAMING_MAP.apply_to_key(k): v for k, v in load_file(str(lora_path)).items()}
    fused = apply_loras(StateDict(model, torch.device("cpu"), 0, {torch.bfloat16}),
                        [LoraStateDictWithStrength(StateDict(lora, torch.device("cpu"), 0, set()), 1.0)])
    return model, fused.sd


def test_ltx_core_fuses_our_default_file_at_alpha_over_rank(reference, tmp_path):
    cfg, path, _, _ = reference
    lora = read_lora(path / ckpt.LORA_FILE)
    model, fused = _ltx_core_fuse(cfg, path / ckpt.LORA_FILE)
    alpha_model, alpha_fused = _ltx_core_fuse(cfg, export_lora_file(path / ckpt.LORA_FILE, tmp_path / "a.safetensors",
                                                                    fmt="official-alpha").path)
    checked = 0
    for name, weights in lora.modules.items():
        key = f"{name}.weight"
        expected = model[key].float() + weights.delta()  # W + (alpha/r) B A
        torch.testing.assert_close(fused[key].float(), expected, rtol=0, atol=2 ** -7 * expected.abs().max().item())
        # the same LoRA with .alpha tensors: ltx-core ignores them and fuses at scale 1 instead of 3
        wrong = alpha_fused[key].float() - alpha_model[key].float()
        torch.testing.assert_close(wrong, weights.delta() / SCALE, rtol=0, atol=2 ** -7 * expected.abs().max().item())
        checked += 1
    assert checked == len(lora.modules) == 50


def _diffsynth_loader():
    spec = importlib.util.find_spec("diffsynth")
    if spec is None:
        pytest.skip("diffsynth is not installed (scripts/setup.sh installs it with --no-deps)")
    path = Path(spec.origin).parent / "utils" / "lora" / "general.py"
    module_spec = importlib.util.spec_from_file_location("diffsynth_general_lora", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.GeneralLoRALoader


def test_diffsynth_loader_gives_our_outputs_with_and_without_alpha(reference, tmp_path):
    cfg, path, kwargs, expected = reference
    loader = _diffsynth_loader()(device="cpu", torch_dtype=torch.float32)
    alpha_file = export_lora_file(path / ckpt.LORA_FILE, tmp_path / "alpha.safetensors", fmt="official-alpha").path
    for lora in (path / ckpt.LORA_FILE, alpha_file):
        # DiffSynth's LTX-2 DiT names its block modules as the original checkpoint (attn1.to_q, ff.net.0.proj),
        # which are also diffusers' names inside the blocks: its loader matches them by name on our module.
        model = _base(cfg)
        loader.fuse_lora_to_base_model(model, load_file(str(lora)), alpha=1.0)
        _assert_outputs(transformer_outputs(model, kwargs), expected)


def _comfyui_fuse(model, lora_state):
    """ComfyUI's rule, from Comfy-Org/ComfyUI (read at commit 17358c8):
    - comfy/lora.py ``model_lora_keys_unet``: for LTXV/LTXAV models a LoRA module ``diffusion_model.X`` (and bare
      ``X``) maps to the weight ``diffusion_model.X.weight``; ``load_lora`` reads ``X.alpha`` when present;
    - comfy/weight_adapter/lora.py ``calculate_weight``: ``alpha = v[2] / mat2.shape[0]`` (alpha / rank, rank =
      lora_down rows) when an alpha was read, else 1.0; ``weight += strength * alpha * (up @ down)``.
    Applied here to the diffusers module carrying that original name (the module names agree inside blocks)."""
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
        model = _comfyui_fuse(_base(cfg), load_file(str(lora)))
        _assert_outputs(transformer_outputs(model, kwargs), expected)
