"""``ltx2train demo``: the whole path on the embedded default, on a laptop CPU, in minutes.

tiny random-weight LTX-2 (real architecture, repackaged layout, original keys, tiny Gemma) + a synthetic
clip dataset (moving shapes with a tone that follows them, real mp4 with AAC) -> prepare -> LoRA training
-> checkpoint (official layout) -> ``sample`` reloads base + LoRA into the inference pipeline -> mp4.
Exactly the code that runs the 19B model; only the recipe differs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable, Sequence

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"


def _strategy(overrides: Sequence[str]) -> str:
    """The strategy the overrides ask for (the recipe's t2av otherwise)."""
    names = [o.partition("=")[2] for o in overrides if o.partition("=")[0].strip() == "strategy.name"]
    return names[-1].strip() if names else "t2av"


def strategy_overrides(output: Path, strategy: str) -> list[str]:
    """What ``strategy`` needs beyond the demo recipe, from the synthetic data (:func:`make_strategy_inputs` makes
    the files): one first frame (i2av), reference video (ic_lora), given audio (a2v) or video (v2a) per validation
    prompt, and for IC-LoRA each clip's reference (the clip itself: the demo learns to reproduce its reference)."""
    data, clip = output / "data", output / "data" / "clips" / "clip_000.mp4"
    per_prompt = lambda path: f"[{path},{path}]"  # noqa: E731 (the demo recipe's two prompts)
    return {
        "i2av": [f"validation.images={per_prompt(data / 'first_frame.png')}"],
        "ic_lora": [
            f"validation.reference_videos={per_prompt(clip)}",
            "data.extras=[reference]",
            "data.reference_video_column=reference",
            f"data.metadata={data / 'metadata_ic_lora.jsonl'}",
        ],
        "a2v": [f"validation.audios={per_prompt(clip)}"],
        "v2a": [f"validation.videos={per_prompt(clip)}"],
    }.get(strategy, [])


def make_strategy_inputs(output: Path, strategy: str) -> None:
    """The files :func:`strategy_overrides` names, from the synthetic clips."""
    import json

    from PIL import Image

    from ltx2train.data.media import read_video_frames
    from ltx2train.utils.atomic import write_text_atomic

    data = output / "data"
    if strategy == "i2av" and not (data / "first_frame.png").is_file():
        frame = read_video_frames(data / "clips" / "clip_000.mp4", 1, 24.0)[0].numpy()
        Image.fromarray(frame).save(data / "first_frame.png")
    if strategy == "ic_lora":
        rows = [json.loads(line) for line in (data / "metadata.jsonl").read_text().splitlines() if line.strip()]
        write_text_atomic(
            data / "metadata_ic_lora.jsonl",
            "".join(json.dumps({**row, "reference": row["video"]}) + "\n" for row in rows),
        )


def demo_config(output: Path, overrides: Sequence[str] = (), variant: str | None = None):
    from ltx2train.config import load_config

    if not RECIPE.is_file():
        raise FileNotFoundError(
            f"demo recipe {RECIPE} not found (install ltx2train from its source tree: pip install -e .)"
        )
    paths = [
        f"model.checkpoint={output / 'model'}",
        f"model.text_encoder={output / 'model' / 'gemma'}",
        f"data.metadata={output / 'data' / 'metadata.jsonl'}",
        f"data.cache_dir={output / 'cache'}",
        f"train.output_dir={output / 'run'}",
        *([f"model.variant={variant}"] if variant else []),
    ]
    return load_config(RECIPE, [*paths, *overrides])


def run_demo(
    output: str | Path = "outputs/demo",
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
    variant: str | None = None,
) -> dict:
    """The demo on ``variant`` (``tiny``, ``tiny-2.3``...: a tiny variant of each architecture; default: the recipe's)."""
    from ltx2train.data.prepare import prepare
    from ltx2train.data.synthetic import make_synthetic_dataset
    from ltx2train.inference.sample import sample
    from ltx2train.models.tiny import write_tiny_checkpoint
    from ltx2train.training.trainer import Trainer

    output = Path(output).resolve()
    # what the strategy's validation needs first, so that the user's overrides still win
    overrides = [*strategy_overrides(output, _strategy(overrides)), *overrides]
    cfg = demo_config(output, overrides, variant)  # validates the recipe and overrides before any work
    timings, start = {}, time.perf_counter()
    if not (output / "model" / "gemma" / "config.json").is_file():
        write_tiny_checkpoint(output / "model", variant=cfg.model.variant)
    if not (output / "data" / "metadata.jsonl").is_file():
        make_synthetic_dataset(
            output / "data",
            num_frames=cfg.data.num_frames,
            fps=cfg.data.fps,
            height=cfg.data.height,
            width=cfg.data.width,
        )
    make_strategy_inputs(output, cfg.strategy.name)
    timings["model+data"] = time.perf_counter() - start
    log(f"[demo] {cfg.model.variant} LTX-2 in {output / 'model'}, synthetic clips in {output / 'data'}")

    t = time.perf_counter()
    shutil.rmtree(cfg.data.cache_dir, ignore_errors=True)  # the demo's cache is rebuilt (well under a second)
    report = prepare(cfg)
    timings["prepare"] = time.perf_counter() - t
    log(
        f"[demo] prepare: {len(report.encoded)} clips encoded, {len(report.skipped)} already cached, "
        f"{len(report.rejected)} rejected -> {cfg.data.cache_dir}"
    )

    t = time.perf_counter()
    shutil.rmtree(cfg.train.output_dir, ignore_errors=True)  # the demo run starts fresh each time
    result = Trainer(cfg, log=log).train()
    timings["train"] = time.perf_counter() - t

    t = time.perf_counter()
    lora = result.checkpoint / "lora.safetensors"
    paths, _ = sample(cfg, lora=lora, output_dir=output / "sample")
    timings["sample"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - start

    losses = [loss for _, loss in result.losses]
    k = max(1, len(losses) // 5)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    log(f"[demo] training loss fell from {first:.4f} (first {k} steps) to {last:.4f} (last {k} steps)")
    if len(result.validation_losses) >= 2:
        (s0, v0), (s1, v1) = result.validation_losses[0], result.validation_losses[-1]
        log(
            f"[demo] validation loss (fixed clips, noise and sigmas) fell from {v0:.4f} at step {s0} "
            f"to {v1:.4f} at step {s1}"
        )
    log(f"[demo] checkpoint (official LoRA layout): {lora}")
    log(f"[demo] sample from the reloaded checkpoint: {paths[0]}")
    log("[demo] timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
    return {
        "lora": lora,
        "samples": paths,
        "validation": result.samples,
        "loss_first": first,
        "loss_last": last,
        "validation_losses": result.validation_losses,
        "timings": timings,
        "result": result,
    }
