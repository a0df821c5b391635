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
    from ltx2train.models.smoke import run_tiny

    result = run_tiny(args.output, seed=args.seed)
    print(f"tiny LTX-2 written to {result['model_dir']} (repackaged layout + upscaler + gemma/) "
          f"in {result['write_s']:.1f}s; reloaded strictly in {result['load_s']:.1f}s")
    print(f"sample (LTX2Pipeline, h264 + AAC): {result['sample']} in {result['sample_s']:.1f}s")
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"ltx2train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
