"""Who hears a coordinator message (``core/routing.py``), for magnet torrents above all."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from torviz.services.peer_agent.core.commands import (
    Acquired,
    Assign,
    Disconnect,
    FetchMetadata,
    LearnGeometry,
    OfferPeers,
    Revoke,
    SetChoked,
)
from torviz.services.peer_agent.core.routing import route, upgrade
from torviz.services.peer_agent.core.torrents import Registry
from torviz.shared import bus
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import DisconnectReason
from torviz.shared.types import InfoHash, PeerAddress, PeerId

IH = InfoHash(hashlib.sha1(b"magnet").digest())
OTHER = InfoHash(hashlib.sha1(b"other").digest())
A = PeerAddress("127.0.0.2", 6881)
B = PeerAddress("127.0.0.3", 6881)
PEER_ID = PeerId(b"-TV0100-" + b"x" * 12)
ATTACH = bus.AttachTorrent(
    info_hash=IH,
    piece_length=16384,
    total_length=16384 * 3,
    num_pieces=3,
    peer_id=PEER_ID,
    have=Bitfield(3, [1]).to_bytes(),
    private=False,
    storage_endpoint="ipc:///tmp/data",
    storage_public_key="",
    info=b"d4:name1:ae",
)


def magnet_registry() -> tuple[Registry[str], str, str]:
    """A magnet torrent with two started connections (handles "h1", "h2")."""
    reg: Registry[str] = Registry("pa1")
    reg.attach_magnet(bus.AttachMagnet(IH, PEER_ID))
    keys = []
    for address, handle in ((A, "h1"), (B, "h2")):
        key = reg.reserve(IH, address).key
        reg.bind(key, handle)
        keys.append(key)
    return reg, keys[0], keys[1]


def test_metadata_and_pex_go_to_the_connection_the_key_names() -> None:
    reg, first, second = magnet_registry()
    assert route(reg, bus.RequestMetadata(IH, second, (0, 2))) == [("h2", FetchMetadata((0, 2)))]
    pex = bus.SendPex(IH, first, (bus.PexPeer(B, 0x12),), (PeerAddress("10.0.0.1", 1),))
    assert route(reg, pex) == [("h1", OfferPeers(((B, 0x12),), (PeerAddress("10.0.0.1", 1),)))]
    assert route(reg, bus.SetChoke(IH, first, True)) == [("h1", SetChoked(True))]
    closed = bus.DisconnectPeer(IH, first, DisconnectReason.BAD_METADATA_MESSAGE)
    assert route(reg, closed) == [
        ("h1", Disconnect(DisconnectReason.BAD_METADATA_MESSAGE, "the coordinator closed it"))
    ]


def test_closed_unknown_and_foreign_keys_hear_nothing() -> None:
    reg, first, _ = magnet_registry()
    reg.release(first)
    assert route(reg, bus.RequestMetadata(IH, first, (0,))) == []
    assert route(reg, bus.RequestMetadata(IH, "pa1/99", (0,))) == []
    assert route(reg, bus.SendPex(OTHER, "pa1/2", (), ())) == []


def test_piece_commands_for_a_magnet_torrent_are_dropped_until_the_upgrade() -> None:
    reg, first, _ = magnet_registry()
    assert route(reg, bus.AssignPieces(IH, first, (0, 1))) == []
    assert route(reg, bus.CancelPieces(IH, first, (0,))) == []
    assert route(reg, bus.BroadcastHave(IH, 0)) == []
    reg.attach(ATTACH)
    assert route(reg, bus.AssignPieces(IH, first, (0, 1))) == [("h1", Assign((0, 1)))]
    assert route(reg, bus.CancelPieces(IH, first, (0,))) == [("h1", Revoke((0,)))]
    assert route(reg, bus.BroadcastHave(IH, 0)) == [("h1", Acquired(0)), ("h2", Acquired(0))]


def test_bans_close_the_connections_of_a_magnet_torrent() -> None:
    reg, first, _ = magnet_registry()
    assert route(reg, bus.BanPeers(IH, ("127.0.0.2",))) == [
        ("h1", Disconnect(DisconnectReason.BANNED, "the host was banned"))
    ]
    assert reg.lookup(IH, first) is not None  # closed by the connection, released on its end


def test_the_upgrade_tells_every_live_connection_the_geometry() -> None:
    reg, _, _ = magnet_registry()
    reg.reserve(IH, PeerAddress("127.0.0.4", 1))  # not started yet: no handle, nobody to tell
    assert upgrade(reg, IH) == []  # still a magnet torrent
    torrent = reg.attach(replace(ATTACH, pex=False))
    told = upgrade(reg, IH)
    assert [handle for handle, _ in told] == ["h1", "h2"]
    learnt = [command for _, command in told if isinstance(command, LearnGeometry)]
    assert len(learnt) == 2
    for command in learnt:
        assert command.geometry == torrent.geometry
        assert (command.info, command.pex) == (ATTACH.info, False)
        assert command.have == Bitfield(3, [1]) and command.have is not torrent.have
    assert learnt[0].have is not learnt[1].have  # each session keeps its own
    assert upgrade(reg, OTHER) == []
