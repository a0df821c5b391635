"""P1: the trainer's full training step vs a bare forward + backward + optimizer loop on the same model and batch,
measured side by side in one run (ratio printed; nothing asserted; goal: ours <= 1.03x bare). Not a test.

Ours is what ``Trainer`` runs per optimizer step: the next batch from the loader, the connectors on the cached
text, the strategy's noise / sigma / inputs, autocast, the masked per-modality losses and the sigma-bucket
bookkeeping, the backend's backward, gradient clipping and optimizer step, the LR schedule, the loss all-reduce
and the throughput counters. Bare is the loop anyone would write around the same transformer: the transformer's
inputs for the same batch built once beforehand, forward under the same autocast, an MSE against fixed targets,
``backward``, ``optimizer.step``, ``zero_grad``. The connectors' forward, which ours runs and bare does not, is
timed on its own as well, and the ratio without it printed. Both use the trainer's own transformer and optimizer, alternate
round by round, and each round is timed over ``--steps`` steps (medians of ``--rounds`` printed).

Cases: ``tiny`` (the demo's model and cache) and ``mid`` (LTX-2 19B widths with ``--mid-layers`` blocks, random
weights, a random cache at 19B latent shapes for 256x384x25 clips), each under LoRA and full fine-tuning.

    python benchmarks/step_overhead.py                          # every case (mid needs ~16 GB of RAM for full)
    python benchmarks/step_overhead.py --cases tiny-lora --steps 3 --rounds 2     # smoke
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CASES = ("tiny-lora", "tiny-full", "mid-lora", "mid-full")
COMMON = [
    "validation.prompts=[]",
    "validation.loss_sigmas=[]",
    "validation.at_start=false",
    "validation.every=0",
    "train.checkpoint_every=0",
    "train.log_every=1000000",
    "tracker.backend=none",
    "data.num_workers=0",
]


def tiny_workspace(work: Path) -> Path:
    """The demo's inputs: the tiny model with Gemma, 8 synthetic clips and their prepared cache."""
    from ltx2train.data.prepare import prepare
    from ltx2train.data.synthetic import make_synthetic_dataset
    from ltx2train.demo import demo_config
    from ltx2train.models.tiny import write_tiny_checkpoint

    if not (work / "cache" / "manifest.json").is_file():
        write_tiny_checkpoint(work / "model")
        make_synthetic_dataset(work / "data", num_clips=8, num_frames=9, fps=24.0, height=64, width=64)
        prepare(demo_config(work, [f"train.output_dir={work / 'unused'}"]))
    return work


def mid_workspace(work: Path, tiny: Path, layers: int) -> tuple[Path, list[str]]:
    """LTX-2 19B widths with ``layers`` blocks: a variant JSON, the transformer and connectors with random weights
    in the repackaged layout, and a cache of random latents at the 19B shapes for one 256x384x25 bucket."""
    from ltx2train.demo import demo_config
    from ltx2train.data import cache
    from ltx2train.data.encoders import producer
    from ltx2train.data.prepare import settings_from_config
    from ltx2train.models.specs import load_variant
    from ltx2train.models.writing import save_repackaged

    variant = work / "ltx2-19b-mid.json"
    precision = (
        ["model.dtype=bfloat16", "train.mixed_precision=bf16"]
        if torch.cuda.is_available()
        else ["model.dtype=float32", "train.mixed_precision=no"]
    )  # CPUs without bf16 units: float32 is faster
    overrides = [
        f"model.variant={variant}",
        "data.height=256",
        "data.width=384",
        "data.num_frames=25",
        "data.max_sequence_length=128",
        "data.batch_size=1",
        "lora.rank=32",
        *precision,
        f"data.cache_dir={work / 'cache'}",
        f"model.checkpoint={work / 'model'}",
    ]
    if (work / "cache" / "manifest.json").is_file():
        return work, overrides
    spec = load_variant("ltx2-19b")
    data = {
        "name": "ltx2-19b-mid",
        "family": spec.family,
        "description": f"19B widths, {layers} blocks",
        "components": {n: {"class": c.class_name, "config": dict(c.config)} for n, c in spec.components.items()},
    }
    data["components"]["transformer"]["config"]["num_layers"] = layers
    work.mkdir(parents=True, exist_ok=True)
    variant.write_text(json.dumps(data))
    spec = load_variant(str(variant))
    torch.manual_seed(0)
    modules = {
        name: spec.component(name).build().to(torch.bfloat16) for name in ("transformer", "connectors")
    }  # as shipped
    save_repackaged(modules, work / "model", spec.family, variant_name=spec.name)
    for name in ("video_vae_encoder", "video_vae_decoder", "audio_vae_encoder", "audio_vae_decoder"):
        # training never runs the VAEs (the latents are cached); the cache only records which files made it
        shutil.copyfile(tiny / "model" / f"{name}.safetensors", work / "model" / f"{name}.safetensors")
    cfg = demo_config(REPO / "outputs" / "unused", [*overrides, f"train.output_dir={work / 'unused'}"])
    g = torch.Generator().manual_seed(0)
    samples = []
    for i in range(4):
        tensors = {
            "video_latents": torch.randn(128, 4, 8, 12, generator=g),
            "audio_latents": torch.randn(8, 26, 16, generator=g),
            "audio_valid": torch.ones(26),
            "text_video": torch.randn(100, 3840, generator=g),
            "text_attention_mask": torch.ones(100, dtype=torch.int64),
        }
        path = cache.write_sample(work / "cache", i, tensors, {"bucket": "256x384x25"})
        samples.append({"index": i, "window": 0, "file": str(path.relative_to(work / "cache")), "bucket": "256x384x25"})
    cache.write_manifest(work / "cache", settings_from_config(cfg), samples, [], producer(cfg, text_encoder=False))
    return work, overrides


def build_trainer(root: Path, overrides: list[str], method: str, run: Path):
    from ltx2train.demo import demo_config
    from ltx2train.training.trainer import Trainer

    cfg = demo_config(
        root, [*COMMON, *overrides, f"train.method={method}", f"train.output_dir={run}", "train.max_steps=1000000"]
    )
    trainer = Trainer(cfg, log=lambda _: None)
    trainer.setup()
    return trainer


def ours(trainer, steps: int) -> float:
    accum = trainer.cfg.train.gradient_accumulation_steps
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step([next(trainer.loader) for _ in range(accum)])
        trainer.step += 1
    return (time.perf_counter() - start) / steps


def bare_inputs(trainer):
    """The transformer's keyword arguments and fixed targets for one batch, built once (outside the timing)."""
    batch = next(trainer.loader)
    inputs = trainer.run.strategy.inputs(batch, trainer.frozen_text_context, generator=trainer.noise_generators(batch))
    trainer._cast_inputs(inputs)
    with torch.no_grad():
        video, audio = trainer.run.model(**inputs.model_kwargs)
    return inputs.model_kwargs, (torch.randn_like(video.float()), torch.randn_like(audio.float()))


def bare(trainer, kwargs, targets, steps: int) -> float:
    model, optimizer = trainer.run.model, trainer.run.optimizer
    start = time.perf_counter()
    for _ in range(steps):
        with trainer.run.backend.autocast():
            video, audio = model(**kwargs)
            loss = torch.nn.functional.mse_loss(video.float(), targets[0]) + torch.nn.functional.mse_loss(
                audio.float(), targets[1]
            )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def connectors(trainer, steps: int) -> float:
    """The connectors' forward on one batch's cached text: work of ours that the bare loop, given the transformer's
    inputs ready-made, does not do (they are frozen, but their output depends on the batch's captions)."""
    batch = next(trainer.loader)
    start = time.perf_counter()
    for _ in range(steps * trainer.cfg.train.gradient_accumulation_steps):
        trainer.frozen_text_context(batch)
    return (time.perf_counter() - start) / steps


def measure(trainer, steps: int, rounds: int) -> tuple[float, float, float]:
    trainer.run.model.train()
    kwargs, targets = bare_inputs(trainer)
    ours(trainer, 1), bare(trainer, kwargs, targets, 1)  # warm-up: allocator, optimizer state
    mine, theirs, text = [], [], []
    for _ in range(rounds):
        mine.append(ours(trainer, steps))
        theirs.append(bare(trainer, kwargs, targets, steps))
        text.append(connectors(trainer, steps))
    return statistics.median(mine), statistics.median(theirs), statistics.median(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="outputs/bench_step")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mid-layers", type=int, default=2)
    args = parser.parse_args()
    work = Path(args.workdir)
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(
        f"P1 step overhead on {device}, {time.strftime('%Y-%m-%d')}: median of {args.rounds} rounds x {args.steps} steps"
    )
    worst = None
    for case in args.cases:
        size, method = case.split("-")
        if size == "tiny":
            root, overrides = tiny_workspace(work / "tiny"), []
        else:
            root, overrides = mid_workspace(work / "mid", tiny_workspace(work / "tiny"), args.mid_layers)
        trainer = build_trainer(root, overrides, method, work / "runs" / case)
        t_ours, t_bare, t_text = measure(trainer, args.steps, args.rounds)
        ratio = t_ours / t_bare
        worst = max(worst or ratio, ratio)
        print(
            f"  {case:>10}: ours {t_ours * 1e3:8.1f} ms/step, bare {t_bare * 1e3:8.1f} ms/step, ours/bare x{ratio:.3f}"
            f" (goal <= 1.03); connectors {t_text * 1e3:.1f} ms/step, ours without them / bare x"
            f"{(t_ours - t_text) / t_bare:.3f}"
        )
        del trainer
    print(f"largest ours/bare: x{worst:.3f}")


if __name__ == "__main__":
    main()
