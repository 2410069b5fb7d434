"""Helpers for the DHT interop tests: ``status --json`` of a daemon polled until it shows
something, the pid of one of its agents, and CPU time read from /proc. torviz's DHT config and
the DHT-only libtorrent seeder are in `testing/dht.py`.

The test process sets ``TORVIZ_DHT_LOCAL_ONLY=1`` (tests/conftest.py) and children inherit it:
even a config naming a public router could not reach it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CpuSample",
    "cpu_seconds",
    "status_document",
    "wait_agent_pid",
    "wait_document",
]

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def status_document(cli: Callable[..., Any]) -> dict[str, Any]:
    """``status --json`` of a daemon (`cli` is `TorvizDaemon.cli`), parsed."""
    result = cli("status", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def wait_document(
    cli: Callable[..., Any],
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float,
    what: str,
) -> dict[str, Any]:
    """Poll ``status --json`` every 0.3 s until `predicate` holds; AssertionError (naming
    `what` and the last document) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        document = status_document(cli)
        if predicate(document):
            return document
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen in {timeout} s; last status: {document}")
        time.sleep(0.3)


def wait_agent_pid(agent_pid: Callable[[str], int], kind: str, timeout: float = 15.0) -> int:
    """The pid of the daemon's agent of `kind` (`agent_pid` is `TorvizDaemon.agent_pid`),
    waiting up to `timeout` seconds for the daemon to start it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return agent_pid(kind)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of `pid` so far, in seconds (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


@dataclass
class CpuSample:
    """CPU used by one process between `start` and `stop` (wall clock and CPU seconds)."""

    pid: int
    wall: float = 0.0
    cpu: float = 0.0

    started: float = 0.0
    _cpu0: float = 0.0

    def start(self) -> CpuSample:
        self.started = time.monotonic()
        self._cpu0 = cpu_seconds(self.pid)
        return self

    def stop(self) -> CpuSample:
        self.wall = time.monotonic() - self.started
        self.cpu = cpu_seconds(self.pid) - self._cpu0
        return self

    @property
    def share(self) -> float:
        """CPU seconds per wall second (1.0 = one core busy)."""
        return self.cpu / self.wall if self.wall > 0 else 0.0
