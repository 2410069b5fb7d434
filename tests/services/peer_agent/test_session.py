"""The peer session, driven byte for byte by a scripted remote peer and a fake clock."""

from __future__ import annotations

import hashlib
import random
from typing import TypeVar

import pytest

from torviz.services.peer_agent.core.pipeline import QueueDepthPolicy
from torviz.services.peer_agent.core.session import (
    BitfieldReceived,
    Closed,
    HandshakeDone,
    HaveReceived,
    PeerInfo,
    PeerSession,
    PieceCompleted,
    PiecesGivenBack,
    SessionConfig,
    WorkNeeded,
)
from torviz.shared.bitfield import Bitfield
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.types import InfoHash, PeerId
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.extension import ExtensionHandshake, encode_extension_handshake
from torviz.shared.wire.handshake import Handshake, HandshakeReader, Reserved, encode_handshake

E = TypeVar("E")
INFO_HASH = InfoHash(hashlib.sha1(b"torrent").digest())
OURS = PeerId(b"-TV0001-" + b"a" * 12)
THEIRS = PeerId(b"-LT2010-" + b"b" * 12)
GEOMETRY = TorrentGeometry(
    piece_length=65536, total_length=65536 * 3 + 20000, file_lengths=(65536 * 3 + 20000,)
)
CONTENT = random.Random(7).randbytes(GEOMETRY.total_length)


def piece_bytes(piece: int) -> bytes:
    start = GEOMETRY.piece_offset(piece)
    return CONTENT[start : start + GEOMETRY.piece_size(piece)]


class Remote:
    """The far end: decodes what the session sends and encodes what it answers."""

    def __init__(self, session: PeerSession, *, fast: bool = True, extensions: bool = True) -> None:
        self.session = session
        self.reserved = Reserved.build(extension_protocol=extensions, fast=fast)
        self.handshake = HandshakeReader()
        self.decoder = codec.MessageDecoder()
        self.got_handshake: Handshake | None = None
        self.now = 0.0

    def read(self) -> list[wire.Message]:
        data = b"".join(bytes(chunk) for chunk in self.session.take_output(self.now))
        if self.got_handshake is None:
            for item in self.handshake.feed(data):
                if isinstance(item, Handshake):
                    self.got_handshake = item
            data = self.handshake.take_surplus()
        return self.decoder.feed(data)

    def send(self, *messages: wire.Message | bytes, byte_by_byte: bool = False) -> None:
        data = b"".join(m if isinstance(m, bytes) else codec.encode(m) for m in messages)
        if byte_by_byte:
            for i in range(len(data)):
                self.session.receive(data[i : i + 1], self.now)
        else:
            self.session.receive(data, self.now)

    def greet(self, *then: wire.Message | bytes) -> None:
        self.send(encode_handshake(Handshake(INFO_HASH, THEIRS, self.reserved)), *then)


def new_session(have: Bitfield | None = None, **config: object) -> PeerSession:
    return PeerSession(
        info_hash=INFO_HASH,
        peer_id=OURS,
        geometry=GEOMETRY,
        have=have or Bitfield(GEOMETRY.num_pieces),
        now=0.0,
        config=SessionConfig(**config),  # type: ignore[arg-type]
    )


def events_of(session: PeerSession, kind: type[E]) -> list[E]:
    return [e for e in session.take_events() if isinstance(e, kind)]


def test_handshake_then_have_state_and_extension_handshake() -> None:
    session = new_session(client_name="torviz 0.1", listen_port=6881)
    remote = Remote(session)
    ext = ExtensionHandshake(v="libtorrent 2.0.9", reqq=2000)
    remote.greet(wire.Extended(0, encode_extension_handshake(ext)), wire.HaveAll())
    sent = remote.read()
    assert remote.got_handshake == Handshake(
        INFO_HASH, OURS, Reserved.build(extension_protocol=True, fast=True)
    )
    assert isinstance(sent[0], wire.Extended) and b"torviz 0.1" in sent[0].payload
    assert sent[1:] == [wire.HaveNone()]
    events = session.take_events()
    assert events[0] == HandshakeDone(THEIRS, remote.reserved)
    assert isinstance(events[1], PeerInfo) and events[1].extension.v == "libtorrent 2.0.9"
    assert events[2] == BitfieldReceived(Bitfield.full(GEOMETRY.num_pieces))
    assert isinstance(events[3], WorkNeeded)
    assert session.peer_reqq == 2000


def test_plain_peer_gets_a_bitfield_and_no_fast_messages() -> None:
    session = new_session(have=Bitfield(4, [1]))
    remote = Remote(session, fast=False, extensions=False)
    remote.greet(wire.Bitfield(bytes([0b1010_0000])))
    assert remote.read() == [wire.Bitfield(bytes([0b0100_0000]))]
    assert BitfieldReceived(Bitfield(4, [0, 2])) in session.take_events()


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_downloads_assigned_pieces_with_pipelined_requests(byte_by_byte: bool) -> None:
    session = new_session()
    remote = Remote(session)
    remote.greet(wire.HaveAll())
    remote.read()
    session.take_events()
    session.assign([3, 1], remote.now)
    assert remote.read() == [wire.Interested()]  # choked: no request yet
    remote.send(wire.Unchoke())
    requests = [m for m in remote.read() if isinstance(m, wire.Request)]
    assert len(events_of(session, WorkNeeded)) == 1  # asks ahead once all is requested
    expected = [wire.Request(3, 0, 16384), wire.Request(3, 16384, 3616)] + [
        wire.Request(1, offset, 16384) for offset in range(0, 65536, 16384)
    ]
    assert requests == expected
    blocks = [
        wire.Piece(r.piece, r.offset, piece_bytes(r.piece)[r.offset : r.offset + r.length])
        for r in requests
    ]
    remote.send(*blocks, byte_by_byte=byte_by_byte)
    events = session.take_events()
    done = [e for e in events if isinstance(e, PieceCompleted)]
    assert [(e.piece, bytes(e.data)) for e in done] == [(3, piece_bytes(3)), (1, piece_bytes(1))]
    assert session.assigned == () and session.outstanding_requests == 0
    # Still interested while the coordinator finds more work; not interested once it has none.
    assert remote.read() == []
    session.assign([], remote.now)
    assert remote.read() == [wire.NotInterested()]
    assert session.download_rate.total == piece_bytes(3).__len__() + 65536


def test_queue_depth_never_exceeds_the_peer_reqq() -> None:
    session = new_session(pipeline=QueueDepthPolicy(minimum=16, maximum=500))
    remote = Remote(session)
    remote.greet(
        wire.Extended(0, encode_extension_handshake(ExtensionHandshake(reqq=3))),
        wire.HaveAll(),
        wire.Unchoke(),
    )
    session.assign([0, 1], remote.now)
    assert sum(isinstance(m, wire.Request) for m in remote.read()) == 3


def test_choke_without_fast_extension_drops_requests_and_they_are_sent_again() -> None:
    session = new_session()
    remote = Remote(session, fast=False)
    remote.greet(wire.Bitfield(bytes([0xF0])), wire.Unchoke())
    session.assign([0], remote.now)
    first = [m for m in remote.read() if isinstance(m, wire.Request)]
    assert len(first) == 4
    remote.send(wire.Piece(0, 0, piece_bytes(0)[:16384]), wire.Choke())
    assert session.outstanding_requests == 0
    remote.send(wire.Unchoke())
    assert [m for m in remote.read() if isinstance(m, wire.Request)] == first[1:]


def test_rejected_blocks_are_asked_again_then_the_piece_is_released() -> None:
    session = new_session()
    remote = Remote(session)
    remote.greet(wire.HaveAll(), wire.Unchoke())
    session.assign([2], remote.now)
    remote.read()
    for _ in range(3):
        remote.send(wire.RejectRequest(2, 0, 16384))
        assert wire.Request(2, 0, 16384) in remote.read()
    remote.send(wire.RejectRequest(2, 0, 16384))
    assert PiecesGivenBack((2,), "rejected") in session.take_events()
    assert session.assigned == ()


def test_data_nobody_asked_for_is_dropped_and_counted() -> None:
    session = new_session()
    remote = Remote(session)
    remote.greet(wire.HaveAll(), wire.Unchoke())
    remote.send(wire.Piece(0, 0, b"x" * 16384))
    assert session.wasted_bytes == 16384
    assert events_of(session, PieceCompleted) == []


def test_work_is_asked_for_once_until_answered_and_not_after_an_empty_answer() -> None:
    session = new_session()
    remote = Remote(session)
    remote.greet(wire.Bitfield(bytes([0x80])))
    assert len(events_of(session, WorkNeeded)) == 1
    remote.send(wire.KeepAlive())
    assert events_of(session, WorkNeeded) == []
    session.assign([], remote.now)
    remote.send(wire.KeepAlive())
    assert events_of(session, WorkNeeded) == []
    remote.send(wire.Have(1))  # news: something new to fetch
    assert len(events_of(session, WorkNeeded)) == 1


def test_timers() -> None:
    session = new_session(keepalive_interval=100.0, idle_timeout=180.0, request_timeout=30.0)
    remote = Remote(session)
    remote.greet(wire.HaveAll(), wire.Unchoke())
    session.assign([0], 0.0)
    remote.read()
    assert session.next_deadline() == 30.0
    session.tick(30.0)
    assert PiecesGivenBack((0,), "request_timeout") in session.take_events()
    remote.now = 30.0
    assert {type(m) for m in remote.read()} == {wire.Cancel, wire.NotInterested}
    assert session.next_deadline() == 60.0  # no block for 60 s while unchoked: a snub
    assert not session.snubbed
    session.tick(60.0)
    assert session.snubbed
    assert session.next_deadline() == 130.0
    session.tick(130.0)
    remote.now = 130.0
    assert remote.read() == [wire.KeepAlive()]
    session.tick(180.0)
    assert events_of(session, Closed) == [Closed("idle_timeout")]


def test_handshake_timeout() -> None:
    session = new_session(handshake_timeout=20.0)
    session.tick(19.0)
    assert session.take_events() == []
    session.tick(20.0)
    assert session.take_events() == [Closed("handshake_timeout")]


def test_requests_are_refused_while_we_choke() -> None:
    session = new_session(have=Bitfield.full(GEOMETRY.num_pieces))
    remote = Remote(session)
    remote.greet(wire.HaveNone(), wire.Interested(), wire.Request(0, 0, 16384))
    assert remote.read()[-1] == wire.RejectRequest(0, 0, 16384)


def test_have_messages_for_verified_pieces() -> None:
    session = new_session()
    remote = Remote(session)
    remote.greet(wire.HaveNone())
    remote.read()
    session.piece_acquired(2)
    session.piece_acquired(2)
    assert remote.read() == [wire.Have(2)]


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([wire.Have(99)], "bad_piece_index"),
        ([wire.Bitfield(b"\xff")], "bitfield_spare_bits"),
        ([wire.Bitfield(b"\xf0\x00")], "bad_bitfield_length"),
        ([b"\xff\xff\xff\xff\x07"], "frame_too_large"),
    ],
)
def test_protocol_violations_close_the_session(
    messages: list[wire.Message | bytes], reason: str
) -> None:
    session = new_session()
    remote = Remote(session)
    remote.greet(*messages)
    assert events_of(session, Closed) == [Closed(reason)]
    remote.send(wire.HaveAll())  # nothing happens after close
    assert session.take_events() == []


def test_fast_messages_without_fast_extension_close_the_session() -> None:
    session = new_session()
    remote = Remote(session, fast=False)
    remote.greet(wire.HaveAll())
    assert events_of(session, Closed) == [Closed("fast_not_negotiated")]


@pytest.mark.parametrize(
    ("info_hash", "peer_id", "reason"),
    [
        (InfoHash(b"\x01" * 20), THEIRS, "wrong_info_hash"),
        (INFO_HASH, OURS, "connected_to_self"),
    ],
)
def test_bad_handshakes(info_hash: InfoHash, peer_id: PeerId, reason: str) -> None:
    session = new_session()
    session.receive(encode_handshake(Handshake(info_hash, peer_id, Reserved())), 0.0)
    assert events_of(session, Closed) == [Closed(reason)]


def test_peer_have_event_only_for_new_pieces() -> None:
    session = new_session()
    remote = Remote(session)
    remote.greet(wire.Have(1), wire.Have(1))
    assert events_of(session, HaveReceived) == [HaveReceived(1)]
