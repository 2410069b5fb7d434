"""Peer exchange (BEP 11) in the coordinator, driven by fake agents: what each ``ut_pex``
connection is told and when, what a peer's message may add to the candidates, the attempts
per PeX address, and no PeX at all for a private torrent or with ``pex = false``."""

from __future__ import annotations

import hashlib
from typing import Any

from torviz.services.coordinator.core import Coordinator
from torviz.shared.bencode import encode
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    AddTorrent,
    AttachTorrent,
    ConnectPeer,
    DisconnectReason,
    PeerBitfield,
    PeerConnected,
    PeerConnectFailed,
    PeerDisconnected,
    PeerExtensions,
    PeerSource,
    PexPeer,
    PexReceived,
    SendPex,
    TorrentAdded,
    TorrentOpened,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire.pex import PexFlags

from .test_core import PA1, STORAGE, addr, full_core, sent

PIECE = 32768
NUM_PIECES = 4
REACHABLE, SEED = int(PexFlags.REACHABLE), int(PexFlags.SEED)


def open_torrent(core: Coordinator, *, private: bool = False) -> InfoHash:
    pieces = b"".join(hashlib.sha1(bytes([i])).digest() for i in range(NUM_PIECES))
    info: dict[bytes, Any] = {
        b"name": b"pex.bin",
        b"length": PIECE * NUM_PIECES,
        b"piece length": PIECE,
        b"pieces": pieces,
    }
    if private:
        info[b"private"] = 1
    reply = core.add_torrent(AddTorrent(encode({b"info": info}), ""), now=0.0)
    assert isinstance(reply, TorrentAdded)
    core.handle(STORAGE, TorrentOpened(reply.info_hash, Bitfield(NUM_PIECES).to_bytes()), 0.0)
    return reply.info_hash


def connect(
    core: Coordinator, info_hash: InfoHash, key: str, n: int, *, incoming: bool = False
) -> None:
    core.handle(
        PA1,
        PeerConnected(info_hash, key, addr(n), PeerId(bytes([n]) * 20), "lt", incoming, True, True),
        0.0,
    )


def speaks_pex(core: Coordinator, info_hash: InfoHash, key: str, port: int = 0) -> None:
    core.handle(PA1, PeerExtensions(info_hash, key, "lt 2.1", port, False, True, 0), 0.0)


def many(first: int, count: int) -> tuple[PexPeer, ...]:
    return tuple(
        PexPeer(PeerAddress(f"10.0.{i // 250}.{i % 250 + 1}", 6881), 0)
        for i in range(first, first + count)
    )


def test_a_ut_pex_connection_is_told_of_the_others_at_most_once_a_minute() -> None:
    core = full_core(max_peers_per_torrent=200)
    info_hash = open_torrent(core)
    connect(core, info_hash, "pa1/a", 20)
    connect(core, info_hash, "pa1/b", 21)
    full = Bitfield(NUM_PIECES, range(NUM_PIECES)).to_bytes()
    core.handle(PA1, PeerBitfield(info_hash, "pa1/b", full), 0.0)
    connect(core, info_hash, "pa1/c", 22, incoming=True)  # no listen port said: not passed on
    speaks_pex(core, info_hash, "pa1/a")
    core.take_outbox()
    core.tick(10.0)
    [(to, message)] = sent(core, SendPex)
    assert (to, message.peer) == (PA1, "pa1/a")
    assert message.added == (PexPeer(addr(21), REACHABLE | SEED),) and message.dropped == ()
    speaks_pex(core, info_hash, "pa1/c", port=7000)
    core.tick(30.0)
    [(_, first)] = sent(core, SendPex)  # to c, its first; a waits: a minute has not passed
    assert first.peer == "pa1/c"
    assert first.added == (PexPeer(addr(20), REACHABLE), PexPeer(addr(21), REACHABLE | SEED))
    core.handle(PA1, PeerDisconnected(info_hash, "pa1/b", DisconnectReason.PEER_CLOSED, ""), 31)
    core.tick(71.0)
    by_peer = {m.peer: m for _, m in sent(core, SendPex)}
    assert by_peer["pa1/a"].added == (PexPeer(PeerAddress("127.0.0.22", 7000), REACHABLE),)
    assert by_peer["pa1/a"].dropped == (addr(21),)
    assert set(by_peer) == {"pa1/a"}


def test_a_peer_s_pex_message_adds_at_most_fifty_candidates_dialled_as_pex() -> None:
    core = full_core(max_peers_per_torrent=200)
    info_hash = open_torrent(core)
    connect(core, info_hash, "pa1/a", 20)
    core.take_outbox()
    core.handle(PA1, PexReceived(info_hash, "pa1/a", many(0, 80), ()), 5.0)
    dials = [m.address for _, m in sent(core, ConnectPeer)]
    assert len(dials) == 50
    assert all(address.host.startswith("10.0.") for address in dials)
    swarm = core.torrents[info_hash].swarm
    assert all(swarm.sources[address] is PeerSource.PEX for address in dials)
    core.handle(PA1, PexReceived(info_hash, "pa1/a", many(100, 20), ()), 10.0)
    assert not sent(core, ConnectPeer)  # too soon after the last message from that peer
    core.handle(
        PA1,
        PeerConnected(info_hash, "pa1/p", dials[0], PeerId(b"p" * 20), "lt", False, True, True),
        11.0,
    )
    [row] = [p for p in core.status(11.0).torrents[0].peer_list if p.address == dials[0]]
    assert row.source is PeerSource.PEX


def test_an_address_learnt_through_pex_is_dialled_three_times_at_most() -> None:
    core = full_core()
    info_hash = open_torrent(core)
    connect(core, info_hash, "pa1/a", 20)
    core.take_outbox()
    target = PeerAddress("10.9.9.9", 6881)
    core.handle(PA1, PexReceived(info_hash, "pa1/a", (PexPeer(target, 0),), ()), 1.0)
    dials = 0
    for step in range(400):  # 2000 s of ticks: the back-off alone would allow seven dials
        now = 2.0 + step * 5
        for _, command in sent(core, ConnectPeer):
            if command.address == target:
                dials += 1
                failed = PeerConnectFailed(
                    info_hash, target, DisconnectReason.CONNECTION_REFUSED, ""
                )
                core.handle(PA1, failed, now)
        core.tick(now)
    assert dials == 3


def test_no_pex_for_a_private_torrent_nor_with_pex_off() -> None:
    for core, private in ((full_core(), True), (full_core(pex=False), False)):
        info_hash = open_torrent(core, private=private)
        attaches = sent(core, AttachTorrent)
        assert attaches and not any(m.pex for _, m in attaches)
        connect(core, info_hash, "pa1/a", 20)
        connect(core, info_hash, "pa1/b", 21)
        speaks_pex(core, info_hash, "pa1/a")
        core.take_outbox()
        core.handle(PA1, PexReceived(info_hash, "pa1/a", many(0, 5), ()), 5.0)
        core.tick(10.0)
        out = core.take_outbox()
        assert not [m for _, m in out if isinstance(m, SendPex | ConnectPeer)]
        assert not core.torrents[info_hash].swarm.candidates
