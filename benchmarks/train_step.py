"""One LoRA training step of the LTX-2 transformer at real sizes: time and peak memory, with gradient
checkpointing on vs off, measured side by side in one run (ratios printed; nothing asserted).

Random weights with the shipped production config (no download); the step is the trainer's: connectors on
cached Gemma states, the t2av strategy (shifted logit-normal sigma, per-token timesteps), bf16 autocast,
masked video + audio losses, backward, AdamW on the LoRA parameters.

    python benchmarks/train_step.py --variant ltx2-19b --height 512 --width 768 --frames 121   # GPU
    python benchmarks/train_step.py --variant tiny --height 64 --width 64 --frames 9             # CPU smoke
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch

from ltx2train.config import LoRAConfig, ObjectiveConfig, OptimizerConfig
from ltx2train.models.specs import load_variant
from ltx2train.models.text_encoder import ProjectedText, connect_text
from ltx2train.training.optim import build_optimizer
from ltx2train.training.strategies import PRESETS, Strategy
from ltx2train.training.methods.lora import add_lora


def build(spec, name: str, device: str, dtype: torch.dtype, layers: int | None) -> torch.nn.Module:
    component = spec.component(name)
    if layers is not None and name == "transformer":
        component = SimpleNamespace(build=lambda: type(component)(component.name, component.class_name,
                                                                  {**component.config, "num_layers": layers}).build())
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


def measure(transformer, connectors, batch, strategy, optimizer, device: str, steps: int, warmup: int):
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.no_grad():
            context = connect_text(connectors, ProjectedText(batch["text_video"], batch.get("text_audio"),
                                                             batch["text_attention_mask"]))
        inputs = strategy.inputs(batch, context)
        for key in ("hidden_states", "audio_hidden_states"):
            inputs.model_kwargs[key] = inputs.model_kwargs[key].to(torch.bfloat16)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="ltx2-19b")
    parser.add_argument("--layers", type=int, help="transformer blocks (default: the variant's)")
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--frames", type=int, default=121)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--text-tokens", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--modes", default="checkpointing,no-checkpointing")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    spec = load_variant(args.variant)
    t0 = time.perf_counter()
    transformer = build(spec, "transformer", device, torch.bfloat16, args.layers)
    connectors = build(spec, "connectors", device, torch.bfloat16, None)
    params = add_lora(transformer, LoRAConfig(rank=args.rank, alpha=args.rank))
    n_base = sum(p.numel() for p in transformer.parameters()) - sum(p.numel() for p in params)
    print(f"{spec.name}: {n_base / 1e9:.2f}B base + {sum(p.numel() for p in params) / 1e6:.1f}M LoRA parameters "
          f"on {device} (built in {time.perf_counter() - t0:.0f}s)")
    batch = batch_for(spec, args, device)
    tokens = batch["video_latents"][0, 0].numel()
    print(f"clip {args.width}x{args.height}x{args.frames}: {tokens} video tokens, {batch['audio_latents'].shape[2]} audio "
          f"tokens, {args.text_tokens} text tokens, batch {args.batch}")
    strategy = Strategy("t2av", PRESETS["t2av"], ObjectiveConfig(), fps=args.fps)
    optimizer = build_optimizer(params, OptimizerConfig())
    results = {}
    for mode in args.modes.split(","):
        if mode == "checkpointing":
            transformer.enable_gradient_checkpointing()
        else:
            transformer.disable_gradient_checkpointing()
        transformer.train()
        try:
            results[mode] = measure(transformer, connectors, batch, strategy, optimizer, device, args.steps, args.warmup)
            print(f"  {mode:>17}: {results[mode][0]:.3f} s/step, peak {results[mode][1]:.1f} GiB")
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f"  {mode:>17}: out of memory")
    if len(results) == 2:
        (t_on, m_on), (t_off, m_off) = results["checkpointing"], results["no-checkpointing"]
        print(f"checkpointing / none: time x{t_on / t_off:.2f}, peak memory x{m_on / m_off:.2f}")


if __name__ == "__main__":
    main()
