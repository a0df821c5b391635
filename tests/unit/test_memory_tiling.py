"""memory.tiled_vae: the video VAE encodes and decodes tile by tile, so its largest activation follows the tile."""

import pytest
import torch

from conftest import tiny_config
from ltx2train.memory.tiling import enable_vae_tiling
from ltx2train.models.loading import load_component


def _largest_activation(vae, fn) -> int:
    """Elements of the largest output of any layer of ``vae`` while ``fn`` runs (forward hooks)."""
    sizes = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
        for m in vae.modules()
        if isinstance(m, torch.nn.Conv3d)
    ]
    try:
        fn()
    finally:
        for h in hooks:
            h.remove()
    return max(sizes)


def test_tiled_vae_bounds_the_largest_activation_and_keeps_the_shapes(tiny_workspace, tmp_path):
    cfg = tiny_config(tiny_workspace, tmp_path / "run")
    vae = load_component(cfg.model.variant, "video_vae", cfg.model.checkpoint)
    smooth = torch.rand(1, 3, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    video = torch.nn.functional.interpolate(smooth, size=(1, 256, 256), mode="trilinear")
    with torch.no_grad():
        whole_latents = vae.encode(video).latent_dist.mode()
        whole = [
            _largest_activation(vae, lambda: vae.encode(video)),
            _largest_activation(vae, lambda: vae.decode(whole_latents)),
        ]
        enable_vae_tiling(vae, tile=128, overlap=64)  # tiles of 4 latents, stride 2
        latents = vae.encode(video).latent_dist.mode()
        tiled = [
            _largest_activation(vae, lambda: vae.encode(video)),
            _largest_activation(vae, lambda: vae.decode(latents)),
        ]
        assert latents.shape == whole_latents.shape and vae.decode(latents).sample.shape == video.shape
    assert torch.isfinite(latents).all()
    # a 128 px tile is a quarter of a 256 px frame: so is the largest activation, in encode and in decode
    assert tiled[0] <= whole[0] / 4 and tiled[1] <= whole[1] / 4, (whole, tiled)


def _decodes(vae, latents) -> bool:
    try:
        with torch.no_grad():
            vae.decode(latents)
        return True
    except RuntimeError:
        return False


def test_which_tiles_decode_is_predicted_and_validation_fits_its_overlap():
    """diffusers' tiled decode fails when a side leaves a last tile one latent wide: ``decode_tile_problem``
    predicts exactly which sizes and tiles fail (checked by decoding), and ``fit_decode_tiles`` picks an overlap
    that decodes (validation's tiles are ours to choose)."""
    from ltx2train.memory.tiling import decode_tile_problem, fit_decode_tiles
    from ltx2train.models.tiny import random_components

    vae = random_components("tiny")["video_vae"].requires_grad_(False)
    outcomes = []
    for side in (5, 7, 8, 9):
        for tile, overlap in ((64, 0), (96, 32), (128, 32), (128, 64), (160, 64)):
            enable_vae_tiling(vae, tile, overlap)
            predicted = decode_tile_problem(side * 32, 64, tile, overlap) is None
            outcomes.append(predicted)
            assert _decodes(vae, torch.randn(1, 8, 2, side, 2)) == predicted, (side, tile, overlap)
    assert True in outcomes and False in outcomes
    latents = torch.randn(1, 8, 2, 2, 25)  # 800 px wide: DiffSynth's 512 / 128 px tiles leave a 32 px one
    enable_vae_tiling(vae)
    assert decode_tile_problem(64, 800) and not _decodes(vae, latents)
    fit_decode_tiles(vae, 64, 800)
    assert _decodes(vae, latents)


def test_the_diffsynth_pipelines_tiles_are_checked_against_the_clip():
    from ltx2train.inference import ltx2_inputs

    with pytest.raises(ValueError, match=r"tile_size_in_pixels.*256x256.*one latent .*use tile_overlap_in_pixels=0"):
        ltx2_inputs.check_decode_tiles(256, 256, 64, 32)
    ltx2_inputs.check_decode_tiles(256, 256, 64, 0)
