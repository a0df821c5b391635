"""What went wrong, for the user and for scripts: :class:`UserError` for the user's mistakes, and the exit codes.

A ``UserError`` (a recipe, a file, the data or an argument that cannot work) is printed as one message that says
what, where and what to do, and exits 2; no traceback (``--debug`` shows it). Any other exception is a bug in
ltx2train: it shows its traceback, asks to be reported, and exits 1. ``UserError`` is a ``ValueError``, so code
that catches ``ValueError`` still catches it.
"""

from __future__ import annotations


class UserError(ValueError):
    """A mistake the user can fix; the message names what, where and what to do."""


# exit code -> its meaning; docs/observability.md shows this table (tests/unit/test_docs.py keeps the two equal)
EXIT_CODES = {
    0: "completed",
    1: "crashed: a bug in ltx2train (traceback printed; please report it)",
    2: "user error: a recipe, file, data or argument that cannot work (the message says what to do)",
    3: "stopped by a signal after writing a checkpoint (run the same command again to resume)",
    4: "prepare: some rows rejected (the rest cached; CACHE/rejects.jsonl says why)",
    5: "prepare: nothing kept (every row rejected)",
}
