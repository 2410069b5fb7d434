"""Sizes and durations as people read them, for the command line, the log and the terminal UI.

Pure functions; binary units (KiB = 1024 bytes), as the rest of torviz reports sizes.
"""

from __future__ import annotations

__all__ = ["human_size", "short_duration"]

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(size: float) -> str:
    """``1536`` -> ``"1.5 KiB"``; whole bytes below 1 KiB (``"512 B"``)."""
    value = float(size)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def short_duration(seconds: float) -> str:
    """A duration in at most two units: ``42s``, ``3m05s``, ``2h10m``, ``3d04h`` (negative
    durations are ``0s``)."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
