"""A torrent downloaded from a web seed alone (BEP 19, nginx on loopback): torviz against aria2c.

Usage (from the repository root)::

    .venv/bin/python bench/web_seed.py [--size-mib 1024] [--layout single|files20]
        [--piece-kib 1024] [--runs 3] [--connections 4] [--tools torviz,aria2c]
        [--settle 3] [--timeout 300] [--cache /tmp/torviz-bench] [--disk] [--live]
        [--output FILE]

The source: the download benchmark's content (deterministic random bytes, cached on disk under
``--cache``) copied onto a tmpfs mounted for the run (``--disk``, or too little free memory:
served from the disk cache and downloaded to disk instead; the report says which), served by
nginx (Debian's ``/usr/sbin/nginx``: one process, ``sendfile on``, keep-alive, byte ranges,
its own config, nothing from /etc/nginx read) on a free port of 127.0.0.1, and a v1 .torrent
of it made by libtorrent whose only source is that server: a ``url-list`` of
``http://127.0.0.1:PORT/`` (the client appends the torrent's name, and the file's path for a
multi-file torrent), no tracker, no peers. Each round times, in alternating order:

- **torviz**: ``torviz-coordinator download TORRENT -o DIR --config CFG``
  (`bench.leechers.run_torviz`: peer agent on 127.0.0.1, DHT off, ``[peer_agent]
  web_seed_connections`` = ``--connections``). Wall time from spawn to exit 0, CPU from
  ``getrusage(RUSAGE_CHILDREN)`` around it (the coordinator waits for its agents), user and
  system from /proc samples of the tree, peak RSS summed over the tree;
- **aria2c**: ``aria2c TORRENT`` with DHT, local peer discovery and PeX off, ``--seed-time=0``
  (exit once complete), ``--file-allocation=none`` (files written as they come, as torviz
  does), ``--max-connection-per-server`` and ``--split`` = ``--connections``, no config file.
  It reads the url-list from the .torrent and checks every piece's SHA-1 as torviz does. Wall
  time from spawn to exit 0, CPU (user, system) from ``getrusage`` around it, peak RSS.

For both, the output's allocated blocks are sampled every 50 ms (files are sparse until
written): when the first and the last byte reached the disk. nginx's CPU during the run and
what it served (requests, connections, body bytes: from its access log) are recorded per run.
Every download is compared byte for byte with the content (after the clock stopped), then
deleted, and the machine left idle for ``--settle`` seconds (`bench.workload.clear`).

After the rounds, one more torviz download, untimed, at ``--log-level INFO`` (``--no-timeline``
skips it): when each service started, the web seed connected and the download completed;
with ``--profile``, py-spy records its coordinator, peer and storage agents meanwhile.

What is measured: a byte-compiled copy of the working tree's ``shared`` and ``services`` taken
at the start, as for the other benchmarks (``--live`` runs the tree itself).

Prints a markdown table of the medians and writes every run to
``bench/results/web-seed-<time>.json``. Every process started here (nginx, the clients) is
stopped, and the tmpfs unmounted, before it exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.comparison import markdown_table, print_table, roles_text, write_report
from bench.leechers import RunResult, run_torviz
from bench.proctree import TreeSampler, cpu_seconds
from bench.profiling import Spies, finish_pyspy, start_pyspy, timeline
from bench.sources import fmt, median, start_report
from bench.web_server import HOST, NGINX, WebServer, make_web_seed_torrent, storage
from bench.workload import MIB, bytes_on_disk, cached_content, clear
from testing.content import ContentSpec, TorrentFile, compare_content
from testing.swarm import free_port

ARIA2C = Path("/usr/bin/aria2c")
TOOLS = ("torviz", "aria2c")
STOP_TIMEOUT = 5.0
PROFILE_RATE = 100
# The processes py-spy records with --profile (the coordinator spawns the agents late).
SPY_ROLES = ("peer_agent", "storage_agent", "coordinator")


@dataclass(slots=True)
class WebSeedRun:
    """One timed download from the web seed."""

    tool: str  # "torviz" or "aria2c"
    run: int
    ok: bool
    wall_s: float
    """Spawn to exit 0."""
    cpu_s: float | None = None
    """User + system CPU seconds of the client (torviz: its whole process tree)."""
    user_s: float | None = None
    sys_s: float | None = None
    peak_rss: int | None = None
    """Peak RSS summed over the client's processes, bytes."""
    first_bytes_s: float | None = None
    """Spawn to the first downloaded byte on disk (50 ms resolution)."""
    all_bytes_s: float | None = None
    """Spawn to every byte on disk (50 ms resolution)."""
    cpu_by_role: dict[str, float] = field(default_factory=dict)

    @property
    def transfer_s(self) -> float | None:
        """First to last byte on disk: the transfer alone, start-up and exit left out."""
        if self.first_bytes_s is None or self.all_bytes_s is None:
            return None
        return self.all_bytes_s - self.first_bytes_s

    server_cpu_s: float | None = None
    """CPU seconds nginx spent during the run (serving it)."""
    requests: int = 0
    """Requests nginx answered during the run."""
    connections: int = 0
    """Distinct TCP connections those requests came on."""
    served_bytes: int = 0
    """Body bytes nginx sent during the run (the content size when nothing was fetched twice)."""
    statuses: dict[str, int] = field(default_factory=dict)
    error: str = ""
    loadavg: float = field(default_factory=lambda: os.getloadavg()[0])


def write_config(work: Path, connections: int) -> Path:
    """The torviz config: peer agent on 127.0.0.1, DHT off, `connections` per web seed."""
    config = work / "torviz.toml"
    config.write_text(
        f'[peer_agent]\nlisten_host = "{HOST}"\nweb_seed_connections = {connections}\n\n'
        "[tracker_agent]\ndht = false\n"
    )
    return config


def aria2c_argv(torrent: Path, out: Path, connections: int, port: int) -> list[str]:
    """aria2c downloading `torrent` into `out` from its url-list alone, exiting once done."""
    return [
        str(ARIA2C),
        "--no-conf=true",
        f"--dir={out}",
        "--seed-time=0",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        f"--listen-port={port}",
        "--file-allocation=none",
        f"--max-connection-per-server={connections}",
        f"--split={connections}",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--show-console-readout=false",
        str(torrent),
    ]


def run_aria2c(
    run: int, torrent: TorrentFile, out: Path, connections: int, log_path: Path, timeout: float
) -> WebSeedRun:
    """Time one aria2c download; see the module comment for what is measured."""
    out.mkdir(parents=True, exist_ok=True)
    argv = aria2c_argv(torrent.path, out, connections, free_port(HOST, udp=False))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log_path.open("wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        sampler = TreeSampler(
            process.pid, started=started, progress=bytes_on_disk(out), target=torrent.total_size
        ).start()
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            wall = time.monotonic() - started
            if process.poll() is None:
                process.kill()
                process.wait()
            sampler.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    result = WebSeedRun(
        tool="aria2c",
        run=run,
        ok=code == 0,
        wall_s=wall,
        cpu_s=user + system,
        user_s=user,
        sys_s=system,
        peak_rss=sampler.peak_rss_sum,
        first_bytes_s=sampler.first_bytes_at,
        all_bytes_s=sampler.all_bytes_at,
    )
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        result.error = f"{'timed out' if code is None else f'exit {code}'}: " + " | ".join(tail)
    return result


def from_torviz(result: RunResult) -> WebSeedRun:
    """The web seed run record of one `run_torviz` result (user and system from samples)."""
    user = sum(row["user_s"] for row in result.detail_by_role.values())
    system = sum(row["sys_s"] for row in result.detail_by_role.values())
    return WebSeedRun(
        tool="torviz",
        run=result.run,
        ok=result.ok,
        wall_s=result.wall_s,
        cpu_s=result.cpu_s,
        user_s=user if result.detail_by_role else None,
        sys_s=system if result.detail_by_role else None,
        peak_rss=result.peak_rss,
        first_bytes_s=result.first_bytes_s,
        all_bytes_s=result.all_bytes_s,
        cpu_by_role=result.cpu_by_role,
        error=result.error,
    )


def reap(trees: Sequence[TreeSampler]) -> list[int]:
    """After a failed torviz run (its coordinator killed): give the agents seen in its tree
    `STOP_TIMEOUT` s to exit on their own, then SIGKILL them; returns the pids killed."""
    deadline = time.monotonic() + STOP_TIMEOUT
    left = [pid for tree in trees for pid in tree.survivors()]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [pid for tree in trees for pid in tree.survivors()]
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return left


def timed_run(
    tool: str,
    run: int,
    server: WebServer,
    torrent: TorrentFile,
    spec: ContentSpec,
    work: Path,
    args: Any,
) -> WebSeedRun:
    """One timed download by `tool`, with what nginx spent and served meanwhile."""
    out = work / "out"
    offset = server.log_size()
    server_before = cpu_seconds(server.pid) or 0.0
    if tool == "torviz":
        trees: list[TreeSampler] = []
        done = run_torviz(
            "web-seed",
            run,
            torrent,
            spec,
            out,
            args.config,
            timeout=args.timeout,
            verify=False,
            env=args.env,
            log_path=work / f"torviz-{run}.log",
            on_tree=trees.append,
        )
        result = from_torviz(done)
        if not done.ok:
            if done.wall_s >= args.timeout:
                result.error = f"timed out after {args.timeout:.0f} s; {result.error}"
            left = reap(trees)
            if left:
                result.error += f"; agents killed after the coordinator: {left}"
    else:
        log = work / f"aria2c-{run}.log"
        result = run_aria2c(run, torrent, out, args.connections, log, args.timeout)
    server_after = cpu_seconds(server.pid)
    result.server_cpu_s = None if server_after is None else server_after - server_before
    time.sleep(0.1)  # nginx logs a request once its response is sent
    result.requests, result.connections, result.served_bytes, result.statuses = server.served_since(
        offset
    )
    if result.ok:
        problems = compare_content(spec.root, out, spec)
        if problems:
            result.ok, result.error = False, "content differs: " + "; ".join(problems[:3])
    return result


# Log messages of the timeline run worth a line of their own (the rest stay in the JSON).
_TIMELINE_KEYS = re.compile(r"listening|started \d+ actors|attached|web seed|complete|stopping \(")


def timeline_run(
    torrent: TorrentFile, spec: ContentSpec, work: Path, keep: Path, args: Any
) -> dict[str, Any]:
    """One more torviz download, untimed, at ``--log-level INFO``: when each service started,
    the web seed connected, the download completed (seconds after spawn). With
    ``args.profile``, py-spy records the peer and storage agents and the coordinator from the
    moment they exist. The log and the stacks are kept in `keep`."""
    keep.mkdir(parents=True, exist_ok=True)
    log_path = keep / "timeline.log"
    spies: Spies = {}

    def attach(tree: TreeSampler) -> None:
        for role in SPY_ROLES:
            for pid in tree.pids_by_role().get(role, [])[:1]:
                raw = keep / f"pyspy-{role}.txt"
                spies[role] = (start_pyspy(pid, raw, rate=PROFILE_RATE), raw, time.monotonic())

    spawned_wall = time.time()
    result = run_torviz(
        "web-seed",
        -1,
        torrent,
        spec,
        work / "out",
        args.config,
        timeout=args.timeout,
        verify=False,
        extra=("--log-level", "INFO"),
        env=args.env,
        log_path=log_path,
        on_tree=attach if args.profile else None,
    )
    clear(work / "out", args.settle)
    events = timeline(log_path, spawned_wall, limit=result.wall_s + 1)
    print(f"timeline run ({result.wall_s:.2f} s, {'ok' if result.ok else result.error}):")
    for at, service, message in events:
        if _TIMELINE_KEYS.search(message):
            print(f"  {at:6.2f} s  {service:14s} {message}")
    report: dict[str, Any] = {"run": asdict(from_torviz(result)), "events": events}
    report.update(finish_pyspy(spies, rate=PROFILE_RATE))
    return report


def describe(r: WebSeedRun, size: int) -> str:
    """One line for a run."""
    text = f"  run {r.run} {r.tool:7s} {r.wall_s:6.2f} s {size / r.wall_s / 1e6:5.0f} MB/s"
    text += f"  bytes {fmt(r.first_bytes_s, '.2f')}-{fmt(r.all_bytes_s, '.2f', ' s')}"
    text += f"  cpu {fmt(r.cpu_s, '.2f', ' s')}"
    text += f" (user {fmt(r.user_s, '.2f')}, sys {fmt(r.sys_s, '.2f')})"
    text += f"  rss {fmt(r.peak_rss and r.peak_rss / MIB, '.0f', ' MiB')}"
    text += f"  nginx {fmt(r.server_cpu_s, '.2f', ' s')}, {r.requests} req"
    text += f" on {r.connections} conn, {r.served_bytes / MIB:.0f} MiB"
    if len(r.cpu_by_role) > 1:
        text += roles_text(r.cpu_by_role)
    text += f"  load {r.loadavg:.1f}"
    return text + (f"  FAILED: {r.error}" if not r.ok else f"  note: {r.error}" if r.error else "")


def _median(runs: Sequence[WebSeedRun], attr: str) -> float | None:
    return median([v for r in runs if (v := getattr(r, attr)) is not None])


def summarise(size: int, runs: Sequence[WebSeedRun]) -> dict[str, Any]:
    """Per tool, the medians over its successful runs; the torviz / aria2c ratios."""
    summary: dict[str, Any] = {"bytes": size, "failed_runs": len([r for r in runs if not r.ok])}
    for tool in TOOLS:
        ok = [r for r in runs if r.tool == tool and r.ok]
        wall = _median(ok, "wall_s")
        transfer = _median(ok, "transfer_s")
        keys = ("first_bytes_s", "all_bytes_s", "transfer_s", "cpu_s", "user_s", "sys_s")
        summary[tool] = {
            "runs": len(ok),
            "wall_s": wall,
            "mb_s": size / wall / 1e6 if wall else None,
            **{key: _median(ok, key) for key in keys},
            "transfer_mb_s": size / transfer / 1e6 if transfer else None,
            "peak_rss_mib": (_median(ok, "peak_rss") or 0) / MIB or None,
            "server_cpu_s": _median(ok, "server_cpu_s"),
            "requests": _median(ok, "requests"),
            "connections": _median(ok, "connections"),
            "served_mib": (_median(ok, "served_bytes") or 0) / MIB or None,
            "cpu_by_role": {
                role: median([r.cpu_by_role.get(role, 0.0) for r in ok])
                for role in sorted({role for r in ok for role in r.cpu_by_role})
            },
        }
    tv, a2 = summary["torviz"], summary["aria2c"]
    for key in ("wall_s", "transfer_s", "cpu_s"):
        summary[f"ratio_{key}"] = tv[key] / a2[key] if tv[key] and a2[key] else None
    summary["median_loadavg"] = median([r.loadavg for r in runs])
    return summary


COLUMNS = (
    "client",
    "wall (spawn to exit)",
    "MB/s",
    "first, last byte on disk",
    "first to last byte (MB/s)",
    "CPU (user + sys)",
    "user",
    "sys",
    "peak RSS (sum)",
    "nginx CPU",
    "requests (connections)",
    "runs ok",
)


def summary_table(summary: dict[str, Any]) -> str:
    """The medians as a markdown table, one row per client."""
    rows = []
    for tool in TOOLS:
        s = summary[tool]
        requests = "n/a"
        if s["requests"] is not None:
            requests = f"{s['requests']:.0f} ({s['connections']:.0f})"
        rows.append(
            [
                tool,
                fmt(s["wall_s"], ".2f", " s"),
                fmt(s["mb_s"], ".0f"),
                f"{fmt(s['first_bytes_s'], '.2f', ' s')}, {fmt(s['all_bytes_s'], '.2f', ' s')}",
                f"{fmt(s['transfer_s'], '.2f', ' s')} ({fmt(s['transfer_mb_s'], '.0f')})",
                fmt(s["cpu_s"], ".2f", " s"),
                fmt(s["user_s"], ".2f", " s"),
                fmt(s["sys_s"], ".2f", " s"),
                fmt(s["peak_rss_mib"], ".0f", " MiB"),
                fmt(s["server_cpu_s"], ".2f", " s"),
                requests,
                str(s["runs"]),
            ]
        )
    return markdown_table(COLUMNS, rows)


def versions() -> dict[str, str]:
    """nginx's and aria2c's versions, as they print them."""
    found = {}
    for name, argv in (("nginx", [str(NGINX), "-v"]), ("aria2c", [str(ARIA2C), "--version"])):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            found[name] = (done.stdout + done.stderr).strip().splitlines()[0]
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="content size (default 1024)")
    parser.add_argument("--layout", choices=("single", "files20"), default="single")
    parser.add_argument("--piece-kib", type=int, default=1024, help="piece size (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per client (default 3)")
    parser.add_argument(
        "--connections",
        type=int,
        default=4,
        help="HTTP connections to the web seed, both clients (default 4, torviz's default)",
    )
    parser.add_argument("--tools", default=",".join(TOOLS), help="torviz,aria2c or one of them")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds between runs")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per download")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/torviz-bench"))
    parser.add_argument("--disk", action="store_true", help="serve and download on the disk")
    parser.add_argument("--live", action="store_true", help="run the working tree itself")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on torviz's agents during the timeline run (as root)",
    )
    parser.add_argument(
        "--no-timeline",
        dest="timeline",
        action="store_false",
        help="skip the untimed torviz run at --log-level INFO after the rounds",
    )
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results/...)")
    args = parser.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    if not set(args.tools) <= set(TOOLS) or not args.tools:
        parser.error(f"--tools takes {', '.join(TOOLS)}")
    for binary in (NGINX, ARIA2C):
        if not os.access(binary, os.X_OK):
            parser.error(f"{binary} is not installed")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0, or 1 if a run failed."""
    args = parse_args(argv)
    report, output = start_report(args, "web-seed")
    report["machine"]["versions"] = versions()
    cached = cached_content(args.cache, args.layout, args.size_mib * MIB)
    runs: list[WebSeedRun] = []
    args.cache.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="web-seed-", dir=args.cache) as tmp,
        storage(Path(tmp), cached.total_size, args.disk) as (place, where),
    ):
        print(f"content and downloads on {where}", flush=True)
        report["storage"] = where
        spec = cached
        if place != Path(tmp):  # a tmpfs: serve a copy of the content from it
            shutil.copytree(cached.root, place / "content")
            spec = replace(cached, root=place / "content")
        args.config = write_config(Path(tmp), args.connections)
        with WebServer(spec.root, Path(tmp) / "nginx") as server:
            torrent = make_web_seed_torrent(
                spec, args.piece_kib * 1024, server.url, Path(tmp) / "web-seed.torrent"
            )
            print(
                f"{torrent.total_size / MIB:.0f} MiB, {torrent.num_pieces} pieces, web seed "
                f"{server.url}",
                flush=True,
            )
            report["torrent"] = {
                "url": server.url,
                "pieces": torrent.num_pieces,
                "piece_length": torrent.piece_length,
                "files": len(spec.layout.files),
            }
            clear(place / "out", args.settle)
            for run in range(args.runs):
                order = args.tools if run % 2 == 0 else list(reversed(args.tools))
                for tool in order:
                    result = timed_run(tool, run, server, torrent, spec, place, args)
                    clear(place / "out", args.settle)
                    runs.append(result)
                    report["runs"].append(asdict(result))
                    print(describe(result, torrent.total_size), flush=True)
                    output.write_text(json.dumps(report, indent=1))
            if args.timeline and "torviz" in args.tools:
                keep = output.with_suffix("")
                report["timeline"] = timeline_run(torrent, spec, place, keep, args)
    summary = summarise(cached.total_size, runs)
    table = summary_table(summary)
    print_table(
        table,
        [
            f"torviz / aria2c: wall {fmt(summary['ratio_wall_s'], '.2f', 'x')}, "
            f"first to last byte {fmt(summary['ratio_transfer_s'], '.2f', 'x')}, "
            f"CPU {fmt(summary['ratio_cpu_s'], '.2f', 'x')}; median load "
            f"{fmt(summary['median_loadavg'], '.1f')}"
        ],
    )
    report.update(summary=summary, table=table)
    write_report(report, output)
    return 1 if summary["failed_runs"] else 0


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupted)  # unmount and stop nginx on a plain kill too
    sys.exit(main())
