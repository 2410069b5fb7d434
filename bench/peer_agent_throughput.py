"""How fast one peer agent downloads from libtorrent seeders on loopback.

Usage::

    /work/venv/bin/python bench/peer_agent_throughput.py [--size-mib 1024] [--piece-kib 1024]
        [--seeders 1] [--runs 3] [--max-request-queue 500]
        [--profile out.txt | --perf perf.data] [--agent-log agent.log]

What runs: the real peer agent process; one or more libtorrent seeders (``testing/``, seed
mode, each on its own 127.0.0.x address); a fake coordinator that answers every ``WorkWanted``
with the next pieces in order; a fake storage agent that only counts the bytes of each
``StorePiece`` data frame (so the figure is the agent's, not a disk's). Content is made once and
cached under ``--cache`` (default ``/tmp/torviz-bench``).

Reported per run: wall time and MB/s from ``ConnectPeer`` to the last byte stored, the CPU
seconds the agent (per thread: Python and ZeroMQ's I/O thread) and the seeders used, and the
agent's page faults. On a shared 2-core machine the wall figures swing by 2x with whatever else
runs; the agent's CPU seconds per GiB are the steadier measure of its own cost.

Profiling the last run (as root): ``--profile FILE`` samples the agent with py-spy while it holds
the GIL (Python code only; time in system calls shows up with ``--perf``) and writes the hottest
functions, own and total, to FILE; ``--perf FILE`` records ``perf record -g`` data (read it with
``perf report -i FILE --sort comm,dso``: Python vs kernel vs ZeroMQ's I/O thread).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from testing.content import (  # noqa: E402
    TorrentFile,
    make_content,
    make_torrent,
    single_file_layout,
)
from testing.peer_agent import AgentProcess, Counterparts  # noqa: E402
from testing.swarm import Swarm  # noqa: E402
from torviz.shared.bus import AssignPieces, AttachTorrent, ConnectPeer, Message, PeerConnected  # noqa: E402
from torviz.shared.bus import WorkWanted as BusWorkWanted  # noqa: E402
from torviz.shared.types import InfoHash, PeerId  # noqa: E402

MIB = 1024 * 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its reaped children) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def minor_faults(pid: int) -> int:
    """Page faults served without I/O so far (fresh memory being touched)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[7])


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (the Python main thread, ZeroMQ's I/O threads, ...)."""
    per_name: dict[str, float] = collections.defaultdict(float)
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        per_name[name] += (int(fields[11]) + int(fields[12])) / tick
    return dict(per_name)


def prepare(cache: Path, size: int, piece: int) -> tuple[Path, TorrentFile]:
    """The content and its trackerless torrent, made once per (size, piece length)."""
    import libtorrent as lt

    root = cache / f"{size // MIB}m-{piece // 1024}k"
    torrent_path = root.with_suffix(".torrent")
    if not torrent_path.exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        print(f"making {size // MIB} MiB of content in {root} ...", flush=True)
        content = make_content(root, single_file_layout(size, "bench.bin"), seed=1)
        make_torrent(content, piece, [], torrent_path)
    info = lt.torrent_info(str(torrent_path))
    return root, TorrentFile(
        path=torrent_path,
        info_hash=InfoHash.from_hex(str(info.info_hashes().v1)),
        piece_length=int(info.piece_length()),
        num_pieces=int(info.num_pieces()),
        total_size=int(info.total_size()),
    )


class Picker:
    """The fake coordinator's picker: hands out pieces in order to whoever asks."""

    def __init__(self, parts: Counterparts, torrent: TorrentFile) -> None:
        self.parts = parts
        self.torrent = torrent
        self.next_piece = 0

    def __call__(self, message: Message) -> None:
        if isinstance(message, BusWorkWanted):
            count = min(message.count, self.torrent.num_pieces - self.next_piece)
            if count > 0:
                pieces = tuple(range(self.next_piece, self.next_piece + count))
                self.next_piece += count
                self.parts.send(AssignPieces(message.info_hash, message.peer, pieces))


def run_once(
    torrent: TorrentFile,
    data_root: Path,
    seeders: int,
    profile: Path | None,
    timeout: float,
    queue: int,
    agent_log: Path | None = None,
    perf: Path | None = None,
) -> tuple[float, float, float]:
    """One download; returns (seconds, agent CPU seconds, seeders' CPU seconds)."""
    with (
        tempfile.TemporaryDirectory(prefix="tvz-bench-", dir="/tmp") as tmp,
        Swarm(Path(tmp) / "swarm") as swarm,
    ):
        short = Path(tmp)
        peers = [swarm.seeder(torrent, data_root, seed_mode=True) for _ in range(seeders)]
        parts = Counterparts(short, keep_data=False)
        parts.on_message = Picker(parts, torrent)
        config = short / "agent.toml"
        config.write_text(f'[peer_agent]\nlisten_host = "127.0.0.1"\nmax_request_queue = {queue}\n')
        agent = AgentProcess(
            parts.bus_endpoint,
            short,
            extra=("--config", str(config)),
            log_level="DEBUG" if agent_log else "INFO",
        )
        spy: subprocess.Popen[bytes] | None = None
        try:
            parts.connect_agent()
            parts.send(
                AttachTorrent(
                    info_hash=torrent.info_hash,
                    piece_length=torrent.piece_length,
                    total_length=torrent.total_size,
                    num_pieces=torrent.num_pieces,
                    peer_id=PeerId(b"-TV0100-benchbenchbe"),
                    have=bytes((torrent.num_pieces + 7) // 8),
                    private=False,
                    storage_endpoint=parts.data_endpoint,
                    storage_public_key="",
                )
            )
            if perf is not None:
                spy = subprocess.Popen(
                    ["perf", "record", "-g", "-p", str(agent.proc.pid), "-o", str(perf)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(0.5)
            elif profile is not None:
                spy = subprocess.Popen(
                    [
                        str(Path(sys.executable).with_name("py-spy")),
                        "record",
                        "--format",
                        "raw",
                        "--gil",
                        "--rate",
                        "250",
                        "--pid",
                        str(agent.proc.pid),
                        "--output",
                        str(profile.with_suffix(".raw")),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                time.sleep(0.5)
            agent_cpu0 = cpu_seconds(agent.proc.pid)
            faults0 = minor_faults(agent.proc.pid)
            seed_cpu0 = sum(cpu_seconds(p.pid) for p in peers)
            started = time.monotonic()
            for peer in peers:
                parts.send(ConnectPeer(torrent.info_hash, peer.address))
            parts.wait_until(lambda: parts.stored_bytes > 0, timeout, "a first piece")
            first_piece, first_bytes = time.monotonic(), parts.stored_bytes
            parts.wait_until(
                lambda: parts.stored_bytes >= torrent.total_size, timeout, "every byte stored"
            )
            done = time.monotonic()
            elapsed = done - started
            agent_cpu = cpu_seconds(agent.proc.pid) - agent_cpu0
            threads = thread_cpu(agent.proc.pid)
            print(
                "  agent CPU by thread (whole life): "
                + ", ".join(f"{name} {cpu:.2f} s" for name, cpu in sorted(threads.items())),
                f"; {minor_faults(agent.proc.pid) - faults0} page faults;"
                f" first piece after {first_piece - started:.3f} s,"
                f" then {(torrent.total_size - first_bytes) / (done - first_piece) / 1e6:.0f} MB/s",
                flush=True,
            )
            seed_cpu = sum(cpu_seconds(p.pid) for p in peers) - seed_cpu0
            connected = [m for m in parts.inbox if isinstance(m, PeerConnected)]
            assert len(connected) == seeders, connected
        finally:
            if spy is not None:
                spy.send_signal(2)
                spy.wait(timeout=30)
            agent.stop()
            parts.close()
            if agent_log is not None:
                agent_log.write_text(agent.stderr())
        if profile is not None and perf is None:
            summarise(profile.with_suffix(".raw"), profile)
        return elapsed, agent_cpu, seed_cpu


def summarise(raw: Path, out: Path, top: int = 40) -> None:
    """Own and total sample counts per function from py-spy's raw (collapsed stacks) output."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples"]
    lines.append("-- own time --")
    lines += [f"{100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("-- total time --")
    lines += [f"{100 * n / samples:5.1f}%  {name}" for name, n in total.most_common(top)]
    out.write_text("\n".join(lines) + "\n")
    print(f"profile summary in {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--piece-kib", type=int, default=1024)
    parser.add_argument("--seeders", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--max-request-queue", type=int, default=500, help="the agent's max_request_queue"
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/torviz-bench"))
    parser.add_argument("--profile", type=Path, help="py-spy summary of the last run")
    parser.add_argument("--agent-log", type=Path, help="the agent's DEBUG log of the last run")
    parser.add_argument("--perf", type=Path, help="`perf record -g` data of the last run")
    args = parser.parse_args()
    root, torrent = prepare(args.cache, args.size_mib * MIB, args.piece_kib * 1024)
    results = []
    for run in range(args.runs):
        profile = args.profile if run == args.runs - 1 else None
        elapsed, agent_cpu, seed_cpu = run_once(
            torrent,
            root,
            args.seeders,
            profile,
            args.timeout,
            args.max_request_queue,
            args.agent_log if run == args.runs - 1 else None,
            args.perf if run == args.runs - 1 else None,
        )
        rate = torrent.total_size / elapsed / 1e6
        results.append(rate)
        print(
            f"run {run + 1}: {torrent.total_size / MIB:.0f} MiB in {elapsed:.2f} s = "
            f"{rate:.0f} MB/s; agent CPU {agent_cpu:.2f} s, seeders CPU {seed_cpu:.2f} s",
            flush=True,
        )
    print(f"median {statistics.median(results):.0f} MB/s over {len(results)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
