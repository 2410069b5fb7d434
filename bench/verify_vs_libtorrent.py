"""Checking speed: torviz's ``verify`` of complete data against libtorrent's ``force_recheck``.

Usage (from the repository root)::

    /work/venv/bin/python bench/verify_vs_libtorrent.py [--size-mib 1024] [--runs 3]
        [--poll 0.1] [--settle 1] [--lt-hashing-threads N] [--cache /tmp/torviz-bench]
        [--live] [--output FILE]

The data: the download benchmark's content (one file, deterministic random bytes, cached under
``--cache``), read once beforehand so both clients hash from the page cache, and a torrent of it
with 1 MiB pieces and no tracker (nothing is announced anywhere).

- torviz: one daemon for all runs (``torviz-coordinator start --state-dir S --download-dir D
  --config CFG``; peer agent on its own 127.0.0.x, DHT off), the torrent added with ``add
  TORRENT --dir DATA`` (that first check is timed too, for information), then each run spawns
  ``torviz-coordinator verify ID`` and polls ``status ID --json`` until the torrent is seeding
  again with ``check_progress`` null and every piece verified. Each poll is a CLI process
  (~0.3 s on the machine measured) followed by a ``--poll`` pause, so the end of a check is seen
  up to one poll interval late: the JSON records the poll intervals, and the time the verify
  command took to be acknowledged. The daemon tree's CPU seconds per process are read from
  /proc around each run (the polling CLIs are not in that tree).
- libtorrent: a fresh `bench/lt_recheck.py` process per run (libtorrent session, every network
  feature off, the torrent added on the data; it waits for the initial check, then times
  ``force_recheck()`` until libtorrent's ``torrent_checked_alert``).

Runs alternate between the two, with ``--settle`` idle seconds between. The daemon is shut down
at the end (``torviz-coordinator shutdown``) and its process tree checked gone (killed if not).

What is measured: a byte-compiled copy of the working tree's ``shared`` and ``services`` taken at
the start, as in the download benchmark; ``--live`` runs the tree itself.

Prints a markdown table and writes every figure to ``bench/results/verify-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.comparison import (
    Measure,
    alternating,
    by_tool,
    markdown_table,
    median_by_role,
    median_of,
    outcome_text,
    print_table,
    roles_text,
    runs_cell,
    write_report,
)
from bench.leechers import COORDINATOR
from bench.proctree import cpu_seconds, descendants, role_of
from bench.sources import REPO, fmt, start_report
from bench.workload import MIB, cached_content, read_through
from testing.content import ContentSpec, TorrentFile, make_torrent
from testing.swarm import next_loopback_address

LT_RECHECK = Path(__file__).resolve().with_name("lt_recheck.py")
START_TIMEOUT = 30.0
CLI_TIMEOUT = 30.0
BUSY_INTERVAL = 0.02  # storage agent CPU samples, s (CPU times tick every 10 ms)
BUSY_SHARE = 0.5  # a sample counts as busy when the agent used half a core or more
MEASURE = Measure(time_key="s", rate_key="gb_s", per_second=1e9, rate_spec=".2f")


class BenchError(RuntimeError):
    """The daemon or a command did not do what the benchmark needs."""


@dataclass(slots=True)
class VerifyRun:
    """One timed check of the complete data."""

    tool: str
    run: int
    ok: bool
    wall_s: float
    """torviz: spawn of ``verify`` until a poll saw it done; libtorrent: force_recheck to alert."""
    cpu_s: float | None = None
    """CPU seconds of the checking processes (torviz: the daemon tree) during the check."""
    cpu_by_role: dict[str, float] = field(default_factory=dict)
    acknowledged_s: float | None = None
    """torviz: spawn of ``verify`` until the command exited (it returns once the daemon has
    started the check)."""
    polls: int = 0
    poll_interval_s: float | None = None
    """Median time between two status polls: how late the end can be seen."""
    initial_check_s: float | None = None
    busy_s: float | None = None
    """torviz: how long the storage agent was busy (>= half a core, sampled every 20 ms) during
    the run: the check itself, without the CLI and polling overheads."""
    busy_from_s: float | None = None
    """torviz: spawn of ``verify`` until the storage agent got busy."""
    error: str = ""
    loadavg: float = field(default_factory=lambda: os.getloadavg()[0])


class Daemon:
    """A torviz daemon started from the measured source, and its CLI (one process per call)."""

    def __init__(self, work: Path, env: dict[str, str], host: str) -> None:
        self.state_dir = work / "state"
        self.env = {**os.environ, **env}
        self.cwd = env.get("PYTHONPATH", str(REPO))
        self.config = work / "torviz.toml"
        self.config.write_text(
            f'[peer_agent]\nlisten_host = "{host}"\n\n'
            f'[tracker_agent]\ndht = false\nbind_address = "{host}"\n'
        )
        self.log = work / "daemon.log"
        self.download_dir = work / "downloads"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it and wait until its control socket is published."""
        self.download_dir.mkdir(parents=True, exist_ok=True)
        argv = [str(COORDINATOR), "start", "--state-dir", str(self.state_dir)]
        argv += ["--download-dir", str(self.download_dir), "--config", str(self.config)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=self.env,
                cwd=self.cwd,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.state_dir / "daemon.json").exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the daemon did not start: {self.log.read_text()[-500:]}")
            time.sleep(0.1)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one CLI command against the daemon; raises BenchError unless it exits 0."""
        argv = [str(COORDINATOR), *args, "--state-dir", str(self.state_dir)]
        done = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            env=self.env,
            cwd=self.cwd,
        )
        if done.returncode != 0:
            raise BenchError(f"{' '.join(args)}: exit {done.returncode}: {done.stderr.strip()}")
        return done

    def status(self, torrent_id: str) -> dict[str, Any]:
        """The torrent's entry in ``status --json`` (``{"torrents": [...], "agents": [...]}``)."""
        document = json.loads(self.cli("status", torrent_id, "--json").stdout)
        torrents = document.get("torrents") if isinstance(document, dict) else None
        if not isinstance(torrents, list) or len(torrents) != 1:
            raise BenchError(f"status --json gave {document!r}")
        [entry] = torrents
        if not isinstance(entry, dict):
            raise BenchError(f"status --json gave {entry!r}")
        return entry

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError("the daemon is not running")
        return self.process.pid

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of the coordinator and each agent."""
        by_role: dict[str, float] = {}
        for pid in [self.pid, *descendants(self.pid)]:
            cpu = cpu_seconds(pid)
            if cpu is not None:
                by_role[role_of(pid)] = by_role.get(role_of(pid), 0.0) + cpu
        return by_role

    def agent_pid(self, role: str) -> int:
        """The pid of the daemon's agent of `role`; raises BenchError if there is none."""
        for pid in descendants(self.pid):
            if role_of(pid) == role:
                return pid
        raise BenchError(f"no {role} under the daemon")

    def stop(self) -> list[str]:
        """``shutdown``, then SIGTERM, then SIGKILL of whatever is left; returns what it did."""
        if self.process is None:
            return []
        notes: list[str] = []
        tree = descendants(self.process.pid)
        if self.process.poll() is None:
            try:
                self.cli("shutdown")
                self.process.wait(timeout=30)
            except (BenchError, subprocess.TimeoutExpired) as exc:
                notes.append(f"shutdown failed ({exc}): SIGTERM")
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline and any(cpu_seconds(p) is not None for p in tree):
            time.sleep(0.1)
        for pid in tree:
            if cpu_seconds(pid) is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                notes.append(f"killed leftover {role_of(pid)} {pid}")
        self.process = None
        return notes


class BusySpan:
    """Samples one process's CPU seconds every `BUSY_INTERVAL` s on a thread; `span()` gives
    when it first and last was busy (relative to `started`)."""

    def __init__(self, pid: int, started: float) -> None:
        self.pid, self.started = pid, started
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="busy-span", daemon=True)

    def __enter__(self) -> BusySpan:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while True:
            cpu = cpu_seconds(self.pid)
            if cpu is not None:
                self.samples.append((time.monotonic() - self.started, cpu))
            if self._stop.wait(BUSY_INTERVAL):
                return

    def span(self) -> tuple[float, float] | None:
        """(first, last) seconds at which the process was busy, None if it never was."""
        busy = [
            t1
            for (t0, c0), (t1, c1) in itertools.pairwise(self.samples)
            if t1 > t0 and (c1 - c0) / (t1 - t0) >= BUSY_SHARE
        ]
        if not busy:
            return None
        # A busy sample covers the interval before it: the work began one interval earlier.
        return max(0.0, busy[0] - BUSY_INTERVAL), busy[-1]


def _done(entry: dict[str, Any]) -> bool:
    return (
        entry["state"] == "seeding"
        and entry["check_progress"] is None
        and entry["pieces_verified"] == entry["num_pieces"]
    )


def wait_checked(
    daemon: Daemon, torrent_id: str, started: float, poll: float, timeout: float
) -> tuple[float, list[float]]:
    """Poll status until the check is done; returns (seconds since `started`, poll times)."""
    seen: list[float] = []
    while True:
        entry = daemon.status(torrent_id)
        now = time.monotonic()
        seen.append(now - started)
        if entry["state"] == "error":
            raise BenchError(f"torrent in error: {entry['error']}")
        if _done(entry):
            return now - started, seen
        if now - started > timeout:
            raise BenchError(f"not done after {timeout} s: {entry['state']}")
        time.sleep(poll)


def run_torviz(daemon: Daemon, torrent_id: str, run: int, args: Any) -> VerifyRun:
    """Time one ``verify`` of the daemon's torrent."""
    before = daemon.cpu_by_role()
    storage = daemon.agent_pid("storage_agent")
    started = time.monotonic()
    try:
        with BusySpan(storage, started) as busy:
            daemon.cli("verify", torrent_id)
            acknowledged = time.monotonic() - started
            wall, seen = wait_checked(daemon, torrent_id, started, args.poll, args.timeout)
    except BenchError as exc:
        return VerifyRun("torviz", run, False, time.monotonic() - started, error=str(exc))
    span = busy.span()
    after = daemon.cpu_by_role()
    by_role = {role: round(after[role] - before.get(role, 0.0), 3) for role in sorted(after)}
    gaps = [b - a for a, b in itertools.pairwise(seen)]
    return VerifyRun(
        "torviz",
        run,
        True,
        wall,
        cpu_s=sum(by_role.values()),
        cpu_by_role=by_role,
        acknowledged_s=acknowledged,
        polls=len(seen),
        poll_interval_s=statistics.median(gaps) if gaps else None,
        busy_s=None if span is None else span[1] - span[0],
        busy_from_s=None if span is None else span[0],
    )


def run_libtorrent(torrent: TorrentFile, spec: ContentSpec, run: int, args: Any) -> VerifyRun:
    """Time one ``force_recheck`` in a fresh `bench/lt_recheck.py` process."""
    argv = [sys.executable, str(LT_RECHECK), "--torrent", str(torrent.path)]
    argv += ["--save-path", str(spec.root), "--listen-host", next_loopback_address()]
    argv += ["--timeout", str(args.timeout)]
    if args.lt_hashing_threads is not None:
        argv += ["--hashing-threads", str(args.lt_hashing_threads)]
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=3 * args.timeout
        )
    except subprocess.TimeoutExpired:
        return VerifyRun("libtorrent", run, False, time.monotonic() - started, error="timeout")
    lines = done.stdout.strip().splitlines()
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    if done.returncode != 0 or "recheck_s" not in result:
        why = result.get("error") or done.stderr.strip()[-300:]
        return VerifyRun("libtorrent", run, False, 0.0, error=f"exit {done.returncode}: {why}")
    return VerifyRun(
        "libtorrent",
        run,
        True,
        result["recheck_s"],
        cpu_s=result["cpu_s"],
        initial_check_s=result["initial_check_s"],
    )


@contextlib.contextmanager
def running_daemon(work: Path, args: Any, notes: list[str]) -> Iterator[Daemon]:
    """A started daemon, stopped (and its tree checked gone) on the way out."""
    daemon = Daemon(work, args.env, next_loopback_address())
    try:
        daemon.start()
        yield daemon
    finally:
        notes.extend(daemon.stop())


def describe(r: VerifyRun, size: int) -> str:
    """One line for a run."""
    rate = size / r.wall_s / 1e9 if r.wall_s else 0.0
    text = f"  run {r.run} {r.tool:10s} {r.wall_s:6.2f} s {rate:5.2f} GB/s"
    if r.cpu_s is not None:
        text += f"  cpu {r.cpu_s:5.2f} s"
    if r.acknowledged_s is not None:
        text += f"  acked {r.acknowledged_s:.2f} s"
    if r.busy_s is not None:
        text += f"  storage busy {r.busy_s:.2f} s from {r.busy_from_s:.2f} s"
    if r.poll_interval_s is not None:
        text += f"  {r.polls} polls every {r.poll_interval_s:.2f} s"
    if r.initial_check_s is not None:
        text += f"  initial check {r.initial_check_s:.2f} s"
    if len(r.cpu_by_role) > 1:
        text += roles_text(r.cpu_by_role)
    text += f"  load {r.loadavg:.1f}"
    return text + outcome_text(r)


def summarise(size: int, runs: list[VerifyRun]) -> dict[str, Any]:
    """Medians over the successful runs of each client."""
    tv, lt = by_tool(runs)
    return {
        **MEASURE.summarise(size, runs),
        "torviz_cpu_s": median_of(tv, "cpu_s"),
        "libtorrent_cpu_s": median_of(lt, "cpu_s"),
        "torviz_cpu_by_role": median_by_role(tv, "cpu_by_role"),
        "torviz_acknowledged_s": median_of(tv, "acknowledged_s", nonzero=True),
        "torviz_storage_busy_s": median_of(tv, "busy_s", nonzero=True),
        "torviz_storage_busy_from_s": median_of(tv, "busy_from_s", nonzero=True),
        "torviz_poll_interval_s": median_of(tv, "poll_interval_s", nonzero=True),
        "libtorrent_initial_check_s": median_of(lt, "initial_check_s", nonzero=True),
    }


COLUMNS = (
    "content",
    "torviz verify",
    "libtorrent force_recheck",
    "torviz / libtorrent",
    "torviz GB/s",
    "libtorrent GB/s",
    "torviz storage agent busy (GB/s)",
    "torviz CPU (daemon tree)",
    "libtorrent CPU",
    "torviz poll interval",
    "runs (torviz, lt, failed)",
)


def summary_table(s: dict[str, Any]) -> str:
    """The medians as a markdown table."""
    busy = s["torviz_storage_busy_s"]
    busy_rate = s["bytes"] / busy / 1e9 if busy else None
    row = [
        f"{s['bytes'] / MIB:.0f} MiB, 1 MiB pieces, page cache",
        *MEASURE.cells(s),
        f"{fmt(busy, '.2f', ' s')} ({fmt(busy_rate, '.2f')})",
        fmt(s["torviz_cpu_s"], ".2f", " s"),
        fmt(s["libtorrent_cpu_s"], ".2f", " s"),
        fmt(s["torviz_poll_interval_s"], ".2f", " s"),
        runs_cell(s),
    ]
    return markdown_table(COLUMNS, [row])


def bench(
    spec: ContentSpec, torrent: TorrentFile, work: Path, args: Any, report: dict[str, Any]
) -> list[VerifyRun]:
    """The daemon's first check, then the alternating timed runs."""
    runs: list[VerifyRun] = []
    notes: list[str] = report["notes"]
    with running_daemon(work, args, notes) as daemon:
        started = time.monotonic()
        daemon.cli("add", str(torrent.path), "--dir", str(spec.root))
        torrent_id = torrent.info_hash.hex
        first, _ = wait_checked(daemon, torrent_id, started, args.poll, args.timeout)
        report["torviz_add_to_seeding_s"] = first
        print(f"  torviz: add to seeding (first check) {first:.2f} s", flush=True)
        for run in range(args.runs):
            for tool in alternating(run):
                time.sleep(args.settle)
                if tool == "torviz":
                    result = run_torviz(daemon, torrent_id, run, args)
                else:
                    result = run_libtorrent(torrent, spec, run, args)
                runs.append(result)
                report["runs"].append(asdict(result))
                print(describe(result, spec.total_size), flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0, or 1 if a run failed or a process had to be killed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="content size (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per client (default 3)")
    parser.add_argument("--poll", type=float, default=0.1, help="pause between status polls")
    parser.add_argument("--settle", type=float, default=1.0, help="idle seconds before each run")
    parser.add_argument("--lt-hashing-threads", type=int, help="default: libtorrent's own (1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per check")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/torviz-bench"))
    parser.add_argument("--live", action="store_true", help="run the working tree itself")
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results/...)")
    args = parser.parse_args(argv)
    report, output = start_report(args, "verify")
    report["notes"] = []
    spec = cached_content(args.cache, "single", args.size_mib * MIB)
    read_through(spec)
    with tempfile.TemporaryDirectory(prefix="verify-", dir=args.cache) as tmp:
        work = Path(tmp)
        torrent = make_torrent(spec, MIB, [], work / "verify-1m.torrent")
        try:
            runs = bench(spec, torrent, work, args, report)
        finally:
            output.write_text(json.dumps(report, indent=1))
    summary = summarise(spec.total_size, runs)
    table = summary_table(summary)
    print_table(table, [f"note: {note}" for note in report["notes"]])
    report.update(summary=summary, table=table)
    write_report(report, output)
    return 1 if summary["failed_runs"] or report["notes"] else 0


if __name__ == "__main__":
    sys.exit(main())
