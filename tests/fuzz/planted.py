"""Targets with planted bugs, so the tests can check that the fuzzing pipeline itself works: a
finding is detected, its input saved under the target's name, and the replay reproduces it.

Each bug fires on its own seed, so libFuzzer meets it while loading the corpus: deterministic
and fast. Not real targets: ``run.py --module tests.fuzz.planted`` selects this registry.
"""

from __future__ import annotations

import time

from tests.fuzz.targets import Target

__all__ = ["TARGETS"]

HANG_SECONDS = 20.0
"""How long the planted hang spins: well past the 1 s per-input limit the test sets, and still
bounded when someone replays it by hand."""


def planted_crash(data: bytes) -> None:
    """Raises an undocumented exception on input starting with ``boom``."""
    if data.startswith(b"boom"):
        raise IndexError("planted bug")


def planted_hang(data: bytes) -> None:
    """Spins for HANG_SECONDS on input starting with ``hang``."""
    if data.startswith(b"hang"):
        deadline = time.monotonic() + HANG_SECONDS
        while time.monotonic() < deadline:
            pass


TARGETS: dict[str, Target] = {
    "planted_crash": Target("planted_crash", planted_crash, lambda: [b"ok", b"boom"], 64),
    "planted_hang": Target("planted_hang", planted_hang, lambda: [b"ok", b"hang"], 64),
}
