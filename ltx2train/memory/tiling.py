"""Tiled video VAE encode and decode (``memory.tiled_vae``): overlapping tiles in space and time, blended, so that
the VAE's peak memory depends on the tile and not on the clip. The sizes are the seed's defaults
(``tile_size_in_pixels=512, tile_overlap_in_pixels=128, tile_size_in_frames=128, tile_overlap_in_frames=24``)."""

from __future__ import annotations

import torch

TILE_PIXELS, OVERLAP_PIXELS = 512, 128
TILE_FRAMES, OVERLAP_FRAMES = 128, 24


def enable_vae_tiling(video_vae: torch.nn.Module, tile: int = TILE_PIXELS, overlap: int = OVERLAP_PIXELS,
                      frames: int = TILE_FRAMES, frame_overlap: int = OVERLAP_FRAMES) -> torch.nn.Module:
    """Tiles of ``tile`` pixels overlapping by ``overlap``, ``frames`` frames overlapping by ``frame_overlap``
    (diffusers' own tiling of ``AutoencoderKLLTX2Video``, both directions)."""
    if not 0 <= overlap < tile or not 0 <= frame_overlap < frames:
        raise ValueError(f"VAE tiles: overlaps must be smaller than the tiles ({tile}/{overlap} px, "
                         f"{frames}/{frame_overlap} frames)")
    video_vae.enable_tiling(tile_sample_min_height=tile, tile_sample_min_width=tile, tile_sample_min_num_frames=frames,
                            tile_sample_stride_height=tile - overlap, tile_sample_stride_width=tile - overlap,
                            tile_sample_stride_num_frames=frames - frame_overlap)
    video_vae.use_framewise_encoding = video_vae.use_framewise_decoding = True
    return video_vae
