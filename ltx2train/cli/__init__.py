"""The ``ltx2train`` command line: one module per command (``cmd_*.py``, each registering its subcommand), the
parser, and the exit policy (``main.py``)."""

from ltx2train.cli.main import EXIT_FILE_VARIABLE, REPORT, USER_ERRORS, main
from ltx2train.cli.parser import build_parser

__all__ = ["EXIT_FILE_VARIABLE", "REPORT", "USER_ERRORS", "build_parser", "main"]
