"""Seed inputs for the fuzz targets, gathered from the project's own test vectors.

Strategy: a fuzzer that starts from real bytes (libtorrent's captured wire traffic, opentracker's
replies, the broken-torrent table, the magnet tables, one instance of every bus message) reaches
the deep branches of a parser in seconds instead of hours. Each function here returns raw
protocol bytes; the targets (``targets.py``) add their own few header bytes on top.

Rules:
- Only files already in ``tests/vectors/`` and values already in the test tables are used: a
  new vector added for a unit test becomes a seed without touching this module.
- Everything is built in memory and deterministic (sorted file lists), so a seed corpus is the
  same on every machine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from torviz.shared.bencode import encode as bencode
from torviz.shared.bus import MESSAGES, encode_message, message_fields
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
)
from torviz.shared.dht.krpc import Response, decode_krpc
from torviz.shared.dht.node_id import NodeId, NodeInfo
from torviz.shared.errors import KrpcError
from torviz.shared.types import PeerAddress
from torviz.shared.wire import (
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    MessageDecoder,
    NotInterested,
    Piece,
    Port,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
    encode,
)

__all__ = [
    "REPO",
    "VECTORS",
    "bencode_values",
    "bus_headers",
    "extension_payloads",
    "handshakes",
    "info_dicts",
    "krpc_datagrams",
    "magnets",
    "metadata_payloads",
    "peer_ids",
    "pex_payloads",
    "routing_table_files",
    "torrent_shapes",
    "torrents",
    "tracker_http_replies",
    "tracker_udp_packets",
    "wire_streams",
]

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "vectors"


def _files(folder: Path, pattern: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted(folder.glob(pattern))]


@cache
def torrents() -> tuple[bytes, ...]:
    """Every .torrent in ``tests/vectors/torrents/`` (good and broken)."""
    return tuple(_files(VECTORS / "torrents", "**/*.torrent"))


@cache
def torrent_shapes() -> tuple[bytes, ...]:
    """Torrents in shapes the vector table lacks: a very deep path, a ``path.utf-8`` and a
    ``name.utf-8`` that are not UTF-8, a declared legacy ``encoding``."""

    def torrent(files: list[dict[bytes, object]], **top: bytes) -> bytes:
        info = {
            b"name": b"\xc4\xe3",
            b"name.utf-8": b"\xff",
            b"piece length": 16384,
            b"pieces": bytes(20),
            b"files": files,
        }
        extra = {key.encode(): value for key, value in top.items()}
        return bencode({b"announce": b"http://t/announce", b"info": info, **extra})

    legacy = [
        {b"length": 5, b"path": [b"d", b"\x82\xa0"], b"path.utf-8": [b"\xff"]},
        {b"length": 1, b"path": [b"\xc4\xe3"]},
    ]
    return (
        torrent([{b"length": 5, b"path": [b"d"] * 300}]),
        torrent(legacy),
        torrent(legacy, encoding=b"GBK"),
        torrent(legacy, encoding=b"shift_jis"),
    )


@cache
def info_dicts() -> tuple[bytes, ...]:
    """The raw ``info`` dictionaries of the torrents that have one (what ut_metadata carries)."""
    from torviz.shared.bencode import decode_with_spans
    from torviz.shared.errors import BencodeError

    found: list[bytes] = []
    for data in (*torrents(), *torrent_shapes()):
        try:
            _, spans = decode_with_spans(data, strict=False)
        except BencodeError:
            continue
        if b"info" in spans:
            start, end = spans[b"info"]
            found.append(data[start:end])
    return tuple(found)


@cache
def wire_streams() -> tuple[bytes, ...]:
    """The message streams captured from libtorrent (handshakes left out: they are not frames),
    and one frame of every message type, which libtorrent's side of a download never sends
    all of (no requests, cancels, rejects or ports): the fuzzer starts with each id's layout."""
    captured = [
        data
        for path in sorted((VECTORS / "wire").glob("*.bin"))
        if "handshake" not in path.name or "extension" in path.name
        for data in [path.read_bytes()]
    ]
    every: list[Message] = [
        KeepAlive(),
        Choke(),
        Unchoke(),
        Interested(),
        NotInterested(),
        Have(3),
        Bitfield(b"\xf0"),
        Request(1, 16384, 16384),
        Piece(1, 16384, b"\xab" * 20),
        Cancel(1, 16384, 16384),
        Port(6881),
        HaveAll(),
        HaveNone(),
        SuggestPiece(2),
        RejectRequest(1, 0, 16384),
        AllowedFast(4),
        Extended(3, b"d8:msg_typei0e5:piecei0ee"),
    ]
    unknown = b"\x00\x00\x00\x03\x63\x01\x02"  # id 99, what libtorrent drops a peer for
    return (*captured, *(encode(m) for m in every), b"".join(map(encode, every)) + unknown)


@cache
def handshakes() -> tuple[bytes, ...]:
    """libtorrent's handshakes, and one followed by the first frames of its stream."""
    found = _files(VECTORS / "wire", "lt_handshake*.bin")
    stream = (VECTORS / "wire" / "lt_stream_fast.bin").read_bytes()
    return (*found, found[0][:68] + stream[:64])


@cache
def extension_payloads() -> tuple[bytes, ...]:
    """BEP 10 extension handshake payloads: libtorrent's and the one torviz sent it."""
    payloads: list[bytes] = [b"d1:md11:ut_metadatai3ee1:v12:torviz 0.1.0e"]
    for data in wire_streams():
        try:
            messages = MessageDecoder().feed(data)
        except Exception:  # a vector that is not a clean stream is simply not a source here
            continue
        payloads.extend(m.payload for m in messages if isinstance(m, Extended) and m.ext_id == 0)
    return tuple(dict.fromkeys(payloads))


@cache
def tracker_http_replies() -> tuple[bytes, ...]:
    """opentracker's HTTP announce, failure and scrape replies, and the shapes it never sends:
    the BEP 3 dictionary model, ``peers6``, ``retry in``, warnings, a BEP 48 failure."""
    peer = {b"ip": b"192.0.2.1", b"port": 6881, b"peer id": b"-LT2110-" + bytes(12)}
    shapes: list[dict[bytes, object]] = [
        {b"interval": 1800, b"peers": [peer, {b"ip": b"[2001:db8::1]", b"port": 1}]},
        {
            b"interval": 10,
            b"min interval": 60,
            b"complete": 3,
            b"incomplete": -1,
            b"tracker id": b"abc",
            b"warning message": b"slow down\n",
            b"peers": bytes([192, 0, 2, 1, 0x1A, 0xE1]),
            b"peers6": bytes(15) + b"\x01\x1a\xe1",
        },
        {b"failure reason": b"no", b"failure code": 200, b"retry in": 60},
        {b"failure reason": b"never", b"retry in": b"never"},
        {b"failure_reason": b"scrape refused"},
        {b"files": {bytes(20): {b"complete": 1, b"downloaded": 2, b"incomplete": 3}}},
    ]
    return (*_files(VECTORS / "tracker", "http_*.bin"), *map(bencode, shapes))


@cache
def tracker_udp_packets() -> tuple[bytes, ...]:
    """opentracker's UDP requests and replies (BEP 15)."""
    return tuple(_files(VECTORS / "tracker", "udp_*.bin"))


@cache
def bencode_values() -> tuple[bytes, ...]:
    """Bencoded values: small hand-written ones, every HTTP tracker reply and extension payload,
    and the torrents (whose nesting bomb the targets' length cap trims)."""
    small = [b"i0e", b"i-42e", b"0:", b"4:spam", b"le", b"de", b"l4:spami3ee", b"d1:ai1e1:b0:e"]
    small.append(bencode({b"m": {b"ut_metadata": 1}, b"p": 6881, b"v": b"x", b"list": [[], {}]}))
    return (*small, *tracker_http_replies(), *extension_payloads(), *torrents())


@cache
def magnets() -> tuple[bytes, ...]:
    """The magnet links of the unit-test tables, good and bad, as UTF-8 bytes."""
    from tests.shared.test_magnet import BAD, GOOD

    links = [str(param.values[0]) for param in GOOD] + [uri for uri, _ in BAD]
    # The longest BAD entry exists to hit ``too_long``; a fuzzer does not need 64 KiB of it.
    return tuple(
        link.encode("utf-8", errors="surrogateescape") for link in links if len(link) < 4096
    )


@cache
def peer_ids() -> tuple[bytes, ...]:
    """Peer ids of each convention ``identify_client`` knows, and the ones in the vectors."""
    tail = b"0123456789ab"
    ids = [
        b"-LT2110-" + tail,
        b"-TR300Z-" + tail,
        b"-TR4050-" + tail,
        b"-AZ5770-" + tail,
        b"-BC0150-" + tail,
        b"-WW0109-" + tail,
        b"-UT355W-" + tail,
        b"exbc\x01\x02LORD" + tail[:10],
        b"M7-4-0--" + tail,
        b"A2-1-36-0-" + tail[:10],
        b"S58B-----" + tail[:11],
    ]
    ids.extend(data[48:68] for data in handshakes() if len(data) >= 68)
    return tuple(ids)


def _example(field: Field, variant: int) -> Any:
    """A value the field accepts: variant 0 the smallest, 1 the largest, 2 in between."""
    match field:
        case IntField(lo=lo, hi=hi):
            return (lo, hi, (lo + hi) // 2)[variant]
        case FloatField(lo=lo, hi=hi):
            low = max(lo, -1e9)
            high = min(hi, 1e9)
            return (low, high, (low + high) / 2)[variant]
        case BoolField():
            return variant == 1
        case StrField(lo=lo, hi=hi):
            return "é" * (lo, min(hi, lo + 8), min(hi, lo + 1))[variant]
        case BytesField(lo=lo, hi=hi):
            return b"\x01" * (lo, min(hi, lo + 8), min(hi, lo + 1))[variant]
        case Id20Field(cls=cls):
            return cls(bytes([variant + 1]) * 20)
        case PeerAddressField():
            return (PeerAddress("127.0.0.1", 6881), PeerAddress("::1", 65535))[variant % 2]
        case EnumField(enum=enum):
            members: list[Enum] = list(enum)
            return members[(0, -1, len(members) // 2)[variant]]
        case OptionalField(inner=inner):
            return None if variant == 0 else _example(inner, variant)
        case TupleField(inner=inner, lo=lo, hi=hi):
            count = (lo, min(hi, lo + 2), min(hi, lo + 1))[variant]
            return tuple(_example(inner, variant) for _ in range(count))
        case RecordField(cls=cls, fields=fields):
            return cls(*(_example(f, variant) for _, f in fields))
    raise AssertionError(f"no example for {field!r}")


def _bus_messages() -> Iterator[Any]:
    for cls in MESSAGES.values():
        for variant in (0, 1, 2):
            yield cls(*(_example(f, variant) for _, f in message_fields(cls)))


@cache
def bus_headers() -> tuple[bytes, ...]:
    """Three encoded instances of every bus message: smallest, largest, in between."""
    return tuple(dict.fromkeys(encode_message(m) for m in _bus_messages()))


# --- DHT and extension messages ------------------------------------------------------------------

_BEP5_ID = b"abcdefghij0123456789"
_BEP5_OTHER = b"mnopqrstuvwxyz123456"


@cache
def krpc_datagrams() -> tuple[bytes, ...]:
    """KRPC datagrams: libtorrent's captured ones (``tests/vectors/dht/``), BEP 5's examples,
    and the shapes neither gives: BEP 32 ``want``/``nodes6``, BEP 43 ``ro``, an unknown method,
    ``implied_port``, a non-UTF-8 error text."""
    node = _BEP5_OTHER + bytes([127, 0, 0, 2, 0x1A, 0xE1])
    node6 = _BEP5_OTHER + bytes(15) + b"\x01\x1a\xe1"
    shapes: list[dict[bytes, object]] = [
        # BEP 5's examples, as the BEP prints them.
        {b"t": b"aa", b"y": b"q", b"q": b"ping", b"a": {b"id": _BEP5_ID}},
        {b"t": b"aa", b"y": b"r", b"r": {b"id": _BEP5_OTHER}},
        {b"t": b"aa", b"y": b"e", b"e": [201, b"A Generic Error Ocurred"]},
        {
            b"t": b"aa",
            b"y": b"q",
            b"q": b"find_node",
            b"a": {b"id": _BEP5_ID, b"target": _BEP5_OTHER},
        },
        {b"t": b"aa", b"y": b"r", b"r": {b"id": _BEP5_ID, b"nodes": node * 2}},
        {
            b"t": b"aa",
            b"y": b"q",
            b"q": b"get_peers",
            b"a": {b"id": _BEP5_ID, b"info_hash": _BEP5_OTHER},
        },
        {
            b"t": b"aa",
            b"y": b"r",
            b"r": {b"id": _BEP5_ID, b"token": b"aoeusnth", b"values": [b"axje.u", b"idhtnm"]},
        },
        {
            b"t": b"aa",
            b"y": b"q",
            b"q": b"announce_peer",
            b"a": {
                b"id": _BEP5_ID,
                b"implied_port": 1,
                b"info_hash": _BEP5_OTHER,
                b"port": 6881,
                b"token": b"aoeusnth",
            },
        },
        # BEP 32, 42, 43 and the odd shapes.
        {
            b"t": b"\x00\x01",
            b"y": b"q",
            b"q": b"get_peers",
            b"ro": 1,
            b"v": b"LT\x02\x01",
            b"a": {b"id": _BEP5_ID, b"info_hash": _BEP5_OTHER, b"want": [b"n4", b"n6", b"x"]},
        },
        {
            b"t": b"\x00\x02",
            b"y": b"r",
            b"ip": bytes(15) + b"\x01\x1a\xe1",
            b"r": {
                b"id": _BEP5_ID,
                b"nodes": node,
                b"nodes6": node6 * 2,
                b"values": [bytes(15) + b"\x01\x1a\xe1", bytes([10, 0, 0, 1, 0, 80])],
                b"token": b"\xff" * 20,
            },
        },
        {b"t": b"zz", b"y": b"q", b"q": b"sample_infohashes", b"a": {b"id": _BEP5_ID}},
        {b"t": b"zz", b"y": b"q", b"q": b"g\xc3\xa9t", b"a": {}},
        {b"t": b"zz", b"y": b"e", b"e": [204, b"\xff\xfe bad"], b"ip": bytes([1, 2, 3, 4, 0, 1])},
    ]
    return (*_files(VECTORS / "dht", "*.bin"), *map(bencode, shapes))


@cache
def metadata_payloads() -> tuple[bytes, ...]:
    """``ut_metadata`` payloads: libtorrent's data and reject answers, a request, an unknown
    ``msg_type``, and the last (short) piece of a two-piece info dictionary."""
    last = bencode({b"msg_type": 1, b"piece": 1, b"total_size": 16384 + 10}) + b"x" * 10
    return (
        *_files(VECTORS / "wire", "lt_metadata_*.bin"),
        bencode({b"msg_type": 0, b"piece": 0}),
        bencode({b"msg_type": 2, b"piece": 511}),
        bencode({b"msg_type": 9, b"piece": 0, b"extra": [1, 2]}),
        last,
    )


@cache
def pex_payloads() -> tuple[bytes, ...]:
    """``ut_pex`` payloads: libtorrent's (from its captured frame) and one with every key,
    flags short of their list, and unusable entries."""
    frames = [data[6:] for data in _files(VECTORS / "wire", "lt_ut_pex.bin")]  # length, 20, id
    v4 = bytes([10, 0, 0, 1, 0x1A, 0xE1, 0, 0, 0, 0, 0, 80, 10, 0, 0, 2, 0, 0])
    v6 = bytes(15) + b"\x01\x1a\xe1" + b"\xff" + bytes(15) + b"\x00\x50"
    every = {
        b"added": v4,
        b"added.f": b"\x12",
        b"dropped": v4[:6],
        b"added6": v6,
        b"added6.f": b"\x01\x02\x03",
        b"dropped6": v6[:18],
        b"x": 1,
    }
    return (*frames, bencode(every), b"de")


@cache
def routing_table_files() -> tuple[bytes, ...]:
    """Routing table state files (``RoutingTable.dump``'s form): the nodes libtorrent named in
    the captured DHT vectors, and generated ones of each family, spread over the id space so
    that buckets fill and split."""
    own = NodeId(bytes.fromhex("b4eaaac6e43817e98709e9382c4d2c22be91ba58"))
    captured: list[NodeInfo] = []
    for data in _files(VECTORS / "dht", "*.bin"):
        try:
            message = decode_krpc(data)
        except KrpcError:
            continue
        if isinstance(message, Response):
            captured.extend(message.nodes)

    def entry(info: NodeInfo) -> bytes:
        packed = ipaddress.ip_address(info.address.host).packed
        return info.id.raw + packed + info.address.port.to_bytes(2, "big")

    def spread(count: int, ipv6: bool) -> bytes:
        out = bytearray()
        for i in range(count):
            node_id = bytes([(i * 37) % 256, i % 7]) + own.raw[2:]
            ip = bytes(15) + bytes([i + 1]) if ipv6 else bytes([10, 1, i // 250, i % 250 + 1])
            out += node_id + ip + (6881 + i).to_bytes(2, "big")
        return bytes(out)

    def table(nodes: bytes, node_id: bytes = own.raw) -> bytes:
        return bencode({b"id": node_id, b"nodes": nodes, b"v": 1})

    return (
        table(b"".join(map(entry, captured))),
        table(spread(40, False)),
        table(spread(24, True)),
        table(b""),
        table(spread(3, False), bytes(20)),
    )
