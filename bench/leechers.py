"""The two leechers a benchmark times on one swarm: torviz's one-shot download and libtorrent.

Strategy: each run starts a fresh process and measures it from outside. torviz: the
``torviz-coordinator download`` command, wall time from spawn to exit 0, CPU from
``getrusage(RUSAGE_CHILDREN)`` deltas (the coordinator waits for its three agents, so their time
is included) checked against per-process /proc samples (`bench.proctree.TreeSampler`), peak RSS
summed over the tree. libtorrent: a `testing.swarm.LtPeer` leecher, wall time from spawn to
its ``finished`` event (every piece verified and flushed), CPU read from /proc at that moment.

Rules:
- Every process started here is stopped and reaped before the function returns, even on a
  timeout (torviz is killed; the libtorrent peer stopped).
- Nothing else may be reaped by this process while a torviz run is timed, or its rusage delta
  would include it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.proctree import TreeSampler, cpu_seconds
from bench.sources import REPO
from bench.workload import bytes_on_disk
from testing.content import ContentSpec, TorrentFile, compare_content
from testing.processes import SwarmError
from testing.swarm import LtPeer, Swarm

__all__ = ["COORDINATOR", "RunResult", "run_libtorrent", "run_torviz"]

COORDINATOR = Path(sys.executable).with_name("torviz-coordinator")


@dataclass(slots=True)
class RunResult:
    """One timed download."""

    tool: str  # "torviz" or "libtorrent"
    variant: str
    run: int
    ok: bool
    wall_s: float
    cpu_s: float | None = None
    peak_rss: int | None = None
    first_bytes_s: float | None = None
    """Seconds from spawn until the first downloaded byte was on disk (50 ms resolution)."""
    all_bytes_s: float | None = None
    """Seconds from spawn until every byte was on disk (50 ms resolution)."""
    cpu_by_role: dict[str, float] = field(default_factory=dict)
    rss_by_role: dict[str, int] = field(default_factory=dict)
    detail_by_role: dict[str, dict[str, float]] = field(default_factory=dict)
    """User and system CPU seconds and minor page faults per role (from /proc samples)."""
    exited_by_role: dict[str, float] = field(default_factory=dict)
    """Seconds from spawn until each role was last seen alive (50 ms resolution)."""
    sampled_cpu_s: float | None = None
    verified: bool | None = None
    error: str = ""
    seeder_cpu_s: float | None = None
    """CPU seconds the seeders spent during this run (serving it)."""
    loadavg: float = field(default_factory=lambda: os.getloadavg()[0])
    """The 1-minute load average when the run ended: other work on the machine."""


def run_torviz(
    variant: str,
    run: int,
    torrent: TorrentFile,
    spec: ContentSpec,
    out: Path,
    config: Path,
    *,
    timeout: float,
    verify: bool,
    extra: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    on_tree: Callable[[TreeSampler], None] | None = None,
) -> RunResult:
    """Time one ``torviz-coordinator download``; see the module comment for what is measured.

    `on_tree` is called (once) as soon as the peer and storage agents exist, e.g. to attach a
    profiler to them.
    """
    out.mkdir(parents=True, exist_ok=True)
    argv = [str(COORDINATOR), "download", str(torrent.path), "-o", str(out)]
    argv += ["--config", str(config), *extra]
    log_path = log_path or out.with_name(f"{out.name}-torviz.log")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log_path.open("wb") as log, open(os.devnull, "wb") as devnull:
        started = time.monotonic()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=devnull,
            stderr=log,
            env={**os.environ, **(env or {})},
            # The agents run as `python -m torviz.services.<agent>`, which puts the current
            # directory first on sys.path: run from the measured source, never from the working
            # tree.
            cwd=(env or {}).get("PYTHONPATH", REPO),
        )
        sampler = TreeSampler(
            process.pid,
            started=started,
            progress=bytes_on_disk(out),
            target=torrent.total_size,
        ).start()
        code: int | None = None
        try:
            deadline = started + timeout
            hooked = on_tree is None
            while code is None and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    code = process.wait(timeout=0.05 if not hooked else 1.0)
                agents = sampler.pids_by_role().keys()
                if not hooked and {"peer_agent", "storage_agent"} <= agents:
                    hooked = True
                    assert on_tree is not None
                    on_tree(sampler)
            wall = time.monotonic() - started
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rusage_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    split = sampler.cpu_by_role()
    sampled = sum(split.values())
    survivors = sampler.survivors()
    result = RunResult(
        tool="torviz",
        variant=variant,
        run=run,
        ok=code == 0,
        wall_s=wall,
        # rusage misses nothing the coordinator waited for; the samples miss each process's
        # last 50 ms. Take the larger: they agree unless an agent was not waited for.
        cpu_s=max(rusage_cpu, sampled),
        peak_rss=sampler.peak_rss_sum,
        first_bytes_s=sampler.first_bytes_at,
        all_bytes_s=sampler.all_bytes_at,
        cpu_by_role={k: round(v, 3) for k, v in sorted(split.items())},
        rss_by_role=dict(sorted(sampler.rss_by_role().items())),
        detail_by_role=dict(sorted(sampler.detail_by_role().items())),
        exited_by_role={k: round(v, 3) for k, v in sorted(sampler.last_seen_by_role().items())},
        sampled_cpu_s=sampled,
    )
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        result.error = f"exit {code}: " + " | ".join(tail)
    elif survivors:
        result.error = f"processes left running after exit: {survivors}"
    elif rusage_cpu + 0.2 < sampled:
        result.error = f"rusage {rusage_cpu:.2f} s < sampled {sampled:.2f} s: agents not reaped"
    if result.ok and verify:
        problems = compare_content(spec.root, out, spec)
        result.verified = not problems
        if problems:
            result.ok = False
            result.error = "content differs: " + "; ".join(problems[:3])
    return result


def run_libtorrent(
    variant: str, run: int, swarm: Swarm, torrent: TorrentFile, out: Path, *, timeout: float
) -> RunResult:
    """Time one fresh libtorrent leecher process, from spawn to "every piece on disk"."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    peer: LtPeer = swarm.leecher(torrent.path, out, wait=False)
    sampler = TreeSampler(
        peer.pid, started=started, progress=bytes_on_disk(out), target=torrent.total_size
    ).start()
    try:
        status = peer.wait_finished(timeout)
        wall = time.monotonic() - started
        cpu = cpu_seconds(peer.pid)
        sampler.stop()
        ok = status.is_finished and status.num_pieces == torrent.num_pieces
        error = "" if ok else f"finished with {status.num_pieces}/{torrent.num_pieces} pieces"
        return RunResult(
            tool="libtorrent",
            variant=variant,
            run=run,
            ok=ok,
            wall_s=wall,
            cpu_s=cpu,
            peak_rss=sampler.peak_rss_sum,
            first_bytes_s=sampler.first_bytes_at,
            all_bytes_s=sampler.all_bytes_at,
            error=error,
        )
    except SwarmError as exc:
        sampler.stop()
        return RunResult(
            "libtorrent", variant, run, False, time.monotonic() - started, error=str(exc)
        )
    finally:
        peer.stop()
