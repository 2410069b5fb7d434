"""From a magnet link to the first byte of content: torviz's ``download MAGNET`` against a
libtorrent leecher given the same magnet link on the same loopback swarm.

Usage (from the repository root)::

    .venv/bin/python bench/magnet_first_byte.py [--size-mib 64] [--piece-kib 256] [--runs 5]
        [--seeders 2] [--source xpe|tr] [--settle 1] [--timeout 120] [--output FILE]

The swarm: random multi-file content (``testing.content.multi_file_layout``), ``--seeders``
libtorrent seeders in seed mode, each on its own 127.0.0.x, and with ``--source tr`` an
opentracker on 127.0.0.1. The magnet link names the seeders by ``x.pe`` (``--source xpe``) or
the tracker by ``tr`` (``--source tr``), nothing else. One untimed libtorrent download warms the
seeders up first. Each round, in alternating order:

- torviz: ``torviz-coordinator download MAGNET -o DIR --config CFG`` (peer agent on 127.0.0.1,
  DHT off), timed from spawning the command;
- libtorrent: a fresh leecher process (``testing/lt_peer.py``, started from the magnet link
  alone) on its own 127.0.0.x, timed from spawning it.

For both: **metadata** is when the info dictionary was in (torviz: its first stdout line past
the metadata phase, "NAME: downloading SIZE"; libtorrent: its ``metadata_received_alert``),
**first byte** when the output directory first held an allocated block (files are sparse until
written; sampled every 10 ms), **done** when every piece was verified (torviz's exit 0;
libtorrent's ``finished`` event). The outputs are compared byte for byte with the content on the
first round, deleted between runs, and the machine left alone for ``--settle`` seconds.

Prints a markdown table of the medians and writes every run to
``bench/results/magnet-<time>.json`` with the machine and the commit measured (the working tree
as it is: this script runs it live).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sources import REPO, RESULTS, machine, source_state
from bench.workload import bytes_on_disk, clear
from testing.content import (
    ContentSpec,
    TorrentFile,
    compare_content,
    make_content,
    make_torrent,
    multi_file_layout,
)
from testing.processes import SwarmError
from testing.swarm import Swarm

COORDINATOR = Path(sys.executable).with_name("torviz-coordinator")
_SAMPLE_S = 0.01

CONFIG = """
[peer_agent]
listen_host = "127.0.0.1"

[tracker_agent]
dht = false
announce_timeout = 5.0
bind_address = "127.0.0.1"
"""


@dataclass(slots=True)
class Timed:
    """One timed run; seconds from spawning the process."""

    tool: str
    run: int
    ok: bool
    metadata_s: float | None = None
    first_byte_s: float | None = None
    listening_s: float | None = None
    """torviz: its peer agent listening (log line), the end of start-up."""
    connected_s: float | None = None
    """torviz: its first peer connection (log line)."""
    done_s: float | None = None
    verified: bool | None = None
    error: str = ""
    loadavg: float = 0.0


class FirstByte:
    """Samples the allocated bytes under a directory until the first one appears."""

    def __init__(self, out: Path, started: float) -> None:
        self._probe = bytes_on_disk(out)
        self._started = started
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and self.at is None:
            if self._probe() > 0:
                self.at = time.monotonic() - self._started
                return
            self._stop.wait(_SAMPLE_S)

    def stop(self) -> float | None:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.at


def run_torviz(run: int, magnet: str, out: Path, config: Path, timeout: float) -> Timed:
    out.mkdir(parents=True, exist_ok=True)
    argv = [str(COORDINATOR), "download", magnet, "-o", str(out), "--config", str(config)]
    argv += ["--log-level", "INFO"]  # its timestamps give the phases (see _phases)
    started, wall_started = time.monotonic(), time.time()
    log_path = out.with_name(f"{out.name}.log")
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=REPO
        )
        probe = FirstByte(out, started)
        metadata: list[float] = []

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if b": downloading" in line and not metadata:
                    metadata.append(time.monotonic() - started)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            code: int | None = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
        done = time.monotonic() - started
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
    stderr = log_path.read_bytes()
    log_path.unlink()
    result = Timed("torviz", run, code == 0, None, probe.stop())
    result.done_s = done if code == 0 else None
    phases = _phases(stderr.decode(errors="replace"), wall_started)
    result.listening_s = phases.get("listening for peers")
    result.connected_s = phases.get("connected to")
    # The log line is exact; the stdout line waits for the watcher's next status request.
    result.metadata_s = phases.get("metadata fetched", metadata[0] if metadata else None)
    if code != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        result.error = f"exit {code}: " + " | ".join(tail)
    return result


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z ")
_MARKS = ("listening for peers", "connected to", "metadata fetched")


def _phases(log: str, wall_started: float) -> dict[str, float]:
    """Seconds from `wall_started` to the first log line holding each of `_MARKS`."""
    found: dict[str, float] = {}
    for line in log.splitlines():
        stamp = _LOG_TIME.match(line)
        mark = next((m for m in _MARKS if m in line and m not in found), None)
        if stamp is None or mark is None:
            continue
        at = datetime.fromisoformat(stamp.group(1)).replace(tzinfo=UTC).timestamp()
        found[mark] = at - wall_started
    return found


def run_libtorrent(run: int, swarm: Swarm, magnet: str, out: Path, timeout: float) -> Timed:
    out.mkdir(parents=True, exist_ok=True)
    started, wall_started = time.monotonic(), time.time()
    peer = swarm.leecher(out.with_suffix(".torrent"), out, magnet=magnet, wait=False)
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


def _median(runs: list[Timed], attr: str) -> float | None:
    values = [getattr(r, attr) for r in runs if r.ok and getattr(r, attr) is not None]
    return statistics.median(values) if values else None


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def build_swarm(
    swarm: Swarm, spec: ContentSpec, work: Path, args: argparse.Namespace
) -> tuple[TorrentFile, str]:
    """Seeders (and a tracker for ``tr``) of `spec`; returns the torrent and its magnet link."""
    piece = args.piece_kib * 1024
    probe = make_torrent(spec, piece, [], work / "probe.torrent")
    if args.source == "tr":
        tracker = swarm.tracker([probe.info_hash])
        url = tracker.http_announce_url
        torrent = make_torrent(spec, piece, [url], work / "t.torrent")
        seeders = [
            swarm.seeder(torrent.path, spec.root, seed_mode=True) for _ in range(args.seeders)
        ]
        return torrent, torrent.magnet(trackers=[url], name=spec.name)
    seeders = [swarm.seeder(probe.path, spec.root, seed_mode=True) for _ in range(args.seeders)]
    return probe, probe.magnet(peers=[s.address for s in seeders], name=spec.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--piece-kib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seeders", type=int, default=2)
    parser.add_argument("--source", choices=("xpe", "tr"), default="xpe")
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report: dict[str, object] = {
        "date": stamp,
        "machine": machine(),
        "source": source_state(None),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    runs: list[Timed] = []
    with tempfile.TemporaryDirectory(prefix="torviz-magnet-bench-") as tmp:
        work = Path(tmp)
        layout = multi_file_layout(args.size_mib * 1024 * 1024 + 12_345)
        spec = make_content(work / "seed", layout, seed=1414)
        config = work / "torviz.toml"
        config.write_text(CONFIG)
        with Swarm(work / "swarm") as swarm:
            torrent, magnet = build_swarm(swarm, spec, work, args)
            warm = run_libtorrent(0, swarm, magnet, work / "warmup", args.timeout)
            print(f"warm-up libtorrent download: {warm.done_s} s", flush=True)
            clear(work / "warmup", args.settle)
            for n in range(1, args.runs + 1):
                order = ("torviz", "libtorrent") if n % 2 else ("libtorrent", "torviz")
                for tool in order:
                    out = work / f"out-{tool}"
                    if tool == "torviz":
                        result = run_torviz(n, magnet, out, config, args.timeout)
                    else:
                        result = run_libtorrent(n, swarm, magnet, out, args.timeout)
                    if result.ok and n <= 2:
                        problems = compare_content(spec.root, out, spec)
                        result.verified = not problems
                        result.ok = not problems
                        result.error = "; ".join(problems[:3])
                    result.loadavg = os.getloadavg()[0]
                    runs.append(result)
                    print(json.dumps(asdict(result)), flush=True)
                    clear(out, args.settle)
        report["torrent"] = {"info_hash": torrent.info_hash.hex, "size": torrent.total_size}
    report["runs"] = [asdict(r) for r in runs]
    rows = []
    columns = ("listening_s", "connected_s", "metadata_s", "first_byte_s", "done_s")
    for tool in ("torviz", "libtorrent"):
        mine = [r for r in runs if r.tool == tool]
        ok = sum(r.ok for r in mine)
        cells = [_cell(_median(mine, a)) for a in columns]
        rows.append(f"| {tool} | {ok}/{len(mine)} | " + " | ".join(cells) + " |")
    print("| client | runs ok | listening | first peer | metadata | first byte | done |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = args.output or RESULTS / f"magnet-{stamp}.json"
    output.write_text(json.dumps(report, indent=1))
    print(f"wrote {output}")
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
