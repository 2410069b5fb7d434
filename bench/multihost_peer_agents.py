"""Across hosts: the aggregate download rate with one peer agent against two, same swarm.

Usage (as root, from the repository root)::

    /work/venv/bin/python bench/multihost_peer_agents.py [--size-mib 512] [--piece-kib 1024]
        [--seeders-per-host 2] [--runs 3] [--settle 2] [--subnet 10.213.27]
        [--cache /tmp/torviz-bench] [--live] [--output FILE]

The hosts are network namespaces (testing/hosts.py, deploy/netns-hosts.sh) joined by one
bridge:

- host 1: ``torviz-coordinator start`` (``embedded_agents = false``, bus on tcp://HOST1 with
  CURVE keys from ``keys init``), the storage agent (data endpoint tcp://HOST1, CURVE) and the
  tracker agent: the same set-up as tests/interop/test_multihost.py;
- host 2, and for the two-agent variant host 3: one peer agent each;
- hosts 4 and 5: ``--seeders-per-host`` libtorrent seeders each (seed mode, no rate limit, data
  read once beforehand so it is served from the page cache), each on its own address; opentracker
  on host 4.

The seeders and the tracker run for the whole benchmark; each run gets a fresh torviz (keys,
state, download folder) and the variants alternate, ``--settle`` idle seconds before each run.
Nothing polls torviz while it downloads: progress is the allocated size of the download (the
storage agent writes a piece once its hash matched), sampled every 50 ms, and the rate is the
content size over the time from its first byte to its last on disk. After the last byte,
``status --json`` confirms every piece verified. CPU seconds of every process (storage agent,
each peer agent, coordinator, tracker agent, the seeders together) are read from /proc at the
first and the last byte: their share of that window says which process was busy, against the
machine's cores. The first download of each variant is compared byte for byte.

What is measured: a byte-compiled copy of the working tree's ``shared`` and ``services`` (as in
the other benchmarks); ``--live`` runs the tree itself. Prints a markdown table and writes every
figure to ``bench/results/multihost-<time>.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.proctree import cpu_seconds
from bench.sources import fmt, median, start_report
from bench.workload import MIB, bytes_on_disk, cached_content, clear, read_through
from testing.cluster import TorvizCluster
from testing.content import ContentSpec, TorrentFile, compare_content, make_torrent
from testing.hosts import NamespaceHosts, namespace_hosts
from testing.swarm import LtPeer

VARIANTS = {"1 agent": (2,), "2 agents": (2, 3)}
"""Variant -> the hosts that run a peer agent."""
_SAMPLE_S = 0.05
_REGISTER_TIMEOUT_S = 30.0
_PORTS = itertools.count(7700, 2)
_MAX_THREADS = 256
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    """One download."""

    variant: str
    run: int
    ok: bool
    error: str = ""
    add_to_first_byte_s: float | None = None
    first_to_last_byte_s: float | None = None
    add_to_verified_s: float | None = None
    mb_per_s: float | None = None
    """Content size over first to last byte on disk, 10^6 bytes per second."""
    cpu_s: dict[str, float] = field(default_factory=dict)
    """Per process, CPU seconds between the first and the last byte on disk."""
    threads_cpu_s: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per torviz process, the same by thread name (ZeroMQ's I/O threads, where CURVE runs,
    are ``ZMQbg/IO/N``; Python's are named after the interpreter)."""
    connections: dict[str, int] = field(default_factory=dict)
    """Per peer agent, peer connections it opened (from its log)."""
    identical: bool | None = None
    loadavg: float = 0.0


def _cpu(pids: dict[str, list[int]]) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) or 0.0 for pid in group) for name, group in pids.items()}


def _threads(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of one process (0 threads when it is gone)."""
    per_name: dict[str, float] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return per_name
    for task in tasks[:_MAX_THREADS]:
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        per_name[name] = per_name.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / _TICK
    return per_name


def _pids(cluster: TorvizCluster, seeders: list[LtPeer]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {name: [p.pid] for name, p in cluster.agents.items()}
    if cluster.coordinator is not None:
        groups["coordinator"] = [cluster.coordinator.pid]
    groups["seeders"] = [s.pid for s in seeders]
    return groups


def run_once(
    hosts: NamespaceHosts,
    torrent: TorrentFile,
    spec: ContentSpec,
    seeders: list[LtPeer],
    variant: str,
    run: int,
    work: Path,
    args: Any,
) -> Run:
    """One fresh torviz on the hosts downloading the torrent; stopped on the way out."""
    result = Run(variant, run, ok=False, loadavg=os.getloadavg()[0])
    port = next(_PORTS)
    cluster = TorvizCluster(
        hosts, work, bus_port=port, data_port=port + 1, source=args.source, heartbeat_interval=2.0
    )
    peers = {host: f"peer-{host}" for host in VARIANTS[variant]}
    try:
        cluster.init_keys(["storage", "tracker", *peers.values()])
        cluster.start_coordinator()
        cluster.start_agent("storage_agent", "storage")
        cluster.start_agent("tracker_agent", "tracker")
        for host, name in peers.items():
            cluster.start_agent("peer_agent", name, host=host, keys_dir=cluster.agent_keys(name))
        wanted = {"storage", "tracker", *peers.values()}
        cluster.wait_status(
            lambda d: wanted <= {a["id"] for a in d["agents"]}, _REGISTER_TIMEOUT_S, "agents"
        )
        pids = _pids(cluster, seeders)
        on_disk = bytes_on_disk(cluster.download_dir)
        started = time.monotonic()
        added = cluster.cli("add", str(torrent.path))
        if added.returncode != 0:
            raise RuntimeError(f"add failed: {added.stderr.strip()}")
        first: float | None = None
        cpu_first: dict[str, float] = {}
        threads_first: dict[str, dict[str, float]] = {}
        torviz = {name: group[0] for name, group in pids.items() if name != "seeders"}
        deadline = started + args.timeout
        while True:
            done = on_disk()
            now = time.monotonic()
            if first is None and done > 0:
                first, cpu_first = now, _cpu(pids)
                threads_first = {name: _threads(pid) for name, pid in torviz.items()}
            if done >= spec.total_size:
                break
            if now > deadline:
                raise RuntimeError(f"{done} of {spec.total_size} bytes after {args.timeout} s")
            time.sleep(_SAMPLE_S)
        last, cpu_last = time.monotonic(), _cpu(pids)
        threads_last = {name: _threads(pid) for name, pid in torviz.items()}
        assert first is not None
        cluster.wait_status(
            lambda d: bool(d["torrents"]) and d["torrents"][0]["progress"] == 1.0,
            60.0,
            "every piece verified",
        )
        result.add_to_verified_s = time.monotonic() - started
        result.add_to_first_byte_s = first - started
        result.first_to_last_byte_s = last - first
        result.mb_per_s = spec.total_size / (last - first) / 1e6
        result.cpu_s = {k: round(cpu_last[k] - cpu_first.get(k, 0.0), 3) for k in cpu_last}
        result.threads_cpu_s = {
            name: {
                thread: round(seconds - threads_first.get(name, {}).get(thread, 0.0), 3)
                for thread, seconds in threads.items()
            }
            for name, threads in threads_last.items()
        }
        if run == 0:
            result.identical = not compare_content(spec.root, cluster.download_dir, spec)
        result.ok = result.identical is not False
        if not result.ok:
            result.error = "the download differs from the content"
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:2000]
    finally:
        cluster.stop()
        for name in peers.values():
            log = cluster.log_dir / f"{name}.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            result.connections[name] = text.count(": connected to ")
        clear(cluster.download_dir, 0.0)
    return result


def describe(r: Run) -> str:
    """One line for a run."""
    if not r.ok:
        return f"  {r.variant:8s} run {r.run}: FAILED {r.error}"
    window = r.first_to_last_byte_s or 0.0
    share = ", ".join(f"{k} {100 * v / window:.0f}%" for k, v in sorted(r.cpu_s.items()))
    return (
        f"  {r.variant:8s} run {r.run}: {r.mb_per_s:6.1f} MB/s over {window:.2f} s "
        f"(add to first byte {r.add_to_first_byte_s:.2f} s, to verified "
        f"{r.add_to_verified_s:.2f} s)  cpu [{share}]  conns {r.connections}  "
        f"load {r.loadavg:.1f}"
    )


def summarise(runs: list[Run], size: int) -> dict[str, Any]:
    """Per variant, medians over its successful runs: the rate, and per process its CPU as a
    share of one core during the transfer and in seconds per GiB downloaded."""
    gib = size / 2**30
    summary: dict[str, Any] = {}
    for variant in VARIANTS:
        ok = [r for r in runs if r.variant == variant and r.ok and r.first_to_last_byte_s]
        names = sorted({name for r in ok for name in r.cpu_s})
        share = {
            name: median([r.cpu_s.get(name, 0.0) / (r.first_to_last_byte_s or 1.0) for r in ok])
            for name in names
        }
        per_gib = {name: median([r.cpu_s.get(name, 0.0) / gib for r in ok]) for name in names}
        threads = {
            name: {
                thread: median([r.threads_cpu_s.get(name, {}).get(thread, 0.0) / gib for r in ok])
                for thread in sorted({t for r in ok for t in r.threads_cpu_s.get(name, {})})
            }
            for name in sorted({n for r in ok for n in r.threads_cpu_s})
        }
        storage = per_gib.get("storage")
        summary[variant] = {
            "runs": len(ok),
            "failed": len([r for r in runs if r.variant == variant and not r.ok]),
            "mb_per_s": median([r.mb_per_s for r in ok if r.mb_per_s]),
            "first_to_last_byte_s": median(
                [r.first_to_last_byte_s for r in ok if r.first_to_last_byte_s]
            ),
            "add_to_verified_s": median([r.add_to_verified_s for r in ok if r.add_to_verified_s]),
            "cpu_share": share,
            "cpu_s_per_gib": per_gib,
            "threads_cpu_s_per_gib": threads,
            # What the storage agent could take with a whole core to itself, at its measured cost.
            "storage_one_core_mb_per_s": 2**30 / storage / 1e6 if storage else None,
            "loadavg": median([r.loadavg for r in ok]),
        }
    return summary


def markdown_table(summary: dict[str, Any], cores: int) -> str:
    """The medians as a markdown table: CPU as a share of one core during the transfer, and
    in CPU seconds per GiB downloaded."""
    lines = [
        "| variant | MB/s (first to last byte) | add to verified "
        "| storage agent CPU | peer agents CPU | coordinator CPU | seeders CPU "
        f"| all (of {cores * 100}%) | storage agent with one core | runs (ok, failed) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, s in summary.items():
        share = s["cpu_share"]
        peers = [_cell(s, k) for k in sorted(share) if k.startswith("peer-")]
        total = sum(v for v in share.values() if v is not None)
        lines.append(
            f"| {variant} | {fmt(s['mb_per_s'], '.0f')} "
            f"| {fmt(s['add_to_verified_s'], '.2f', ' s')} "
            f"| {_cell(s, 'storage')} | {' + '.join(peers) or 'n/a'} "
            f"| {_cell(s, 'coordinator')} | {_cell(s, 'seeders')} "
            f"| {100 * total:.0f}% | {fmt(s['storage_one_core_mb_per_s'], '.0f', ' MB/s')} "
            f"| {s['runs']}, {s['failed']} | {fmt(s['loadavg'], '.1f')} |"
        )
    return "\n".join(lines)


def threads_table(summary: dict[str, Any]) -> str:
    """CPU seconds per GiB of each torviz process by thread name (medians), one row each."""
    lines = ["| variant | process | CPU s/GiB by thread |", "|---|---|---|"]
    for variant, s in summary.items():
        for name, threads in s["threads_cpu_s_per_gib"].items():
            busy = {k: v for k, v in threads.items() if v is not None and v >= 0.05}
            cells = ", ".join(
                f"{k} {v:.2f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1])
            )
            lines.append(f"| {variant} | {name} | {cells or '-'} |")
    return "\n".join(lines)


def _cell(summary: dict[str, Any], name: str) -> str:
    share, per_gib = summary["cpu_share"].get(name), summary["cpu_s_per_gib"].get(name)
    if share is None or per_gib is None:
        return "n/a"
    return f"{100 * share:.0f}% ({per_gib:.1f} s/GiB)"


def prepare(args: Any) -> ContentSpec:
    """The content (cached under ``--cache``), read once so the seeders serve it from memory."""
    spec = cached_content(args.cache, "single", args.size_mib * MIB)
    read_through(spec)
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512, help="content size (default 512)")
    parser.add_argument("--piece-kib", type=int, default=1024, help="piece length (default 1024)")
    parser.add_argument("--seeders-per-host", type=int, default=2, help="on hosts 4 and 5")
    parser.add_argument("--runs", type=int, default=3, help="runs per variant (default 3)")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before a run")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per download")
    parser.add_argument("--subnet", default="10.213.27", help="the hosts' /24 (3 octets)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/torviz-bench"))
    parser.add_argument("--live", action="store_true", help="run the working tree itself")
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results/...)")
    args = parser.parse_args(argv)
    report, output = start_report(args, "multihost")
    args.source = Path(args.env["PYTHONPATH"]) if args.env else None
    runs: list[Run] = []
    work = Path(tempfile.mkdtemp(prefix="tvz-mh-", dir="/tmp"))
    try:
        with namespace_hosts(work, 5, args.subnet, prefix=f"tvb{os.getpid()}") as hosts:
            spec = prepare(args)
            # The tracker's whitelist needs the info hash, which does not depend on trackers.
            probe = make_torrent(spec, args.piece_kib * 1024, [], work / "probe.torrent")
            tracker = hosts.tracker(4, [probe.info_hash])
            torrent = make_torrent(
                spec, args.piece_kib * 1024, [tracker.http_announce_url], work / "bench.torrent"
            )
            seeders = [
                hosts.seeder(
                    host, torrent.path, spec.root, hosts.add_address(host, 100 + 10 * host + k)
                )
                for host in (4, 5)
                for k in range(args.seeders_per_host)
            ]
            print(f"{len(seeders)} seeders ready; {args.runs} runs per variant", flush=True)
            for run in range(args.runs):
                order = list(VARIANTS) if run % 2 == 0 else list(reversed(VARIANTS))
                for variant in order:
                    time.sleep(args.settle)
                    run_dir = work / f"{variant.replace(' ', '-')}-{run}"
                    result = run_once(hosts, torrent, spec, seeders, variant, run, run_dir, args)
                    runs.append(result)
                    report["runs"].append(asdict(result))
                    print(describe(result), flush=True)
                    shutil.rmtree(run_dir / "dl", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = summarise(runs, args.size_mib * MIB)
    report["summary"] = summary
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    output.write_text(json.dumps(report, indent=1))
    print(markdown_table(summary, os.cpu_count() or 1))
    print()
    print(threads_table(summary))
    print(f"results: {output}")
    return 1 if any(not r.ok for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
