"""Sampling profiles of running torviz processes with py-spy, their summaries, log timelines.

Strategy: one ``py-spy record`` per profiled process, attached by pid (this needs root or
ptrace rights), writing collapsed stacks (``--format raw``: one ``frame;frame;... COUNT`` line per
distinct stack) aggregated per function (``--function``), sampled without pausing the target
(``--nonblocking``) so the profile disturbs the download as little as it can. py-spy stops by
itself when its target exits. `summarise` turns the collapsed stacks into the functions with the
most samples: *own* (the function was the innermost Python frame: time in its own code or in the
C it called, such as hashlib or a socket call) and *total* (anywhere on the stack).

Rules:
- Idle threads are not sampled (py-spy's default), so percentages are of the samples where the
  process was doing something; `ProfileSummary.busy_fraction` relates that count to the wall
  time the profiler ran.
- Parsing is bounded: the file is read line by line and frames are counted, never stored twice.

`timeline` reads a torviz log (``--log-level INFO``) into the seconds after spawn at which each
distinct message first appeared: when each service started, connected, found peers.
"""

from __future__ import annotations

import calendar
import collections
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ProfileSummary",
    "Spies",
    "finish_pyspy",
    "pyspy_binary",
    "start_pyspy",
    "summarise",
    "timeline",
]

_MAX_LINE = 1 << 20

Spies = dict[str, tuple[subprocess.Popen[bytes], Path, float]]
"""Role -> (its py-spy, the raw profile it writes, when it was attached)."""


def pyspy_binary() -> str | None:
    """The py-spy next to this interpreter (the project's virtualenv), else the one on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def start_pyspy(pid: int, output: Path, *, rate: int = 100) -> subprocess.Popen[bytes]:
    """Attach py-spy to `pid`, writing collapsed stacks to `output` when the target exits.

    Raises:
        FileNotFoundError: py-spy is not installed.
    """
    binary = pyspy_binary()
    if binary is None:
        raise FileNotFoundError("py-spy not found (pip install py-spy)")
    argv = [
        binary,
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--function",
        "--nonblocking",
        "--rate",
        str(rate),
        "--output",
        str(output),
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    """The hottest functions of one profile."""

    samples: int
    busy_fraction: float
    """Samples taken over samples possible (rate x seconds profiled): how busy the process was."""
    own: tuple[tuple[str, float], ...]
    """(function, share of samples) where it was the innermost frame, hottest first."""
    total: tuple[tuple[str, float], ...]
    """(function, share of samples) where it was anywhere on the stack, hottest first."""

    def to_json(self) -> dict[str, object]:
        return {
            "samples": self.samples,
            "busy_fraction": round(self.busy_fraction, 3),
            "own": [[name, round(share, 4)] for name, share in self.own],
            "total": [[name, round(share, 4)] for name, share in self.total],
        }

    def format(self, title: str, top: int = 12) -> str:
        """A few lines of text: the top `top` functions by own and by total samples."""
        lines = [f"{title}: {self.samples} samples, busy {100 * self.busy_fraction:.0f}% of wall"]
        lines.append("  own:")
        lines += [f"    {100 * share:5.1f}%  {name}" for name, share in self.own[:top]]
        lines.append("  total:")
        lines += [f"    {100 * share:5.1f}%  {name}" for name, share in self.total[:top]]
        return "\n".join(lines)


def summarise(raw: Path, *, seconds: float, rate: int, top: int = 40) -> ProfileSummary:
    """Summarise py-spy's collapsed stacks in `raw` (see the module comment)."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    with raw.open() as stream:
        for line in stream:
            stack, _, count_text = line[:_MAX_LINE].rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            samples += count
            own[frames[-1]] += count
            for frame in set(frames):
                total[frame] += count
    possible = max(1.0, seconds * rate)
    share = 1.0 / samples if samples else 0.0
    return ProfileSummary(
        samples=samples,
        busy_fraction=min(1.0, samples / possible),
        own=tuple((name, n * share) for name, n in own.most_common(top)),
        total=tuple((name, n * share) for name, n in total.most_common(top)),
    )


# "<time>.<ms>Z <service>[<agent id>] <LEVEL> <logger>[ [<context>]]: <message>"
_LOG_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z (\S+) (\w+) (\S+?)(?: \[[^\]]*\])?: (.*)$"
)


def timeline(log_path: Path, spawned_wall: float, limit: float) -> list[tuple[float, str, str]]:
    """(seconds after spawn, service, message) of each distinct log message in the first
    `limit` seconds; numbers in messages are folded so repeats collapse."""
    seen: set[tuple[str, str]] = set()
    events: list[tuple[float, str, str]] = []
    for line in log_path.read_text(errors="replace").splitlines():
        match = _LOG_LINE.match(line)
        if match is None:
            continue
        stamp, millis, service, _, _, message = match.groups()
        wall = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000
        at = wall - spawned_wall
        service = re.sub(r"\[.*\]", "", service)
        key = (service, re.sub(r"\d+", "#", message))
        if at > limit or key in seen:
            continue
        seen.add(key)
        events.append((round(at, 3), service, message[:120]))
    return events


def finish_pyspy(
    spies: Spies, *, rate: int, keep: Path | None = None
) -> dict[str, dict[str, object]]:
    """Wait for each py-spy (its target exited), summarise its profile and print the summary.

    Args:
        spies: the profilers started with ``start_pyspy``, by role.
        rate: the sampling rate they used.
        keep: a folder to copy each raw profile into (the summary names the copy), or None.

    Returns:
        Role -> the summary's JSON and its raw file, or ``{"error": ...}`` when py-spy wrote
        nothing (its last words).
    """
    report: dict[str, dict[str, object]] = {}
    for role, (spy, raw, attached) in spies.items():
        try:
            _, err = spy.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        seconds = time.monotonic() - attached
        if not raw.exists():
            report[role] = {"error": err.decode(errors="replace").strip()[-300:]}
            continue
        kept = raw if keep is None else Path(shutil.copy(raw, keep / raw.name))
        summary = summarise(raw, seconds=seconds, rate=rate)
        report[role] = {**summary.to_json(), "raw": str(kept)}
        print(summary.format(f"py-spy {role}"), flush=True)
    return report
