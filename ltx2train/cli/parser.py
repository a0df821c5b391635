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
