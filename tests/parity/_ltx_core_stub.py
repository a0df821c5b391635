"""Lets the parity tests import Lightricks' ``ltx_core`` audio modules without torchaudio.

``ltx_core/model/audio_vae/ops.py`` imports torchaudio at module level for ``AudioProcessor`` (waveform ->
log-mel, with resampling), a preprocessing helper that no checkpoint module needs: the audio VAE encoder,
decoder and vocoders never call it. torchaudio is not a dependency of this project nor of the parity tests.

``torchaudio_stub()`` is a context manager: while it is active, and only if torchaudio cannot be imported,
``sys.modules["torchaudio"]`` is a placeholder whose every attribute use raises. Import the ltx_core modules
inside it. On exit the placeholder leaves ``sys.modules`` again (ltx_core keeps its own reference), so other
libraries that probe for torchaudio (transformers calls ``importlib.util.find_spec``) still see it as absent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from collections.abc import Iterator


class _TorchaudioStub(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):  # keep introspection (copy, inspect, pytest) working
            raise AttributeError(name)
        raise RuntimeError(
            f"torchaudio.{name} was used, but torchaudio is only a stub here (tests/parity/_ltx_core_stub.py): "
            "install torchaudio to run ltx_core's AudioProcessor"
        )


@contextlib.contextmanager
def torchaudio_stub() -> Iterator[None]:
    """Make ``import torchaudio`` succeed (as a stub) inside the block if torchaudio is not installed."""
    if "torchaudio" in sys.modules or importlib.util.find_spec("torchaudio") is not None:
        yield
        return
    sys.modules["torchaudio"] = _TorchaudioStub("torchaudio", "placeholder: see tests/parity/_ltx_core_stub.py")
    try:
        yield
    finally:
        sys.modules.pop("torchaudio", None)
