"""The ``ltx2train`` command."""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_inspect_variant(args: argparse.Namespace) -> int:
    from ltx2train.models.keys import iter_component_maps, original_keys_with_shapes
    from ltx2train.models.specs import load_variant

    variant = load_variant(args.name)
    per_component = {
        name: original_keys_with_shapes(key_map, module) for name, module, key_map in iter_component_maps(variant)
    }
    if args.json:
        merged = {k: list(s) for shapes in per_component.values() for k, s in shapes.items()}
        json.dump(merged, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"variant {variant.name} (LTX-{variant.family}): {variant.description}")
    for name, shapes in per_component.items():
        numel = sum(_prod(s) for s in shapes.values())
        print(f"\n[{name}] {len(shapes)} tensors, {numel:,} elements")
        for key in sorted(shapes):
            print(f"  {key}  {list(shapes[key])}")
    return 0


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _cmd_tiny(args: argparse.Namespace) -> int:
    from ltx2train.inference.smoke import run_tiny

    result = run_tiny(args.output, seed=args.seed)
    print(f"tiny LTX-2 written to {result['model_dir']} (repackaged layout + upscaler + gemma/) "
          f"in {result['write_s']:.1f}s; reloaded strictly in {result['load_s']:.1f}s")
    print(f"sample (LTX2Pipeline, h264 + AAC): {result['sample']} in {result['sample_s']:.1f}s")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ltx2train.demo import run_demo

    run_demo(args.output, args.overrides)
    return 0


def _load(args: argparse.Namespace, check_paths):
    from ltx2train.config import load_config

    return load_config(args.recipe, args.overrides, check_paths=check_paths)


def _cmd_prepare(args: argparse.Namespace) -> int:
    from ltx2train.data.prepare import prepare

    cfg = _load(args, ("model.checkpoint", "model.text_encoder", "data.metadata"))
    report = prepare(cfg)
    print(f"prepare: {len(report.encoded)} encoded, {len(report.skipped)} already cached, {len(report.failed)} failed "
          f"in {report.seconds:.1f}s -> {cfg.data.cache_dir}")
    for failure in report.failed:
        print(f"  failed: {failure['video']}: {failure['error']}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ltx2train.training.trainer import Trainer

    cfg = _load(args, ("model.checkpoint", "data.cache_dir"))
    result = Trainer(cfg).train()
    if result.interrupted:
        print(f"stopped by {result.interrupted} at step {result.step}; checkpoint: {result.checkpoint}")
        return 3
    print(f"trained to step {result.step}; latest checkpoint: {result.checkpoint}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from ltx2train.inference.sample import sample

    cfg = _load(args, ("model.checkpoint", "model.text_encoder"))
    paths, _ = sample(cfg, lora=args.lora, prompts=args.prompt, seed=args.seed,
                      output_dir=args.output or f"{cfg.train.output_dir}/sample", lora_scale=args.lora_scale)
    for path in paths:
        print(path)
    return 0


def _add_recipe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe (see recipes/), or a run's saved config.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. train.max_steps=100")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltx2train", description="Fine-tune LTX-2 audio-video models.")
    sub = parser.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser("inspect", help="show model layouts")
    inspect_sub = inspect.add_subparsers(dest="what", required=True)
    variant = inspect_sub.add_parser("variant", help="every original checkpoint key with its shape")
    variant.add_argument("name", help="shipped variant name (ltx2-19b, ltx2.3-22b, tiny) or a variant JSON file")
    variant.add_argument("--json", action="store_true", help='print {"<original key>": [shape...]} for all components')
    variant.set_defaults(func=_cmd_inspect_variant)

    tiny = sub.add_parser("tiny", help="write the tiny random-weight LTX-2, reload it and render a sample mp4")
    tiny.add_argument("--output", default="outputs/tiny", help="output directory (default: outputs/tiny)")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_cmd_tiny)

    demo = sub.add_parser("demo", help="tiny model + synthetic clips: prepare -> train LoRA -> checkpoint -> sample")
    demo.add_argument("--output", default="outputs/demo", help="output directory (default: outputs/demo)")
    demo.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of recipes/demo.yaml")
    demo.set_defaults(func=_cmd_demo)

    prepare = sub.add_parser("prepare", help="encode clips + captions into the latent cache")
    _add_recipe(prepare)
    prepare.set_defaults(func=_cmd_prepare)

    train = sub.add_parser("train", help="train (resumes from the latest checkpoint in train.output_dir)")
    _add_recipe(train)
    train.set_defaults(func=_cmd_train)

    sample = sub.add_parser("sample", help="base model + exported LoRA -> mp4 through the inference pipeline")
    _add_recipe(sample)
    sample.add_argument("--lora", help="LoRA .safetensors (official/ComfyUI layout), e.g. a checkpoint's lora.safetensors")
    sample.add_argument("--lora-scale", type=float, default=1.0)
    sample.add_argument("--prompt", action="append", help="prompt (repeatable; default: the recipe's validation prompts)")
    sample.add_argument("--seed", type=int, help="default: validation.seed")
    sample.add_argument("--output", help="directory for the mp4 files (default: <train.output_dir>/sample)")
    sample.set_defaults(func=_cmd_sample)
    return parser


def _quiet_library_progress_bars() -> None:
    """The command prints its own progress; per-file loading bars of transformers would drown it."""
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "inspect":
        _quiet_library_progress_bars()
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"ltx2train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
