"""``ltx2train train``, and the tiny model and the demo that run the same code."""

from __future__ import annotations

import argparse
from ltx2train.cli.common import Subcommands, add_recipe, load_recipe


def cmd_tiny(args: argparse.Namespace) -> int:
    from ltx2train.inference.smoke import run_tiny

    result = run_tiny(args.output, seed=args.seed, variant=args.variant)
    print(
        f"{args.variant} LTX-2 written to {result['model_dir']} (repackaged layout + upscaler + gemma/) "
        f"in {result['write_s']:.1f}s; reloaded strictly in {result['load_s']:.1f}s"
    )
    print(f"sample (LTX2Pipeline, h264 + AAC): {result['sample']} in {result['sample_s']:.1f}s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ltx2train.demo import run_demo

    from ltx2train.utils.progress import console

    run_demo(args.output, args.overrides, log=console, variant=args.variant)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ltx2train.training.trainer import Trainer

    from ltx2train.utils.progress import console

    cfg = load_recipe(args, ("model.checkpoint", "data.cache_dir", "lora.init_from"))
    result = Trainer(cfg, log=console).train()
    if result.interrupted:
        if result.main:
            print(f"stopped by {result.interrupted} at step {result.step}; checkpoint: {result.checkpoint}")
        return 3
    if result.main:
        print(f"trained to step {result.step}; latest checkpoint: {result.checkpoint}")
    return 0


def register(sub: Subcommands) -> None:
    """``tiny``, ``demo`` and ``train``."""
    tiny = sub.add_parser("tiny", help="write the tiny random-weight LTX-2, reload it and render a sample mp4")
    tiny.add_argument("--output", default="outputs/tiny", help="output directory (default: outputs/tiny)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--variant",
        default="tiny",
        choices=("tiny", "tiny-2.3", "tiny-2.5"),
        help="the architecture: tiny (LTX-2), tiny-2.3, tiny-2.5",
    )
    tiny.set_defaults(func=cmd_tiny)
    demo = sub.add_parser("demo", help="tiny model + synthetic clips: prepare -> train LoRA -> checkpoint -> sample")
    demo.add_argument("--output", default="outputs/demo", help="output directory (default: outputs/demo)")
    demo.add_argument(
        "--variant",
        choices=("tiny", "tiny-2.3", "tiny-2.5"),
        help="the tiny architecture to run: tiny (LTX-2, the default), tiny-2.3 (LTX-2.3), tiny-2.5 (LTX-2.5)",
    )
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of recipes/demo.yaml")
    demo.set_defaults(func=cmd_demo)
    train = sub.add_parser("train", help="train (resumes from the latest checkpoint in train.output_dir)")
    add_recipe(train)
    train.set_defaults(func=cmd_train)
