"""Incoming connections of the real agent process: routing, refusals, self-connections, bans.

The agent listens on a 127.0.0.x address of its own; the test plays the coordinator
(``Counterparts``) and dials it with raw peers, each from its own loopback address.
"""

from __future__ import annotations

import hashlib
import socket
import time

import pytest

from testing.peer_agent import Counterparts
from testing.swarm import next_loopback_address
from torviz.shared.bus import (
    BanPeers,
    ConnectPeer,
    PeerConnected,
    PeerConnectFailed,
    PeerDisconnected,
    PeerInterest,
    SetChoke,
    TransferStats,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire import messages as wire

from .conftest import OUR_PEER_ID, attach_message, attached, listen_address
from .fake_peers import recording
from .seeding import RawPeer

PIECE = 64 * 1024
SIZE = 20 * PIECE + 999
INFO_HASH = InfoHash(hashlib.sha1(b"incoming").digest())


@pytest.fixture
def listening(counterparts: Counterparts, start_agent) -> PeerAddress:
    """An agent with the test torrent attached; returns where it listens."""
    start_agent()
    address = listen_address(counterparts)
    attached(counterparts, attach_message(counterparts, INFO_HASH, PIECE, SIZE))
    return address


def dial(
    parts: Counterparts,
    address: PeerAddress,
    *,
    source: str | None = None,
    info_hash: InfoHash = INFO_HASH,
    peer_id: PeerId | None = None,
) -> RawPeer:
    """A raw peer dialling the agent from a loopback address of its own (or ``source``)."""
    return RawPeer(
        parts, address, info_hash, source=source or next_loopback_address(), peer_id=peer_id
    )


def _ipv6_works() -> bool:
    """Whether this machine has an IPv6 stack (IPv4-mapped dials need one)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_listening_on_is_reported_and_an_incoming_peer_is_served(
    counterparts: Counterparts, listening: PeerAddress
) -> None:
    assert listening.host.startswith("127.") and listening.port >= 6881
    peer = dial(counterparts, listening)
    peer.wait_for("our handshake", lambda: peer.handshake is not None)
    assert peer.handshake is not None and peer.handshake.peer_id == OUR_PEER_ID
    connected = counterparts.expect(PeerConnected)
    assert connected.incoming and connected.address.host == peer.local_host
    assert connected.fast_extension and connected.extension_protocol
    peer.wait_for("have-none", lambda: wire.HaveNone() in peer.received)
    # The agent never unchokes by itself: interest goes to the coordinator, which decides.
    peer.send(wire.Interested())
    interest = counterparts.expect(PeerInterest)
    assert (interest.peer, interest.interested) == (connected.peer, True)
    counterparts.pump(0.3)
    assert wire.Unchoke() not in peer.received
    counterparts.send(SetChoke(INFO_HASH, connected.peer, False))
    peer.wait_for("unchoke", lambda: wire.Unchoke() in peer.received)
    stats = counterparts.expect(
        TransferStats, lambda m: any(not r.am_choking and r.peer_interested for r in m.peers)
    )
    assert stats.peers[0].pieces == 0 and not stats.peers[0].snubbed
    peer.send(wire.NotInterested())
    assert not counterparts.expect(PeerInterest).interested
    peer.close()
    assert counterparts.expect(PeerDisconnected).peer == connected.peer


def test_an_unknown_info_hash_is_dropped_without_an_answer(
    counterparts: Counterparts, listening: PeerAddress
) -> None:
    stranger = dial(counterparts, listening, info_hash=InfoHash(b"\x07" * 20))
    stranger.wait_closed()
    assert stranger.handshake is None and stranger.received == []
    good = dial(counterparts, listening)  # the listener goes on
    good.wait_for("our handshake", lambda: good.handshake is not None)
    assert counterparts.expect(PeerConnected).incoming
    assert not counterparts.take_all(PeerConnectFailed)


def test_connections_to_ourselves_are_dropped(
    counterparts: Counterparts, listening: PeerAddress, fake_peer
) -> None:
    counterparts.send(ConnectPeer(INFO_HASH, listening))  # our own listen address
    failed = counterparts.expect(PeerConnectFailed)
    assert (failed.address, failed.reason) == (listening, "connected_to_self")
    # The same listener under another name (IPv4-mapped): only the handshake tells, on both
    # ends; the accepting end still sends its handshake before it drops the connection.
    if _ipv6_works():
        mapped = PeerAddress(f"::ffff:{listening.host}", listening.port)
        counterparts.send(ConnectPeer(INFO_HASH, mapped))
        failed = counterparts.expect(PeerConnectFailed)
        assert (failed.address, failed.reason) == (mapped, "connected_to_self")
    # An incoming handshake with our own peer id: dropped, never reported.
    mirror = dial(counterparts, listening, peer_id=OUR_PEER_ID)
    mirror.wait_closed()
    # A dialled peer that answers with our peer id.
    echo = fake_peer(recording(INFO_HASH))
    echo.peer_id = OUR_PEER_ID
    counterparts.send(ConnectPeer(INFO_HASH, PeerAddress(echo.host, echo.port)))
    failed = counterparts.expect(PeerConnectFailed)
    assert failed.reason == "connected_to_self"
    counterparts.pump(0.2)
    assert not counterparts.take_all(PeerConnected)


def test_a_banned_host_is_dropped_and_refused_both_ways(
    counterparts: Counterparts, listening: PeerAddress, fake_peer
) -> None:
    bad_host = next_loopback_address()
    first = dial(counterparts, listening, source=bad_host)
    key = counterparts.expect(PeerConnected).peer
    counterparts.send(BanPeers(INFO_HASH, (bad_host,)))
    gone = counterparts.expect(PeerDisconnected)
    assert (gone.peer, gone.reason) == (key, "banned")
    first.wait_closed()
    again = dial(counterparts, listening, source=bad_host)
    again.wait_closed()
    assert again.handshake is None
    other = dial(counterparts, listening)
    other.wait_for("our handshake", lambda: other.handshake is not None)
    assert counterparts.expect(PeerConnected).address.host == other.local_host
    counterparts.send(ConnectPeer(INFO_HASH, PeerAddress(bad_host, 6881)))
    assert counterparts.expect(PeerConnectFailed).reason == "banned"


def test_one_connection_per_peer_id_and_the_per_torrent_limit(
    counterparts: Counterparts, start_agent
) -> None:
    start_agent(max_connections_per_torrent=2)
    address = listen_address(counterparts)
    attached(counterparts, attach_message(counterparts, INFO_HASH, PIECE, SIZE))
    first = dial(counterparts, address)
    counterparts.expect(PeerConnected)
    twin = dial(counterparts, address, peer_id=first.peer_id)  # same peer, another address
    twin.wait_closed()
    second = dial(counterparts, address)
    second.wait_for("our handshake", lambda: second.handshake is not None)
    counterparts.expect(PeerConnected)
    third = dial(counterparts, address)  # over the per-torrent limit
    third.wait_closed()
    assert third.handshake is None
    assert not first.closed and not second.closed


def test_one_host_gets_a_few_connections_and_the_rest_of_its_dials_are_closed(
    counterparts: Counterparts, start_agent
) -> None:
    start_agent(max_connections_per_host=2)
    address = listen_address(counterparts)
    attached(counterparts, attach_message(counterparts, INFO_HASH, PIECE, SIZE))
    crowd = next_loopback_address()

    def from_crowd(n: int) -> RawPeer:
        return dial(counterparts, address, source=crowd, peer_id=PeerId(b"-XX0001-%012d" % n))

    admitted = [from_crowd(n) for n in range(2)]
    for peer in admitted:
        peer.wait_for("our handshake", lambda peer=peer: peer.handshake is not None)
    counterparts.expect(PeerConnected)
    counterparts.expect(PeerConnected)
    refused = [from_crowd(n) for n in range(2, 5)]
    for peer in refused:
        peer.wait_closed()
        assert peer.handshake is None  # closed before we answered
    other = dial(counterparts, address)  # another host is not held back
    other.wait_for("our handshake", lambda: other.handshake is not None)
    assert counterparts.expect(PeerConnected).address.host == other.local_host
    assert not any(peer.closed for peer in admitted)


def test_a_full_torrent_gives_the_slot_of_an_idle_peer_to_a_newcomer(
    counterparts: Counterparts, start_agent
) -> None:
    start_agent(max_connections_per_torrent=2, outgoing_share=0.0, replace_idle_after=1.0)
    address = listen_address(counterparts)
    attached(counterparts, attach_message(counterparts, INFO_HASH, PIECE, SIZE))
    busy = dial(counterparts, address)
    busy.send(wire.HaveNone(), wire.Interested())  # interested in us: useful
    busy_key = counterparts.expect(PeerConnected).peer
    idle = dial(counterparts, address)
    idle.send(wire.HaveNone())  # then nothing but keep-alives
    idle_key = counterparts.expect(PeerConnected).peer
    early = dial(counterparts, address)  # nobody has been idle long enough yet
    early.wait_closed()
    assert early.handshake is None
    idle_from = time.monotonic()
    while time.monotonic() < idle_from + 1.5:  # idle long enough, and seen so by the agent
        counterparts.pump(0.1)
    idle.send(wire.KeepAlive())  # keep-alives do not make a peer useful
    newcomer = dial(counterparts, address)
    newcomer.wait_for("our handshake", lambda: newcomer.handshake is not None)
    gone = counterparts.expect(PeerDisconnected)
    assert (gone.peer, gone.reason) == (idle_key, "replaced")
    assert counterparts.expect(PeerConnected).address.host == newcomer.local_host
    idle.wait_closed()
    assert not busy.closed
    assert busy_key != idle_key
