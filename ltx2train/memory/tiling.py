"""Tiled video VAE encode and decode (``memory.tiled_vae``): overlapping tiles in space and time, blended, so that
the VAE's peak memory depends on the tile and not on the clip. The sizes are DiffSynth's defaults
(``tile_size_in_pixels=512, tile_overlap_in_pixels=128, tile_size_in_frames=128, tile_overlap_in_frames=24``)."""

from __future__ import annotations

import torch

from ltx2train.utils.errors import UserError

TILE_PIXELS, OVERLAP_PIXELS = 512, 128
TILE_FRAMES, OVERLAP_FRAMES = 128, 24


def enable_vae_tiling(
    video_vae: torch.nn.Module,
    tile: int = TILE_PIXELS,
    overlap: int = OVERLAP_PIXELS,
    frames: int = TILE_FRAMES,
    frame_overlap: int = OVERLAP_FRAMES,
) -> torch.nn.Module:
    """Tiles of ``tile`` pixels overlapping by ``overlap``, ``frames`` frames overlapping by ``frame_overlap``
    (diffusers' own tiling of ``AutoencoderKLLTX2Video``, both directions)."""
    if not 0 <= overlap < tile or not 0 <= frame_overlap < frames:
        raise UserError(
            f"VAE tiles: overlaps must be smaller than the tiles ({tile}/{overlap} px, {frames}/{frame_overlap} frames)"
        )
    video_vae.enable_tiling(
        tile_sample_min_height=tile,
        tile_sample_min_width=tile,
        tile_sample_min_num_frames=frames,
        tile_sample_stride_height=tile - overlap,
        tile_sample_stride_width=tile - overlap,
        tile_sample_stride_num_frames=frames - frame_overlap,
    )
    video_vae.use_framewise_encoding = video_vae.use_framewise_decoding = True
    return video_vae


LATENT_PIXELS = 32  # one video latent's side in pixels


def decode_tile_problem(height: int, width: int, tile: int = TILE_PIXELS, overlap: int = OVERLAP_PIXELS) -> str | None:
    """Why diffusers' tiled decode of a ``height`` x ``width`` clip would fail with these tiles, or None. It tiles
    every side once the clip exceeds a tile, at a stride of ``tile - overlap``; a side whose latents minus one are a
    multiple of the stride (in latents) leaves a last tile one latent wide, which the VAE's padding cannot take."""
    size, stride = tile // LATENT_PIXELS, (tile - overlap) // LATENT_PIXELS
    sides = (height // LATENT_PIXELS, width // LATENT_PIXELS)
    if stride < 1:
        return f"tiles of {tile} px overlapping by {overlap} px advance by less than one latent ({LATENT_PIXELS} px)"
    if all(side <= size for side in sides):
        return None
    bad = [side for side in sides if side > 1 and (side - 1) % stride == 0]
    if not bad:
        return None
    return (
        f"tiles of {tile} px every {tile - overlap} px leave a last tile one latent ({LATENT_PIXELS} px) wide "
        f"across {bad[0] * LATENT_PIXELS} px, which the VAE cannot decode"
    )


def fitting_overlap(height: int, width: int, tile: int = TILE_PIXELS, overlap: int = OVERLAP_PIXELS) -> int | None:
    """The overlap nearest to ``overlap`` (multiples of a latent, below the tile) that decodes this size, or None."""
    candidates = sorted(range(0, tile, LATENT_PIXELS), key=lambda o: (abs(o - overlap), o))
    return next((o for o in candidates if decode_tile_problem(height, width, tile, o) is None), None)


def fit_decode_tiles(video_vae: torch.nn.Module, height: int, width: int) -> None:
    """Before decoding a ``height`` x ``width`` clip with ``memory.tiled_vae``'s tiles: the nearest overlap that
    decodes it (DiffSynth's 128 px unless that leaves a one-latent tile)."""
    if not getattr(video_vae, "use_tiling", False) or decode_tile_problem(height, width) is None:
        return
    overlap = fitting_overlap(height, width)
    if overlap is not None:
        enable_vae_tiling(video_vae, TILE_PIXELS, overlap, TILE_FRAMES, OVERLAP_FRAMES)
