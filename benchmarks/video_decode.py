"""P5: decoding one clip's video latents with the conv VAE decoder and with LTX-2.5's diffusion video decoder, side
by side in one run: seconds per clip and peak memory of each, and their ratio (nothing asserted). Absolute figures
only from a GPU (print them with the GPU and the date).

Random weights with the shipped production config (no download), bf16 on a GPU (float32 on the CPU). The decoders
run as validation and ``sample`` run them: the conv decoder through ``AutoencoderKLLTX2Video.decode`` (tiled with
diffusers' defaults), the diffusion decoder through ``inference/diffusion_decode.py`` (tiled, its FlexAttention
compiled on a GPU: the first decode compiles, so it is warm-up).

    python benchmarks/video_decode.py --variant ltx2.5 --height 512 --width 768 --frames 121   # GPU
    python benchmarks/video_decode.py --dry-run                                                 # CPU smoke, tiny-2.5
"""

from __future__ import annotations

import argparse
import time

import torch

from ltx2train.inference.diffusion_decode import decode_video
from ltx2train.models.specs import load_variant


def build(spec, name: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters made in the compute dtype, on the device
    try:
        with torch.device(device):
            module = spec.component(name).build()
    finally:
        torch.set_default_dtype(default)
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def timed(fn, device: str, repeats: int, warmup: int) -> tuple[float, float]:
    """(seconds per call after ``warmup`` calls, peak GiB on a GPU or nan)."""
    cuda = device.startswith("cuda")
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    return seconds, torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")


def _conv_decode(spec, latents, device, dtype, args):
    """(seconds per clip, peak GiB) of the VAE's tiled conv decode; the VAE is gone when this returns."""
    vae = build(spec, "video_vae", device, dtype)
    vae.enable_tiling()
    with torch.no_grad():
        return timed(lambda: vae.decode(latents, None, return_dict=False), device, args.repeats, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="ltx2.5")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true", help="tiny-2.5 at 64x64x9 on the CPU")
    args = parser.parse_args()
    if args.dry_run:
        args.variant, args.height, args.width, args.frames = "tiny-2.5", 64, 64, 9
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    spec = load_variant(args.variant)
    if not spec.has("video_diffusion_decoder"):
        raise SystemExit(f"{spec.name} ({spec.version}) has no diffusion video decoder; use an LTX-2.5 variant")
    channels = spec.component("video_vae").config["latent_channels"]
    latents = torch.randn(
        1, channels, (args.frames - 1) // 8 + 1, args.height // 32, args.width // 32, device=device, dtype=dtype
    )
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run: ratios only)"
    print(f"P5 on {name}, {time.strftime('%Y-%m-%d')}: {spec.name}, {args.width}x{args.height}x{args.frames}, {dtype}")

    conv = _conv_decode(spec, latents, device, dtype, args)  # the VAE is freed before the diffusion decoder loads
    decoder = build(spec, "video_diffusion_decoder", device, dtype)
    diffusion = timed(lambda: decode_video(decoder, latents, seed=0), device, args.repeats, args.warmup)
    print(f"  conv decoder:      {conv[0]:.3f} s/clip, peak {conv[1]:.2f} GiB")
    print(
        f"  diffusion decoder: {diffusion[0]:.3f} s/clip (x{diffusion[0] / conv[0]:.2f} of conv), "
        f"peak {diffusion[1]:.2f} GiB"
    )


if __name__ == "__main__":
    main()
