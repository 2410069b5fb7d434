"""The smart ban: a piece that fails with blocks from several peers blames only the peer that
sent the bad block, once a good copy is verified. The ledger alone, then the real storage agent
process, then its verdicts fed to the coordinator's rules."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.services.coordinator.test_core import PA1, PA2, STORAGE, full_core, make_torrent
from tests.services.coordinator.test_core import connect as connect_peer
from torviz.services.coordinator.core import Coordinator
from torviz.services.storage_agent.core.smart_ban import (
    BlockLedger,
    block_digests,
    senders_of_blocks,
)
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    BLOCK_LENGTH,
    AddTorrent,
    BanPeers,
    CorruptBlocksTraced,
    DisconnectPeer,
    DisconnectReason,
    Message,
    PeerDisconnected,
    PieceRejected,
    PieceStored,
    PieceVerified,
    StorePiece,
    StoreRefusal,
    TorrentOpened,
)
from torviz.shared.types import InfoHash

from .harness import AgentProcess, FakeCoordinator, PeerClient, open_torrent, torrent_from_files

IH = InfoHash(b"\x07" * 20)


def test_the_sender_of_the_differing_block_is_the_liar() -> None:
    good = random.Random(1).randbytes(4 * BLOCK_LENGTH)
    bad = bytearray(good)
    bad[2 * BLOCK_LENGTH + 5] ^= 1
    ledger = BlockLedger()
    senders = ("honest", "honest", "liar", "other")
    ledger.failed(IH, 3, block_digests(bytes(bad), BLOCK_LENGTH), senders)
    assert ledger.wants(IH, 3) and not ledger.wants(IH, 4)
    verdict = ledger.verified(IH, 3, block_digests(good, BLOCK_LENGTH))
    assert verdict.liars == ("liar",) and verdict.cleared == ("honest", "other")
    assert not ledger.wants(IH, 3) and len(ledger) == 0


def test_the_ledger_is_bounded_oldest_first() -> None:
    ledger = BlockLedger(max_pieces=2)
    for piece in range(3):
        ledger.failed(IH, piece, (b"x",), ("p",))
    assert [ledger.wants(IH, piece) for piece in range(3)] == [False, True, True]


def test_block_senders_must_fit_the_piece() -> None:
    assert senders_of_blocks(("a",), (), 3) == ("a", "a", "a")
    assert senders_of_blocks(("a", "b"), (0, 1, 1), 3) == ("a", "b", "b")
    assert senders_of_blocks(("a", "b"), (0, 1), 3) is None  # one entry short
    assert senders_of_blocks(("a", "b"), (0, 2, 1), 3) is None  # no third contributor
    assert senders_of_blocks((), (), 3) is None


def _pieces_from_two(
    client: PeerClient, info_hash: InfoHash, piece: int, data: bytes, liar_block: int
) -> None:
    """A piece whose blocks alternate between an honest sender and a liar, the liar's block
    ``liar_block`` corrupted."""
    blocks = -(-len(data) // BLOCK_LENGTH)
    bad = bytearray(data)
    bad[liar_block * BLOCK_LENGTH] ^= 0xFF
    senders = tuple(1 if index % 2 else 0 for index in range(blocks))
    assert senders[liar_block] == 1
    client.send(StorePiece(info_hash, piece, ("pa1/honest", "pa1/liar"), senders), bytes(bad))


def test_the_storage_agent_traces_the_liar_and_clears_the_honest(
    agent: AgentProcess, coordinator: FakeCoordinator, peer: Any, tmp_path: Path
) -> None:
    torrent = torrent_from_files("traced", [("a.bin", random.Random(5).randbytes(300_000))], 65536)
    info_hash = torrent.info_hash
    open_torrent(coordinator, torrent, tmp_path / "downloads")
    client = peer()
    _pieces_from_two(client, info_hash, 2, torrent.piece(2), liar_block=3)
    rejected = coordinator.expect(PieceRejected)
    assert rejected == PieceRejected(info_hash, 2, ("pa1/honest", "pa1/liar"))
    assert client.recv() == PieceStored(info_hash, 2, StoreRefusal.NONE)
    client.store(info_hash, 2, torrent.piece(2), ["pa1/other"])  # the refetch, one sender
    assert coordinator.expect(PieceVerified) == PieceVerified(info_hash, 2)
    traced = coordinator.expect(CorruptBlocksTraced)
    assert traced == CorruptBlocksTraced(info_hash, 2, ("pa1/liar",), ("pa1/honest",))


def test_block_senders_that_do_not_fit_are_refused(
    agent: AgentProcess, coordinator: FakeCoordinator, peer: Any, tmp_path: Path
) -> None:
    torrent = torrent_from_files("refused", [("a.bin", random.Random(6).randbytes(100_000))], 65536)
    open_torrent(coordinator, torrent, tmp_path / "downloads")
    client = peer()
    client.send(StorePiece(torrent.info_hash, 0, ("pa1/a",), (0, 0, 0)), torrent.piece(0))
    assert client.recv() == PieceStored(torrent.info_hash, 0, StoreRefusal.BAD_BLOCK_SENDERS)


def _bans(core: Coordinator) -> list[Message]:
    return [m for _, m in core.take_outbox() if isinstance(m, BanPeers | DisconnectPeer)]


def test_an_honest_peer_sharing_failed_pieces_with_a_liar_is_not_banned(
    agent: AgentProcess, coordinator: FakeCoordinator, peer: Any, tmp_path: Path
) -> None:
    """Three pieces fail with blocks from both; the storage agent's first verdict, fed to the
    coordinator, bans the liar (proven: its block differs from the verified one) and leaves the
    honest peer connected, with no corrupt piece counted against it."""
    torrent = torrent_from_files("shared", [("a.bin", random.Random(7).randbytes(400_000))], 65536)
    info_hash = torrent.info_hash
    open_torrent(coordinator, torrent, tmp_path / "downloads")
    client = peer()

    core = full_core()
    core.add_torrent(AddTorrent(b"d4:info" + torrent.raw_info + b"e", ""), now=0.0)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(torrent.num_pieces).to_bytes()), 0.0)
    everyone = Bitfield.full(torrent.num_pieces)
    connect_peer(core, info_hash, PA1, "pa1/honest", 2, everyone)
    connect_peer(core, info_hash, PA1, "pa1/liar", 3, everyone)
    connect_peer(core, info_hash, PA2, "pa2/other", 4, everyone)
    core.take_outbox()

    for piece in range(3):
        _pieces_from_two(client, info_hash, piece, torrent.piece(piece), liar_block=1)
        core.handle(STORAGE, coordinator.expect(PieceRejected), 1.0)
        assert client.recv() == PieceStored(info_hash, piece, StoreRefusal.NONE)
    assert _bans(core) == []  # nobody is proven guilty by a piece of many senders
    for piece in range(3):
        client.store(info_hash, piece, torrent.piece(piece), ["pa2/other"])
        core.handle(STORAGE, coordinator.expect(PieceVerified), 2.0)
        core.handle(STORAGE, coordinator.expect(CorruptBlocksTraced), 2.0)
    assert _bans(core) == [
        BanPeers(info_hash, ("127.0.0.3",)),
        BanPeers(info_hash, ("127.0.0.3",)),
        DisconnectPeer(info_hash, "pa1/liar", DisconnectReason.SENT_CORRUPT_DATA),
    ]
    peers = core.torrents[info_hash].swarm.peers
    assert "pa1/honest" in peers and "pa1/liar" not in peers
    assert peers["pa1/honest"].hash_failures == 0
    assert core.torrents[info_hash].swarm.banned_hosts == {"127.0.0.3"}


def test_a_liar_proven_after_it_left_is_banned_by_address() -> None:
    core = full_core()
    metainfo, info_hash = make_torrent()
    core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(6).to_bytes()), 0.0)
    connect_peer(core, info_hash, PA1, "pa1/liar", 3, Bitfield.full(6))
    connect_peer(core, info_hash, PA1, "pa1/honest", 2, Bitfield.full(6))
    core.handle(STORAGE, PieceRejected(info_hash, 0, ("pa1/liar", "pa1/honest")), 1.0)
    core.handle(
        PA1, PeerDisconnected(info_hash, "pa1/liar", DisconnectReason.PEER_CLOSED, "x"), 1.0
    )
    core.take_outbox()
    core.handle(STORAGE, PieceVerified(info_hash, 0), 2.0)
    core.handle(STORAGE, CorruptBlocksTraced(info_hash, 0, ("pa1/liar",), ("pa1/honest",)), 2.0)
    assert _bans(core) == [BanPeers(info_hash, ("127.0.0.3",))] * 2  # both peer agents
    assert core.torrents[info_hash].swarm.banned_hosts == {"127.0.0.3"}
    assert "pa1/honest" in core.torrents[info_hash].swarm.peers
