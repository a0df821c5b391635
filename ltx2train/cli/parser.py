"""The ``ltx2train`` argument parser: each command module registers its own subcommand."""

from __future__ import annotations

import argparse

from ltx2train.cli import cmd_data, cmd_export, cmd_inspect, cmd_sample, cmd_train
from ltx2train.cli.common import Subcommands, common_flags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltx2train", description="Fine-tune LTX-2 audio-video models.")
    sub = Subcommands(parser.add_subparsers(dest="command", required=True), common_flags())
    for module in (cmd_inspect, cmd_export, cmd_train, cmd_data, cmd_sample):
        module.register(sub)
    return parser


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with ``key=value`` overrides anywhere after the recipe: argparse ends a ``nargs="*"``
    positional at the first flag (``train R --quiet train.max_steps=3``), so the ones after it join the rest."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*(args.overrides or []), *extra]
    return args
