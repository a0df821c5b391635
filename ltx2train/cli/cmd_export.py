"""``ltx2train export``: a LoRA in another format, modality or dtype, or merged into a base."""

from __future__ import annotations

import argparse
import sys

from ltx2train.cli.common import Subcommands
from ltx2train.utils.errors import UserError


def _lora_source(source: str):
    """A LoRA file, a checkpoint directory (``step_N/``) or a run directory (its latest checkpoint)."""
    from pathlib import Path

    from ltx2train.training import checkpoint as ckpt

    path = Path(source)
    if path.is_file():
        return path
    if (path / ckpt.LORA_FILE).is_file():
        return path / ckpt.LORA_FILE
    latest = ckpt.latest_checkpoint(path) if path.is_dir() else None
    if latest is not None:
        return latest / ckpt.LORA_FILE
    raise FileNotFoundError(
        f"{source} is neither a LoRA .safetensors file, nor a checkpoint directory with "
        f"{ckpt.LORA_FILE}, nor a run directory with checkpoints/"
    )


def cmd_export(args: argparse.Namespace) -> int:
    from ltx2train.lora.export import export_lora_file, prepare_lora
    from ltx2train.lora.files import read_lora
    from ltx2train.models.specs import torch_dtype

    dtype = torch_dtype(args.dtype) if args.dtype else None
    source = _lora_source(args.source)
    if args.merge:
        from ltx2train.lora.merge import merge_lora

        if args.format != "official":
            raise UserError("--merge writes base weights, not a LoRA: --format does not apply to it")

        lora, warnings = prepare_lora(
            read_lora(source),
            modality=args.modality,
            cross_modal=args.cross_modal,
            drop_connectors=args.drop_connectors,
        )
        result = merge_lora(lora, args.merge, args.output, dtype=dtype)
        for warning in warnings:
            print(f"ltx2train: warning: {warning}", file=sys.stderr)
        print(
            f"merged {len(lora.modules)} LoRA modules into {result.merged} weights of {args.merge} "
            f"({result.copied} tensors copied through) -> {', '.join(str(p) for p in result.paths)}"
        )
        return 0
    result = export_lora_file(
        source,
        args.output,
        fmt=args.format,
        modality=args.modality,
        cross_modal=args.cross_modal,
        dtype=dtype,
        drop_connectors=args.drop_connectors,
    )
    for warning in result.warnings:
        print(f"ltx2train: warning: {warning}", file=sys.stderr)
    print(
        f"exported {result.modules} LoRA modules ({args.format}, modality {args.modality}"
        f"{f', {result.dropped} left out' if result.dropped else ''}) -> {result.path}"
    )
    return 0


def register(sub: Subcommands) -> None:
    """``export``."""
    export = sub.add_parser(
        "export", help="a checkpoint's LoRA in another format / modality / dtype, or merged into a base"
    )
    export.add_argument(
        "source", help="LoRA .safetensors (any dialect), a checkpoint step_N/ directory or a run directory"
    )
    export.add_argument(
        "--output", required=True, help="output .safetensors (or, with --merge, a directory for the repackaged layout)"
    )
    export.add_argument(
        "--format",
        default="official",
        choices=("official", "diffusers", "official-alpha"),
        help="official: alpha folded, loads alike everywhere (default); diffusers: for "
        "load_lora_weights; official-alpha: keeps .alpha tensors",
    )
    export.add_argument(
        "--modality",
        default="all",
        choices=("all", "video", "audio"),
        help="keep the modules acting on the video or the audio stream only",
    )
    export.add_argument(
        "--cross-modal",
        default="receiving",
        choices=("receiving", "none", "all"),
        help="with --modality: receiving keeps the cross-modal attention writing into the kept stream "
        "(audio_to_video_attn for video, video_to_audio_attn for audio); none drops both; all keeps both",
    )
    export.add_argument(
        "--merge", metavar="BASE", help="merge into BASE (official single file or repackaged directory)"
    )
    export.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="dtype of the written tensors")
    export.add_argument(
        "--drop-connectors",
        action="store_true",
        help="leave out LoRA modules on the text connectors (only ComfyUI applies them)",
    )
    export.set_defaults(func=cmd_export)
