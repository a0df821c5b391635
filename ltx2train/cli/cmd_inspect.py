"""``ltx2train inspect``: a file, a shipped variant, a recipe, or the memory a recipe needs."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ltx2train.cli.common import Subcommands
from ltx2train.utils.errors import UserError


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.target == "memory":
        return _inspect_memory(args)
    if args.target.endswith((".yaml", ".yml")):
        return _inspect_recipe(args)
    if args.overrides or args.world_size is not None:
        raise UserError(f"inspect {args.target}: key=value overrides and --world-size go with 'inspect memory' only")
    if args.target == "variant":
        if not args.name:
            raise UserError(
                "inspect variant: name a variant (ltx2-19b, ltx2.3-22b, ltx2.5, tiny, tiny-2.3, tiny-2.5) "
                "or a variant JSON file"
            )
        return _inspect_variant(args.name, args.json)
    if args.name:
        raise UserError(f"inspect {args.target}: unexpected argument {args.name!r}")
    return _inspect_file(args.target, args.json)


def _inspect_memory(args: argparse.Namespace) -> int:
    """The per-GPU memory estimate of a recipe, from the variant spec alone (no weights, no data)."""
    if not args.name:
        raise UserError("inspect memory: name a recipe, e.g. ltx2train inspect memory recipes/t2av_lora.yaml")
    from ltx2train.config import load_config
    from ltx2train.analysis.estimate import estimate_memory
    from ltx2train.analysis.report import format_estimate

    cfg = load_config(args.name, args.overrides)
    estimate = estimate_memory(cfg, world_size=args.world_size)
    if args.json:
        json.dump(estimate.to_json(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_estimate(estimate, cfg, args.name))
    return 0


def _inspect_recipe(args: argparse.Namespace) -> int:
    """The resolved recipe, its caches' buckets, the tokens per step and the memory estimate."""
    from ltx2train.config import load_config
    from ltx2train.recipe_report import format_report, recipe_report

    cfg = load_config(args.target, [args.name, *args.overrides] if args.name else args.overrides)
    report = recipe_report(cfg, world_size=args.world_size or int(os.environ.get("WORLD_SIZE", "1")))
    if args.json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_report(report, args.target))
    return 0


def _inspect_file(path: str, as_json: bool) -> int:
    from ltx2train.file_report import inspect_file

    report = inspect_file(path)
    if as_json:
        json.dump(report, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    print(f"{path}: {_describe(report)}")
    for key in ("dialect", "modules", "ranks", "alpha", "streams", "dtypes", "consumers", "metadata"):
        if key in report and report[key] not in (None, {}, []):
            print(f"  {key}: {_plain(report[key])}")
    for stream, kinds in report.get("targets", {}).items():
        print(f"  targets ({stream}): {_plain(kinds)}")
    for comp in report.get("components", []):
        problems = (f", {len(comp['missing'])} missing (e.g. {comp['missing'][:3]})" if comp["missing"] else "") + (
            f", {len(comp['wrong_shape'])} with the wrong shape (e.g. {comp['wrong_shape'][:3]})"
            if comp["wrong_shape"]
            else ""
        )
        print(f"  {comp['component']}: {comp['tensors']} tensors ({comp['file_layout']}){problems or ', complete'}")
    if report.get("extra_keys"):
        print(f"  {len(report['extra_keys'])} key(s) of no known component, e.g. {report['extra_keys'][:3]}")
    return 0


def _describe(report: dict) -> str:
    if report["kind"] == "lora":
        return f"LoRA ({report['dialect']}), {report['modules']} modules"
    if report["kind"] == "components":
        names = ", ".join(c["component"] for c in report["components"])
        alike = f" (the same layout as {', '.join(report['same_layout'])})" if report.get("same_layout") else ""
        return f"{report['version']} weights, variant {report['variant']}{alike}: {names}"
    return "not an LTX-2 component or LoRA file known to ltx2train"


def _plain(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def _inspect_variant(name: str, as_json: bool) -> int:
    from ltx2train.models.key_maps import iter_component_maps, original_keys_with_shapes
    from ltx2train.models.specs import load_variant

    variant = load_variant(name)
    per_component = {
        name: original_keys_with_shapes(key_map, module) for name, module, key_map in iter_component_maps(variant)
    }
    if as_json:
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


def register(sub: Subcommands) -> None:
    """``inspect``."""
    inspect = sub.add_parser(
        "inspect",
        help="what a safetensors file is, a shipped variant's layout, or the memory a recipe needs per GPU",
        description="inspect FILE: a LoRA (dialect, ranks, alpha, targets by stream, consumers) "
        "or LTX-2 component weights (component, variant, missing keys). "
        "inspect variant NAME: every original key of a shipped variant with its shape. "
        "inspect memory RECIPE [key=value ...]: the per-GPU memory estimate of training it "
        "(from the variant spec; no weights needed). "
        "inspect RECIPE [key=value ...]: the resolved config, each dataset's cache (clips per "
        "bucket, rejects), the tokens per step and the memory estimate.",
    )
    inspect.add_argument("target", help="a .safetensors file, a recipe .yaml, or the word 'variant' or 'memory'")
    inspect.add_argument(
        "name",
        nargs="?",
        help="with 'variant': ltx2-19b, ltx2.3-22b, ltx2.5, tiny, tiny-2.3, tiny-2.5 "
        "or a variant JSON file; "
        "with 'memory': a recipe YAML",
    )
    inspect.add_argument("overrides", nargs="*", metavar="key=value", help="with a recipe: its overrides")
    inspect.add_argument("--world-size", type=int, help="with a recipe: processes (default: $WORLD_SIZE or 1)")
    inspect.add_argument("--json", action="store_true", help="machine-readable output")
    inspect.set_defaults(func=cmd_inspect)
