"""The registry of fuzz targets: ``Target``, ``TARGETS`` and the ``fuzz_target`` decorator.

Strategy: a target module decorates each ``fuzz_<name>(data: bytes) -> None`` function with
``fuzz_target(seeds)``, which records it in ``TARGETS`` under ``<name>``. The registry lives in
its own module so that target modules split by theme (``targets.py``, ``targets_peers.py``,
``targets_dht.py``) all fill the one dictionary; ``targets.py`` imports every target module and
re-exports these names, so ``tests.fuzz.targets.TARGETS`` holds every target.

Rules: a name is registered once (a second registration of the same name is a mistake and
fails at import); registration order is import order, which ``run.py --list`` shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["TARGETS", "Target", "fuzz_target"]


@dataclass(frozen=True, slots=True)
class Target:
    """A registered fuzz target.

    Attributes:
        name: what ``run.py`` and the regression file names call it (``fuzz_`` dropped).
        run: the target itself; raises only on a finding.
        seeds: the seed inputs, already in the target's input layout.
        max_len: the longest input the fuzzer generates (seeds longer than this are cut).
    """

    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], Iterable[bytes]]
    max_len: int


TARGETS: dict[str, Target] = {}
"""Every target by name, in registration order."""


def fuzz_target(
    seeds: Callable[[], Iterable[bytes]], *, max_len: int = 8192
) -> Callable[[Callable[[bytes], None]], Callable[[bytes], None]]:
    """Register ``fuzz_<name>`` as the target ``<name>``, starting from ``seeds()``.

    Args:
        seeds: returns the seed inputs.
        max_len: the longest input the fuzzer generates.

    Returns:
        The decorator, which returns the function unchanged.

    Raises:
        ValueError: (from the decorator) a target of that name is registered already.
    """

    def register(run: Callable[[bytes], None]) -> Callable[[bytes], None]:
        name = run.__name__.removeprefix("fuzz_")
        if name in TARGETS:
            raise ValueError(f"fuzz target {name!r} registered twice")
        TARGETS[name] = Target(name, run, seeds, max_len)
        return run

    return register
