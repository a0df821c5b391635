"""Official-format LoRA -> PEFT adapters (transformer and connectors) and back."""

import pytest
import torch
from safetensors.torch import save_file

from ltx2train.lora.adapters import apply_lora, export_lora
from ltx2train.models.tiny import random_components

MODULES = {
    # original module name -> (diffusers component, diffusers module path)
    "transformer_blocks.0.attn1.to_q": ("transformer", "transformer_blocks.0.attn1.to_q"),
    "transformer_blocks.1.audio_to_video_attn.to_out.0": (
        "transformer",
        "transformer_blocks.1.audio_to_video_attn.to_out.0",
    ),
    "patchify_proj": ("transformer", "proj_in"),
    "video_embeddings_connector.transformer_1d_blocks.0.attn1.to_k": (
        "connectors",
        "video_connector.transformer_blocks.0.attn1.to_k",
    ),
}


def _official_lora(modules, ranks=(4, 2, 4, 3), alphas=(8.0, 2.0, None, 6.0)):
    g = torch.Generator().manual_seed(3)
    lora = {}
    for (name, (comp, path)), rank, alpha in zip(MODULES.items(), ranks, alphas):
        linear = modules[comp].get_submodule(path)
        lora[f"diffusion_model.{name}.lora_A.weight"] = torch.randn(rank, linear.in_features, generator=g) * 0.1
        lora[f"diffusion_model.{name}.lora_B.weight"] = torch.randn(linear.out_features, rank, generator=g) * 0.1
        if alpha is not None:
            lora[f"diffusion_model.{name}.alpha"] = torch.tensor(alpha)
    return lora


def test_lora_matches_manual_merge_and_round_trips(tmp_path):
    base = random_components("tiny", seed=2)
    lora = _official_lora(base)
    path = tmp_path / "lora.safetensors"
    save_file(lora, str(path))
    patched = random_components("tiny", seed=2)
    counts = apply_lora(patched["transformer"], path, connectors=patched["connectors"])
    assert counts == {"transformer": 3, "connectors": 1}

    x_g = torch.Generator().manual_seed(0)
    for (name, (comp, dpath)), rank, alpha in zip(MODULES.items(), (4, 2, 4, 3), (8.0, 2.0, None, 6.0)):
        plain = base[comp].get_submodule(dpath)
        adapted = patched[comp].get_submodule(dpath)
        a, b = lora[f"diffusion_model.{name}.lora_A.weight"], lora[f"diffusion_model.{name}.lora_B.weight"]
        scale = (alpha if alpha is not None else rank) / rank
        x = torch.randn(3, plain.in_features, generator=x_g)
        with torch.no_grad():
            expected = plain(x) + scale * (x @ a.T @ b.T)
            torch.testing.assert_close(adapted(x), expected, rtol=1e-5, atol=1e-6)

    exported = export_lora(patched["transformer"], connectors=patched["connectors"])
    assert set(exported.modules) == set(MODULES)
    for name, alpha in zip(MODULES, (8.0, 2.0, None, 6.0)):
        module = exported.modules[name]
        assert torch.equal(module.down, lora[f"diffusion_model.{name}.lora_A.weight"])
        assert torch.equal(module.up, lora[f"diffusion_model.{name}.lora_B.weight"])
        # alpha is never dropped: each module's own (rank when the file had none)
        assert module.alpha == (alpha if alpha is not None else module.rank)


def test_connector_lora_without_connectors_is_an_error():
    base = random_components("tiny", seed=2)
    with pytest.raises(KeyError, match="video_embeddings_connector"):
        apply_lora(base["transformer"], _official_lora(base))
