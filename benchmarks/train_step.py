"""P4: one training step of the LTX-2 transformer at real sizes -- step time, tokens/s, MFU and peak memory --
for LoRA (rank 32) and full fine-tuning, with and without the FP8 base, gradient checkpointing and block swap,
measured side by side in one run (ratios to the first mode printed; nothing asserted). Absolute figures only from
a GPU (print them with the GPU and the date).

Random weights with the shipped production config (no download); the step is the trainer's: connectors on
cached Gemma states, the t2av strategy (shifted logit-normal sigma, per-token timesteps), bf16 autocast,
masked video + audio losses, backward, AdamW. Each mode builds its own transformer (FP8 and block swap change
it): ``bf16`` (nothing), ``ckpt`` (gradient checkpointing), ``fp8`` (the frozen base stored in float8,
``memory/fp8.py``), ``swapN`` (the last N blocks in host memory, ``memory/offload.py``), joined with ``+``.
MFU counts model FLOPs from the architecture and the token counts (``analysis/flops.py``) over the GPU's dense
bf16 peak.

    python benchmarks/train_step.py --variant ltx2-19b --height 512 --width 768 --frames 121   # GPU
    python benchmarks/train_step.py --variant tiny --height 64 --width 64 --frames 9 --text-tokens 32   # CPU smoke
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from ltx2train.config import LoRAConfig, ObjectiveConfig, OptimizerConfig
from ltx2train.models.specs import load_variant
from ltx2train.models.text_encoder import ProjectedText, connect_text
from ltx2train.training.optim import build_optimizer
from ltx2train.training.strategies import PRESETS, Strategy
from ltx2train.training.methods.lora import add_lora

REPO = Path(__file__).resolve().parents[1]


def component_spec(spec, name: str, layers: int | None):
    """``name``'s spec in ``spec``; the transformer with ``layers`` blocks when given (``--layers``)."""
    component = spec.component(name)
    if layers and name == "transformer":
        return dataclasses.replace(component, config={**component.config, "num_layers": layers})
    return component


def build(spec, name: str, device: str, dtype: torch.dtype, layers: int | None) -> torch.nn.Module:
    component = component_spec(spec, name, layers)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in bf16 directly on the device: 19B fits once
    try:
        with torch.device(device):
            module = component.build()
    finally:
        torch.set_default_dtype(default)
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def batch_for(spec, args, device: str) -> dict[str, torch.Tensor]:
    vae = spec.component("video_vae").config
    audio = spec.component("audio_vae").config
    conn = spec.component("connectors").config
    frames = (args.frames - 1) // 8 + 1
    audio_len = round(args.frames / args.fps * 25)
    return {
        "video_latents": torch.randn(args.batch, vae["latent_channels"], frames, args.height // 32, args.width // 32),
        "audio_latents": torch.randn(args.batch, audio["latent_channels"], audio_len, audio["mel_bins"] // 4),
        "text_attention_mask": torch.ones(args.batch, args.text_tokens, dtype=torch.int64, device=device),
        **text_features(conn, args.batch, args.text_tokens, device),
    }


def text_features(conn: dict, batch: int, tokens: int, device: str) -> dict[str, torch.Tensor]:
    """The cache's projected text features: one set (LTX-2.0) or per modality (LTX-2.3)."""

    def randn(dim):
        return torch.randn(batch, tokens, dim, device=device, dtype=torch.bfloat16)

    if conn.get("per_modality_projections"):
        return {"text_video": randn(conn["video_hidden_dim"]), "text_audio": randn(conn["audio_hidden_dim"])}
    return {"text_video": randn(conn["caption_channels"])}


def transformer_inputs(connectors, batch: dict, strategy):
    """The trainer's step inputs: the connectors on the cached text features, then the strategy (bf16 latents)."""
    with torch.no_grad():
        context = connect_text(
            connectors, ProjectedText(batch["text_video"], batch.get("text_audio"), batch["text_attention_mask"])
        )
    inputs = strategy.inputs(batch, context)
    for key in ("hidden_states", "audio_hidden_states"):
        inputs.model_kwargs[key] = inputs.model_kwargs[key].to(torch.bfloat16)
    return inputs


def measure(transformer, connectors, batch, strategy, optimizer, device: str, steps: int, warmup: int):
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        inputs = transformer_inputs(connectors, batch, strategy)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            video_pred, audio_pred = transformer(**inputs.model_kwargs)
            loss, _ = strategy.loss(video_pred, audio_pred, inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return sum(times) / len(times), peak


MODES = "bf16,ckpt,fp8+ckpt,fp8+ckpt+swap24"


def build_mode(spec, mode: str, method: str, args, device: str):
    """The transformer for one mode, and its trained parameters."""
    from ltx2train.memory.fp8 import store_fp8
    from ltx2train.memory.offload import enable_block_swap

    parts = mode.split("+")
    swap = next((int(p[4:]) for p in parts if p.startswith("swap")), 0)
    fp8 = "fp8" in parts
    if fp8 and method == "full":
        raise ValueError("fp8 stores a frozen base: LoRA only")
    dtype = torch.float32 if method == "full" else torch.bfloat16  # full: float32 master weights under autocast
    transformer = build(spec, "transformer", "cpu" if swap or fp8 else device, dtype, args.layers)
    if fp8:
        store_fp8(transformer, "transformer", compute_dtype=torch.bfloat16)
    if method == "lora":
        # bf16 autocast, as the trainer's step: no float32 copy of adapted inputs (``casts_adapter_inputs``)
        params = add_lora(transformer, LoRAConfig(rank=args.rank, alpha=args.rank), cast_inputs=False)
    else:
        params = list(transformer.requires_grad_(True).parameters())
    if "ckpt" in parts:
        transformer.enable_gradient_checkpointing()
    if swap:
        enable_block_swap(transformer, swap, device, trained_on_host=method == "full")
    elif fp8:
        transformer.to(device)
    return transformer.train(), params


def step_flops_of(spec_name: str, method: str, args, tokens: dict) -> int:
    from ltx2train.config import load_config
    from ltx2train.models.specs import load_variant
    from ltx2train.analysis.flops import step_flops

    cfg = load_config(
        REPO / "recipes" / "t2av_lora.yaml",
        [f"model.variant={spec_name}", f"train.method={method}", f"lora.rank={args.rank}"],
    )
    spec = component_spec(load_variant(spec_name), "transformer", args.layers)
    return step_flops(cfg, spec, batch=args.batch, video=tokens["video"], audio=tokens["audio"], text=args.text_tokens)


def model_and_clip_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The variant, its depth and the clip one step sees (shared with P6)."""
    parser.add_argument("--variant", default="ltx2-19b")
    parser.add_argument("--layers", type=int, help="transformer blocks (default: the variant's)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--text-tokens", type=int, default=1024)
    return parser


def main() -> None:
    parser = model_and_clip_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--modes", default=MODES, help=f"comma-separated (default {MODES})")
    args = parser.parse_args()

    from ltx2train.analysis.flops import peak_flops

    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    peak = peak_flops(torch.device(device))
    spec = load_variant(args.variant)
    connectors = build(spec, "connectors", device, torch.bfloat16, None)
    batch = batch_for(spec, args, device)
    tokens = {"video": batch["video_latents"][0, 0].numel(), "audio": batch["audio_latents"].shape[2]}
    print(
        f"P4 on {name}, {time.strftime('%Y-%m-%d')}: {spec.name}"
        f"{f' ({args.layers} blocks)' if args.layers else ''}, clip {args.width}x{args.height}x{args.frames}: "
        f"{tokens['video']} video + {tokens['audio']} audio + {args.text_tokens} text tokens, batch {args.batch}"
    )
    strategy = Strategy("t2av", PRESETS["t2av"], ObjectiveConfig(), fps=args.fps)
    for method in args.methods.split(","):
        flops = step_flops_of(str(args.variant), method, args, tokens)
        first = None
        for mode in args.modes.split(","):
            try:
                transformer, params = build_mode(spec, mode, method, args, device)
                optimizer = build_optimizer(params, OptimizerConfig())
                seconds, peak_gib = measure(
                    transformer, connectors, batch, strategy, optimizer, device, args.steps, args.warmup
                )
            except (torch.OutOfMemoryError, ValueError) as exc:
                print(
                    f"  {method:>4} {mode:>22}: {'out of memory' if isinstance(exc, torch.OutOfMemoryError) else exc}"
                )
                transformer = optimizer = None
                if device == "cuda":
                    torch.cuda.empty_cache()
                continue
            first = first or seconds
            mfu = f"MFU {flops / seconds / peak:.1%}" if peak else f"{flops / seconds / 1e12:.3g} TFLOP/s"
            memory = f"peak {peak_gib:.1f} GiB" if device == "cuda" else "peak memory: GPU only"
            print(
                f"  {method:>4} {mode:>22}: {seconds:.3f} s/step (x{seconds / first:.2f}), "
                f"{tokens['video'] * args.batch / seconds:,.0f} video tokens/s, {mfu}, {memory}"
            )
            del transformer, optimizer
            if device == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
