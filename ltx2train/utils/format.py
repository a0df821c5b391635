"""Human-readable quantities (one formatter of each)."""

from __future__ import annotations

GIB, MIB, KIB = 2**30, 2**20, 2**10


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit it reaches: ``1.50 GiB``, ``12.3 MiB``, ``4.0 KiB``, ``512 B``."""
    if abs(n) >= GIB:
        return f"{n / GIB:.2f} GiB"
    if abs(n) >= MIB:
        return f"{n / MIB:.1f} MiB"
    return f"{n / KIB:.1f} KiB" if abs(n) >= KIB else f"{n:.0f} B"
