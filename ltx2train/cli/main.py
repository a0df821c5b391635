"""The ``ltx2train`` command: parse, run the command, and turn what happened into an exit code
(``utils/errors.py``)."""

from __future__ import annotations

import json
import os
import sys

from ltx2train.cli.parser import parse_arguments
from ltx2train.utils.errors import EXIT_CODES, UserError


def _quiet_library_progress_bars() -> None:
    """The command prints its own progress; per-file loading bars of transformers would drown it."""
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


# the user's mistakes (utils/errors.py): a message, no traceback, exit 2; anything else is a bug
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


REPORT = (
    "ltx2train: internal error (a bug in ltx2train, not in your recipe or data): please report it with the "
    "command line and the traceback above"
)


def _message(exc: BaseException) -> str:
    """The user's error in words: a KeyError's ``str`` is its quoted key; a file error names the file."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(exc):
        return f"{exc.strerror or exc}: {exc.filename}"
    return str(exc)


EXIT_FILE_VARIABLE = "LTX2TRAIN_EXIT_FILE"


def main(argv: list[str] | None = None) -> int:
    """Exit codes (``utils/errors.py: EXIT_CODES``): 0 done, 2 a user error (a ``UserError`` or a file that is not
    there; no traceback unless ``--debug``), 3 stopped by a signal after writing a checkpoint (resume by running
    the same command again), 1 a bug (its traceback and a line asking to report it); ``prepare``: 4 some rows
    rejected (the rest cached), 5 nothing kept.

    Under a launcher that hides the processes' codes (torchrun reports any non-zero code as 1, and srun
    ``--kill-on-bad-exit`` then kills the other nodes, perhaps before the main process is done), set
    ``LTX2TRAIN_EXIT_FILE``: the global main process writes its code there as JSON, and every process exits 0
    for every code above but a crash (1) -- launch/slurm/train.sbatch reads the file."""
    from ltx2train.utils.progress import set_quiet

    args = parse_arguments(argv)
    set_quiet(getattr(args, "quiet", False))
    if args.command != "inspect":
        _quiet_library_progress_bars()
    code, error = 1, None
    try:
        code = args.func(args)
    except USER_ERRORS as exc:
        error = _error_record(exc)
        if getattr(args, "debug", False):
            import traceback

            traceback.print_exc()
        print(f"ltx2train: error: {_message(exc)}", file=sys.stderr)
        code = 2
    except BrokenPipeError:  # the reader of the output went away (``ltx2train inspect ... | head``): nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes it
        code = 0
    except Exception as exc:
        import traceback

        error = _error_record(exc)
        traceback.print_exc()
        print(REPORT, file=sys.stderr)
        code = 1
    finally:
        reported = _write_exit_file(args.command, code, error)
    return 0 if reported and code in EXIT_CODES and code != 1 else code


def _error_record(exc: BaseException) -> dict[str, str]:
    """What failed, for scripts: the exception's class (``ConfigError``, ``CheckpointError``, ``MediaError``...;
    any class outside ``UserError`` is a bug) and the message the user saw."""
    return {"type": type(exc).__name__, "message": _message(exc)}


def _write_exit_file(command: str, code: int, error: dict[str, str] | None) -> bool:
    """Whether ``LTX2TRAIN_EXIT_FILE`` is set (the global main process writes the code there, and with an error
    exit its class and message)."""
    path = os.environ.get(EXIT_FILE_VARIABLE)
    if not path:
        return False
    if os.environ.get("RANK", "0") == "0":
        from ltx2train.utils.atomic import write_text_atomic

        record = {"command": command, "exit_code": code, "meaning": EXIT_CODES.get(code, "")}
        write_text_atomic(path, json.dumps(record if error is None else {**record, "error": error}))
    return True
