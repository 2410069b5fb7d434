"""The bus codec: exact bytes, round trips over every message, and a table of broken input."""

from __future__ import annotations

import tracemalloc
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.shared.bus import (
    MAX_DATA_BYTES,
    MAX_HEADER_BYTES,
    MESSAGES,
    REASONS,
    AssignPieces,
    ConnectPeer,
    GetStatus,
    Heartbeat,
    Hello,
    ListTorrents,
    Message,
    PeerHave,
    PeerStats,
    Rejected,
    RejectReason,
    StatusReport,
    StorePiece,
    TorrentState,
    TorrentStatus,
    TrackerState,
    TrackerStateChanged,
    TrackerTier,
    TrackTorrent,
    TransferStats,
    WatchSession,
    decode_frames,
    decode_message,
    encode_frames,
    encode_message,
)
from torviz.shared.bus.codec import (
    BoolField,
    BytesField,
    EnumField,
    Field,
    FloatField,
    Id20Field,
    IntField,
    OptionalField,
    PeerAddressField,
    RecordField,
    StrField,
    TupleField,
    message_fields,
)
from torviz.shared.errors import BusError
from torviz.shared.types import InfoHash, PeerAddress, PeerId

IH = InfoHash(b"\x11" * 20)
PID = PeerId(b"-TV0001-" + b"\x22" * 12)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# Hand-assembled from the msgpack spec: 9x fixarray, ax fixstr, c4 bin8, cd uint16, cb float64,
# c0 nil, c2 false. The first element of each array is the tag.
VECTORS: list[tuple[Message, bytes]] = [
    (Heartbeat(seq=7), _hex("92 04 07")),
    (ListTorrents(), _hex("91 66")),
    (GetStatus(prefix="ab"), _hex("93 67 a2 6162 c2")),
    (WatchSession(since=5, events_after=3), _hex("93 76 05 03")),
    (
        PeerHave(info_hash=IH, peer="pa1/1", piece=300),
        _hex("94 2a c4 14" + "11" * 20 + "a5 7061312f31 cd 012c"),
    ),
    (
        ConnectPeer(info_hash=IH, address=PeerAddress("127.0.0.1", 6881)),
        _hex("93 20 c4 14" + "11" * 20 + "92 a9 3132372e302e302e31 cd 1ae1"),
    ),
    (
        Rejected(reason=RejectReason.VERSION_MISMATCH, message="x"),
        _hex("93 03 b0" + b"version_mismatch".hex() + "a1 78"),
    ),
    (
        Hello(
            protocol_version=1,
            schema_digest="0123456789abcdef",
            service="peer_agent",
            agent_id="pa1",
            host="h",
            pid=4242,
            capabilities=(),
        ),
        _hex(
            "98 01 01 b0"
            + b"0123456789abcdef".hex()
            + "aa"
            + b"peer_agent".hex()
            + "a3 706131 a1 68 cd 1092 90"
        ),
    ),
    (
        TrackerStateChanged(
            info_hash=IH,
            url="http://t/a",
            tier=0,
            state=TrackerState.WORKING,
            error=None,
            seeders=5,
            leechers=None,
            completed=None,
            next_announce_in=1800.0,
        ),
        _hex(
            "9a 15 c4 14"
            + "11" * 20
            + "aa"
            + b"http://t/a".hex()
            + "00 a7"
            + b"working".hex()
            + "c0 05 c0 c0 cb 409c200000000000"
        ),
    ),
    (
        TrackTorrent(
            info_hash=IH,
            tiers=(TrackerTier(urls=("http://t/a",)),),
            peer_id=PID,
            listen_port=6881,
            private=False,
            uploaded=0,
            downloaded=0,
            left=1000,
        ),
        _hex(
            "9a 0a c4 14"
            + "11" * 20
            + "91 91 91 aa"
            + b"http://t/a".hex()
            + "c4 14"
            + PID.raw.hex()
            + "cd 1ae1 c2 00 00 cd 03e8 90"
        ),
    ),
]


@pytest.mark.parametrize(("message", "wire"), VECTORS, ids=lambda v: type(v).__name__)
def test_vector_encodes_and_decodes_exactly(message: Message, wire: bytes) -> None:
    assert encode_message(message) == wire
    assert decode_message(wire) == message
    assert decode_message(memoryview(wire)) == message
    assert encode_frames(message) == [wire]


@pytest.mark.parametrize(("message", "wire"), VECTORS, ids=lambda v: type(v).__name__)
def test_vector_with_trailing_bytes_is_refused(message: Message, wire: bytes) -> None:
    with pytest.raises(BusError) as caught:
        decode_message(wire + b"\x00")
    assert caught.value.reason == "trailing_bytes"


@pytest.mark.parametrize(("message", "wire"), VECTORS, ids=lambda v: type(v).__name__)
def test_every_prefix_of_a_vector_is_truncated(message: Message, wire: bytes) -> None:
    for end in range(len(wire)):
        with pytest.raises(BusError) as caught:
            decode_message(wire[:end])
        assert caught.value.reason == "truncated", end


def test_data_frame_travels_beside_the_header_untouched() -> None:
    message = StorePiece(info_hash=IH, piece=3, contributors=("pa1/1",))
    data = bytes(range(256)) * 4
    frames = encode_frames(message, data)
    assert frames[0] == _hex("95 3c c4 14" + "11" * 20 + "03 91 a5 7061312f31 90")
    assert isinstance(frames[1], memoryview) and frames[1].obj is data  # no copy
    decoded, view = decode_frames([bytes(f) for f in frames])
    assert decoded == message
    assert view is not None and bytes(view) == data


# --- hypothesis: every message class, values drawn from its annotations ------------------------


def strategy(field: Field) -> st.SearchStrategy[Any]:
    """Values admitted by a compiled field; collection sizes capped to keep examples small."""
    match field:
        case IntField(lo=lo, hi=hi):
            return st.integers(lo, hi)
        case FloatField(lo=lo, hi=hi):
            return st.floats(lo, hi, allow_nan=False, allow_infinity=False)
        case BoolField():
            return st.booleans()
        case StrField(lo=lo, hi=hi):
            return st.text(min_size=lo, max_size=min(hi, lo + 24))
        case BytesField(lo=lo, hi=hi):
            return st.binary(min_size=lo, max_size=min(hi, lo + 64))
        case Id20Field(cls=cls):
            return st.binary(min_size=20, max_size=20).map(cls)
        case PeerAddressField():
            return st.builds(PeerAddress, st.ip_addresses().map(str), st.integers(1, 65535))
        case EnumField(enum=enum):
            return st.sampled_from(list(enum))
        case OptionalField(inner=inner):
            return st.none() | strategy(inner)
        case TupleField(inner=inner, lo=lo, hi=hi):
            items = st.lists(strategy(inner), min_size=lo, max_size=min(hi, lo + 4))
            return items.map(tuple)
        case RecordField(cls=cls, fields=fields):
            return st.builds(cls, *(strategy(f) for _, f in fields))
    raise AssertionError(f"no strategy for {field!r}")


@pytest.mark.parametrize("cls", list(MESSAGES.values()), ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_message_round_trips(cls: type[Message], data: st.DataObject) -> None:
    values = [data.draw(strategy(f), label=name) for name, f in message_fields(cls)]
    message = cls(*values)
    payload = data.draw(st.binary(max_size=64)) if cls.HAS_DATA else None
    decoded, view = decode_frames([bytes(f) for f in encode_frames(message, payload)])
    assert decoded == message
    assert (None if view is None else bytes(view)) == payload


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_bus_errors(header: bytes) -> None:
    try:
        decode_message(header)
    except BusError as exc:
        assert exc.reason in REASONS


_leaves = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8)
) | st.binary(max_size=24)
_msgpack_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=6), max_leaves=20)


@settings(max_examples=150, deadline=None)
@given(tag=st.sampled_from(sorted(MESSAGES)), body=st.lists(_msgpack_values, max_size=10))
def test_well_formed_msgpack_with_wrong_fields_raises_only_bus_errors(
    tag: int, body: list[Any]
) -> None:
    try:
        decode_message(msgpack.packb([tag, *body], use_bin_type=True))
    except BusError as exc:
        assert exc.reason in REASONS


# --- broken input -> exact reason ---------------------------------------------------------------


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


HAVE = [42, IH.raw, "pa1/1", 7]
# A status row whose state is a plain string, not a TorrentState.
BAD_STATE_ROW = TorrentStatus(
    *(IH, "n", "up", 1.0, 1, 1, 1, 0, 0, 0, 0, 1, 1, "/", None, (), (), None)  # type: ignore[arg-type]
)
STATUS_ROW: list[Any] = [
    *(IH.raw, "n", "seeding", 1.0, 1, 1, 1, 0.0, 0.0, 0, 0, 1, 1, "/d", None, [], [], None),
    *([], True, None, None, None, []),
]

MALFORMED: list[tuple[str, bytes, str, str]] = [
    ("empty", b"", "truncated", "header ends in the middle of a value"),
    ("not msgpack", b"\xc1", "malformed_msgpack", "header is not msgpack"),
    ("truncated", pack(HAVE)[:-1], "truncated", "header ends in the middle of a value"),
    ("extra bytes", pack(HAVE) + b"\x90", "trailing_bytes", "bytes follow"),
    ("100k nesting", b"\x91" * 100_000 + b"\xc0", "too_deep", "nests deeper"),
    ("bad utf-8 str", b"\x92\x05\xa1\xff", "bad_utf8", "not UTF-8"),
    ("map", pack({"a": 1}), "limit_exceeded", "max_map_len"),
    ("ext type", b"\x92\x04\xd4\x01\x00", "limit_exceeded", "max_ext_len"),
    ("oversize str", pack([5, "x" * 65_537]), "limit_exceeded", "max_str_len"),
    ("oversize bin", pack([100, b"x" * (10 * 2**20 + 1), ""]), "limit_exceeded", "max_bin_len"),
    ("oversize array", b"\xdd\x00\x01\x00\x01" + b"\xc0" * 65_537, "limit_exceeded", "array"),
    ("huge header", b"\x00" * (MAX_HEADER_BYTES + 1), "header_too_large", "over the limit"),
    ("not an array", pack(4), "not_a_message", "not an array"),
    ("empty array", pack([]), "not_a_message", "not an array"),
    ("empty map", pack({}), "not_a_message", "not an array"),
    ("str tag", pack(["4", 1]), "not_a_message", "int tag"),
    ("bool tag", pack([True, 1]), "not_a_message", "int tag"),
    ("unknown tag", pack([127, 1]), "unknown_tag", "no bus message has tag 127"),
    ("negative tag", pack([-1]), "unknown_tag", "tag -1"),
    ("missing field", pack([4]), "wrong_field_count", "Heartbeat: expected 1 fields, got 0"),
    ("extra field", pack([4, 1, 2]), "wrong_field_count", "Heartbeat: expected 1 fields, got 2"),
    ("str for int", pack([4, "7"]), "wrong_type", "Heartbeat.seq: expected int, got str"),
    ("bool for int", pack([4, True]), "wrong_type", "Heartbeat.seq: expected int, got bool"),
    ("float for int", pack([4, 7.0]), "wrong_type", "Heartbeat.seq: expected int, got float"),
    ("negative int", pack([4, -1]), "out_of_range", "Heartbeat.seq: -1 is out of range"),
    (
        "piece out of range",
        pack([42, IH.raw, "pa1/1", 2**21]),
        "out_of_range",
        "PeerHave.piece: 2097152 is out of range 0..2097151",
    ),
    (
        "short info hash",
        pack([42, b"\x11" * 19, "pa1/1", 7]),
        "bad_length",
        "PeerHave.info_hash: info hash of length 19 is outside 20..20",
    ),
    (
        "str info hash",
        pack([42, "x" * 20, "pa1/1", 7]),
        "wrong_type",
        "PeerHave.info_hash: expected bytes, got str",
    ),
    ("empty peer key", pack([42, IH.raw, "", 7]), "bad_length", "PeerHave.peer: str of length 0"),
    (
        "bad address",
        pack([32, IH.raw, ["example.org", 80]]),
        "bad_value",
        "ConnectPeer.address: not an IP address",
    ),
    ("port 0", pack([32, IH.raw, ["10.0.0.1", 0]]), "bad_value", "port out of range: 0"),
    ("port 70000", pack([32, IH.raw, ["10.0.0.1", 70000]]), "bad_value", "port out of range"),
    (
        "address arity",
        pack([32, IH.raw, ["10.0.0.1"]]),
        "bad_length",
        "ConnectPeer.address: address of length 1",
    ),
    (
        "unknown enum",
        pack([20, IH.raw, [], "carrier_pigeon"]),
        "bad_value",
        "PeersDiscovered.source: 'carrier_pigeon' is not a PeerSource",
    ),
    (
        "nested bad peer",
        pack([20, IH.raw, [["10.0.0.1", 1], ["10.0.0.2", "x"]], "dht"]),
        "wrong_type",
        "PeersDiscovered.peers[1]: expected int port, got str",
    ),
    (
        "record field",
        pack([104, [STATUS_ROW, [*STATUS_ROW[:3], 1.5, *STATUS_ROW[4:]]], [], [], None]),
        "out_of_range",
        "StatusReport.torrents[1].progress: 1.5 is out of range 0.0..1.0",
    ),
    (
        "record arity",
        pack([104, [STATUS_ROW[:-1]], [], [], None]),
        "wrong_field_count",
        "StatusReport.torrents[0]: expected 24 fields, got 23",
    ),
    (
        "nan rate",
        pack(
            [
                47,
                [[IH.raw, "p", 0, 0, float("nan"), 0.0, False, False, True, False, False, 0, None]],
            ]
        ),
        "bad_value",
        "TransferStats.peers[0].download_rate: nan is not a finite number",
    ),
    (
        "too many pieces",
        pack([34, IH.raw, "p", list(range(4097))]),
        "bad_length",
        "AssignPieces.pieces: array of length 4097 is outside 0..4096",
    ),
    ("no peer key", pack([34, IH.raw, "", [1]]), "bad_length", "AssignPieces.peer: "),
    (
        "contributor type",
        pack([60, IH.raw, 3, [1], []]),
        "wrong_type",
        "StorePiece.contributors[0]: expected str, got int",
    ),
    (
        "none for required",
        pack([91, IH.raw, None]),
        "wrong_type",
        "PieceVerified.piece: expected int, got NoneType",
    ),
    (
        "str too long",
        pack([107, "r", "m" * 4097]),
        "bad_length",
        "ControlFailed.message: str of length 4097 is outside 0..4096",
    ),
]


@pytest.mark.parametrize(
    ("header", "reason", "detail"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_header_is_refused_with_its_reason(
    header: bytes, reason: str, detail: str
) -> None:
    with pytest.raises(BusError) as caught:
        decode_message(header)
    assert caught.value.reason == reason
    assert detail in str(caught.value)
    assert reason in REASONS


HEARTBEAT = encode_message(Heartbeat(seq=1))
STORE = encode_message(StorePiece(info_hash=IH, piece=0, contributors=()))


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "wrong_frame_count"),
        ([HEARTBEAT, b"", b""], "wrong_frame_count"),
        ([STORE], "missing_data_frame"),
        ([HEARTBEAT, b"data"], "unexpected_data_frame"),
        ([HEARTBEAT + b"\x00"], "trailing_bytes"),
        ([STORE, memoryview(bytearray(MAX_DATA_BYTES + 1))], "data_too_large"),
    ],
    ids=["none", "three", "data missing", "data unexpected", "trailing", "data too big"],
)
def test_malformed_frames_are_refused(frames: list[Any], reason: str) -> None:
    with pytest.raises(BusError) as caught:
        decode_frames(frames)
    assert caught.value.reason == reason


def test_a_data_frame_at_the_limit_is_accepted() -> None:
    _, data = decode_frames([STORE, memoryview(bytearray(MAX_DATA_BYTES))])
    assert data is not None and data.nbytes == MAX_DATA_BYTES


@pytest.mark.parametrize(
    ("message", "data", "reason", "detail"),
    [
        (StorePiece(IH, 0, ()), None, "missing_data_frame", "StorePiece needs a data frame"),
        (Heartbeat(1), b"x", "unexpected_data_frame", "Heartbeat carries no data frame"),
        (PeerHave(IH, "p", -1), None, "out_of_range", "PeerHave.piece: -1 is out of range"),
        (PeerHave(IH, "p", True), None, "wrong_type", "PeerHave.piece: expected int, got bool"),
        (
            PeerHave(b"x" * 20, "p", 1),  # type: ignore[arg-type]
            None,
            "wrong_type",
            "PeerHave.info_hash: expected InfoHash, got bytes",
        ),
        (AssignPieces(IH, "", (1,)), None, "bad_length", "AssignPieces.peer: "),
        (
            TransferStats(
                (PeerStats(IH, "p", 0, 0, -1.0, 0.0, False, False, True, False, False, 0),)
            ),
            None,
            "out_of_range",
            "TransferStats.peers[0].download_rate: -1.0 is out of range",
        ),
        (
            StatusReport((BAD_STATE_ROW,), ()),
            None,
            "wrong_type",
            "StatusReport.torrents[0].state: expected TorrentState, got str",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_encoding_refuses_what_decoding_would(
    message: Message, data: bytes | None, reason: str, detail: str
) -> None:
    with pytest.raises(BusError) as caught:
        encode_frames(message, data)
    assert caught.value.reason == reason
    assert detail in str(caught.value)


def test_ints_become_floats_and_enums_their_values_on_encoding() -> None:
    row = TorrentStatus(
        IH, "n", TorrentState.SEEDING, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, "/d", None, (), (), None
    )
    decoded = decode_message(encode_message(StatusReport((row,), ())))
    assert isinstance(decoded, StatusReport)
    assert decoded.torrents[0].progress == 1.0 and type(decoded.torrents[0].progress) is float
    assert decoded.torrents[0].state is TorrentState.SEEDING


# --- claims the sender cannot back: nothing is allocated on their word ----------------------

# About 5 kB of msgpack array headers, nested: each one claims items that would only follow in
# bytes the header does not have. msgpack builds a list of the claimed length on reading an
# array header, so before the shape check the first of these allocated 76 MiB.
NESTED_CLAIMS: list[tuple[str, bytes, str]] = [
    ("array16 of 65535, nested", b"\xdc\xff\xff" * 1700, "limit_exceeded"),
    ("array16 of 5000, nested", b"\xdc\x13\x88" * 1700, "too_deep"),
    ("array16 of 16, nested", b"\xdc\x00\x10" * 1700, "too_deep"),
    ("array32 of 5000, nested", b"\xdd\x00\x00\x13\x88" * 1000, "truncated"),
    ("a message, then nesting", b"\x92\x04" + b"\xdc\x00\x10" * 1700, "too_deep"),
    ("a map16 inside", b"\x92\x04" + b"\xde\x10\x00" * 1700, "limit_exceeded"),
    ("fixarrays, nested", b"\x91" * 5000, "too_deep"),
]


@pytest.mark.parametrize(
    ("header", "reason"), [c[1:] for c in NESTED_CLAIMS], ids=[c[0] for c in NESTED_CLAIMS]
)
def test_nested_array_claims_allocate_nothing(header: bytes, reason: str) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(BusError) as caught:
            decode_message(header)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated for a {len(header)}-byte header"
    assert caught.value.reason == reason
    assert "\n" not in str(caught.value)


def test_claims_are_judged_on_memoryviews_too() -> None:
    with pytest.raises(BusError) as caught:
        decode_frames([memoryview(b"\xdc\x00\x10" * 1700)])
    assert caught.value.reason == "too_deep"
    assert "deeper than any message" in str(caught.value)


def test_a_claim_past_the_bytes_left_is_truncated_and_named() -> None:
    header = pack([34, IH.raw, "pa1/1", list(range(300, 4396))])
    for end in (300, len(header) // 2, len(header) - 1):
        with pytest.raises(BusError) as caught:
            decode_message(header[:end])
        assert caught.value.reason == "truncated", end


def test_the_largest_and_deepest_messages_still_decode() -> None:
    web_seed = ["backing_off", 3, 1.5, "e" * 4096, 2, 4]
    peer = [["10.0.0.1", 6881], "c", "DU", 1.0, 2.0, 3, 4, 0.5, "v" * 256, "pex", "pa", "h"]
    peer += ["http://127.0.0.1/" + "u" * 4000, web_seed]
    web_seed_row = ["http://127.0.0.1/" + "u" * 4000, "banned", "m" * 4096, 2**40, 3]
    tracker = ["http://127.0.0.1/a", 0, "working", None, 1, 2, 3, 1.5]
    announce = ["tracker-1", "10.0.0.2", 6881, "peer-1", True, [tracker] * 256]
    metadata = [1, 2, 3]
    dht = [IH.raw, 40, 8, 900.0]
    row = [
        *STATUS_ROW[:15],
        *([tracker] * 256, [peer] * 1024, 0.25, [announce] * 64, False, metadata, dht, None),
        [web_seed_row] * 64,
    ]
    report = decode_message(pack([104, [STATUS_ROW] * 9_999 + [row], [], [], None]))
    assert isinstance(report, StatusReport)
    assert len(report.torrents) == 10_000
    assert report.torrents[-1].peer_list[-1].address == PeerAddress("10.0.0.1", 6881)
    assert report.torrents[-1].announces[-1].trackers[-1].url == "http://127.0.0.1/a"
    last_peer = report.torrents[-1].peer_list[-1]
    assert last_peer.web_seed is not None and last_peer.web_seed.failures == 3
    assert report.torrents[-1].web_seeds[-1].hash_failures == 3
    pieces = decode_message(pack([34, IH.raw, "pa1/1", list(range(300, 4396))]))
    assert isinstance(pieces, AssignPieces) and len(pieces.pieces) == 4096
