"""The memory estimate as a readable table (``ltx2train inspect memory``)."""

from __future__ import annotations

from ltx2train.config import Config
from ltx2train.analysis.estimate import PART_LABELS, MemoryEstimate
from ltx2train.utils.format import format_bytes


PHASE_LABELS = {
    "forward_backward": "forward + backward",
    "backward_end": "end of backward",
    "optimizer_step": "optimizer step",
    "validation": "validation",
    "prepare_text": "prepare, text phase",
    "prepare_media": "prepare, media phase",
}


def format_estimate(est: MemoryEstimate, cfg: Config, recipe: str = "") -> str:
    """A readable table: the peak, the parts on the device, the phases, what lives on the host, the notes."""
    t, d = est.tokens, cfg.distributed
    backend = d.backend + (f" ZeRO-{d.zero_stage}" if d.backend == "deepspeed" else "")
    training = {k: v for k, v in est.phases.items() if not k.startswith("prepare")}
    where = max(training, key=training.get)
    lines = [
        f"memory per GPU for {recipe or 'the recipe'}: {cfg.model.variant}, {cfg.train.method}, {backend} x "
        f"{est.world_size}, mixed precision {cfg.train.mixed_precision}, gradient checkpointing "
        f"{'on' if cfg.train.gradient_checkpointing else 'off'}, {cfg.optimizer.name}",
        f"largest bucket {t['bucket']} x batch {t['batch']}: {t['video']} video + {t['audio']} audio + {t['text']} "
        f"text tokens per clip",
        f"peak: {format_bytes(est.total_bytes).strip()} ({PHASE_LABELS[where]})",
        "",
        f"  {'part (device)':<44}{'bytes':>12}",
    ]
    lines += [f"  {PART_LABELS.get(k, k):<44}{format_bytes(v):>12}" for k, v in est.parts.items() if v]
    lines += ["", f"  {'phase (what is live together)':<44}{'bytes':>12}"]
    lines += [f"  {PHASE_LABELS.get(k, k):<44}{format_bytes(v):>12}" for k, v in est.phases.items()]
    if est.host:
        lines += ["", f"  {'host memory (offload, block swap)':<44}{'bytes':>12}"]
        lines += [f"  {k.replace('_', ' '):<44}{format_bytes(v):>12}" for k, v in est.host.items()]
    per_token = t["bytes_per_video_token_per_block"] / 1024
    lines += [
        "",
        f"activations: {format_bytes(t['activations_per_block']).strip()} per block x {t['layers']} blocks "
        f"({per_token:.1f} KiB per video token per block, audio and text included) + "
        f"{format_bytes(t['activations_outside_blocks']).strip()} outside the blocks at the end of the forward",
    ]
    lines += [f"note: {n}" for n in est.notes]
    return "\n".join(lines)
