"""Seeding in the peer session: a torviz seeder session serving a torviz leecher session in
memory with a fake clock, and scripted peers that break the rules (BEP 3, BEP 6, BEP 10)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TypeVar

import pytest

from torviz.services.peer_agent.core.session import (
    Closed,
    PeerInterestChanged,
    PeerSession,
    PieceCompleted,
    SessionConfig,
    WorkNeeded,
)
from torviz.services.peer_agent.core.upload import MAX_PENDING_REJECTS, allowed_fast_set
from torviz.shared.bitfield import Bitfield
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.extension import decode_extension_handshake
from torviz.shared.wire.handshake import Handshake, HandshakeReader, Reserved, encode_handshake

E = TypeVar("E")
INFO_HASH = InfoHash(hashlib.sha1(b"seeding").digest())
SEEDER_ID = PeerId(b"-TV0100-" + b"s" * 12)
LEECHER_ID = PeerId(b"-TV0100-" + b"l" * 12)
OTHER_ID = PeerId(b"-LT2110-" + b"o" * 12)
PIECE = 32 * 1024
GEOMETRY = TorrentGeometry(PIECE, 10 * PIECE + 5000, (10 * PIECE + 5000,))
CONTENT = random.Random(5).randbytes(GEOMETRY.total_length)
LEECHER_ADDRESS = PeerAddress("127.0.0.2", 51413)
BLOCK = 16 * 1024


def piece_bytes(piece: int) -> bytes:
    start = GEOMETRY.piece_offset(piece)
    return CONTENT[start : start + GEOMETRY.piece_size(piece)]


def session(
    peer_id: PeerId,
    have: Bitfield,
    *,
    geometry: TorrentGeometry = GEOMETRY,
    info_hash: InfoHash = INFO_HASH,
    address: PeerAddress | None = LEECHER_ADDRESS,
    **config: object,
) -> PeerSession:
    return PeerSession(
        info_hash=info_hash,
        peer_id=peer_id,
        geometry=geometry,
        have=have,
        now=0.0,
        config=SessionConfig(**config),  # type: ignore[arg-type]
        address=address,
    )


def seeder(**config: object) -> PeerSession:
    """A session that has every piece; no allowed-fast set unless ``allowed_fast_count``."""
    config.setdefault("allowed_fast_count", 0)
    return PeerSession(
        info_hash=INFO_HASH,
        peer_id=SEEDER_ID,
        geometry=GEOMETRY,
        have=Bitfield.full(GEOMETRY.num_pieces),
        now=0.0,
        config=SessionConfig(**config),  # type: ignore[arg-type]
        address=LEECHER_ADDRESS,
    )


def of(items: Sequence[object], kind: type[E]) -> list[E]:
    return [item for item in items if isinstance(item, kind)]


class Scripted:
    """A peer played by the test: decodes what the session sends, sends what the test says."""

    def __init__(self, target: PeerSession, *, fast: bool = True, extensions: bool = True) -> None:
        self.target = target
        self.reserved = Reserved.build(fast=fast, extension_protocol=extensions)
        self.reader = HandshakeReader()
        self.decoder = codec.MessageDecoder()
        self.handshake: Handshake | None = None
        self.now = 0.0

    def read(self) -> list[wire.Message]:
        return self.decode(self.target.take_output(self.now))

    def decode(self, out: list[bytes | bytearray | memoryview]) -> list[wire.Message]:
        data = b"".join(bytes(chunk) for chunk in out)
        if self.handshake is None:
            for item in self.reader.feed(data):
                if isinstance(item, Handshake):
                    self.handshake = item
            data = self.reader.take_surplus()
        return self.decoder.feed(data)

    def send(self, *messages: wire.Message | bytes) -> None:
        data = b"".join(m if isinstance(m, bytes) else codec.encode(m) for m in messages)
        self.target.receive(data, self.now)

    def greet(self, *then: wire.Message) -> list[wire.Message]:
        """Handshake (as OTHER_ID), then ``then``; returns what the session sent so far."""
        self.send(encode_handshake(Handshake(INFO_HASH, OTHER_ID, self.reserved)), *then)
        return self.read()


def unchoked(scripted: Scripted, *have: wire.Message) -> None:
    """Greet with ``have`` (have-none from a fast peer by default), become interested and get
    unchoked."""
    if not have and scripted.reserved.fast:
        have = (wire.HaveNone(),)
    scripted.greet(*have)
    scripted.send(wire.Interested())
    scripted.target.set_choke(False)
    assert wire.Unchoke() in scripted.read()
    scripted.target.take_events()


def serve_all(target: PeerSession, now: float = 0.0, budget: int = 1 << 20) -> int:
    """What the connection's uploader does: serve every queued request from the content."""
    served = 0
    while (piece := target.next_upload()) is not None:
        served += target.serve(piece, piece_bytes(piece), now, budget)
    return served


# -- the allowed-fast set (BEP 6) ----------------------------------------------------------------


def test_allowed_fast_set_matches_the_bep_6_example() -> None:
    info_hash = InfoHash(b"\xaa" * 20)
    assert allowed_fast_set("80.4.4.200", info_hash, 1313, 7) == [
        1059, 431, 808, 1217, 287, 376, 1188,
    ]  # fmt: skip
    assert allowed_fast_set("80.4.4.200", info_hash, 1313, 9) == [
        1059, 431, 808, 1217, 287, 376, 1188, 353, 508,
    ]  # fmt: skip
    # Only the /24 counts; an IPv4-mapped IPv6 address is its IPv4 address.
    assert allowed_fast_set("80.4.4.1", info_hash, 1313, 7) == allowed_fast_set(
        "::ffff:80.4.4.200", info_hash, 1313, 7
    )
    assert allowed_fast_set("80.4.5.200", info_hash, 1313, 7)[:2] != [1059, 431]


def test_allowed_fast_set_is_capped_at_the_piece_count_and_covers_ipv6() -> None:
    info_hash = InfoHash(b"\xaa" * 20)
    assert sorted(allowed_fast_set("10.0.0.1", info_hash, 5, 10)) == [0, 1, 2, 3, 4]
    v6 = allowed_fast_set("2001:db8:1:2::7", info_hash, 1313, 10)
    assert len(set(v6)) == 10 and all(0 <= p < 1313 for p in v6)
    assert v6 == allowed_fast_set("2001:db8:1:ffff::1", info_hash, 1313, 10)  # same /48


# -- a torviz seeder serving a torviz leecher ------------------------------------------------------


def test_a_torviz_seeder_serves_a_torviz_leecher_once_the_coordinator_unchokes() -> None:
    upload = seeder()
    download = session(LEECHER_ID, Bitfield(GEOMETRY.num_pieces), address=None)
    now = 0.0
    to_assign = list(range(GEOMETRY.num_pieces))
    completed: dict[int, bytes] = {}
    interest: list[bool] = []
    zero_copy = 0
    for _ in range(1000):
        moved = False
        for sender, receiver in ((upload, download), (download, upload)):
            out = sender.take_output(now)
            zero_copy += sum(
                isinstance(chunk, memoryview) and chunk.nbytes == BLOCK for chunk in out
            )
            if out:
                receiver.receive(b"".join(bytes(chunk) for chunk in out), now)
                moved = True
        for event in upload.take_events():
            if isinstance(event, PeerInterestChanged):
                interest.append(event.interested)
                upload.set_choke(not event.interested)  # the coordinator's choker
        for event in download.take_events():
            if isinstance(event, WorkNeeded):
                pieces, to_assign = to_assign[: event.count], to_assign[event.count :]
                download.assign(pieces, now)
            elif isinstance(event, PieceCompleted):
                completed[event.piece] = bytes(event.data)
        moved = serve_all(upload, now) > 0 or moved
        if not moved:
            break
        now += 0.01
    assert completed == {p: piece_bytes(p) for p in range(GEOMETRY.num_pieces)}
    assert interest == [True]
    assert not upload.am_choking and not download.peer_choking
    assert upload.upload_rate.total == GEOMETRY.total_length == download.download_rate.total
    assert zero_copy == GEOMETRY.total_length // BLOCK  # every full block left as a view
    assert upload.queued_requests == 0 and download.outstanding_requests == 0


def test_nothing_is_served_while_choked_requests_are_rejected_or_ignored() -> None:
    fast = Scripted(seeder())
    fast.greet(wire.HaveNone(), wire.Interested())
    fast.send(wire.Request(1, 0, BLOCK))
    assert fast.read() == [wire.RejectRequest(1, 0, BLOCK)]
    assert fast.target.next_upload() is None

    plain = Scripted(seeder(), fast=False)
    plain.greet(wire.Interested(), wire.Request(1, 0, BLOCK))
    plain.read()
    plain.send(wire.Request(2, 0, BLOCK))
    assert plain.read() == []  # BEP 3: a choked peer's requests are dropped silently
    assert plain.target.next_upload() is None and plain.target.active


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (wire.Request(GEOMETRY.num_pieces, 0, BLOCK), "piece outside the torrent"),
        (wire.Request(1, PIECE, BLOCK), "offset past the piece"),
        (wire.Request(1, PIECE - BLOCK // 2, BLOCK), "block crossing the piece end"),
        (wire.Request(10, 0, BLOCK), "block past the short last piece"),
        (wire.Request(1, 0, 2 * BLOCK), "longer than 16 KiB"),
        (wire.Request(1, 0, 0), "empty"),
        (wire.Request(3, 0, BLOCK), "a piece we do not have"),
    ],
)
def test_unservable_requests_are_rejected_for_a_fast_peer(request_: wire.Request, why: str) -> None:
    have = Bitfield.full(GEOMETRY.num_pieces)
    have.discard(3)
    scripted = Scripted(session(SEEDER_ID, have))
    unchoked(scripted)
    scripted.send(request_)
    assert scripted.read() == [
        wire.RejectRequest(request_.piece, request_.offset, request_.length)
    ], why
    assert scripted.target.active and scripted.target.next_upload() is None


def test_unservable_requests_from_a_plain_peer_end_it_or_are_ignored() -> None:
    have = Bitfield.full(GEOMETRY.num_pieces)
    have.discard(3)
    lacking = Scripted(session(SEEDER_ID, have), fast=False)
    unchoked(lacking)
    lacking.send(wire.Request(3, 0, BLOCK))  # a piece we lack: ignored
    assert lacking.read() == [] and lacking.target.active
    lacking.send(wire.Request(1, 0, 2 * BLOCK))  # no block of ours: cannot be rejected
    assert of(lacking.target.take_events(), Closed) == [Closed("bad_request")]


def test_our_reqq_is_enforced_by_rejecting_or_ignoring_the_excess() -> None:
    fast = Scripted(seeder(our_reqq=4))
    unchoked(fast)
    fast.send(*(wire.Request(1, offset, 1024) for offset in range(0, 6 * 1024, 1024)))
    assert fast.read() == [wire.RejectRequest(1, 4096, 1024), wire.RejectRequest(1, 5120, 1024)]
    assert fast.target.queued_requests == 4
    fast.send(wire.Request(1, 0, 1024))  # the same request again is not a new one
    assert fast.read() == [] and fast.target.queued_requests == 4

    plain = Scripted(seeder(our_reqq=4), fast=False)
    unchoked(plain)
    plain.send(*(wire.Request(1, offset, 1024) for offset in range(0, 5 * 1024, 1024)))
    assert plain.read() == []  # cannot be told no: the fifth is ignored, as libtorrent does
    assert plain.target.active and plain.target.queued_requests == 4
    assert of(plain.target.take_events(), Closed) == []


BIG_PIECE = 16 * 1024 * 1024  # ctorrent asks for a whole piece at once: 1,024 blocks
BIG = TorrentGeometry(BIG_PIECE, 2 * BIG_PIECE, (2 * BIG_PIECE,))


@pytest.mark.parametrize("fast", [False, True])
def test_a_peer_that_cannot_know_our_reqq_is_served_through_a_flood(fast: bool) -> None:
    """ctorrent: no BEP 10 (it never saw our reqq) asks for 2,000 blocks of 16 MiB pieces."""
    target = session(SEEDER_ID, Bitfield.full(2), geometry=BIG, allowed_fast_count=0)
    ctorrent = Scripted(target, fast=fast, extensions=False)
    unchoked(ctorrent)
    wanted = [wire.Request(p, o, BLOCK) for p in (0, 1) for o in range(0, BIG_PIECE, BLOCK)]
    wanted = wanted[:2000]
    ctorrent.send(*wanted)
    assert target.active and target.queued_requests == 500  # SessionConfig's our_reqq
    refused = wanted[500:]
    expected = [wire.RejectRequest(r.piece, r.offset, r.length) for r in refused] if fast else []
    assert ctorrent.read() == expected  # rejected (fast) or ignored, never a reason to end
    pieces = {p: bytes([p + 1]) * BIG_PIECE for p in (0, 1)}
    got: list[wire.Message] = []
    for _ in range(10):  # it asks again for what it did not get, as a peer does on a timeout
        while (piece := target.next_upload()) is not None:
            target.serve(piece, pieces[piece], 1.0, budget=1 << 24)
        got += ctorrent.read()
        served = {(m.piece, m.offset) for m in of(got, wire.Piece)}
        missing = [r for r in wanted if (r.piece, r.offset) not in served]
        if not missing:
            break
        ctorrent.send(*missing)
    assert not missing and target.active
    assert of(target.take_events(), Closed) == []
    assert len(of(got, wire.Piece)) == 2000


@pytest.mark.parametrize("fast", [True, False])
def test_a_peer_told_our_reqq_that_floods_far_past_it_is_dropped(fast: bool) -> None:
    scripted = Scripted(seeder(our_reqq=4, max_bad_requests=10), fast=fast)
    unchoked(scripted)
    scripted.send(wire.Extended(0, b"de"))  # its extension handshake: it got ours, with reqq
    excess = [wire.Request(1, offset, 1024) for offset in range(4 * 1024, 14 * 1024, 1024)]
    scripted.send(*(wire.Request(1, o, 1024) for o in range(0, 4 * 1024, 1024)), *excess)
    assert len(of(scripted.read(), wire.RejectRequest)) == (10 if fast else 0)
    assert scripted.target.active  # up to max_bad_requests past the limit are tolerated
    scripted.send(wire.Request(1, 14 * 1024, 1024))
    assert of(scripted.target.take_events(), Closed) == [Closed("request_flood")]


def test_rejects_waiting_for_a_peer_that_never_reads_are_bounded() -> None:
    scripted = Scripted(seeder(our_reqq=1))
    unchoked(scripted)
    scripted.send(wire.Request(1, 0, 1024))  # queued: the limit is reached
    excess = codec.encode(wire.Request(1, 1024, 1024))
    for _ in range(10):
        scripted.send(excess * 500)  # never read: the output is not taken meanwhile
    assert len(of(scripted.read(), wire.RejectRequest)) == MAX_PENDING_REJECTS
    assert scripted.target.active
    scripted.send(excess)  # once the output is taken, rejects go out again
    assert scripted.read() == [wire.RejectRequest(1, 1024, 1024)]


def test_a_fast_peer_that_keeps_asking_for_what_we_refuse_is_dropped() -> None:
    scripted = Scripted(seeder(max_bad_requests=5))
    unchoked(scripted)
    scripted.send(*(wire.Request(1, 0, 2 * BLOCK) for _ in range(5)))
    assert len(of(scripted.read(), wire.RejectRequest)) == 5 and scripted.target.active
    scripted.send(wire.Request(2, 0, 2 * BLOCK))
    assert of(scripted.target.take_events(), Closed) == [Closed("too_many_bad_requests")]


def test_requests_are_served_in_order_from_views_of_the_piece_within_the_budget() -> None:
    scripted = Scripted(seeder())
    unchoked(scripted)
    scripted.send(wire.Request(2, BLOCK, BLOCK), wire.Request(2, 0, BLOCK), wire.Request(4, 0, 100))
    target = scripted.target
    assert target.next_upload() == 2
    assert target.upcoming_uploads(3) == [2, 4]  # what the uploader has the cache read ahead
    data = bytearray(piece_bytes(2))
    assert target.serve(2, data, 1.0, budget=1) == BLOCK  # at least one request
    assert target.queued_upload_bytes == BLOCK
    out = target.take_output(1.0)
    assert target.queued_upload_bytes == 0
    assert [chunk.obj for chunk in out if isinstance(chunk, memoryview)] == [data]  # no copy
    assert scripted.decode(out) == [wire.Piece(2, BLOCK, piece_bytes(2)[BLOCK:])]
    assert target.serve(2, data, 1.0, budget=1 << 20) == BLOCK
    assert target.serve(2, data, 1.0, budget=1 << 20) == 0  # the next request is of piece 4
    assert target.next_upload() == 4
    target.serve(4, piece_bytes(4), 1.0, budget=1 << 20)
    assert scripted.read() == [
        wire.Piece(2, 0, piece_bytes(2)[:BLOCK]),
        wire.Piece(4, 0, piece_bytes(4)[:100]),
    ]
    assert target.upload_rate.total == 2 * BLOCK + 100
    with pytest.raises(ValueError):
        target.serve(5, b"short", 1.0, budget=1)


def test_cancel_removes_a_queued_request() -> None:
    fast = Scripted(seeder())
    unchoked(fast)
    fast.send(wire.Request(1, 0, BLOCK), wire.Request(1, BLOCK, BLOCK))
    fast.send(wire.Cancel(1, 0, BLOCK), wire.Cancel(7, 0, BLOCK))
    assert fast.read() == [wire.RejectRequest(1, 0, BLOCK)]  # BEP 6: a cancel is answered
    assert fast.target.queued_requests == 1

    plain = Scripted(seeder(), fast=False)
    unchoked(plain)
    plain.send(wire.Request(1, 0, BLOCK), wire.Cancel(1, 0, BLOCK))
    assert plain.read() == [] and plain.target.queued_requests == 0


def test_choking_drops_queued_requests_rejecting_each_for_a_fast_peer() -> None:
    fast = Scripted(seeder())
    unchoked(fast)
    fast.send(*(wire.Request(1, offset, 1024) for offset in (0, 1024, 2048)))
    fast.target.set_choke(True)
    assert fast.read() == [wire.Choke()] + [
        wire.RejectRequest(1, offset, 1024) for offset in (0, 1024, 2048)
    ]
    assert fast.target.next_upload() is None and fast.target.am_choking
    fast.target.set_choke(True)  # no change, nothing sent
    assert fast.read() == []

    plain = Scripted(seeder(), fast=False)
    unchoked(plain)
    plain.send(wire.Request(1, 0, 1024))
    plain.target.set_choke(True)
    assert plain.read() == [wire.Choke()]  # BEP 3: the peer knows a choke drops everything
    assert plain.target.queued_requests == 0


def test_a_piece_that_cannot_be_read_drops_its_requests() -> None:
    scripted = Scripted(seeder())
    unchoked(scripted)
    scripted.send(wire.Request(1, 0, BLOCK), wire.Request(2, 0, BLOCK))
    scripted.target.upload_failed(1)
    assert scripted.read() == [wire.RejectRequest(1, 0, BLOCK)]
    assert scripted.target.next_upload() == 2


# -- allowed fast ---------------------------------------------------------------------------------

BEP6_GEOMETRY = TorrentGeometry(BLOCK, 1313 * BLOCK, (1313 * BLOCK,))
BEP6_INFO_HASH = InfoHash(b"\xaa" * 20)
BEP6_SET = [1059, 431, 808, 1217, 287, 376, 1188]


def bep6_seeder(have: Bitfield) -> PeerSession:
    return session(
        SEEDER_ID,
        have,
        geometry=BEP6_GEOMETRY,
        info_hash=BEP6_INFO_HASH,
        address=PeerAddress("80.4.4.200", 6881),
        allowed_fast_count=7,
    )


def bep6_greet(scripted: Scripted, *then: wire.Message) -> list[wire.Message]:
    handshake = encode_handshake(Handshake(BEP6_INFO_HASH, OTHER_ID, scripted.reserved))
    scripted.send(handshake, *then)
    return scripted.read()


def test_a_peer_with_few_pieces_is_granted_its_allowed_fast_set_served_while_choked() -> None:
    have = Bitfield.full(1313)
    have.discard(808)  # not ours yet: granted once we have it
    scripted = Scripted(bep6_seeder(have))
    sent = bep6_greet(scripted, wire.HaveNone())
    assert of(sent, wire.AllowedFast) == [wire.AllowedFast(p) for p in BEP6_SET if p != 808]
    target = scripted.target
    scripted.send(wire.Have(5), wire.Request(1059, 0, BLOCK), wire.Request(1, 0, BLOCK))
    assert scripted.read() == [wire.RejectRequest(1, 0, BLOCK)]  # choked: only allowed fast
    assert target.next_upload() == 1059
    target.serve(1059, bytes(BLOCK), 0.0, budget=BLOCK)
    assert scripted.read() == [wire.Piece(1059, 0, bytes(BLOCK))]
    target.piece_acquired(808)
    assert scripted.read() == [wire.Have(808), wire.AllowedFast(808)]
    target.piece_acquired(3)  # already ours: nothing
    # Allowed-fast requests survive a choke; the others are rejected.
    target.set_choke(False)
    scripted.send(wire.Request(808, 0, BLOCK), wire.Request(2, 0, BLOCK))
    target.set_choke(True)
    assert scripted.read() == [wire.Unchoke(), wire.Choke(), wire.RejectRequest(2, 0, BLOCK)]
    assert target.next_upload() == 808
    assert target.granted_fast == frozenset(BEP6_SET)


def test_no_allowed_fast_for_peers_with_many_pieces_or_without_the_extension() -> None:
    many = Scripted(bep6_seeder(Bitfield.full(1313)))
    assert of(bep6_greet(many, wire.HaveAll()), wire.AllowedFast) == []
    plain = Scripted(bep6_seeder(Bitfield.full(1313)), fast=False)
    sent = bep6_greet(plain, wire.Bitfield(bytes(165)))
    fast_only = (wire.AllowedFast, wire.HaveAll, wire.HaveNone, wire.RejectRequest)
    assert sent and not [message for message in sent if isinstance(message, fast_only)]


# -- the extension handshake, interest and health -------------------------------------------------


def test_extension_handshake_names_client_reqq_port_and_yourip() -> None:
    scripted = Scripted(seeder(client_name="torviz 0.1.0", our_reqq=321, listen_port=6889))
    sent = scripted.greet(wire.HaveNone())
    ext = decode_extension_handshake(of(sent, wire.Extended)[0].payload)
    assert (ext.v, ext.reqq, ext.p, ext.yourip) == (
        "torviz 0.1.0",
        321,
        6889,
        bytes([127, 0, 0, 2]),
    )
    v6 = Scripted(session(SEEDER_ID, Bitfield(11), address=PeerAddress("::1", 7)))
    ext6 = decode_extension_handshake(of(v6.greet(), wire.Extended)[0].payload)
    assert ext6.yourip == bytes(15) + b"\x01" and ext6.p is None
    assert of(Scripted(seeder(), extensions=False).greet(), wire.Extended) == []


def test_interest_changes_are_reported_once_each() -> None:
    scripted = Scripted(seeder())
    scripted.greet(wire.HaveNone(), wire.Interested(), wire.Interested(), wire.NotInterested())
    changes = of(scripted.target.take_events(), PeerInterestChanged)
    assert changes == [PeerInterestChanged(True), PeerInterestChanged(False)]


def test_a_peer_that_unchokes_but_sends_nothing_is_snubbed_until_a_block_arrives() -> None:
    download = session(
        LEECHER_ID, Bitfield(GEOMETRY.num_pieces), snub_timeout=60.0, idle_timeout=1e9
    )
    scripted = Scripted(download)
    scripted.greet(wire.HaveAll(), wire.Unchoke())
    download.assign([1, 2], 0.0)
    assert of(scripted.read(), wire.Request)
    assert download.next_deadline() == 30.0  # the request timeout gives the pieces back first
    download.tick(30.0)
    assert not download.snubbed and download.assigned == ()
    download.assign([1], 30.0)  # the coordinator tries this peer again: the wait goes on
    download.tick(59.9)
    assert not download.snubbed
    download.tick(60.0)
    assert download.snubbed
    download.assign([1], 60.0)
    scripted.now = 61.0
    first = of(scripted.read(), wire.Request)[0]
    scripted.send(wire.Piece(first.piece, first.offset, piece_bytes(1)[:BLOCK]))
    assert not download.snubbed  # a block clears it
    # A choke ends the wait: no snub while the peer does not let us ask.
    scripted.send(wire.Choke())
    download.tick(500.0)
    assert not download.snubbed and download.active


def test_keepalives_go_out_after_silence_and_keep_a_quiet_peer_alive() -> None:
    target = seeder(keepalive_interval=100.0, idle_timeout=180.0)
    scripted = Scripted(target)
    scripted.greet(wire.HaveNone())
    target.tick(99.0)
    assert scripted.read() == []
    target.tick(100.0)
    scripted.now = 100.0
    assert scripted.read() == [wire.KeepAlive()]
    assert target.next_deadline() == 180.0
    scripted.now = 170.0
    scripted.send(wire.KeepAlive())  # the peer's keep-alive counts as life
    target.tick(200.0)
    assert target.active
    target.tick(350.0)
    assert of(target.take_events(), Closed) == [Closed("idle_timeout")]


def test_a_connection_where_neither_side_is_interested_is_closed() -> None:
    target = seeder(uninterested_timeout=600.0, idle_timeout=1e9, keepalive_interval=1e9)
    scripted = Scripted(target)
    scripted.greet(wire.HaveNone(), wire.Interested())
    target.tick(10.0)
    scripted.now = 300.0
    scripted.send(wire.NotInterested())
    target.tick(300.0)  # noticed from here
    assert target.next_deadline() == 900.0
    target.tick(899.0)
    assert target.active
    target.tick(900.0)
    assert of(target.take_events(), Closed) == [Closed("uninterested")]
