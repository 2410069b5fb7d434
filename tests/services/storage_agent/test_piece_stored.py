"""``PieceStored``: the real storage agent answers every ``StorePiece`` to the peer agent that
sent it, once the piece is dealt with (see ``harness.py`` for the fake counterparts)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import zmq

from torviz.shared.bus import (
    PieceRejected,
    PieceStored,
    PieceVerified,
    Rejected,
    StorageFailed,
    StorePiece,
    StoreRefusal,
)
from torviz.shared.types import InfoHash

from .harness import (
    AgentProcess,
    FakeCoordinator,
    PeerClient,
    Torrent,
    open_torrent,
    recv_message,
    torrent_from_files,
)


def small_torrent() -> Torrent:
    """Three files, pieces of 4 KiB crossing the boundaries."""
    rng = random.Random(11)
    return torrent_from_files(
        "stored",
        [("a.bin", rng.randbytes(3000)), ("b/c.bin", rng.randbytes(7001)), ("d.bin", b"xy")],
        4096,
    )


def answer(client: PeerClient) -> PieceStored:
    """The next message on the client's data link, which must be a ``PieceStored``."""
    message = client.recv()
    assert isinstance(message, PieceStored), message
    return message


def nothing_more(client: PeerClient, within: float = 0.3) -> None:
    assert not client.sock.poll(int(within * 1000)), f"unexpected {client.recv(0.1)}"


def test_each_piece_is_answered_to_its_sender(
    agent: AgentProcess, coordinator: FakeCoordinator, peer: Any, tmp_path: Path
) -> None:
    torrent = small_torrent()
    info_hash = torrent.info_hash
    open_torrent(coordinator, torrent, tmp_path / "downloads")
    first, second = peer(), peer()
    first.store(info_hash, 0, torrent.piece(0), ["pa1/1"])
    bad = bytearray(torrent.piece(1))
    bad[7] ^= 0x55
    second.store(info_hash, 1, bytes(bad), ["pa2/1"])

    assert coordinator.expect(PieceVerified) == PieceVerified(info_hash, 0)
    assert coordinator.expect(PieceRejected) == PieceRejected(info_hash, 1, ("pa2/1",))
    assert answer(first) == PieceStored(info_hash, 0, StoreRefusal.NONE)
    assert answer(second) == PieceStored(
        info_hash, 1, StoreRefusal.NONE
    )  # hashed: dealt with, even if bad
    nothing_more(first)
    nothing_more(second)

    # A piece already verified costs nothing and is dealt with: answered "", not recorded again.
    second.store(info_hash, 0, torrent.piece(0), ["pa2/2"])
    assert answer(second) == PieceStored(info_hash, 0, StoreRefusal.NONE)
    coordinator.expect_none(PieceVerified, within=0.3)


def test_refused_pieces_are_answered_with_the_reason(
    agent: AgentProcess, coordinator: FakeCoordinator, peer: Any, tmp_path: Path
) -> None:
    torrent = small_torrent()
    info_hash = torrent.info_hash
    client = peer()
    client.store(info_hash, 0, torrent.piece(0), ["pa1/1"])  # not opened yet
    assert answer(client) == PieceStored(info_hash, 0, StoreRefusal.UNKNOWN_TORRENT)

    open_torrent(coordinator, torrent, tmp_path / "downloads")
    cases = [
        (0, torrent.piece(0)[:-1], StoreRefusal.BAD_PIECE_LENGTH),
        (torrent.num_pieces, b"\0" * 16, StoreRefusal.PIECE_OUT_OF_RANGE),
    ]
    for piece, data, reason in cases:
        client.store(info_hash, piece, data, ["pa1/1"])
        assert answer(client) == PieceStored(info_hash, piece, reason)
    client.store(InfoHash(b"\x02" * 20), 3, b"\0" * 16, ["pa1/1"])
    assert answer(client) == PieceStored(InfoHash(b"\x02" * 20), 3, StoreRefusal.UNKNOWN_TORRENT)
    coordinator.expect_none(PieceVerified, within=0.3)

    client.store(info_hash, 0, torrent.piece(0), ["pa1/2"])  # a refusal leaves the piece free
    assert answer(client) == PieceStored(info_hash, 0, StoreRefusal.NONE)
    assert coordinator.expect(PieceVerified) == PieceVerified(info_hash, 0)


def test_a_failed_write_is_answered_write_failed(
    start_agent: Any, coordinator: FakeCoordinator, zmq_context: zmq.Context[Any], short_dir: Path
) -> None:
    """Files over 64 KiB fail with EFBIG (RLIMIT_FSIZE), as a full disk fails with ENOSPC."""
    start_agent(file_size_limit=64 * 1024)
    coordinator.welcome()
    torrent = torrent_from_files("big", [("huge.bin", random.Random(3).randbytes(100_000))], 16384)
    open_torrent(coordinator, torrent, short_dir / "downloads")
    client = PeerClient(zmq_context, f"ipc://{short_dir}/data", "pa1")
    client.hello()
    client.store(torrent.info_hash, 5, torrent.piece(5), ["pa1/1"])  # bytes 80 KiB to 96 KiB
    assert coordinator.expect(StorageFailed).errno_name == "EFBIG"
    assert answer(client) == PieceStored(torrent.info_hash, 5, StoreRefusal.WRITE_FAILED)


def test_a_sender_the_agent_does_not_know_is_told_to_say_hello_first(
    agent: AgentProcess,
    coordinator: FakeCoordinator,
    zmq_context: zmq.Context[Any],
    short_dir: Path,
) -> None:
    """What a peer agent hears from a restarted storage agent: it says Hello and sends again."""
    torrent = small_torrent()
    stranger = PeerClient(zmq_context, f"ipc://{short_dir}/data", "pa-new")
    stranger.send(StorePiece(torrent.info_hash, 0, ("pa-new/1",)), torrent.piece(0))
    _, message, _ = recv_message(stranger.sock)
    assert isinstance(message, Rejected) and message.reason == "hello_first"
    stranger.hello()
    stranger.store(torrent.info_hash, 0, torrent.piece(0), ["pa-new/1"])
    assert answer(stranger) == PieceStored(torrent.info_hash, 0, StoreRefusal.UNKNOWN_TORRENT)
