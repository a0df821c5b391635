"""The one way files are written: complete or absent, never half-written.

Everything ltx2train writes (checkpoint files, cache samples, manifests, configs, mp4s, merged weights) goes
through :func:`atomic_path`: the writer fills a temporary file beside the target, which is renamed onto it
only when complete (a crash leaves the old file or nothing, plus a hidden ``.NAME.HOST.PID.tmp*`` leftover at
most). The file gets the permissions of a plain ``open()`` under the user's umask — temporary-file helpers
create 0600 files, unreadable to the rest of a team on a shared cluster.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so format-sniffing writers work); on success it is
    given umask permissions and renamed onto ``path``, on any error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(
        f".{path.stem}.{socket.gethostname()}.{os.getpid()}.tmp{path.suffix}"
    )  # unique on shared disks
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)
