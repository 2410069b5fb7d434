"""The peer session's BEP 10 side: metadata mode (a magnet's torrent before its info dictionary),
``learn_geometry``, BEP 9 ``ut_metadata`` serving and fetching, BEP 11 ``ut_pex`` in and out.

Driven byte for byte by a scripted remote peer with a fake clock, and two sessions joined in
memory (a seeder serving the metadata and the pieces, a magnet leecher fetching both).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import random
from typing import TypeVar

import pytest

from torviz.services.peer_agent.core.events import (
    BitfieldReceived,
    Closed,
    MetadataPieceArrived,
    MetadataRequestRejected,
    PeerInfo,
    PexArrived,
    PieceCompleted,
)
from torviz.services.peer_agent.core.extensions import (
    MAX_EXTENSION_PAYLOAD,
    MAX_UNSOLICITED_METADATA,
    PEX_INTERVAL,
    UT_METADATA_ID,
    UT_PEX_ID,
)
from torviz.services.peer_agent.core.session import PeerSession, SessionConfig
from torviz.shared.bencode import encode
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import MAX_PIECES
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.extension import (
    ExtensionHandshake,
    decode_extension_handshake,
    encode_extension_handshake,
)
from torviz.shared.wire.handshake import Handshake, HandshakeReader, Reserved, encode_handshake
from torviz.shared.wire.metadata import (
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
)
from torviz.shared.wire.pex import PexMessage, decode_pex, encode_pex

E = TypeVar("E")
OURS = PeerId(b"-TV0100-" + b"a" * 12)
THEIRS = PeerId(b"-LT2010-" + b"b" * 12)
GEOMETRY = TorrentGeometry(
    piece_length=32768, total_length=32768 * 11 + 100, file_lengths=(32768 * 11 + 100,)
)  # 12 pieces: a bitfield of 2 bytes, 4 spare bits
INFO = random.Random(14).randbytes(20000)  # stands for the raw info dictionary: 2 pieces
INFO_HASH = InfoHash(hashlib.sha1(INFO).digest())
CONTENT = random.Random(9).randbytes(GEOMETRY.total_length)
PEER = PeerAddress("127.0.0.2", 51413)
THEIR_M = {"ut_metadata": 3, "ut_pex": 9}  # the peer's own ids, as Transmission numbers them


class Remote:
    """The far end: decodes what the session sends and encodes what it answers."""

    def __init__(self, session: PeerSession, *, fast: bool = True) -> None:
        self.session = session
        self.reserved = Reserved.build(extension_protocol=True, fast=fast)
        self.handshake = HandshakeReader()
        self.decoder = codec.MessageDecoder()
        self.got_handshake = False
        self.now = 0.0

    def raw(self) -> bytes:
        data = b"".join(bytes(chunk) for chunk in self.session.take_output(self.now))
        if not self.got_handshake:
            for item in self.handshake.feed(data):
                self.got_handshake = isinstance(item, Handshake)
            data = self.handshake.take_surplus()
        return data

    def read(self) -> list[wire.Message]:
        return self.decoder.feed(self.raw())

    def send(self, *messages: wire.Message) -> None:
        self.session.receive(b"".join(codec.encode(m) for m in messages), self.now)

    def greet(self, *then: wire.Message, m: dict[str, int] | None = THEIR_M) -> None:
        data = encode_handshake(Handshake(INFO_HASH, THEIRS, self.reserved))
        if m is not None:
            ext = ExtensionHandshake(m=m, v="Transmission 4.0", p=51413, metadata_size=len(INFO))
            data += codec.encode(wire.Extended(0, encode_extension_handshake(ext)))
        self.session.receive(data + b"".join(codec.encode(x) for x in then), self.now)


def magnet_session(pex: bool = True, **config: object) -> PeerSession:
    """A session in metadata mode (geometry and have unknown)."""
    return PeerSession(
        info_hash=INFO_HASH,
        peer_id=OURS,
        geometry=None,
        have=None,
        now=0.0,
        config=SessionConfig(**config),  # type: ignore[arg-type]
        address=PEER,
        pex=pex,
    )


def seeding_session(info: bytes = INFO, peer_id: PeerId = OURS) -> PeerSession:
    return PeerSession(
        info_hash=INFO_HASH,
        peer_id=peer_id,
        geometry=GEOMETRY,
        have=Bitfield.full(GEOMETRY.num_pieces),
        now=0.0,
        address=PEER,
        info=info,
    )


def events_of(session: PeerSession, kind: type[E]) -> list[E]:
    return [e for e in session.take_events() if isinstance(e, kind)]


def closed(session: PeerSession) -> list[str]:
    return [e.reason for e in session.take_events() if isinstance(e, Closed)]


def metadata(piece_message: MetadataRequest | MetadataData | MetadataReject) -> wire.Extended:
    """A ut_metadata message as the peer sends it to us (under our id)."""
    return wire.Extended(UT_METADATA_ID, encode_metadata_message(piece_message))


def extended(messages: list[wire.Message]) -> list[wire.Extended]:
    return [m for m in messages if isinstance(m, wire.Extended)]


# -- metadata mode: what we send ------------------------------------------------------------------


def test_metadata_mode_sends_our_extension_handshake_then_have_none_exactly() -> None:
    session = magnet_session(client_name="torviz 9.9", listen_port=6881)
    remote = Remote(session)
    remote.greet(m=None)
    payload = (
        b"d1:md11:ut_metadatai2e6:ut_pexi1ee1:pi6881e4:reqqi500e"
        b"1:v10:torviz 9.96:yourip4:\x7f\x00\x00\x02e"
    )
    frame = (2 + len(payload)).to_bytes(4, "big")
    assert remote.raw() == frame + b"\x14\x00" + payload + b"\x00\x00\x00\x01\x0f"
    assert session.metadata_mode and session.geometry is None
    assert closed(session) == []


def test_metadata_mode_sends_nothing_but_the_extension_handshake_to_a_plain_peer() -> None:
    session = magnet_session(pex=False)
    remote = Remote(session, fast=False)
    remote.greet(m=None)
    sent = remote.read()
    assert len(sent) == 1 and isinstance(sent[0], wire.Extended) and sent[0].ext_id == 0
    ours = decode_extension_handshake(sent[0].payload)
    assert dict(ours.m) == {"ut_metadata": 2}  # no ut_pex where PeX is not allowed
    assert ours.metadata_size is None


def test_our_client_name_defaults_to_torviz_and_its_version() -> None:
    assert SessionConfig().client_name == f"torviz {importlib.metadata.version('torviz')}"


def test_a_torrent_with_its_info_dictionary_says_its_metadata_size() -> None:
    session = seeding_session()
    remote = Remote(session)
    remote.greet()
    ours = decode_extension_handshake(extended(remote.read())[0].payload)
    assert dict(ours.m) == {"ut_metadata": 2, "ut_pex": 1}
    assert ours.metadata_size == len(INFO)
    assert session.peer_version == "Transmission 4.0" and session.peer_listen_port == 51413
    assert session.peer_supports("ut_metadata") and not session.peer_supports("lt_donthave")
    assert not session.metadata_mode


# -- metadata mode: the peer's have-state, kept and replayed ---------------------------------------


def test_the_peers_bitfield_and_haves_are_kept_and_replayed_by_learn_geometry() -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet(wire.Bitfield(bytes([0b1000_0000, 0b0001_0000])), wire.Have(5), wire.Have(5))
    assert events_of(session, BitfieldReceived) == []
    remote.read()
    session.learn_geometry(GEOMETRY, Bitfield(GEOMETRY.num_pieces), INFO, True, remote.now)
    assert events_of(session, BitfieldReceived) == [
        BitfieldReceived(Bitfield(GEOMETRY.num_pieces, [0, 5, 11]))
    ]
    assert len(session.peer_have) == 3
    # A second extension handshake, now with metadata_size; no have-state: we have nothing.
    sent = remote.read()
    assert len(sent) == 1 and isinstance(sent[0], wire.Extended) and sent[0].ext_id == 0
    assert decode_extension_handshake(sent[0].payload).metadata_size == len(INFO)


def test_have_all_is_kept_and_nothing_is_reported_for_a_peer_that_told_nothing() -> None:
    told = magnet_session()
    Remote(told).greet(wire.HaveAll())
    told.learn_geometry(GEOMETRY, Bitfield(GEOMETRY.num_pieces), b"", True, 0.0)
    assert events_of(told, BitfieldReceived) == [BitfieldReceived(Bitfield.full(12))]
    silent = magnet_session()
    Remote(silent).greet()
    silent.learn_geometry(GEOMETRY, Bitfield(GEOMETRY.num_pieces), b"", True, 0.0)
    assert events_of(silent, BitfieldReceived) == []
    assert closed(silent) == []


@pytest.mark.parametrize(
    ("messages", "reason"),
    [
        ([wire.Bitfield(bytes([0xFF]))], "bad_bitfield_length"),
        ([wire.Bitfield(bytes([0xFF, 0xFF, 0x00]))], "bad_bitfield_length"),
        ([wire.Bitfield(bytes([0xFF, 0xF8]))], "bitfield_spare_bits"),
        ([wire.HaveNone(), wire.Have(12)], "bad_piece_index"),
    ],
)
def test_a_kept_have_state_that_does_not_fit_closes_at_learn_geometry(
    messages: list[wire.Message], reason: str
) -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet(*messages)
    assert closed(session) == []  # the piece count was unknown
    session.learn_geometry(GEOMETRY, Bitfield(GEOMETRY.num_pieces), INFO, True, 0.0)
    assert closed(session) == [reason]


def test_a_have_past_any_torrent_closes_at_once() -> None:
    session = magnet_session()
    Remote(session).greet(wire.Have(MAX_PIECES))
    assert closed(session) == ["bad_piece_index"]


def test_learn_geometry_sends_our_have_state_and_is_a_no_op_the_second_time() -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet()
    remote.read()
    full = Bitfield.full(GEOMETRY.num_pieces)
    session.learn_geometry(GEOMETRY, full, INFO, True, 0.0)
    assert remote.read()[1:] == [wire.HaveAll()]
    session.learn_geometry(GEOMETRY, full, INFO, True, 0.0)  # the same: nothing happens
    assert remote.read() == []
    other = TorrentGeometry(piece_length=16384, total_length=5, file_lengths=(5,))
    with pytest.raises(ValueError, match="different geometry"):
        session.learn_geometry(other, Bitfield(1), b"", True, 0.0)


def test_learn_geometry_that_forbids_pex_withdraws_ut_pex() -> None:
    session = magnet_session(pex=True)
    remote = Remote(session)
    remote.greet()
    remote.read()
    session.learn_geometry(GEOMETRY, Bitfield(GEOMETRY.num_pieces), INFO, False, 0.0)
    again = decode_extension_handshake(extended(remote.read())[0].payload)
    assert dict(again.m) == {"ut_metadata": 2, "ut_pex": 0}
    remote.send(wire.Extended(UT_PEX_ID, encode_pex(PexMessage(added=(PEER,), added_flags=(0,)))))
    assert events_of(session, PexArrived) == []


def test_requests_in_metadata_mode_are_refused_as_for_pieces_we_lack() -> None:
    fast = magnet_session()
    remote = Remote(fast)
    remote.greet(wire.Request(0, 0, 16384))
    assert remote.read()[-1] == wire.RejectRequest(0, 0, 16384)
    assert closed(fast) == []
    plain = magnet_session(max_bad_requests=3)
    remote = Remote(plain, fast=False)
    remote.greet(*[wire.Request(0, 0, 16384)] * 3)
    assert [m for m in remote.read() if not isinstance(m, wire.Extended)] == []
    assert closed(plain) == []
    remote.send(wire.Request(0, 0, 16384))
    assert closed(plain) == ["too_many_bad_requests"]


def test_metadata_mode_ignores_assignments_and_has_no_uninterested_timer() -> None:
    session = magnet_session(idle_timeout=10_000.0, uninterested_timeout=5.0)
    remote = Remote(session)
    remote.greet(wire.HaveAll(), wire.Unchoke())
    session.assign([0], 0.0)
    assert [m for m in remote.read() if isinstance(m, wire.Request)] == []
    for now in (1.0, 10.0, 20.0):
        session.tick(now)
    assert closed(session) == []


# -- in memory: a magnet leecher fetches the metadata, then the pieces, from a seeder ------------


def pump(a: PeerSession, b: PeerSession, now: float) -> None:
    for _ in range(20):
        ab, ba = a.take_output(now), b.take_output(now)
        if not ab and not ba:
            return
        for chunk in ab:
            b.receive(bytes(chunk), now)
        for chunk in ba:
            a.receive(bytes(chunk), now)
    raise AssertionError("the sessions never went quiet")


def test_a_magnet_leecher_fetches_metadata_then_pieces_from_a_seeder_in_memory() -> None:
    seeder = seeding_session(peer_id=THEIRS)
    leecher = magnet_session()
    pump(leecher, seeder, 0.0)
    infos = events_of(leecher, PeerInfo)
    assert infos[-1].extension.metadata_size == len(INFO)
    leecher.request_metadata([0, 1])
    pump(leecher, seeder, 0.0)
    arrived = events_of(leecher, MetadataPieceArrived)
    assert [e.piece for e in arrived] == [0, 1]
    assert b"".join(e.data for e in arrived) == INFO
    assert {e.total_size for e in arrived} == {len(INFO)}
    leecher.learn_geometry(GEOMETRY, Bitfield(GEOMETRY.num_pieces), INFO, True, 0.0)
    pump(leecher, seeder, 0.0)
    assert BitfieldReceived(Bitfield.full(12)) in leecher.take_events()
    seeder.set_choke(False)
    leecher.assign([11], 0.0)
    pump(leecher, seeder, 0.0)
    piece = seeder.next_upload()
    assert piece == 11
    seeder.serve(11, CONTENT[GEOMETRY.piece_offset(11) :], 0.0, 1 << 20)
    pump(leecher, seeder, 0.0)
    done = events_of(leecher, PieceCompleted)
    assert [(e.piece, bytes(e.data)) for e in done] == [(11, CONTENT[GEOMETRY.piece_offset(11) :])]
    # Now the leecher serves the metadata too.
    seeder.take_events()
    seeder.request_metadata([1])
    pump(leecher, seeder, 0.0)
    assert events_of(seeder, MetadataPieceArrived) == [MetadataPieceArrived(1, 20000, INFO[16384:])]


# -- serving ut_metadata --------------------------------------------------------------------------


def answers(remote: Remote) -> list[object]:
    got: list[object] = []
    for message in extended(remote.read()):
        assert message.ext_id == THEIR_M["ut_metadata"]
        got.append(decode_metadata_message(message.payload))
    return got


def test_serving_exact_bytes_rejects_out_of_range_and_stops_at_the_amplification_bound() -> None:
    session = seeding_session()
    remote = Remote(session)
    remote.greet()
    remote.read()
    remote.send(metadata(MetadataRequest(1)), metadata(MetadataRequest(2)))
    assert answers(remote) == [MetadataData(1, 20000, INFO[16384:]), MetadataReject(2)]
    remote.send(*[metadata(MetadataRequest(0))] * 4)  # 2 pieces: 4 served at most
    assert answers(remote) == [MetadataData(0, 20000, INFO[:16384])] * 3 + [MetadataReject(0)]
    assert closed(session) == []


def test_serving_in_metadata_mode_rejects_every_request() -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet()
    remote.read()
    remote.send(metadata(MetadataRequest(0)))
    assert answers(remote) == [MetadataReject(0)]


# -- fetching ut_metadata -------------------------------------------------------------------------


def test_requests_go_under_the_peers_id_and_answers_become_events() -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet()
    remote.read()
    session.request_metadata([0, 1])
    sent = extended(remote.read())
    assert [(m.ext_id, decode_metadata_message(m.payload)) for m in sent] == [
        (3, MetadataRequest(0)),
        (3, MetadataRequest(1)),
    ]
    remote.send(metadata(MetadataReject(1)), metadata(MetadataData(0, 20000, INFO[:16384])))
    events = session.take_events()
    assert MetadataRequestRejected(1) in events
    assert MetadataPieceArrived(0, 20000, INFO[:16384]) in events


def test_request_metadata_is_ignored_for_a_peer_without_ut_metadata() -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet(m={"ut_pex": 1})
    remote.read()
    session.request_metadata([0])
    assert remote.read() == []


def test_answers_nobody_asked_for_are_ignored_then_close() -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet()
    for _ in range(MAX_UNSOLICITED_METADATA):
        remote.send(metadata(MetadataData(0, 20000, INFO[:16384])))
    assert session.take_events()[-1:] != [Closed("bad_metadata_message")]
    assert events_of(session, MetadataPieceArrived) == []
    remote.send(metadata(MetadataReject(0)))
    assert closed(session) == ["bad_metadata_message"]


@pytest.mark.parametrize(
    ("ext_id", "payload", "reason"),
    [
        (UT_METADATA_ID, encode_metadata_message(MetadataRequest(0)), "bad_metadata_message"),
        (UT_PEX_ID, encode_pex(PexMessage()), "bad_pex"),
    ],
)
def test_an_extension_message_before_the_extension_handshake_closes(
    ext_id: int, payload: bytes, reason: str
) -> None:
    session = magnet_session()
    Remote(session).greet(wire.Extended(ext_id, payload), m=None)
    assert closed(session) == [reason]


@pytest.mark.parametrize(
    ("ext_id", "payload", "reason"),
    [
        (UT_METADATA_ID, b"d8:msg_typei0e5:piecei0e", "bad_metadata_message"),  # unterminated
        (UT_PEX_ID, encode({b"added": b"\x7f\x00\x00\x01\x1a"}), "bad_pex_length"),
        (UT_PEX_ID, b"li1ee", "bad_pex"),
    ],
)
def test_a_malformed_extension_message_closes(ext_id: int, payload: bytes, reason: str) -> None:
    session = magnet_session()
    Remote(session).greet(wire.Extended(ext_id, payload))
    assert closed(session) == [reason]


@pytest.mark.parametrize(
    ("ext_id", "reason"), [(UT_METADATA_ID, "bad_metadata_message"), (UT_PEX_ID, "bad_pex")]
)
def test_an_oversized_extension_message_is_refused(ext_id: int, reason: str) -> None:
    # Valid bencode the frame decoder lets through (128 KiB), too big for either extension.
    payload = encode({b"msg_type": 0, b"piece": 0, b"x": b"\x00" * 100_000})
    assert MAX_EXTENSION_PAYLOAD < len(payload) < codec.DEFAULT_MAX_EXTENDED
    session = magnet_session()
    Remote(session).greet(wire.Extended(ext_id, payload))
    assert closed(session) == [reason]


def test_an_unknown_extension_id_is_ignored() -> None:
    session = magnet_session(pex=False)
    remote = Remote(session)
    remote.greet(
        wire.Extended(7, b"whatever"),
        wire.Extended(UT_PEX_ID, b"not even bencode"),  # ut_pex was not offered
    )
    assert closed(session) == []
    assert remote.read()[-1] == wire.HaveNone()


# -- ut_pex ---------------------------------------------------------------------------------------

V6 = PeerAddress("2001:db8::7", 6881)


def test_pex_in_is_reported_with_flags_at_most_once_per_interval() -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet()
    message = PexMessage(
        added=(PeerAddress("10.0.0.1", 6881),),
        added_flags=(0x12,),
        dropped=(PeerAddress("10.0.0.2", 6882),),
        added6=(V6,),
        added6_flags=(0x02,),
    )
    remote.send(wire.Extended(UT_PEX_ID, encode_pex(message)))
    assert events_of(session, PexArrived) == [
        PexArrived(
            added=((PeerAddress("10.0.0.1", 6881), 0x12), (V6, 0x02)),
            dropped=(PeerAddress("10.0.0.2", 6882),),
        )
    ]
    remote.now = PEX_INTERVAL - 1
    remote.send(wire.Extended(UT_PEX_ID, encode_pex(message)))  # too soon: dropped
    assert events_of(session, PexArrived) == []
    remote.now = PEX_INTERVAL + 1
    remote.send(wire.Extended(UT_PEX_ID, encode_pex(message)))
    assert len(events_of(session, PexArrived)) == 1


def test_pex_in_is_capped_at_the_bus_bound_across_families() -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet()
    v4 = tuple(PeerAddress(f"10.0.{i // 200}.{i % 200 + 1}", 6881) for i in range(100))
    v6 = tuple(PeerAddress(f"2001:db8::{i + 1:x}", 6881) for i in range(100))
    message = PexMessage(
        added=v4, added_flags=(0,) * 100, added6=v6, added6_flags=(0,) * 100, dropped=v4
    )
    remote.send(wire.Extended(UT_PEX_ID, encode_pex(message)))
    (event,) = events_of(session, PexArrived)
    assert [a for a, _ in event.added] == list(v4) and event.dropped == v4


def test_pex_in_is_ignored_where_pex_is_not_allowed() -> None:
    session = magnet_session(pex=False)
    remote = Remote(session)
    remote.greet()
    remote.send(wire.Extended(UT_PEX_ID, encode_pex(PexMessage(dropped=(PEER,)))))
    assert events_of(session, PexArrived) == []


def test_pex_out_goes_under_the_peers_id_with_a_flag_per_added_peer() -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet()
    remote.read()
    session.send_pex([(PeerAddress("10.0.0.1", 6881), 0x10), (V6, 0x02)], [PEER])
    (sent,) = extended(remote.read())
    assert sent.ext_id == THEIR_M["ut_pex"]
    assert sent.payload == encode_pex(
        PexMessage(
            added=(PeerAddress("10.0.0.1", 6881),),
            added_flags=(0x10,),
            dropped=(PEER,),
            added6=(V6,),
            added6_flags=(0x02,),
        )
    )
    assert decode_pex(sent.payload).message.added_flags == (0x10,)


def test_pex_out_is_not_sent_when_not_allowed_or_not_offered() -> None:
    forbidden = magnet_session(pex=False)
    remote = Remote(forbidden)
    remote.greet()
    remote.read()
    forbidden.send_pex([(PEER, 0)], [])
    assert remote.read() == []
    unoffered = magnet_session()
    remote = Remote(unoffered)
    remote.greet(m={"ut_metadata": 3})
    remote.read()
    unoffered.send_pex([(PEER, 0)], [])
    assert remote.read() == []


def test_after_learn_geometry_blocks_stream_straight_into_their_piece() -> None:
    buffers: list[bytearray] = []

    def allocate(size: int) -> bytearray:
        buffers.append(bytearray(size))
        return buffers[-1]

    session = magnet_session(allocate=allocate)
    remote = Remote(session)
    remote.greet(wire.HaveAll(), wire.Unchoke())
    session.learn_geometry(GEOMETRY, Bitfield(GEOMETRY.num_pieces), INFO, True, 0.0)
    session.assign([0], 0.0)
    assert wire.Request(0, 0, 16384) in remote.read()
    block = CONTENT[:16384]
    frame = codec.encode(wire.Piece(0, 0, block))
    session.receive(frame[:8000], 0.0)
    # The decoder wrote the first bytes into the piece's own buffer (the new block sink),
    # not into a buffer of its own.
    assert bytes(buffers[0][: 8000 - 13]) == block[: 8000 - 13]
    session.receive(frame[8000:], 0.0)
    assert session.wasted_bytes == 0


def test_learn_geometry_keeps_the_peers_reqq_and_allowed_fast_pieces_that_exist() -> None:
    session = magnet_session()
    remote = Remote(session)
    ext = ExtensionHandshake(m=THEIR_M, reqq=7)
    remote.greet(
        wire.Extended(0, encode_extension_handshake(ext)),
        wire.AllowedFast(3),
        wire.AllowedFast(99),  # no such piece: dropped at the upgrade
        m=None,
    )
    session.learn_geometry(GEOMETRY, Bitfield(GEOMETRY.num_pieces), INFO, True, 0.0)
    assert session.peer_reqq == 7
    assert session.allowed_fast == frozenset({3})
    assert closed(session) == []


def test_learn_geometry_before_the_handshake_leaves_the_handshake_to_send_everything() -> None:
    session = magnet_session()
    session.learn_geometry(GEOMETRY, Bitfield.full(GEOMETRY.num_pieces), INFO, True, 0.0)
    assert not session.metadata_mode
    remote = Remote(session)
    remote.greet(wire.HaveNone())
    sent = remote.read()
    assert decode_extension_handshake(extended(sent)[0].payload).metadata_size == len(INFO)
    assert sent[1] == wire.HaveAll()
    assert all(isinstance(m, wire.AllowedFast) for m in sent[2:])  # it has nothing: BEP 6
    assert events_of(session, BitfieldReceived) == [BitfieldReceived(Bitfield(12))]


def test_learn_geometry_on_a_closed_session_sends_nothing() -> None:
    session = magnet_session()
    remote = Remote(session)
    remote.greet(wire.HaveAll())
    remote.read()
    session.close("shutdown")
    session.take_events()
    session.learn_geometry(GEOMETRY, Bitfield.full(GEOMETRY.num_pieces), INFO, True, 0.0)
    assert remote.read() == [] and session.take_events() == []
