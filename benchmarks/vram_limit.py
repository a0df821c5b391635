"""P6: DiffSynth's ``vram_limit`` in ltx2train's inference pipeline -- for each limit, the transformer blocks kept on
the device and streamed, the weights resident, the peak memory of one denoising forward at the sample's size and
its time, side by side in one run (ratios to the first limit; nothing asserted). Absolute figures only from a GPU
(print them with the GPU and the date): the check that the resident set the limit allows is what the device holds.

Random weights with the shipped production config (no download): the transformer and the text connectors, stored
as ``--storage`` (float8_e5m2, DiffSynth's low-VRAM examples, or bf16), placed by ``inference/vram.py``'s plan;
Gemma and the decoders are left out (``--others-gb`` stands for them in the limit).

    python benchmarks/vram_limit.py --variant ltx2-19b --limits 8,16,24,48 --others-gb 9   # GPU
    python benchmarks/vram_limit.py --dry-run                                              # CPU smoke, tiny
"""

from __future__ import annotations

import argparse
import time

import torch
from train_step import batch_for, build, model_and_clip_arguments, transformer_inputs  # (benchmarks/ is on the path)

from ltx2train.config import ObjectiveConfig
from ltx2train.inference.vram import VramPlan, module_bytes, place
from ltx2train.models.specs import load_variant
from ltx2train.training.strategies import PRESETS, Strategy


def one_limit(spec, args, limit: float, device: str) -> dict:
    transformer = build(spec, "transformer", "cpu", torch.bfloat16, args.layers)
    connectors = build(spec, "connectors", "cpu", torch.bfloat16, None)
    storage = getattr(torch, args.storage) if args.storage != "bfloat16" else None
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    streamed = place(
        {"transformer": transformer, "connectors": connectors},
        VramPlan(storage, True, limit),
        torch.bfloat16,
        torch.device(device),
        None,
        others=int(args.others_gb * 2**30),
    )
    resident = torch.cuda.memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    batch = {k: v.to(device) for k, v in batch_for(spec, args, device).items()}
    strategy = Strategy("t2av", PRESETS["t2av"], ObjectiveConfig(), fps=args.fps)
    start = time.perf_counter()
    with torch.no_grad():
        transformer(**transformer_inputs(connectors, batch, strategy).model_kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    return {
        "streamed": streamed,
        "blocks": len(transformer.transformer_blocks),
        "resident_gb": resident,
        "peak_gb": peak,
        "seconds": seconds,
        "block_gb": module_bytes(transformer.transformer_blocks[0]) / 2**30,
    }


def main() -> None:
    parser = model_and_clip_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--limits", default="8,16,24,48", help="vram_limit values in GB, comma-separated")
    parser.add_argument("--others-gb", type=float, default=9.0, help="GB the limit keeps for Gemma and the decoders")
    parser.add_argument("--storage", default="float8_e5m2", choices=("float8_e5m2", "float8_e4m3fn", "bfloat16"))
    parser.add_argument("--dry-run", action="store_true", help="tiny at 64x64x9 on the CPU")
    args = parser.parse_args()
    if args.dry_run:
        args.variant, args.height, args.width, args.frames, args.text_tokens = "tiny", 64, 64, 9, 32
        args.others_gb, args.limits = 0.0, "0.00002,0.00009,1"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = load_variant(args.variant)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run: placement only)"
    print(
        f"P6 on {name}, {time.strftime('%Y-%m-%d')}: {spec.name}, {args.width}x{args.height}x{args.frames}, "
        f"{args.storage}, {args.others_gb:g} GB for the rest"
    )
    first = None
    for limit in [float(x) for x in args.limits.split(",")]:
        r = one_limit(spec, args, limit, device)
        first = first or r["seconds"]
        print(
            f"  vram_limit {limit:g} GB: {r['blocks'] - r['streamed']}/{r['blocks']} blocks resident "
            f"({r['block_gb']:.2f} GB each), weights on the device {r['resident_gb']:.2f} GB, forward peak "
            f"{r['peak_gb']:.2f} GB, {r['seconds']:.3f} s (x{r['seconds'] / first:.2f})"
        )


if __name__ == "__main__":
    main()
