"""``ltx2train inspect RECIPE``: what training this recipe would do, before it does it -- the resolved config,
what each dataset's cache holds (clips per bucket, rejects), the tokens one step feeds the transformer, and the
memory estimate. Nothing is loaded but the recipe, the caches' manifests and the variant spec."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ltx2train.config import Config


def _token_budget(cfg: Config, buckets: list[str], world_size: int) -> dict:
    """Tokens per clip of each bucket, and per optimizer step (batch x accumulation x processes)."""
    from ltx2train.data.buckets import Bucket
    from ltx2train.analysis.tokens import tokens_for
    from ltx2train.models.specs import load_variant

    config = load_variant(cfg.model.variant).component("transformer").config
    clips_per_step = cfg.data.batch_size * cfg.train.gradient_accumulation_steps * world_size
    per_bucket = {}
    for name in buckets:
        b = Bucket.parse(name)
        t = tokens_for(b.height, b.width, b.frames, cfg.data.fps, cfg.data.max_sequence_length, 1, config)
        per_bucket[name] = {
            "video": t.video,
            "audio": t.audio,
            "text": t.text,
            "video_per_step": t.video * clips_per_step,
            "audio_per_step": t.audio * clips_per_step,
        }
    return {"clips_per_step": clips_per_step, "world_size": world_size, "buckets": per_bucket}


def _schedule(cfg: Config, datasets: list[dict], world_size: int) -> dict | None:
    """Optimizer steps per epoch over the prepared caches, and the steps the run takes (``train.num_epochs`` x
    those, or ``train.max_steps``); None until every cache is prepared."""
    if not datasets or not all(d["prepared"] for d in datasets):
        return None
    from ltx2train.config import dataset_sources
    from ltx2train.data.cache import CachedDataset
    from ltx2train.data.prepare import settings_from_config
    from ltx2train.training.data import steps_per_epoch

    dataset = CachedDataset([s.cache_dir for s in dataset_sources(cfg.data)], settings_from_config(cfg))
    per_epoch = steps_per_epoch(cfg, dataset, world_size)
    steps = cfg.train.num_epochs * per_epoch if cfg.train.num_epochs else cfg.train.max_steps
    return {"steps_per_epoch": per_epoch, "steps": steps, "epochs": steps / per_epoch}


def recipe_report(cfg: Config, world_size: int = 1) -> dict:
    """Everything ``inspect RECIPE`` shows, as plain data (``--json``)."""
    from ltx2train.analysis.estimate import estimate_memory
    from ltx2train.config import config_to_dict, dataset_sources
    from ltx2train.data.buckets import from_config
    from ltx2train.data.cache import dataset_statistics

    datasets = dataset_statistics(dataset_sources(cfg.data))
    cached = sorted({b for d in datasets for b in d.get("buckets", {})})
    buckets = cached or [b.name for b in from_config(cfg.data)]
    estimate = estimate_memory(cfg, world_size=world_size, prepare=False)
    peak = max(estimate.phases, key=estimate.phases.get)
    return {
        "config": config_to_dict(cfg),
        "datasets": datasets,
        "tokens": _token_budget(cfg, buckets, world_size),
        "schedule": _schedule(cfg, datasets, world_size),
        "memory": {"total_bytes": estimate.total_bytes, "peak_phase": peak, "host_bytes": sum(estimate.host.values())},
    }


def format_report(report: dict, recipe: str) -> str:
    from omegaconf import OmegaConf

    from ltx2train.utils.format import format_bytes

    c = report["config"]
    lines = [
        f"{recipe}: {c['model']['variant']}, {c['train']['method']} under {c['distributed']['backend']}, "
        f"strategy {c['strategy']['name']}, {(report.get('schedule') or {}).get('steps', c['train']['max_steps'])} "
        "steps",
        "",
        "datasets:",
    ]
    for d in report["datasets"]:
        if not d["prepared"]:
            lines.append(f"  {d['cache_dir']}: not prepared (run `ltx2train prepare {recipe}`)")
            continue
        lines.append(f"  {d['cache_dir']}: {d['clips']} clip(s), {d['rejected']} rejected")
        lines += [f"    {bucket}: {n}" for bucket, n in d["buckets"].items()]
    if report.get("schedule"):
        sc = report["schedule"]
        lines += [
            "",
            f"schedule: {sc['steps_per_epoch']} optimizer step(s) per epoch on {report['tokens']['world_size']} "
            f"process(es): {sc['steps']} steps, {sc['epochs']:.2f} epoch(s)",
        ]
    t = report["tokens"]
    lines += ["", f"tokens ({t['clips_per_step']} clip(s) per optimizer step over {t['world_size']} process(es)):"]
    lines += [
        f"  {name}: {b['video']} video + {b['audio']} audio + {b['text']} text per clip; "
        f"{b['video_per_step']} video + {b['audio_per_step']} audio per step"
        for name, b in t["buckets"].items()
    ]
    m = report["memory"]
    lines += [
        "",
        f"memory: {format_bytes(m['total_bytes']).strip()} per GPU at its peak ({m['peak_phase']}), "
        f"{format_bytes(m['host_bytes']).strip()} in host memory; the parts: `ltx2train inspect memory {recipe}`",
        "",
        "resolved config:",
        OmegaConf.to_yaml(c).rstrip(),
    ]
    return "\n".join(lines)
