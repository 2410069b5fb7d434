"""Seeding end to end: the real agent serves pieces it reads from the REAL storage agent.

The test plays the coordinator (``Counterparts``: it opens the torrent in the storage agent
with ``OpenTorrent``, attaches it to the peer agent and runs the choker); leechers are
libtorrent in its own process (``swarm`` fixture) and raw peers that break the rules.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from testing import Swarm, compare_content, make_content, multi_file_layout
from testing.peer_agent import Counterparts
from testing.swarm import next_loopback_address
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
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
from torviz.shared.types import PeerAddress
from torviz.shared.wire import messages as wire

from .conftest import attach_message, attached, listen_address
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

    def raw(fast: bool = True, *, told: bool = False) -> RawPeer:
        peer = RawPeer(
            counterparts, address, torrent.info_hash, source=next_loopback_address(), fast=fast
        )
        if told:  # its extension handshake: it speaks BEP 10, so it got ours with our reqq
            peer.send(wire.Extended(0, b"de"))
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
    flood = [wire.Request(p, o, 1024) for p in range(8) for o in range(0, PIECE, 1024)]
    # A fast peer told our reqq that floods far past it: rejects, then dropped.
    flooder = raw(told=True)
    flooder.send(*flood)
    flooder.wait_closed()
    assert len(flooder.of(wire.RejectRequest)) >= 100
    # One that was never told: what does not fit is rejected, the rest served; it stays.
    untold = raw()
    untold.send(*flood)
    untold.wait_for("every request answered", lambda: len(untold.received) >= 3 + len(flood))
    assert len(untold.of(wire.Piece)) >= REQQ
    assert len(untold.of(wire.Piece)) + len(untold.of(wire.RejectRequest)) == len(flood)
    # Peers without the fast extension cannot be told no: a flood is served as far as our
    # reqq goes and the rest ignored (ctorrent); a malformed request drops them.
    plain_flooder = raw(fast=False)
    plain_flooder.send(*(wire.Request(3, o, 1024) for o in range(0, (REQQ + 8) * 1024, 1024)))
    plain_flooder.wait_for("blocks", lambda: len(plain_flooder.of(wire.Piece)) >= REQQ)
    plain_confused = raw(fast=False)
    plain_confused.send(wire.Request(1, 0, 2 * BLOCK))
    plain_confused.wait_closed()
    reasons = {"request_flood", "bad_request"}
    while reasons:  # the good leecher may come and go meanwhile: match on the reasons
        gone = counterparts.expect(PeerDisconnected, lambda m: m.reason in reasons)
        reasons.remove(gone.reason)
    wait_finished(counterparts, leecher)
    assert compare_content(torrent.content.root, tmp_path / "leech", torrent.content) == []
    plain_flooder.send(wire.Request(3, 0, 1024))  # still connected, and served again
    plain_flooder.wait_for("more blocks", lambda: len(plain_flooder.of(wire.Piece)) > REQQ)
    assert not (confused.closed or untold.closed or plain_flooder.closed)


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


def blocks_of(peer: RawPeer) -> list[wire.Piece]:
    return [m for m in peer.received if isinstance(m, wire.Piece)]


def test_a_ctorrent_style_flood_of_2000_requests_is_served_not_dropped(
    counterparts: Counterparts, start_agent, storage, torrent: DiskTorrent
) -> None:
    """No fast extension, no BEP 10 (so it never saw our reqq of 500), and 2,000 requests at
    once, as ctorrent sends for a 16 MiB piece: what does not fit is ignored, and what it asks
    again (on its timeout) is served; the connection stays."""
    address = seed(counterparts, start_agent, storage, torrent)
    peer = RawPeer(
        counterparts,
        address,
        torrent.info_hash,
        source=next_loopback_address(),
        fast=False,
        extensions=False,
    )
    peer.send(wire.Interested())
    peer.wait_for("unchoke", lambda: wire.Unchoke() in peer.received)
    wanted = [
        wire.Request(p, o, 1024) for p in range(torrent.num_pieces) for o in range(0, PIECE, 1024)
    ][:2000]
    assert len(wanted) == 2000
    missing = wanted
    for _ in range(8):  # each round serves up to our reqq: four rounds at least
        goal = len(peer.of(wire.Piece)) + min(500, len(missing))
        peer.send(*missing)
        peer.wait_for("blocks", lambda goal=goal: len(peer.of(wire.Piece)) >= goal)
        quiet = time.monotonic() + 0.3  # let whatever else was served arrive
        peer.wait_for("the rest", lambda quiet=quiet: time.monotonic() > quiet)
        served = {(m.piece, m.offset) for m in blocks_of(peer)}
        missing = [r for r in wanted if (r.piece, r.offset) not in served]
        if not missing:
            break
    assert not missing and not peer.closed
    blocks = {(m.piece, m.offset): m.data for m in blocks_of(peer)}
    assert all(
        blocks[r.piece, r.offset] == torrent.piece(r.piece)[r.offset : r.offset + 1024]
        for r in wanted
    )
    assert not counterparts.take_all(PeerDisconnected)
