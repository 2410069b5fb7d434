"""A peer session keeps a peer whose extension handshake has its keys out of order."""

from __future__ import annotations

import hashlib

from torviz.services.peer_agent.core.session import Closed, PeerInfo, PeerSession, SessionConfig
from torviz.shared.bitfield import Bitfield
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.types import InfoHash, PeerId
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.handshake import Handshake, Reserved, encode_handshake

INFO_HASH = InfoHash(hashlib.sha1(b"unsorted extension handshake").digest())
GEOMETRY = TorrentGeometry(piece_length=65536, total_length=200_000, file_lengths=(200_000,))

# ``v`` and ``p`` before ``m``, and ``ut_pex`` before ``ut_metadata`` inside ``m``.
UNSORTED = b"d1:v17:Transmission 2.941:pi51413e1:md6:ut_pexi1e11:ut_metadatai3ee4:reqqi250ee"


def test_an_unsorted_extension_handshake_keeps_the_connection() -> None:
    session = PeerSession(
        info_hash=INFO_HASH,
        peer_id=PeerId(b"-TV0100-" + b"a" * 12),
        geometry=GEOMETRY,
        have=Bitfield(GEOMETRY.num_pieces),
        now=0.0,
        config=SessionConfig(),
    )
    reserved = Reserved.build(extension_protocol=True, fast=True)
    theirs = PeerId(b"-TR2940-" + b"b" * 12)
    session.receive(encode_handshake(Handshake(INFO_HASH, theirs, reserved)), 0.0)
    session.receive(codec.encode(wire.Extended(0, UNSORTED)), 0.0)
    session.receive(codec.encode(wire.HaveAll()), 0.0)
    events = session.take_events()
    assert [e for e in events if isinstance(e, Closed)] == []
    infos = [e for e in events if isinstance(e, PeerInfo)]
    assert len(infos) == 1
    assert infos[0].extension.v == "Transmission 2.94"
    assert infos[0].extension.extension_id("ut_metadata") == 3
    assert session.peer_reqq == 250
