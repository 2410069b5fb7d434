"""Throughput of the storage agent's piece path: one sender, 1 MiB pieces, over ipc.

Starts the real agent (``python -m torviz.services.storage_agent``), plays its coordinator (a ROUTER
on the bus endpoint) and one peer agent (a DEALER on the data endpoint) with plain pyzmq, and
sends every piece of a single-file torrent of pre-made random data with correct hashes as
``StorePiece`` + data frame (zero-copy). The clock runs from the first piece sent to the last
``PieceVerified`` received: receive, SHA-1, ``pwrite`` and the answer, end to end. The agent
writes to a fresh directory (tmpfs ``/dev/shm`` by default), removed afterwards.

Usage::

    /work/venv/bin/python bench/storage_throughput.py [--size-mib 1024] [--piece-kib 1024]
        [--save-dir /dev/shm] [--hash-threads 2] [--runs 1] [--warm]

Cold (default) writes a new file, so the kernel allocates a gigabyte of page cache during the
run; on a VM that hands freed memory back to its host, that allocation alone can cap writes near
400 MB/s (a plain ``pwrite`` loop of new data measures the same). ``--warm`` first fills the
file with zeros (the agent rechecks it, not timed) so the run overwrites pages already in
memory: that isolates the agent's own pipeline.

This is a benchmark, not a test: it prints the figure, the agent's CPU time and peak memory.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

from torviz.shared.bencode import encode
from torviz.shared.bus import (
    Hello,
    OpenTorrent,
    PieceRejected,
    PieceVerified,
    ServiceKind,
    Shutdown,
    StorageFailed,
    StorePiece,
    TorrentOpened,
    Welcome,
    decode_frames,
    encode_frames,
    make_hello,
)
from torviz.shared.types import InfoHash

REPO = Path(__file__).resolve().parents[1]
WAIT_MS = 30_000


def _recv(sock: zmq.Socket[Any], timeout_ms: int = WAIT_MS) -> tuple[bytes, Any]:
    if not sock.poll(timeout_ms, zmq.POLLIN):
        raise SystemExit("the agent stopped answering")
    frames = sock.recv_multipart()
    identity = frames.pop(0) if sock.type == zmq.ROUTER else b""
    message, _ = decode_frames(frames)
    return identity, message


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds the process has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _prefill(path: Path, size: int) -> None:
    """Write ``size`` bytes of zeros to ``path``, so that the page cache holds the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = bytes(1 << 20)
    with path.open("wb") as out:
        for _ in range(size >> 20):
            out.write(chunk)


def run(size: int, piece_length: int, save_root: str, hash_threads: int, warm: bool) -> float:
    """One run; returns MB/s (10**6 bytes per second)."""
    print(f"making {size >> 20} MiB of random data ...", flush=True)
    data = os.urandom(size)
    view = memoryview(data)
    hashes = b"".join(
        hashlib.sha1(view[i : i + piece_length]).digest() for i in range(0, size, piece_length)
    )
    raw_info = encode(
        {b"length": size, b"name": b"bench.bin", b"piece length": piece_length, b"pieces": hashes}
    )
    info_hash = InfoHash(hashlib.sha1(raw_info).digest())
    pieces = len(hashes) // 20

    workdir = Path(tempfile.mkdtemp(prefix="tvz-bench-", dir="/tmp"))
    save_path = Path(tempfile.mkdtemp(prefix="tvz-bench-save-", dir=save_root))
    if warm:  # the agent rechecks it (not timed), then overwrites pages already in memory
        _prefill(save_path / "bench.bin", size)
    config = workdir / "torviz.toml"
    config.write_text(f"[storage_agent]\nhash_threads = {hash_threads}\n")
    context: zmq.Context[Any] = zmq.Context()
    bus = context.socket(zmq.ROUTER)
    bus.bind(f"ipc://{workdir}/bus")
    argv = [sys.executable, "-m", "torviz.services.storage_agent", "--bus", f"ipc://{workdir}/bus"]
    argv += ["--data", f"ipc://{workdir}/data", "--config", str(config), "--log-level", "WARNING"]
    agent = subprocess.Popen(argv, cwd=REPO)
    try:
        identity, hello = _recv(bus)
        assert isinstance(hello, Hello), hello
        bus.send_multipart([identity, *encode_frames(Welcome(1, "coordinator", "bench", 30.0))])
        bus.send_multipart(
            [identity, *encode_frames(OpenTorrent(info_hash, raw_info, str(save_path)))]
        )
        _, opened = _recv(bus, 5 * WAIT_MS)  # a recheck of existing data first
        assert isinstance(opened, TorrentOpened), opened

        peer = context.socket(zmq.DEALER)
        peer.connect(f"ipc://{workdir}/data")
        peer.send_multipart(encode_frames(make_hello(ServiceKind.PEER_AGENT, "pa", "bench", 0)))
        _, welcome = _recv(peer)
        assert isinstance(welcome, Welcome), welcome

        poller = zmq.Poller()
        poller.register(bus, zmq.POLLIN)
        poller.register(peer, zmq.POLLOUT)
        sent = verified = 0
        cpu_before = _cpu_seconds(agent.pid)
        started = time.perf_counter()
        while verified < pieces:
            for sock, _ in poller.poll(WAIT_MS):
                if sock is peer:
                    start = sent * piece_length
                    header = StorePiece(info_hash, sent, ("pa/1",))
                    peer.send_multipart(
                        encode_frames(header, view[start : start + piece_length]), copy=False
                    )
                    sent += 1
                    if sent == pieces:
                        poller.unregister(peer)
                else:
                    _, event = _recv(bus, 0)
                    if isinstance(event, PieceVerified):
                        verified += 1
                    elif isinstance(event, PieceRejected | StorageFailed):
                        raise SystemExit(f"the agent answered {event}")
        elapsed = time.perf_counter() - started
        user, system = (a - b for a, b in zip(_cpu_seconds(agent.pid), cpu_before, strict=True))
        rate = size / elapsed / 1e6
        print(
            f"{pieces} pieces of {piece_length >> 10} KiB ({size >> 20} MiB) in {elapsed:.2f}s: "
            f"{rate:.0f} MB/s; agent CPU {user:.2f}s user + {system:.2f}s system, "
            f"peak RSS {_peak_rss_mib(agent.pid):.0f} MiB",
            flush=True,
        )
        bus.send_multipart([identity, *encode_frames(Shutdown("bench done"))])
        agent.wait(timeout=10)
        return rate
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        context.destroy(linger=0)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(save_path, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--piece-kib", type=int, default=1024)
    parser.add_argument("--save-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
    parser.add_argument("--hash-threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--warm",
        action="store_true",
        help="write over a file already in the page cache instead of a new one",
    )
    args = parser.parse_args()
    rates = [
        run(args.size_mib << 20, args.piece_kib << 10, args.save_dir, args.hash_threads, args.warm)
        for _ in range(args.runs)
    ]
    if len(rates) > 1:
        print(f"median of {len(rates)} runs: {sorted(rates)[len(rates) // 2]:.0f} MB/s")


if __name__ == "__main__":
    main()
