"""memory.tiled_vae: the video VAE encodes and decodes tile by tile, so its largest activation follows the tile."""

import torch

from conftest import tiny_config
from ltx2train.memory.tiling import enable_vae_tiling
from ltx2train.models.loading import load_component


def _largest_activation(vae, fn) -> int:
    """Elements of the largest output of any layer of ``vae`` while ``fn`` runs (forward hooks)."""
    sizes = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(out.numel()))
             for m in vae.modules() if isinstance(m, torch.nn.Conv3d)]
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
        whole = [_largest_activation(vae, lambda: vae.encode(video)),
                 _largest_activation(vae, lambda: vae.decode(whole_latents))]
        enable_vae_tiling(vae, tile=128, overlap=64)  # tiles of 4 latents, stride 2
        latents = vae.encode(video).latent_dist.mode()
        tiled = [_largest_activation(vae, lambda: vae.encode(video)),
                 _largest_activation(vae, lambda: vae.decode(latents))]
        assert latents.shape == whole_latents.shape and vae.decode(latents).sample.shape == video.shape
    assert torch.isfinite(latents).all()
    # a 128 px tile is a quarter of a 256 px frame: so is the largest activation, in encode and in decode
    assert tiled[0] <= whole[0] / 4 and tiled[1] <= whole[1] / 4, (whole, tiled)
