"""torviz seeding to a libtorrent leecher, against a libtorrent seeder serving the same leecher.

Usage (from the repository root)::

    /work/venv/bin/python bench/seeding_vs_libtorrent.py [--size-mib 1024] [--runs 3]
        [--settle 3] [--timeout 180] [--cache /tmp/torviz-bench] [--live] [--profile]
        [--output FILE]

The swarm: the download benchmark's content (one file, deterministic random bytes, cached under
``--cache``) and a torrent of it with 1 MiB pieces announcing to opentracker on 127.0.0.1. Each
round times, in alternating order, one transfer from

- torviz: a fresh ``torviz-coordinator download TORRENT -o DATA --seed-time 300 --config CFG``
  whose ``DATA`` already holds the complete content (in the page cache) and whose config puts its
  peer agent and its announces on its own 127.0.0.x. It checks the data, prints its "downloaded
  ... every piece verified" line and seeds; only then is the leecher started;
- libtorrent: a fresh seeder in seed mode (``testing/lt_peer.py``) on its own 127.0.0.x,
  started and ready (announced) before the leecher.

The leecher is the same in both: a fresh libtorrent process (`bench.leechers.run_libtorrent`) on
its own address, timed from its spawn until it reports every piece verified and flushed. The
seeder's CPU seconds during that time are read from /proc (for torviz, per process of its tree).
One seeder at a time: each is stopped (torviz with SIGINT, then its tree is checked gone) before
the next round starts, so the tracker never hands out two live seeders. The leecher's output is
deleted after each run and the machine left idle for ``--settle`` seconds (see `clear`).

What is measured: a byte-compiled copy of the working tree's ``shared`` and ``services`` taken at
the start (other work edits the tree meanwhile), as in the download benchmark; ``--live`` runs the
tree itself.

With ``--profile`` (as root), one more torviz run follows the rounds, untimed, with py-spy attached
to the seeder's peer and storage agents from the moment it seeds until they exit.

Prints a markdown table and writes every figure to ``bench/results/seeding-<time>.json`` (the
profile's stacks go to the directory of the same name).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
from bench.leechers import COORDINATOR, RunResult, run_libtorrent
from bench.proctree import cpu_seconds, descendants, read_stat, role_of
from bench.profiling import Spies, finish_pyspy, start_pyspy
from bench.sources import REPO, fmt, start_report
from bench.workload import MIB, cached_content, clear, read_through
from testing.content import ContentSpec, TorrentFile, make_torrent
from testing.swarm import LtPeer, Swarm

VARIANT = "seed-1m"
SEED_TIME = 300  # seconds the torviz seeder would seed: far longer than any run
READY_TIMEOUT = 120.0  # spawn to "every piece verified" (the check of the complete data)
STOP_TIMEOUT = 20.0
PROFILE_RATE = 100
SPY_ROLES = ("peer_agent", "storage_agent")
MEASURE = Measure()


@dataclass(slots=True)
class SeedRun:
    """One timed transfer from one seeder to a fresh libtorrent leecher."""

    tool: str  # the seeder: "torviz" or "libtorrent"
    run: int
    ok: bool
    wall_s: float
    """Leecher spawn to its "finished" event."""
    seeder_cpu_s: float | None = None
    """CPU seconds of the seeder (torviz: its whole process tree) during the transfer."""
    seeder_cpu_by_role: dict[str, float] = field(default_factory=dict)
    seeder_user_by_role: dict[str, float] = field(default_factory=dict)
    seeder_sys_by_role: dict[str, float] = field(default_factory=dict)
    leecher_cpu_s: float | None = None
    seeder_ready_s: float | None = None
    """Seeder spawn until it was seeding (torviz: checking included)."""
    seeder_ready_cpu_s: float | None = None
    """CPU seconds the seeder spent getting ready (torviz: start-up and checking)."""
    error: str = ""
    loadavg: float = field(default_factory=lambda: os.getloadavg()[0])


def tree_cpu(root: int) -> dict[str, dict[str, float]]:
    """CPU, user and system seconds so far of `root` and each live descendant, by role."""
    by_role: dict[str, dict[str, float]] = {}
    for pid in [root, *descendants(root)]:
        stat = read_stat(pid)
        if stat is not None:
            sums = by_role.setdefault(role_of(pid), {"cpu_s": 0.0, "user_s": 0.0, "sys_s": 0.0})
            sums["cpu_s"] += stat.cpu_s
            sums["user_s"] += stat.user_s
            sums["sys_s"] += stat.sys_s
    return by_role


def _delta(
    after: dict[str, dict[str, float]], before: dict[str, dict[str, float]], key: str
) -> dict[str, float]:
    return {
        role: round(after[role][key] - before.get(role, {}).get(key, 0.0), 3)
        for role in sorted(after)
    }


def write_config(work: Path, host: str) -> Path:
    """A torviz config listening and announcing on `host`, DHT off."""
    config = work / f"torviz-{host}.toml"
    config.write_text(
        f'[peer_agent]\nlisten_host = "{host}"\n\n'
        f'[tracker_agent]\ndht = false\nbind_address = "{host}"\n'
    )
    return config


def _stop_tree(process: subprocess.Popen[bytes], tree: list[int]) -> str:
    """SIGINT the coordinator, wait, then SIGKILL whatever of its tree is left; says what."""
    note = ""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            note = "coordinator killed after SIGINT timed out"
            process.kill()
            process.wait()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(cpu_seconds(pid) is not None for pid in tree):
        time.sleep(0.05)
    for pid in tree:
        if cpu_seconds(pid) is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            note = note or f"agents left after the coordinator exited: killed {pid}"
    return note


def run_torviz_seeder(
    run: int,
    swarm: Swarm,
    torrent: TorrentFile,
    spec: ContentSpec,
    work: Path,
    args: Any,
    on_ready: Callable[[list[int]], None] | None = None,
) -> SeedRun:
    """Start a torviz seeder on the complete data, wait until it seeds, time one leecher.

    `on_ready` is called with the seeder's agent pids once it seeds, before the leecher starts
    (e.g. to attach a profiler).
    """
    host = swarm.next_address()
    config = write_config(work, host)
    argv = [str(COORDINATOR), "download", str(torrent.path), "-o", str(spec.root)]
    argv += ["--seed-time", str(SEED_TIME), "--config", str(config)]
    stdout_path = work / f"seeder-{run}.out"
    log_path = work / f"seeder-{run}.log"
    with stdout_path.open("wb") as out_file, log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out_file,
            stderr=log,
            env={**os.environ, **args.env},
            # The agents run as `python -m torviz.services.<agent>`: run from the measured source.
            cwd=args.env.get("PYTHONPATH", REPO),
        )
        tree: list[int] = []
        result = SeedRun("torviz", run, False, 0.0)
        try:
            deadline = started + READY_TIMEOUT
            while b"every piece verified" not in stdout_path.read_bytes():
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                    result.error = f"never seeding (exit {process.poll()}): " + " | ".join(tail)
                    return result
                time.sleep(0.05)
            result.seeder_ready_s = time.monotonic() - started
            tree = descendants(process.pid)
            if on_ready is not None:
                on_ready(tree)
            before = tree_cpu(process.pid)
            result.seeder_ready_cpu_s = sum(v["cpu_s"] for v in before.values())
            leech = run_libtorrent(VARIANT, run, swarm, torrent, work / "out", timeout=args.timeout)
            after = tree_cpu(process.pid)
            result.ok, result.wall_s, result.error = leech.ok, leech.wall_s, leech.error
            result.leecher_cpu_s = leech.cpu_s
            result.seeder_cpu_by_role = _delta(after, before, "cpu_s")
            result.seeder_user_by_role = _delta(after, before, "user_s")
            result.seeder_sys_by_role = _delta(after, before, "sys_s")
            result.seeder_cpu_s = sum(result.seeder_cpu_by_role.values())
            if process.poll() is not None:
                result.ok, result.error = False, f"seeder exited {process.returncode} mid-run"
        finally:
            note = _stop_tree(process, tree or descendants(process.pid))
            if note and not result.error:
                result.error = note
    return result


def run_lt_seeder(
    run: int, swarm: Swarm, torrent: TorrentFile, spec: ContentSpec, work: Path, args: Any
) -> SeedRun:
    """Start a libtorrent seeder (seed mode) and wait until ready, time one leecher, stop it."""
    started = time.monotonic()
    seeder: LtPeer = swarm.seeder(torrent.path, spec.root, seed_mode=True, timeout=60.0)
    result = SeedRun("libtorrent", run, False, 0.0, seeder_ready_s=time.monotonic() - started)
    try:
        before = cpu_seconds(seeder.pid) or 0.0
        result.seeder_ready_cpu_s = before
        leech: RunResult = run_libtorrent(
            VARIANT, run, swarm, torrent, work / "out", timeout=args.timeout
        )
        after = cpu_seconds(seeder.pid)
        result.ok, result.wall_s, result.error = leech.ok, leech.wall_s, leech.error
        result.leecher_cpu_s = leech.cpu_s
        result.seeder_cpu_s = None if after is None else after - before
        result.seeder_cpu_by_role = {"lt_seeder": round(result.seeder_cpu_s or 0.0, 3)}
    finally:
        seeder.stop()
    return result


def profile_seeder(
    swarm: Swarm, torrent: TorrentFile, spec: ContentSpec, work: Path, args: Any, keep: Path
) -> dict[str, Any]:
    """One more (untimed) torviz seeding run with py-spy on its peer and storage agents,
    attached once it seeds and recording until they exit (shortly after the leecher is done)."""
    keep.mkdir(parents=True, exist_ok=True)
    spies: Spies = {}

    def attach(tree: list[int]) -> None:
        for pid in tree:
            role = role_of(pid)
            if role in SPY_ROLES:
                raw = keep / f"pyspy-seed-{role}.txt"
                spies[role] = (start_pyspy(pid, raw, rate=PROFILE_RATE), raw, time.monotonic())

    result = run_torviz_seeder(-1, swarm, torrent, spec, work, args, on_ready=attach)
    clear(work / "out", args.settle)
    print(describe(result, torrent.total_size) + "  (profiled)", flush=True)
    report: dict[str, Any] = {"run": asdict(result)}
    report.update(finish_pyspy(spies, rate=PROFILE_RATE))
    return report


def describe(r: SeedRun, size: int) -> str:
    """One line for a run."""
    text = f"  run {r.run} seeder {r.tool:10s} {r.wall_s:6.2f} s {size / r.wall_s / 1e6:5.0f} MB/s"
    if r.seeder_cpu_s is not None:
        text += f"  seeder cpu {r.seeder_cpu_s:5.2f} s"
    if r.leecher_cpu_s is not None:
        text += f"  leecher cpu {r.leecher_cpu_s:5.2f} s"
    if r.seeder_ready_s is not None:
        text += f"  ready after {r.seeder_ready_s:.2f} s"
    if len(r.seeder_cpu_by_role) > 1:
        text += roles_text(r.seeder_cpu_by_role)
    text += f"  load {r.loadavg:.1f}"
    return text + outcome_text(r, ok_error="note")


def summarise(size: int, runs: list[SeedRun]) -> dict[str, Any]:
    """Medians over the successful runs of each seeder."""
    tv, lt = by_tool(runs)
    return {
        **MEASURE.summarise(size, runs),
        "torviz_seeder_cpu_s": median_of(tv, "seeder_cpu_s"),
        "libtorrent_seeder_cpu_s": median_of(lt, "seeder_cpu_s"),
        "torviz_seeder_cpu_by_role": median_by_role(tv, "seeder_cpu_by_role"),
        "torviz_seeder_user_by_role": median_by_role(tv, "seeder_user_by_role"),
        "torviz_seeder_sys_by_role": median_by_role(tv, "seeder_sys_by_role"),
        "leecher_cpu_s_from_torviz": median_of(tv, "leecher_cpu_s", nonzero=True),
        "leecher_cpu_s_from_libtorrent": median_of(lt, "leecher_cpu_s", nonzero=True),
        "torviz_ready_s": median_of(tv, "seeder_ready_s", nonzero=True),
        "torviz_ready_cpu_s": median_of(tv, "seeder_ready_cpu_s", nonzero=True),
    }


COLUMNS = (
    "content",
    "torviz seeder",
    "libtorrent seeder",
    "torviz / libtorrent",
    "torviz MB/s",
    "libtorrent MB/s",
    "torviz seeder CPU (tree)",
    "libtorrent seeder CPU",
    "leecher CPU (torviz, lt)",
    "runs (torviz, lt, failed)",
)


def summary_table(s: dict[str, Any]) -> str:
    """The medians as a markdown table."""
    row = [
        f"{s['bytes'] / MIB:.0f} MiB, 1 MiB pieces",
        *MEASURE.cells(s),
        fmt(s["torviz_seeder_cpu_s"], ".2f", " s"),
        fmt(s["libtorrent_seeder_cpu_s"], ".2f", " s"),
        f"{fmt(s['leecher_cpu_s_from_torviz'], '.2f', ' s')}, "
        f"{fmt(s['leecher_cpu_s_from_libtorrent'], '.2f', ' s')}",
        runs_cell(s),
    ]
    return markdown_table(COLUMNS, [row])


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0, or 1 if a run failed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="content size (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per seeder (default 3)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/torviz-bench"))
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per transfer")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds between runs")
    parser.add_argument("--live", action="store_true", help="run the working tree itself")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds, one more torviz run with py-spy on its peer and storage agents",
    )
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results/...)")
    args = parser.parse_args(argv)
    report, output = start_report(args, "seeding")
    spec = cached_content(args.cache, "single", args.size_mib * MIB)
    read_through(spec)
    runs: list[SeedRun] = []
    with tempfile.TemporaryDirectory(prefix="seed-", dir=args.cache) as tmp:
        work = Path(tmp)
        with Swarm(work / "swarm") as swarm:
            tracker = swarm.tracker()
            torrent = make_torrent(spec, MIB, [tracker.http_announce_url], work / "seed-1m.torrent")
            tracker.add_info_hash(torrent.info_hash)
            time.sleep(args.settle)
            for run in range(args.runs):
                for tool in alternating(run):
                    runner = run_torviz_seeder if tool == "torviz" else run_lt_seeder
                    result = runner(run, swarm, torrent, spec, work, args)
                    clear(work / "out", args.settle)
                    runs.append(result)
                    report["runs"].append(asdict(result))
                    print(describe(result, torrent.total_size), flush=True)
                    output.write_text(json.dumps(report, indent=1))
            if args.profile:
                keep = output.with_suffix("")
                report["profile"] = profile_seeder(swarm, torrent, spec, work, args, keep)
    summary = summarise(spec.total_size, runs)
    table = summary_table(summary)
    print_table(table)
    report.update(summary=summary, table=table)
    write_report(report, output)
    return 1 if summary["failed_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
