"""What every command shares: the recipe arguments, the common flags, the subcommand helper, loading a recipe and
the exit code of a command that keeps or rejects rows."""

from __future__ import annotations

import argparse
import sys


def add_recipe(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe (see recipes/), or a run's saved config.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. train.max_steps=100")


def common_flags() -> argparse.ArgumentParser:
    """Flags every command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or progress lines (warnings, errors and the result still print)",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of a user error (a bad recipe, key or file), not only its message",
    )
    return common


class Subcommands:
    """``add_parser`` with the common flags on every command."""

    def __init__(self, subparsers, common: argparse.ArgumentParser):
        self.subparsers, self.common = subparsers, common

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        return self.subparsers.add_parser(name, parents=[self.common], **kwargs)


def load_recipe(args: argparse.Namespace, check_paths):
    from ltx2train.config import load_config

    return load_config(args.recipe, args.overrides, check_paths=check_paths)


SOME_REJECTED, NOTHING_KEPT = 4, 5  # prepare, data scan, data validate


def kept_or_rejected(kept: int, rejected: int, nothing: str) -> int:
    """0 when every row was kept, 4 when some were rejected, 5 (with ``nothing`` on stderr) when none was kept."""
    if kept == 0:
        print(f"ltx2train: error: {nothing}", file=sys.stderr)
        return NOTHING_KEPT
    return SOME_REJECTED if rejected else 0
