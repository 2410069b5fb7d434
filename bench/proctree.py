"""Measuring a process tree from /proc while it runs: summed RSS, CPU per process, progress.

Strategy: a `TreeSampler` thread wakes every `interval` seconds (50 ms by default), finds every
descendant of one root process through ``/proc/PID/task/TID/children`` (cheap: no scan of all of
/proc), reads each one's ``/proc/PID/stat`` and keeps

- the peak of the RSS summed over the tree (the max over samples of the sum, not the sum of
  per-process maxima);
- each process's last seen CPU seconds (user + system, all threads) and its role, named from its
  command line (``coordinator``, ``peer_agent``, ``storage_agent``, ``tracker_agent``);
- optionally, when a `progress` callable (bytes on disk) first went above zero and first reached
  its target: where a download's start-up ends and its shutdown begins.

Rules:
- Only reads /proc; never signals or waits for a process (the caller owns and reaps the root).
- A process that vanishes between two reads is skipped, never an error: the tree changes while
  it is read.
- CPU from samples misses what a process spends after the last sample (at most `interval`);
  callers wanting exact totals use ``getrusage(RUSAGE_CHILDREN)`` deltas around a waited-for
  child, which include every grandchild the child waited for. `cpu_seconds` reads one process
  directly, for processes the caller does not reap (a libtorrent peer that keeps running).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ProcStat",
    "TreeSampler",
    "cpu_seconds",
    "descendants",
    "read_stat",
    "role_of",
]

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_MAX_DEPTH = 8  # the torviz tree is two levels deep; bound the walk anyway
_MAX_PROCESSES = 256
_ROLE_CHECKS = 5  # samples over which a new process's role is read again

# Substrings of a command line that name a torviz process, first match wins.
_ROLES = (
    ("torviz.services.peer_agent", "peer_agent"),
    ("torviz-peer-agent", "peer_agent"),
    ("torviz.services.storage_agent", "storage_agent"),
    ("torviz-storage-agent", "storage_agent"),
    ("torviz.services.tracker_agent", "tracker_agent"),
    ("torviz-tracker-agent", "tracker_agent"),
    ("torviz.services.coordinator", "coordinator"),
    ("torviz-coordinator", "coordinator"),
)


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/PID/stat this module uses."""

    pid: int
    ppid: int
    state: str
    cpu_s: float
    """User + system CPU seconds of every thread, live and exited."""
    user_s: float
    sys_s: float
    minor_faults: int
    """Page faults served without I/O: mostly fresh memory touched for the first time."""
    children_cpu_s: float
    """User + system CPU seconds of the children it has waited for."""
    rss: int
    """Resident bytes."""


def read_stat(pid: int) -> ProcStat | None:
    """Read /proc/PID/stat; None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = text.rpartition(")")[2].split()
    if len(fields) < 22:
        return None
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        state=fields[0],
        cpu_s=(int(fields[11]) + int(fields[12])) / _TICK,
        user_s=int(fields[11]) / _TICK,
        sys_s=int(fields[12]) / _TICK,
        minor_faults=int(fields[7]),
        children_cpu_s=(int(fields[13]) + int(fields[14])) / _TICK,
        rss=int(fields[21]) * _PAGE,
    )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds one process has used so far; None when it is gone."""
    stat = read_stat(pid)
    return None if stat is None else stat.cpu_s


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        found.extend(int(child) for child in text.split())
    return found


def descendants(root: int) -> list[int]:
    """Every live descendant of `root` (not `root` itself), breadth first, bounded in size."""
    found: list[int] = []
    frontier = [root]
    for _ in range(_MAX_DEPTH):
        if not frontier:
            break
        nxt: list[int] = []
        for pid in frontier:
            nxt.extend(_children(pid))
        found.extend(nxt)
        frontier = nxt
        if len(found) >= _MAX_PROCESSES:
            break
    return found[:_MAX_PROCESSES]


def role_of(pid: int) -> str:
    """What a process is, from its command line: a torviz service name, else its ``comm``."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        cmdline = ""
    for needle, role in _ROLES:
        if needle in cmdline:
            return role
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or "?"
    except OSError:
        return "?"


@dataclass(slots=True)
class _Seen:
    role: str
    first_seen: float
    cpu_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    minor_faults: int = 0
    peak_rss: int = 0
    last_seen: float = 0.0
    role_checks: int = 1


@dataclass(slots=True)
class TreeSampler:
    """Samples the tree under `root` every `interval` s on a daemon thread until `stop()`.

    Args:
        root: the process whose tree is measured (included in the tree).
        interval: seconds between samples.
        progress: optional; returns bytes on disk so far.
        target: bytes at which `progress` counts as complete.
        started: the monotonic time the root was started; times are reported relative to it.
    """

    root: int
    interval: float = 0.05
    progress: Callable[[], int] | None = None
    target: int = 0
    started: float = field(default_factory=time.monotonic)
    peak_rss_sum: int = 0
    samples: int = 0
    first_bytes_at: float | None = None
    """Seconds after `started` when `progress` first reported a byte."""
    all_bytes_at: float | None = None
    """Seconds after `started` when `progress` first reached `target`."""
    processes: dict[int, _Seen] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TreeSampler:
        """Take a first sample now, then keep sampling on a thread."""
        self._sample()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample (if anything still runs) and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        now = time.monotonic()
        pids = [self.root, *descendants(self.root)]
        total = 0
        for pid in pids:
            stat = read_stat(pid)
            if stat is None or stat.state == "Z":
                # A zombie's stat still holds its CPU; its memory is gone.
                if stat is not None and pid in self.processes:
                    self.processes[pid].cpu_s = max(self.processes[pid].cpu_s, stat.cpu_s)
                continue
            seen = self.processes.get(pid)
            if seen is None:
                seen = self.processes[pid] = _Seen(role_of(pid), now - self.started)
            elif seen.role_checks < _ROLE_CHECKS:
                # A child caught between fork and exec still shows its parent's command line.
                seen.role = role_of(pid)
                seen.role_checks += 1
            seen.cpu_s = max(seen.cpu_s, stat.cpu_s)
            seen.user_s, seen.sys_s = stat.user_s, stat.sys_s
            seen.minor_faults = stat.minor_faults
            seen.peak_rss = max(seen.peak_rss, stat.rss)
            seen.last_seen = now - self.started
            total += stat.rss
        self.peak_rss_sum = max(self.peak_rss_sum, total)
        self.samples += 1
        if self.progress is not None and self.all_bytes_at is None:
            done = self.progress()
            if done > 0 and self.first_bytes_at is None:
                self.first_bytes_at = now - self.started
            if self.target and done >= self.target:
                self.all_bytes_at = now - self.started

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds per role, summed over processes of that role (as last sampled)."""
        split: dict[str, float] = {}
        for seen in self.processes.values():
            split[seen.role] = split.get(seen.role, 0.0) + seen.cpu_s
        return split

    def detail_by_role(self) -> dict[str, dict[str, float]]:
        """Per role: user and system CPU seconds and minor page faults (as last sampled)."""
        split: dict[str, dict[str, float]] = {}
        for seen in self.processes.values():
            row = split.setdefault(seen.role, {"user_s": 0.0, "sys_s": 0.0, "minor_faults": 0})
            row["user_s"] += seen.user_s
            row["sys_s"] += seen.sys_s
            row["minor_faults"] += seen.minor_faults
        return split

    def rss_by_role(self) -> dict[str, int]:
        """Each role's peak RSS (summed over processes of that role, per-process peaks)."""
        split: dict[str, int] = {}
        for seen in self.processes.values():
            split[seen.role] = split.get(seen.role, 0) + seen.peak_rss
        return split

    def last_seen_by_role(self) -> dict[str, float]:
        """Seconds after `started` each role was last seen alive (its exit, to `interval`)."""
        split: dict[str, float] = {}
        for seen in self.processes.values():
            split[seen.role] = max(split.get(seen.role, 0.0), seen.last_seen)
        return split

    def pids_by_role(self) -> dict[str, list[int]]:
        """The pids seen, per role."""
        split: dict[str, list[int]] = {}
        for pid, seen in self.processes.items():
            split.setdefault(seen.role, []).append(pid)
        return split

    def survivors(self) -> list[int]:
        """Pids seen in the tree that still exist (should be none after the root exited)."""
        alive = []
        for pid in self.processes:
            stat = read_stat(pid)
            if stat is not None and stat.state != "Z":
                alive.append(pid)
        return alive
