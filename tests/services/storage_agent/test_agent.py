"""The storage agent as a process: handshakes, the piece path, block reads, errors, stopping.

Each test runs the real ``python -m torviz.services.storage_agent`` and plays the coordinator
and the peer agents with blocking pyzmq (see ``harness.py``). Torrents are made by libtorrent (the
reference's view of piece hashes across files) or built by hand with ``shared.bencode``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from testing.content import make_content, make_torrent, multi_file_layout
from torviz.shared.bencode import encode
from torviz.shared.bus import (
    BUS_PROTOCOL_VERSION,
    BlockRead,
    CloseTorrent,
    Goodbye,
    OpenTorrent,
    PieceRejected,
    PieceVerified,
    ReadFailed,
    Rejected,
    RejectReason,
    ServiceKind,
    Shutdown,
    StorageFailed,
    TorrentClosed,
    Welcome,
    make_hello,
)
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.types import InfoHash

from .harness import (
    REPO,
    AgentProcess,
    FakeCoordinator,
    PeerClient,
    Torrent,
    disk_bytes,
    full_bitfield,
    open_torrent,
    recv_message,
    store_all,
    torrent_from_files,
)

STOP_BOUND = 5.0  # seconds an agent may take to exit once told to


@pytest.fixture(scope="module")
def lt_torrent(tmp_path_factory: pytest.TempPathFactory) -> Torrent:
    """A libtorrent-made torrent of 19 pieces of 16 KiB over 7 files: nested folders, an empty
    file in the middle and one at the end, a file smaller than a block, every inner file
    boundary inside a piece."""
    root = tmp_path_factory.mktemp("lt-content")
    spec = make_content(root, multi_file_layout(300_001), seed=7)
    made = make_torrent(spec, 16 * 1024, [], root / "multi.torrent")
    meta = parse_metainfo(made.path.read_bytes())
    content = b"".join(path.read_bytes() for path in spec.file_paths())
    torrent = Torrent(meta.raw_info, meta.info, content)
    assert torrent.info_hash == made.info_hash
    return torrent


def small_torrent(name: str = "small", seed: int = 1) -> Torrent:
    """Four files in nested folders, an empty one, pieces of 4 KiB crossing every boundary."""
    rng = random.Random(seed)
    return torrent_from_files(
        name,
        [
            ("a.bin", rng.randbytes(3000)),
            ("sub/deep/b.bin", rng.randbytes(5001)),
            ("sub/empty", b""),
            ("c.bin", rng.randbytes(9000)),
        ],
        4096,
    )


# --- handshakes ---------------------------------------------------------------------------------


def test_hello_on_the_bus_and_on_the_data_endpoint(
    start_agent: Any, coordinator: FakeCoordinator, zmq_context: zmq.Context[Any], short_dir: Path
) -> None:
    start_agent()
    hello = coordinator.welcome()
    assert (hello.service, hello.agent_id) == ("storage_agent", "sa-test")
    assert hello.protocol_version == BUS_PROTOCOL_VERSION
    # The DEALER's routing id is the agent id and this process's incarnation.
    assert re.fullmatch(rb"sa-test/[0-9a-f]{8}", coordinator.identity), coordinator.identity

    data = f"ipc://{short_dir}/data"
    welcome = PeerClient(zmq_context, data, "pa1").hello()
    assert isinstance(welcome, Welcome)
    assert (welcome.service, welcome.server_id) == ("storage_agent", "sa-test")

    current = make_hello(ServiceKind.PEER_AGENT, "pa-old", "test", os.getpid())
    old = dataclasses.replace(current, protocol_version=BUS_PROTOCOL_VERSION + 1)
    answer = PeerClient(zmq_context, data, "pa-old").hello(old)
    assert isinstance(answer, Rejected) and answer.reason == "version_mismatch"

    tracker = make_hello(ServiceKind.TRACKER_AGENT, "ta", "test", os.getpid())
    answer = PeerClient(zmq_context, data, "ta").hello(tracker)
    assert isinstance(answer, Rejected) and answer.reason == "service_not_accepted"


def test_rejected_by_the_coordinator_exits_1(
    start_agent: Any, coordinator: FakeCoordinator
) -> None:
    agent: AgentProcess = start_agent()
    routing, _, _ = recv_message(coordinator.sock)
    coordinator.identity = routing[0]
    coordinator.send(
        Rejected(RejectReason.VERSION_MISMATCH, "this coordinator speaks another version")
    )
    assert agent.wait(STOP_BOUND) == 1
    assert "this coordinator speaks another version" in agent.log()


def test_data_endpoint_is_required_taken_from_the_config_and_overridden(
    start_agent: Any, coordinator: FakeCoordinator, short_dir: Path, zmq_context: zmq.Context[Any]
) -> None:
    missing: AgentProcess = start_agent(data=None)
    assert missing.wait(STOP_BOUND) == 2
    assert "no data endpoint" in missing.log()

    config = short_dir / "torviz.toml"
    config.write_text(f'[storage_agent]\ndata = "ipc://{short_dir}/from-config"\n')
    from_config: AgentProcess = start_agent(data=None, extra=["--config", str(config)])
    coordinator.welcome()
    client = PeerClient(zmq_context, f"ipc://{short_dir}/from-config", "pa1")
    assert isinstance(client.hello(), Welcome)
    coordinator.send(Shutdown("next"))
    assert from_config.wait(STOP_BOUND) == 0

    overridden: AgentProcess = start_agent(extra=["--config", str(config)])  # and --data
    coordinator.welcome()
    client = PeerClient(zmq_context, f"ipc://{short_dir}/data", "pa2")
    assert isinstance(client.hello(), Welcome)
    assert f"data endpoint ipc://{short_dir}/data," in overridden.log()


def test_an_unusable_data_endpoint_exits_1_with_one_line(start_agent: Any, short_dir: Path) -> None:
    agent: AgentProcess = start_agent(data=f"ipc://{short_dir}/no/such/folder/data")
    assert agent.wait(STOP_BOUND) == 1
    assert "cannot use endpoint" in agent.log() and "Traceback" not in agent.log()


# --- the piece path -----------------------------------------------------------------------------


def test_every_piece_verified_written_served_and_found_again(
    agent: AgentProcess,
    coordinator: FakeCoordinator,
    peer: Any,
    lt_torrent: Torrent,
    tmp_path: Path,
) -> None:
    torrent, save = lt_torrent, tmp_path / "downloads"
    info_hash, count = torrent.info_hash, torrent.num_pieces
    assert count == 19

    opened = open_torrent(coordinator, torrent, save)
    assert opened.have == bytes((count + 7) // 8)
    for index, entry in enumerate(torrent.info.files):  # folders and empty files exist at once
        if entry.length == 0:
            assert torrent.file_path(save, index).stat().st_size == 0

    order = list(range(count))
    random.Random(3).shuffle(order)
    assert store_all(coordinator, torrent, [peer(), peer()], order) == set(range(count))
    for index in range(len(torrent.info.files)):
        assert torrent.file_path(save, index).read_bytes() == torrent.file_content(index)

    # Blocks of verified pieces, one crossing a file boundary, come back exactly.
    client = peer()
    crossing = next(p for p in range(count) if len(torrent.info.geometry.spans(p)) > 1)
    reply, data = client.read(7, info_hash, crossing, 100, 16_000)
    assert reply == BlockRead(7, info_hash, crossing, 100)
    assert data == torrent.piece(crossing)[100:16_100]
    last = count - 1
    size = torrent.info.geometry.piece_size(last)
    assert client.read(8, info_hash, last, 0, size)[1] == torrent.piece(last)
    reply, _ = client.read(9, info_hash, last, size - 10, 20)  # past the end of the torrent
    assert isinstance(reply, ReadFailed) and reply.reason == "invalid_range"

    # Opening again in the same place answers at once; elsewhere is refused while open.
    assert open_torrent(coordinator, torrent, save).have == full_bitfield(count)
    coordinator.send(OpenTorrent(info_hash, torrent.raw_info, str(tmp_path / "elsewhere")))
    assert "already open" in coordinator.expect(StorageFailed).message

    coordinator.send(CloseTorrent(info_hash, delete_files=False))
    assert coordinator.expect(TorrentClosed).info_hash == info_hash
    reply, _ = client.read(10, info_hash, 0, 0, 100)
    assert isinstance(reply, ReadFailed) and reply.reason == "unknown_torrent"

    # Reopened over its complete data: every piece counts after the recheck.
    assert open_torrent(coordinator, torrent, save).have == full_bitfield(count)
    assert client.read(11, info_hash, 0, 0, 50)[1] == torrent.piece(0)[:50]
    assert "opened" in agent.log() and f"ih={info_hash.hex[:8]}" in agent.log()


def test_open_and_close_requests_are_answered_in_order(
    agent: AgentProcess, coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    torrent, save = small_torrent(), str(tmp_path / "downloads")
    info_hash = torrent.info_hash
    # The second and third requests arrive while the first is still opening: they wait.
    coordinator.send(OpenTorrent(info_hash, torrent.raw_info, save))
    coordinator.send(CloseTorrent(info_hash, delete_files=False))
    coordinator.send(OpenTorrent(info_hash, torrent.raw_info, save))
    coordinator.send(CloseTorrent(info_hash, delete_files=False))
    coordinator.send(
        CloseTorrent(info_hash, delete_files=False)
    )  # closing a closed torrent is not an error
    answers = [type(coordinator.recv()).__name__ for _ in range(5)]
    assert answers == [
        "TorrentOpened",
        "TorrentClosed",
        "TorrentOpened",
        "TorrentClosed",
        "TorrentClosed",
    ]
    assert agent.log().count("closed:") == 2


def test_corrupt_piece_rejected_and_nothing_written(
    agent: AgentProcess, coordinator: FakeCoordinator, peer: Any, tmp_path: Path
) -> None:
    torrent, save = small_torrent(), tmp_path / "downloads"
    info_hash = torrent.info_hash
    open_torrent(coordinator, torrent, save)
    client = peer()
    others = [p for p in range(torrent.num_pieces) if p != 1]
    assert store_all(coordinator, torrent, [client], others) == set(others)

    bad = bytearray(torrent.piece(1))
    bad[100] ^= 0xFF
    client.store(info_hash, 1, bytes(bad), ["pa1/7", "pa2/3"])
    rejected = coordinator.expect(PieceRejected)
    assert rejected == PieceRejected(info_hash, 1, ("pa1/7", "pa2/3"))
    start, end = 4096, 8192
    assert disk_bytes(torrent, save)[start:end] == bytes(end - start)  # piece 1: still a hole
    reply, _ = client.read(3, info_hash, 1, 0, 100)
    assert reply == ReadFailed(3, "piece_not_verified", "piece 1 is not verified")
    assert "piece 1 rejected" in agent.log()

    client.store(info_hash, 1, torrent.piece(1), ["pa3/1"])
    assert coordinator.expect(PieceVerified) == PieceVerified(info_hash, 1)
    assert disk_bytes(torrent, save) == torrent.content


def test_bad_requests_are_dropped_and_the_agent_goes_on(
    agent: AgentProcess, coordinator: FakeCoordinator, peer: Any, tmp_path: Path
) -> None:
    torrent = small_torrent()
    info_hash = torrent.info_hash
    open_torrent(coordinator, torrent, tmp_path / "downloads")
    client = peer()
    client.store(info_hash, 0, torrent.piece(0)[:-1], ["pa1/1"])  # one byte short
    client.store(info_hash, 0, torrent.piece(0) + b"!", ["pa1/1"])  # one byte long
    client.store(InfoHash(b"\x01" * 20), 0, torrent.piece(0), ["pa1/1"])  # unknown torrent
    client.store(info_hash, torrent.num_pieces, b"\0" * 16, ["pa1/1"])  # past the last piece
    client.sock.send_multipart([b"\x93garbage"])  # not a bus message at all
    client.store(info_hash, 0, torrent.piece(0), ["pa1/2"])
    assert coordinator.expect(PieceVerified) == PieceVerified(info_hash, 0)

    # A verified piece sent again is ignored, even corrupt: no hash, no write, no event.
    client.store(info_hash, 0, bytes(len(torrent.piece(0))), ["pa1/3"])
    client.store(info_hash, 0, torrent.piece(0), ["pa1/4"])
    client.store(info_hash, 1, torrent.piece(1), ["pa1/5"])
    assert coordinator.expect(PieceVerified) == PieceVerified(info_hash, 1)
    coordinator.expect_none(PieceVerified, within=0.3)
    assert not any(isinstance(m, PieceRejected) for m in coordinator.backlog)
    log = agent.log()
    for reason in ("bad_piece_length", "unknown_torrent", "piece_out_of_range"):
        assert reason in log
    assert agent.proc.poll() is None


def test_open_errors_are_reported(
    agent: AgentProcess, coordinator: FakeCoordinator, tmp_path: Path
) -> None:
    torrent, save = small_torrent(), str(tmp_path / "downloads")
    wrong = InfoHash(b"\x02" * 20)
    coordinator.send(OpenTorrent(wrong, torrent.raw_info, save))
    failed = coordinator.expect(StorageFailed)
    assert failed.info_hash == wrong and "hashes to" in failed.message

    hostile = encode(
        {
            b"files": [{b"length": 5, b"path": [b"..", b"escape"]}],
            b"name": b"evil",
            b"piece length": 16384,
            b"pieces": bytes(20),
        }
    )
    hostile_hash = InfoHash(hashlib.sha1(hostile).digest())
    coordinator.send(OpenTorrent(hostile_hash, hostile, save))
    failed = coordinator.expect(StorageFailed)
    assert failed.info_hash == hostile_hash and "path_traversal" not in failed.message
    assert "escape" in failed.message or ".." in failed.message, failed.message
    assert not (tmp_path / "escape").exists()

    assert open_torrent(coordinator, torrent, Path(save)).have == bytes(1)


def test_disk_error_stops_the_torrent_until_it_is_reopened(
    start_agent: Any, coordinator: FakeCoordinator, zmq_context: zmq.Context[Any], short_dir: Path
) -> None:
    """Files over 1 MiB fail with EFBIG (RLIMIT_FSIZE), as a full disk fails with ENOSPC."""
    agent: AgentProcess = start_agent(file_size_limit=1 << 20)
    coordinator.welcome()
    rng = random.Random(5)
    torrent = torrent_from_files(
        "big",
        [("small.bin", rng.randbytes(100_000)), ("huge.bin", rng.randbytes(1_100_000))],
        32768,
    )
    info_hash, save = torrent.info_hash, short_dir / "downloads"
    open_torrent(coordinator, torrent, save)
    client = PeerClient(zmq_context, f"ipc://{short_dir}/data", "pa1")
    assert isinstance(client.hello(), Welcome)
    assert store_all(coordinator, torrent, [client], [0, 1]) == {0, 1}

    client.store(info_hash, 10, torrent.piece(10), ["pa1/1"])  # inside huge.bin
    failed = coordinator.expect(StorageFailed)
    assert (failed.info_hash, failed.file, failed.errno_name) == (
        info_hash,
        "big/huge.bin",
        "EFBIG",
    )
    client.store(info_hash, 2, torrent.piece(2), ["pa1/2"])  # refused: the torrent is stopped
    coordinator.expect_none(PieceVerified, within=0.3)
    assert "torrent_failed" in agent.log()
    reply, data = client.read(1, info_hash, 1, 0, 64)  # verified pieces are still served
    assert isinstance(reply, BlockRead) and data == torrent.piece(1)[:64]

    reopened = open_torrent(coordinator, torrent, save)  # the recheck finds pieces 0 and 1
    assert reopened.have[0] == 0b1100_0000
    client.store(info_hash, 2, torrent.piece(2), ["pa1/3"])
    assert coordinator.expect(PieceVerified) == PieceVerified(info_hash, 2)


# --- stopping -----------------------------------------------------------------------------------


def test_shutdown_flushes_and_exits_0(
    agent: AgentProcess, coordinator: FakeCoordinator, peer: Any, tmp_path: Path
) -> None:
    torrent, save = small_torrent(), tmp_path / "downloads"
    open_torrent(coordinator, torrent, save)
    assert store_all(coordinator, torrent, [peer()], [0, 1]) == {0, 1}
    coordinator.send(Shutdown("test"))
    started = time.monotonic()
    assert agent.wait(STOP_BOUND) == 0
    assert time.monotonic() - started < STOP_BOUND
    assert coordinator.expect(Goodbye).reason == "stopping"
    assert "closed (stopping)" in agent.log()
    assert disk_bytes(torrent, save)[:8192] == torrent.content[:8192]


_PARENT = """
import os, subprocess, sys, time
with open(sys.argv[1], "wb") as log:
    agent = subprocess.Popen(sys.argv[2:] + ["--parent-pid", str(os.getpid())], stderr=log)
print(agent.pid, flush=True)
time.sleep(60)
"""


def _gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_agent_stops_when_its_parent_dies(coordinator: FakeCoordinator, short_dir: Path) -> None:
    argv = [sys.executable, "-m", "torviz.services.storage_agent", "--bus", coordinator.endpoint]
    argv += ["--data", f"ipc://{short_dir}/data", "--agent-id", "sa-orphan"]
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, str(short_dir / "orphan.stderr"), *argv],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    agent_pid = 0
    try:
        assert parent.stdout is not None
        ready, _, _ = select.select([parent.stdout], [], [], 10.0)
        assert ready, "the parent never reported its agent"
        agent_pid = int(parent.stdout.readline())
        assert coordinator.welcome().agent_id == "sa-orphan"  # the agent runs
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + STOP_BOUND
        while not _gone(agent_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(agent_pid), (short_dir / "orphan.stderr").read_text()
        assert "parent process gone" in (short_dir / "orphan.stderr").read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=10)
        if parent.stdout is not None:
            parent.stdout.close()
        if agent_pid and not _gone(agent_pid):
            os.kill(agent_pid, signal.SIGKILL)
