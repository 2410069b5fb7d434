"""Seeding end to end: the real agent serves pieces it reads from the REAL storage agent.

The test plays the coordinator (``Counterparts``: it opens the torrent in the storage agent
with ``OpenTorrent``, attaches it to the peer agent and runs the choker); leechers are
libtorrent in its own process (``swarm`` fixture) and raw peers that break the rules.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from shared.bitfield import Bitfield
from shared.bus import (
    Hello,
    Message,
    OpenTorrent,
    PeerConnected,
    PeerDisconnected,
    PeerInterest,
    SetChoke,
    TorrentOpened,
    TransferStats,
)
from shared.types import PeerAddress
from shared.wire import messages as wire
from tests.support import Swarm, compare_content, make_content, multi_file_layout
from tests.support.swarm import next_loopback_address

from .conftest import attach_message, attached, listen_address
from .harness import Counterparts
from .seeding import DiskTorrent, RawPeer, StorageProcess, disk_torrent, wait_finished

PIECE = 64 * 1024
BLOCK = 16 * 1024
REQQ = 16  # our reqq in these tests: small, so that floods are cheap to send


@pytest.fixture
def storage(counterparts: Counterparts, short_dir: Path) -> Iterator[StorageProcess]:
    """The real storage agent, welcomed on the test's bus."""
    process = StorageProcess(counterparts.bus_endpoint, f"ipc://{short_dir}/sdata", short_dir)
    try:
        counterparts.expect(Hello, lambda m: m.service == "storage_agent", timeout=20.0)
        yield process
    finally:
        process.stop()
        print("--- storage stderr (tail) ---", file=sys.stderr)
        print("\n".join(process.stderr().splitlines()[-60:]), file=sys.stderr)


@pytest.fixture
def torrent(tmp_path: Path) -> DiskTorrent:
    """A multi-file torrent (pieces cross file boundaries), complete on disk."""
    content = make_content(tmp_path / "seed", multi_file_layout(), seed=21)
    return disk_torrent(content, PIECE, tmp_path / "multi.torrent")


def seed(
    parts: Counterparts,
    start_agent,
    storage: StorageProcess,
    torrent: DiskTorrent,
    have: Bitfield | None = None,
    **settings: object,
) -> PeerAddress:
    """Open the torrent in the storage agent, start the peer agent, attach; returns where the
    agent listens. The fake coordinator's choker unchokes whoever is interested."""
    parts.send_storage(OpenTorrent(torrent.info_hash, torrent.raw_info, str(torrent.content.root)))
    opened = parts.expect(TorrentOpened, timeout=30.0)
    assert opened.have == Bitfield.full(torrent.num_pieces).to_bytes()
    start_agent(**settings)
    address = listen_address(parts)
    message = replace(
        attach_message(parts, torrent.info_hash, PIECE, torrent.total_length),
        have=(have or Bitfield.full(torrent.num_pieces)).to_bytes(),
        storage_endpoint=storage.data_endpoint,
    )
    attached(parts, message)

    def choker(message: Message) -> None:
        if isinstance(message, PeerInterest):
            parts.send(SetChoke(message.info_hash, message.peer, not message.interested))

    parts.on_message = choker
    return address


@pytest.mark.interop
def test_a_libtorrent_leecher_downloads_a_multi_file_torrent_from_us(
    counterparts: Counterparts, start_agent, storage, torrent: DiskTorrent, swarm: Swarm, tmp_path
) -> None:
    address = seed(counterparts, start_agent, storage, torrent, piece_cache_bytes=4 * PIECE)
    counterparts.on_message = None  # this test unchokes by hand
    leecher = swarm.leecher(torrent.path, tmp_path / "leech", connect_peers=[address])
    connected = counterparts.expect(PeerConnected, timeout=20.0)
    assert connected.incoming and "libtorrent" in connected.client
    assert connected.fast_extension and connected.extension_protocol
    interest = counterparts.expect(PeerInterest, lambda m: m.peer == connected.peer)
    assert interest.interested
    counterparts.send(SetChoke(torrent.info_hash, connected.peer, False))
    leecher.wait_finished(timeout=60.0)
    assert compare_content(torrent.content.root, tmp_path / "leech", torrent.content) == []
    stats = counterparts.expect(
        TransferStats,
        lambda m: any(r.uploaded >= torrent.total_length for r in m.peers),
        timeout=5.0,
    )
    row = next(r for r in stats.peers if r.peer == connected.peer)
    assert not row.am_choking and row.downloaded == 0


@pytest.mark.interop
def test_hostile_peers_get_rejects_or_are_dropped_while_a_good_leecher_completes(
    counterparts: Counterparts, start_agent, storage, torrent: DiskTorrent, swarm: Swarm, tmp_path
) -> None:
    address = seed(counterparts, start_agent, storage, torrent, max_peer_requests=REQQ)
    leecher = swarm.leecher(torrent.path, tmp_path / "leech", connect_peers=[address])

    def raw(fast: bool = True) -> RawPeer:
        peer = RawPeer(
            counterparts, address, torrent.info_hash, source=next_loopback_address(), fast=fast
        )
        peer.send(wire.Interested())
        peer.wait_for("unchoke", lambda: wire.Unchoke() in peer.received)
        return peer

    last = torrent.num_pieces - 1
    # A fast peer asking for blocks that do not exist gets a reject for each, and is served.
    confused = raw()
    nonsense = [
        wire.Request(torrent.num_pieces, 0, BLOCK),  # no such piece
        wire.Request(1, PIECE - 100, BLOCK),  # crosses the piece end
        wire.Request(1, 0, 2 * BLOCK),  # longer than 16 KiB
        wire.Request(last, 0, PIECE),  # past the short last piece
    ]
    confused.send(*nonsense, wire.Request(2, BLOCK, BLOCK))
    confused.wait_for("a block", lambda: bool(confused.of(wire.Piece)))
    rejects = confused.of(wire.RejectRequest)
    assert rejects == [wire.RejectRequest(r.piece, r.offset, r.length) for r in nonsense]
    assert confused.of(wire.Piece) == [wire.Piece(2, BLOCK, torrent.piece(2)[BLOCK : 2 * BLOCK])]
    # A fast peer flooding far past our reqq: rejects, then dropped.
    flooder = raw()
    flooder.send(*(wire.Request(p, o, 1024) for p in range(8) for o in range(0, PIECE, 1024)))
    flooder.wait_closed()
    assert len(flooder.of(wire.RejectRequest)) >= 100
    # Peers without the fast extension cannot be told no: dropped.
    plain_flooder = raw(fast=False)
    plain_flooder.send(*(wire.Request(3, o, 1024) for o in range(0, (REQQ + 8) * 1024, 1024)))
    plain_flooder.wait_closed()
    plain_confused = raw(fast=False)
    plain_confused.send(wire.Request(1, 0, 2 * BLOCK))
    plain_confused.wait_closed()
    reasons = {"too_many_bad_requests", "request_flood", "bad_request"}
    while reasons:  # the good leecher may come and go meanwhile: match on the reasons
        gone = counterparts.expect(PeerDisconnected, lambda m: m.reason in reasons)
        reasons.remove(gone.reason)
    wait_finished(counterparts, leecher)
    assert compare_content(torrent.content.root, tmp_path / "leech", torrent.content) == []
    assert not confused.closed


def test_a_piece_we_lack_is_rejected_and_the_others_are_read_from_storage(
    counterparts: Counterparts, start_agent, storage, torrent: DiskTorrent
) -> None:
    have = Bitfield.full(torrent.num_pieces)
    have.discard(3)
    address = seed(counterparts, start_agent, storage, torrent, have=have)
    peer = RawPeer(counterparts, address, torrent.info_hash, source=next_loopback_address())
    peer.send(wire.HaveNone(), wire.Interested())
    peer.wait_for("unchoke", lambda: wire.Unchoke() in peer.received)
    last = torrent.num_pieces - 1
    wanted = [wire.Request(p, o, BLOCK) for p in (0, 4) for o in (0, BLOCK)]
    wanted.append(wire.Request(last, 0, len(torrent.piece(last))))  # the short last piece
    peer.send(wire.Request(3, 0, BLOCK), *wanted)
    peer.wait_for("every block", lambda: len(peer.of(wire.Piece)) == len(wanted))
    assert peer.of(wire.RejectRequest) == [wire.RejectRequest(3, 0, BLOCK)]
    assert peer.of(wire.Piece) == [
        wire.Piece(r.piece, r.offset, torrent.piece(r.piece)[r.offset : r.offset + r.length])
        for r in wanted
    ]
    served = sum(r.length for r in wanted)
    stats = counterparts.expect(TransferStats, lambda m: any(r.uploaded == served for r in m.peers))
    assert stats.peers[0].upload_rate > 0
