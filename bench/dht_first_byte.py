"""The DHT: from a magnet link with no tracker to the first byte, torviz against libtorrent on
the same loopback DHT; and torviz's tracker agent (the DHT node) with a full table under a
query load.

Usage (from the repository root)::

    .venv/bin/python bench/dht_first_byte.py [--size-mib 16] [--runs 5] [--nodes 8]
        [--lt-announce-every 0] [--flood-rate 1000] [--load-seconds 30] [--fill-buckets 24]
        [--skip-first-byte] [--skip-load] [--timeout 120] [--output FILE]

**First byte.** A DHT of ``--nodes`` libtorrent sessions (`testing/dht.py`, one process,
each session on its own 127.0.0.x, tables full before anything is timed), one libtorrent
seeder in seed mode that joined it and announces only there, checked findable from another
node first. The magnet link is ``magnet:?xt=urn:btih:HASH``: no ``tr``, no ``x.pe``, no name.
Each round, in alternating order:

- torviz: ``torviz-coordinator download MAGNET`` with a fresh config (DHT on, a fresh UDP port,
  bootstrap = 3 of the libtorrent nodes) and so an empty table, timed from spawning it;
- libtorrent: a fresh leecher process started from the magnet link, joining 3 nodes with
  `add_dht_node`, timed from spawning it; with ``--lt-announce-every S`` it also forces a DHT
  announce every S seconds (libtorrent's own schedule otherwise).

Both measure metadata, first byte on disk and done as `bench/magnet_first_byte.py` does (its
``run_torviz`` is reused).

**Load.** ``torviz-coordinator start`` (no torrent), its DHT bootstrapped from the libtorrent
nodes, plus a crowd of ``--fill-buckets`` x 8 honest nodes (`tests/support/hostile_dht.py`,
mode ``table_fill``) whose ids fill its first buckets. Once the table stops growing: the
tracker agent's CPU (from /proc, utime+stime) and resident memory idle for 10 s, then under a
flood of ``--flood-rate`` queries a second (ping, get_peers, find_node, announce_peer with a
forged token, in turn) from 256 addresses for ``--load-seconds``. The same flood against one
session of the libtorrent DHT gives its process's CPU for reference (that process hosts all
``--nodes`` sessions).

Prints markdown tables and writes everything to ``bench/results/dht-<time>.json`` with the
machine and the commit (the working tree as it is).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.magnet_first_byte import COORDINATOR, FirstByte, Timed, run_torviz
from bench.proctree import cpu_seconds, descendants, read_stat, role_of
from bench.sources import REPO, RESULTS, machine, source_state
from bench.workload import clear
from testing.content import compare_content, make_content, make_torrent, multi_file_layout
from testing.dht import LtDht, dht_seeder, torviz_dht_config
from testing.hostile_dht import HostileConfig, HostileDht
from testing.lt_dht import DHT_LOOPBACK
from testing.processes import SwarmError
from testing.swarm import LtPeerConfig, Swarm, free_port, next_loopback_address

# No public router, whatever a config says (services/tracker_agent/core/dht_rules.py).
os.environ["TORVIZ_DHT_LOCAL_ONLY"] = "1"

_IDLE_S = 10.0


def run_libtorrent(
    run: int,
    swarm: Swarm,
    magnet: str,
    out: Path,
    nodes: list[str],
    announce_every: float,
    timeout: float,
) -> Timed:
    out.mkdir(parents=True, exist_ok=True)
    started, wall_started = time.monotonic(), time.time()
    config = LtPeerConfig(
        role="leecher",
        torrent=out.with_suffix(".torrent"),
        save_path=out,
        listen_host=next_loopback_address(),
        magnet=magnet,
        dht_nodes=tuple(nodes),
        settings=DHT_LOOPBACK,
        dht_announce_every=announce_every,
    )
    peer = swarm.peer(config, wait=False)
    probe = FirstByte(out, started)
    try:
        event = peer.wait_metadata(timeout)
        status = peer.wait_finished(timeout)
        done = time.monotonic() - started
        result = Timed("libtorrent", run, status.is_finished, float(event["at"]) - wall_started)
        result.first_byte_s, result.done_s = probe.stop(), done
        return result
    except SwarmError as exc:
        probe.stop()
        return Timed("libtorrent", run, False, error=str(exc))
    finally:
        peer.stop()


def first_byte(work: Path, args: argparse.Namespace, report: dict[str, Any]) -> list[str]:
    spec = make_content(work / "seed", multi_file_layout(args.size_mib << 20), seed=1515)
    torrent = make_torrent(spec, 256 * 1024, [], work / "t.torrent")
    magnet = f"magnet:?xt=urn:btih:{torrent.info_hash.hex}"
    runs: list[Timed] = []
    with LtDht(args.nodes, log_path=work / "lt-dht.log") as dht, Swarm(work / "swarm") as swarm:
        dht.wait_ready(30)
        report["dht_converged_s"] = dht.wait_converged(timeout=60)
        seeder = dht_seeder(swarm, dht, torrent.path, spec.root)
        report["seeder_findable_s"] = dht.wait_findable(
            torrent.info_hash.hex, str(seeder.address), node=args.nodes - 1, timeout=60
        )
        bootstrap = dht.nodes[1:4]
        for n in range(1, args.runs + 1):
            order = ("torviz", "libtorrent") if n % 2 else ("libtorrent", "torviz")
            for tool in order:
                out = work / f"out-{tool}"
                if tool == "torviz":
                    port = free_port("127.0.0.1")
                    config = torviz_dht_config(work / f"torviz-{n}.toml", port, bootstrap)
                    result = run_torviz(n, magnet, out, config, args.timeout)
                else:
                    result = run_libtorrent(
                        n, swarm, magnet, out, bootstrap, args.lt_announce_every, args.timeout
                    )
                if result.ok and n <= 2:
                    problems = compare_content(spec.root, out, spec)
                    result.verified, result.ok = not problems, not problems
                    result.error = "; ".join(problems[:3])
                result.loadavg = os.getloadavg()[0]
                runs.append(result)
                print(json.dumps(asdict(result)), flush=True)
                clear(out, 1.0)
    report["first_byte_runs"] = [asdict(r) for r in runs]
    lines = [
        "| client | runs ok | metadata | first byte | done |",
        "|---|---|---|---|---|",
    ]
    for tool in ("torviz", "libtorrent"):
        mine = [r for r in runs if r.tool == tool]
        cells = []
        for attr in ("metadata_s", "first_byte_s", "done_s"):
            values = [getattr(r, attr) for r in mine if r.ok and getattr(r, attr) is not None]
            cells.append(
                f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"
                if values
                else "n/a"
            )
        ok = sum(r.ok for r in mine)
        lines.append(f"| {tool} | {ok}/{len(mine)} | " + " | ".join(cells) + " |")
    return lines


class Daemon:
    """``torviz-coordinator start`` with its own state directory; `stop` leaves nothing."""

    def __init__(self, work: Path, config: Path) -> None:
        self.flags = ["--state-dir", str(work / "state")]
        (work / "dl").mkdir(exist_ok=True)
        self.log = (work / "daemon.log").open("ab")
        argv = [str(COORDINATOR), "start", *self.flags, "--config", str(config)]
        argv += ["--download-dir", str(work / "dl")]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, cwd=REPO
        )

    def agent(self, role: str, timeout: float = 30.0) -> int:
        """The pid of its agent `role` (e.g. ``tracker_agent``), once it runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [p for p in descendants(self.process.pid) if role_of(p) == role]
            if found and self.status() is not None:
                return found[0]
            time.sleep(0.2)
        raise RuntimeError(f"no {role} under the daemon after {timeout} s")

    def status(self) -> dict[str, Any] | None:
        """``status --json``, or None while the daemon does not answer."""
        result = subprocess.run(
            [str(COORDINATOR), "status", "--json", *self.flags],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            return None
        document = json.loads(result.stdout)
        return document if isinstance(document, dict) else None

    def stop(self) -> None:
        children = descendants(self.process.pid)
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        time.sleep(1.0)
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.log.close()


def _measure(pid: int, seconds: float) -> dict[str, float]:
    """CPU share of `pid` over `seconds`, and its resident memory (peak of samples every
    0.2 s, and at the end)."""
    cpu0, started, peak = cpu_seconds(pid) or 0.0, time.monotonic(), 0
    while time.monotonic() - started < seconds:
        stat = read_stat(pid)
        peak = max(peak, stat.rss if stat else 0)
        time.sleep(0.2)
    share = ((cpu_seconds(pid) or 0.0) - cpu0) / (time.monotonic() - started)
    stat = read_stat(pid)
    end = stat.rss if stat else 0
    return {"cpu_share": share, "rss_peak_kib": max(peak, end) // 1024, "rss_end_kib": end // 1024}


def load(work: Path, args: argparse.Namespace, report: dict[str, Any]) -> list[str]:
    results: dict[str, Any] = {}
    with LtDht(args.nodes, log_path=work / "lt-dht-load.log") as dht:
        dht.wait_ready(30)
        dht.wait_converged(timeout=60)
        port = free_port("127.0.0.1")
        target = f"127.0.0.1:{port}"
        config = torviz_dht_config(work / "torviz-load.toml", port, dht.nodes[:3])
        daemon = Daemon(work, config)
        hostiles: list[HostileDht] = []
        try:
            agent = daemon.agent("tracker_agent")
            fill = HostileDht(
                HostileConfig("table_fill", target, fill_buckets=args.fill_buckets),
                log_path=work / "fill.log",
            )
            hostiles.append(fill)
            fill.wait_ready()
            nodes, since = -1, time.monotonic()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and time.monotonic() - since < 10:
                now_nodes = ((daemon.status() or {}).get("dht") or {}).get("nodes", 0)
                if now_nodes != nodes:
                    nodes, since = now_nodes, time.monotonic()
                time.sleep(1.0)
            results["table_nodes"] = nodes
            results["idle"] = _measure(agent, _IDLE_S)
            print(f"table {nodes} nodes; idle {results['idle']}", flush=True)
            flood = HostileDht(
                HostileConfig("flood", target, rate=args.flood_rate, sources=256),
                log_path=work / "flood.log",
            )
            hostiles.append(flood)
            flood.wait_ready()
            results["flood"] = _measure(agent, args.load_seconds)
            results["flood_counters"] = flood.close()
            results["dht_after"] = (daemon.status() or {}).get("dht")
            print(f"torviz under flood: {results['flood']}", flush=True)
            lt_flood = HostileDht(
                HostileConfig("flood", dht.nodes[0], rate=args.flood_rate, sources=256),
                log_path=work / "lt-flood.log",
            )
            hostiles.append(lt_flood)
            lt_flood.wait_ready()
            results["libtorrent_flood"] = _measure(dht.process.pid, args.load_seconds)
            results["libtorrent_flood_counters"] = lt_flood.close()
            print(f"libtorrent under flood: {results['libtorrent_flood']}", flush=True)
        finally:
            for hostile in hostiles:
                hostile.close()
            daemon.stop()
    report["load"] = results
    flooded, lt_flooded = results["flood_counters"], results["libtorrent_flood_counters"]

    def answered(counters: dict[str, Any]) -> str:
        sent = max(1, int(counters.get("sent", 0)))
        ratio = counters.get("bytes_received", 0) / max(1, counters.get("bytes_sent", 0))
        return f"{counters.get('received', 0) / sent:.0%} answered, bytes out/in {ratio:.2f}"

    return [
        f"| DHT node | table | CPU idle | CPU at {args.flood_rate} q/s | RSS peak | flood |",
        "|---|---|---|---|---|---|",
        f"| torviz tracker agent | {results['table_nodes']} nodes | "
        f"{results['idle']['cpu_share']:.1%} | {results['flood']['cpu_share']:.1%} | "
        f"{results['flood']['rss_peak_kib'] / 1024:.0f} MiB | {answered(flooded)} |",
        f"| libtorrent process ({args.nodes} sessions) | - | - | "
        f"{results['libtorrent_flood']['cpu_share']:.1%} | "
        f"{results['libtorrent_flood']['rss_peak_kib'] / 1024:.0f} MiB | {answered(lt_flooded)} |",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--lt-announce-every", type=float, default=0.0)
    parser.add_argument("--flood-rate", type=int, default=1000)
    parser.add_argument("--load-seconds", type=float, default=30.0)
    parser.add_argument("--fill-buckets", type=int, default=24)
    parser.add_argument("--skip-first-byte", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report: dict[str, Any] = {
        "date": stamp,
        "machine": machine(),
        "source": source_state(None),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    tables: list[str] = []
    with tempfile.TemporaryDirectory(prefix="torviz-dht-bench-") as tmp:
        work = Path(tmp)
        if not args.skip_first_byte:
            tables += first_byte(work, args, report)
            tables.append("")
        if not args.skip_load:
            tables += load(work, args, report)
    print("\n".join(tables))
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = args.output or RESULTS / f"dht-{stamp}.json"
    output.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {output}")
    runs = report.get("first_byte_runs", [])
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
