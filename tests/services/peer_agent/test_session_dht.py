"""BEP 5 in a peer session: the DHT bit in our handshake when we have a DHT node, ``PORT`` to a
peer that sets the bit, and the peer's ``PORT`` reported once per connection."""

from __future__ import annotations

import hashlib

from torviz.services.peer_agent.core.events import DhtPortArrived
from torviz.services.peer_agent.core.session import PeerSession
from torviz.services.peer_agent.core.translate import Origin, to_bus
from torviz.shared import bus
from torviz.shared.bitfield import Bitfield
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.handshake import Handshake, Reserved, encode_handshake

INFO_HASH = InfoHash(hashlib.sha1(b"dht port").digest())
GEOMETRY = TorrentGeometry(piece_length=65536, total_length=200_000, file_lengths=(200_000,))
OURS = PeerId(b"-TV0100-" + b"a" * 12)
THEIRS = PeerId(b"-LT2000-" + b"b" * 12)


def session(dht_port: int) -> PeerSession:
    return PeerSession(
        info_hash=INFO_HASH,
        peer_id=OURS,
        geometry=GEOMETRY,
        have=Bitfield(GEOMETRY.num_pieces),
        now=0.0,
        dht_port=dht_port,
    )


def output(s: PeerSession) -> bytes:
    return b"".join(bytes(chunk) for chunk in s.take_output(0.0))


def their_handshake(dht: bool) -> bytes:
    reserved = Reserved.build(extension_protocol=False, fast=False, dht=dht)
    return encode_handshake(Handshake(INFO_HASH, THEIRS, reserved))


def test_with_a_dht_node_our_handshake_sets_the_bit_and_a_dht_peer_gets_port() -> None:
    s = session(6881)
    sent = output(s)
    assert sent[20:28] == bytes.fromhex("0000000000100005")  # BEP 10, BEP 6 and BEP 5 bits
    s.receive(their_handshake(dht=True), 0.0)
    # PORT: length 3, id 9, the port as a big-endian u16 (BEP 5).
    assert output(s).endswith(b"\x00\x00\x00\x03\x09\x1a\xe1")


def test_no_port_to_a_peer_without_the_bit_nor_without_a_dht_node() -> None:
    s = session(6881)
    output(s)
    s.receive(their_handshake(dht=False), 0.0)
    assert b"\x00\x00\x00\x03\x09" not in output(s)
    off = session(0)
    assert output(off)[20:28] == bytes.fromhex("0000000000100004")
    off.receive(their_handshake(dht=True), 0.0)
    assert b"\x00\x00\x00\x03\x09" not in output(off)


def test_the_peers_port_is_reported_once_per_connection() -> None:
    s = session(0)
    s.receive(their_handshake(dht=True), 0.0)
    s.take_events()
    s.receive(codec.encode(wire.Port(0)), 0.0)  # unusable: ignored
    s.receive(codec.encode(wire.Port(51413)), 0.0)
    s.receive(codec.encode(wire.Port(6000)), 0.0)
    s.receive(codec.encode(wire.Port(51413)), 0.0)
    assert [e for e in s.take_events() if isinstance(e, DhtPortArrived)] == [DhtPortArrived(51413)]
    assert s.active


def test_a_reported_port_becomes_peer_dht_port_on_the_bus() -> None:
    origin = Origin(INFO_HASH, "pa1/3", PeerAddress("127.0.0.5", 6881), incoming=False)
    out = to_bus(DhtPortArrived(51413), origin)
    assert out.to_coordinator == (bus.PeerDhtPort(INFO_HASH, "pa1/3", 51413),)
