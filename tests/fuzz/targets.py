"""Fuzz targets: one function per parser of outside bytes, each asserting that parser's contract.

Strategy: a target takes the fuzzer's bytes, hands them to a parser and checks what the parser
promises. It is plain Python with no fuzzer import, so the same function serves three callers:
atheris (``run.py``, coverage-guided), the replay test (``test_smoke.py``, every seed and every
saved regression, even where atheris is not installed) and a person reproducing a finding
(``run.py --replay FILE``).

Rules:
- A finding is any exception that escapes a target. The parser's documented error (a
  ``TorvizError`` subclass named in its docstring) is caught and, where it has one, its
  ``reason`` is checked against the documented set; anything else escapes: an ``IndexError``,
  a ``RecursionError``, a ``UnicodeError``, or the ``AssertionError`` of a broken contract. Hangs
  and memory blow-ups are caught by the fuzzer's per-input time and RSS limits.
- Contracts checked beyond "only documented errors": canonical codecs round-trip exactly
  (strict bencode, wire frames, handshakes, BEP 15 packets); decoded values survive
  ``decode(encode(x)) == x`` (lenient bencode, magnets, extension handshakes, bus messages);
  incremental decoders give the same messages, or the same error, whether the bytes arrive
  whole or in random chunks; bounds the modules promise hold (peers per reply, safe paths,
  printable tracker text, the wire decoder's buffer).
- Where a parser takes more than bytes (chunk sizes, decoder options, a bitfield's piece
  count), the first input bytes choose them, so every input replays deterministically.
- Adding a target is one decorated function ``fuzz_<name>(data: bytes) -> None`` plus the seeds
  it starts from. The registry (``Target``, ``TARGETS``, ``fuzz_target``) lives in
  ``registry.py`` and is re-exported here; the targets of the peers' extension messages
  (``targets_peers.py``), of the DHT (``targets_dht.py``) and of web seeds
  (``targets_webseed.py``) are imported at the end of this module, so
  ``tests.fuzz.targets.TARGETS`` holds every target.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable
from functools import partial
from typing import TypeVar

from tests.fuzz import seeds
from tests.fuzz.registry import TARGETS, Target, fuzz_target
from torviz.shared.bencode import (
    DEFAULT_LIMITS,
    NETWORK_LIMITS,
    BencodeLimits,
    decode,
    decode_prefix,
    decode_with_spans,
)
from torviz.shared.bencode import encode as bencode
from torviz.shared.bitfield import Bitfield, BitfieldError
from torviz.shared.bus import REASONS, decode_frames, decode_message, encode_message
from torviz.shared.errors import (
    BencodeError,
    BusError,
    MagnetError,
    MetainfoError,
    TrackerError,
    WireError,
)
from torviz.shared.magnet import MAX_FILE_INDEX, MAX_SELECT_ONLY, format_magnet, parse_magnet
from torviz.shared.metainfo import InfoDict, Metainfo, parse_info_dict, parse_metainfo
from torviz.shared.paths import check_component
from torviz.shared.peer_id import identify_client
from torviz.shared.tracker import (
    MAX_ANNOUNCE_INTERVAL,
    MAX_PEERS_PER_REPLY,
    MIN_ANNOUNCE_INTERVAL,
    AnnounceFailure,
    AnnounceResponse,
    decode_announce_response,
    decode_connect_response,
    decode_error_response,
    decode_request,
    decode_scrape_response,
    encode_request,
    encode_response,
    parse_announce_response,
    parse_scrape_response,
)
from torviz.shared.tracker.model import MAX_TRACKER_TEXT
from torviz.shared.tracker.scrape import MAX_SCRAPE_ENTRIES
from torviz.shared.tracker.udp import MAX_SCRAPE_HASHES, UdpAnnounceRequest
from torviz.shared.wire import (
    Handshake,
    HandshakeHeader,
    HandshakeReader,
    Message,
    MessageDecoder,
    decode_extension_handshake,
    decode_handshake,
    decode_handshake_header,
    encode,
    encode_extension_handshake,
    encode_handshake,
)

__all__ = ["TARGETS", "Target", "fuzz_target"]

_T = TypeVar("_T")


def _chunks(data: bytes, seed: int) -> list[bytes | memoryview]:
    """Split ``data`` into pieces of pseudo-random sizes (1 byte to 16 KiB), fixed by ``seed``,
    alternating between ``bytes`` and ``memoryview`` slices as a socket layer might hand them."""
    rng = random.Random(seed)
    sizes = (1, 1, 2, 3, 4, 5, 7, 13, 17, 64, 100, 1000, 16384)
    view = memoryview(data)
    out: list[bytes | memoryview] = []
    pos = 0
    while pos < len(data):
        step = rng.choice(sizes)
        piece = view[pos : pos + step]
        out.append(piece if rng.random() < 0.5 else bytes(piece))
        pos += step
    return out


def _with_headers(headers: Iterable[bytes], bodies: Iterable[bytes]) -> list[bytes]:
    bodies = list(bodies)
    return [header + body for header in headers for body in bodies]


# --- bencode ---------------------------------------------------------------------------------

_BENCODE_REASONS = frozenset(
    {
        "too_large",
        "truncated",
        "bad_length",
        "leading_zero",
        "string_too_long",
        "duplicate_key",
        "unsorted_keys",
        "non_bytes_key",
        "bad_integer",
        "integer_too_large",
        "negative_zero",
        "too_deep",
        "bad_token",
        "too_many_items",
        "trailing_data",
    }
)


_LIMIT_REASONS = frozenset({"too_large", "too_deep", "string_too_long", "too_many_items"})
_TINY_LIMITS = BencodeLimits(
    max_size=NETWORK_LIMITS.max_size, max_depth=3, max_string_length=40, max_items=16
)


@fuzz_target(seeds.bencode_values)
def fuzz_bencode_strict(data: bytes) -> None:
    """Network bencode: what is accepted is canonical, so it re-encodes to the same bytes.
    Tighter limits only ever refuse, with a limit reason: they never change a value, and any
    other error is the one the looser limits report, at the same offset."""
    try:
        value = decode(data, strict=True, limits=NETWORK_LIMITS)
    except BencodeError as exc:
        assert exc.reason in _BENCODE_REASONS, exc.reason
        assert 0 <= exc.offset <= max(len(data), NETWORK_LIMITS.max_size), exc.offset
        error: BencodeError | None = exc
    else:
        assert bencode(value) == data
        error = None
    try:
        tiny = decode(data, strict=True, limits=_TINY_LIMITS)
    except BencodeError as exc:
        if exc.reason not in _LIMIT_REASONS:
            assert error is not None, f"only the tight limits refused: {exc.reason}"
            assert (error.reason, error.offset) == (exc.reason, exc.offset), (error, exc)
    else:
        assert error is None and tiny == value, "tight limits changed the outcome"
    try:
        value, end = decode_prefix(data, strict=True, limits=NETWORK_LIMITS)
    except BencodeError as exc:
        assert exc.reason in _BENCODE_REASONS, exc.reason
    else:
        assert 0 < end <= len(data)
        assert bencode(value) == data[:end]


@fuzz_target(seeds.bencode_values)
def fuzz_bencode_lenient(data: bytes) -> None:
    """Bencode from disk: the value survives a canonical round trip and agrees with strict
    mode where both accept, and each top-level span holds exactly its value."""
    try:
        value, spans = decode_with_spans(data, strict=False, limits=DEFAULT_LIMITS)
    except BencodeError as exc:
        assert exc.reason in _BENCODE_REASONS, exc.reason
        return
    canonical = bencode(value)
    assert decode(canonical, strict=True, limits=DEFAULT_LIMITS) == value
    try:
        strict_value = decode(data, strict=True, limits=DEFAULT_LIMITS)
    except BencodeError:
        pass
    else:
        assert strict_value == value
    if isinstance(value, dict):
        assert spans.keys() == value.keys()
        for key, (start, end) in spans.items():
            assert decode(data[start:end], strict=False) == value[key]
    else:
        assert not spans


# --- metainfo --------------------------------------------------------------------------------


def _check_metainfo(meta: Metainfo, data: bytes) -> None:
    assert hashlib.sha1(meta.raw_info).digest() == meta.info_hash.raw
    assert meta.raw_info in data
    _check_info(meta.info)


def _check_info(info: InfoDict) -> None:
    check_component(info.name)
    offset = 0
    for entry in info.files:
        assert entry.path, "a file without a path"
        for component in entry.path:
            check_component(component)  # raises MetainfoError: a finding here
        assert entry.offset == offset and entry.length >= 0
        offset += entry.length
    assert offset == info.total_length > 0
    assert len(info.piece_hashes) == 20 * info.geometry.num_pieces


@fuzz_target(lambda: (*seeds.torrents(), *seeds.torrent_shapes(), *seeds.info_dicts()))
def fuzz_metainfo(data: bytes) -> None:
    """A .torrent from disk and an info dict from ut_metadata: only ``MetainfoError``, and what
    is accepted has safe paths, consistent lengths and the info-hash of its raw bytes."""
    try:
        meta = parse_metainfo(data)
    except MetainfoError:
        pass
    else:
        _check_metainfo(meta, data)
    for strict in (True, False):
        try:
            info = parse_info_dict(data, strict=strict)
        except MetainfoError:
            continue
        _check_info(info)


# --- magnet ----------------------------------------------------------------------------------


@fuzz_target(seeds.magnets, max_len=4096)
def fuzz_magnet(data: bytes) -> None:
    """Magnet links (bytes that are not UTF-8 arrive as lone surrogates, as from a command line):
    only ``MagnetError``; a parsed link formats back to itself."""
    text = data.decode("utf-8", errors="surrogateescape")
    try:
        magnet = parse_magnet(text)
    except MagnetError:
        return
    assert list(magnet.select_only) == sorted(set(magnet.select_only))
    assert len(magnet.select_only) <= MAX_SELECT_ONLY
    assert all(0 <= i < MAX_FILE_INDEX for i in magnet.select_only)
    assert all(magnet.trackers) and len(set(magnet.trackers)) == len(magnet.trackers)
    assert parse_magnet(format_magnet(magnet)) == magnet


# --- peer wire -------------------------------------------------------------------------------

_WIRE_FLAGS = 8  # bit 0: skip_unknown, bit 1: block_sink, bit 2: small limits


def _sink(piece: int, offset: int, length: int) -> memoryview | None:
    # Half the blocks go to a caller buffer, half come back as bytes: both paths in one stream.
    return memoryview(bytearray(length)) if (piece ^ offset) & 1 == 0 else None


def _decoder(flags: int) -> tuple[MessageDecoder, int]:
    """A decoder configured by ``flags``, and the most bytes it may hold at once."""
    sink = _sink if flags & 2 else None
    skip = bool(flags & 1)
    if flags & 4:
        decoder = MessageDecoder(
            13 + 16, max_bitfield=8, max_extended=32, block_sink=sink, skip_unknown=skip
        )
        return decoder, 4 + max(13 + 16, 1 + 8, 2 + 32)
    return MessageDecoder(block_sink=sink, skip_unknown=skip), 4 + (1 << 17) + 2


def _feed_all(
    decoder: MessageDecoder, chunks: Iterable[bytes | memoryview], bound: int
) -> tuple[list[Message], WireError | None]:
    out: list[Message] = []
    for chunk in chunks:
        try:
            out.extend(decoder.feed(chunk))
        except WireError as exc:
            assert exc.reason in ("frame_too_large", "bad_length", "unknown_message"), exc.reason
            try:
                decoder.feed(b"\x00")
            except WireError as again:
                assert again is exc, "a dead decoder changed its error"
            else:
                raise AssertionError("a decoder accepted bytes after a WireError") from exc
            return out, exc
        assert decoder.buffered <= bound, f"decoder holds {decoder.buffered} bytes"
    return out, None


@fuzz_target(
    lambda: _with_headers([bytes([f, 7]) for f in range(_WIRE_FLAGS)], seeds.wire_streams()),
    max_len=20_000,
)
def fuzz_wire_codec(data: bytes) -> None:
    """The message stream: byte 0 picks the decoder options, byte 1 the chunk sizes. Fed whole
    or in chunks it yields the same messages, or fails with the same reason; strict decoding
    re-encodes to the bytes it read."""
    if len(data) < 2:
        return
    flags, body = data[0] % _WIRE_FLAGS, data[2:]
    whole, bound = _decoder(flags)
    whole_messages, whole_error = _feed_all(whole, [body], bound)
    chunked, _ = _decoder(flags)
    chunk_messages, chunk_error = _feed_all(chunked, _chunks(body, data[1]), bound)
    if whole_error is not None:
        assert chunk_error is not None, f"only the whole feed failed: {whole_error.reason}"
        assert chunk_error.reason == whole_error.reason, (whole_error.reason, chunk_error.reason)
        return
    assert chunk_error is None, f"only the chunked feed failed: {chunk_error}"
    assert chunk_messages == whole_messages
    if not flags & 1:
        framed = b"".join(encode(m) for m in whole_messages)
        assert body.startswith(framed), "decoded messages do not re-encode to their bytes"


_CANONICAL_HANDSHAKE = b"\x13BitTorrent protocol" + bytes(48)


@fuzz_target(lambda: _with_headers([b"\x00", b"\x05"], seeds.handshakes()), max_len=512)
def fuzz_handshake(data: bytes) -> None:
    """The 68-byte handshake: byte 0 picks the chunk sizes. The one-shot decoders and the
    incremental reader agree (same handshake, same error), and a handshake re-encodes exactly."""
    if not data:
        return
    body = data[1:]
    try:
        header: HandshakeHeader | None = decode_handshake_header(body)
    except WireError as exc:
        assert exc.reason in ("bad_pstrlen", "bad_protocol", "truncated"), exc.reason
        header = None
    try:
        decode_handshake(body)
    except WireError as exc:
        assert exc.reason in ("bad_pstrlen", "bad_protocol", "bad_length"), exc.reason
    whole: Handshake | None = None
    expected_error: str | None = None
    try:
        # Missing bytes filled in from a valid handshake: only the bytes present can be wrong.
        whole = decode_handshake(body[:68] + _CANONICAL_HANDSHAKE[len(body) :])
    except WireError as exc:
        expected_error = exc.reason
    reader = HandshakeReader()
    events: list[HandshakeHeader | Handshake] = []
    surplus = bytearray()
    error: WireError | None = None
    for chunk in _chunks(body, data[0]):
        if reader.handshake is not None:
            surplus += chunk
            continue
        try:
            events.extend(reader.feed(chunk))
        except WireError as exc:
            error = exc
            break
        if reader.handshake is not None:
            surplus += reader.take_surplus()
    if expected_error is not None:
        assert error is not None and error.reason == expected_error, (expected_error, error)
        return
    assert error is None, f"the reader refused a valid prefix: {error}"
    assert whole is not None
    if len(body) >= 68:
        assert events == [whole.header, whole]
        assert encode_handshake(whole) == body[:68]
        assert bytes(surplus) == body[68:]
    elif len(body) >= 48:
        assert events == [whole.header] and header == whole.header
    else:
        assert events == []


@fuzz_target(seeds.extension_payloads, max_len=4096)
def fuzz_extension_handshake(data: bytes) -> None:
    """The BEP 10 handshake payload: only ``WireError``; what decodes survives re-encoding."""
    try:
        handshake = decode_extension_handshake(data)
    except WireError as exc:
        assert exc.reason == "bad_extension_handshake", exc.reason
        return
    assert all(0 <= i <= 255 for i in handshake.m.values())
    assert decode_extension_handshake(encode_extension_handshake(handshake)) == handshake


# --- trackers --------------------------------------------------------------------------------

_HTTP_TRACKER_REASONS = frozenset({"bad_bencode", "not_a_dict", "bad_field", "bad_compact_length"})


def _check_text(text: str | None) -> None:
    if text is not None:
        assert text.isprintable() and len(text) <= MAX_TRACKER_TEXT, repr(text)


@fuzz_target(seeds.tracker_http_replies)
def fuzz_tracker_http(data: bytes) -> None:
    """HTTP announce and scrape replies: only ``TrackerError``; intervals clamped, peers distinct
    and bounded, tracker text printable and bounded."""
    try:
        reply = parse_announce_response(data)
    except TrackerError as exc:
        assert exc.reason in _HTTP_TRACKER_REASONS, exc.reason
    else:
        if isinstance(reply, AnnounceResponse):
            assert MIN_ANNOUNCE_INTERVAL <= reply.interval <= MAX_ANNOUNCE_INTERVAL
            if reply.min_interval is not None:
                assert MIN_ANNOUNCE_INTERVAL <= reply.min_interval <= MAX_ANNOUNCE_INTERVAL
            assert len(reply.peers) <= MAX_PEERS_PER_REPLY
            assert len(set(reply.addresses)) == len(reply.peers)
            assert all(0 < p.address.port < 65536 for p in reply.peers)
            _check_text(reply.warning)
        else:
            assert isinstance(reply, AnnounceFailure)
            _check_text(reply.reason)
    try:
        stats = parse_scrape_response(data)
    except TrackerError as exc:
        assert exc.reason in (*_HTTP_TRACKER_REASONS, "tracker_failure"), exc.reason
    else:
        assert len(stats) <= MAX_SCRAPE_ENTRIES
        assert all(min(s.complete, s.downloaded, s.incomplete) >= 0 for s in stats.values())


_UDP_REASONS = frozenset(
    {
        "too_large",
        "truncated",
        "bad_protocol_id",
        "wrong_action",
        "bad_event",
        "bad_length",
        "too_many_hashes",
        "wrong_transaction",
        "tracker_error",
        "bad_compact_length",
    }
)


def _udp(call: Callable[[], _T]) -> _T | None:
    try:
        return call()
    except TrackerError as exc:
        assert exc.reason in _UDP_REASONS, exc.reason
        return None


@fuzz_target(seeds.tracker_udp_packets, max_len=2048)
def fuzz_tracker_udp(data: bytes) -> None:
    """BEP 15 packets through every decoder, both sides (the transaction id is taken from the
    packet, so the fuzzer gets past that check): only ``TrackerError``, and whatever decodes
    encodes back to the bytes it was read from."""
    tid = int.from_bytes(data[4:8], "big") if len(data) >= 8 else 0

    request = _udp(lambda: decode_request(data))
    if request is not None:
        encoded = encode_request(request)
        fixed = 98 if isinstance(request, UdpAnnounceRequest) else len(encoded)
        assert encoded[:fixed] == data[:fixed]

    connect = _udp(lambda: decode_connect_response(data, tid))
    if connect is not None:
        assert encode_response(connect) == data[:16]

    for ipv6 in (False, True):
        announce = _udp(partial(decode_announce_response, data, tid, ipv6=ipv6))
        if announce is not None:
            assert len(announce.to_response().peers) <= MAX_PEERS_PER_REPLY
            if not announce.dropped_peers:
                assert encode_response(announce, ipv6=ipv6) == data

    entries = max(0, min(MAX_SCRAPE_HASHES, (len(data) - 8) // 12))
    for count in sorted({0, 1, entries, entries + 1}):
        scrape = _udp(partial(decode_scrape_response, data, tid, count))
        if scrape is not None:
            assert encode_response(scrape) == data[: 8 + 12 * count]

    error = _udp(lambda: decode_error_response(data))
    if error is not None:
        _check_text(error.message)


# --- bus -------------------------------------------------------------------------------------


@fuzz_target(seeds.bus_headers)
def fuzz_bus_codec(data: bytes) -> None:
    """A bus header from another host: only ``BusError`` with a listed reason; a decoded
    message encodes and decodes back to itself, and travels the same in a frame list."""
    try:
        message = decode_message(data)
    except BusError as exc:
        assert exc.reason in REASONS, exc.reason
        return
    assert decode_message(encode_message(message)) == message
    try:
        framed, view = decode_frames([data])
    except BusError as exc:
        assert message.HAS_DATA and exc.reason == "missing_data_frame", exc.reason
    else:
        assert framed == message and view is None


# --- small parsers of peer bytes ---------------------------------------------------------------


@fuzz_target(seeds.peer_ids, max_len=64)
def fuzz_peer_id(data: bytes) -> None:
    """Naming the client behind a peer id never fails and names it in printable text."""
    info = identify_client(data)
    assert str(info).isprintable()
    assert info.prefix.isprintable()


@fuzz_target(
    lambda: _with_headers(
        [b"\x00", b"\x03", b"\x80", b"\x45"], [b"", b"\x80", b"\xff\xfe", b"\xaa" * 9]
    )
)
def fuzz_bitfield(data: bytes) -> None:
    """A bitfield payload: byte 0 picks the piece count (spare bits in its low 3 bits, a wrong
    length in its top 2 bits). Only ``BitfieldError``; what is accepted round-trips."""
    if not data:
        return
    body = data[1:]
    size = max(0, 8 * len(body) - (data[0] & 7))
    if data[0] & 0x80:
        size += 8  # one byte short
    if data[0] & 0x40:
        size = max(0, size - 8)  # one byte too many
    try:
        field = Bitfield.from_bytes(body, size)
    except BitfieldError as exc:
        assert exc.reason in ("bad_bitfield_length", "bitfield_spare_bits"), exc.reason
        return
    assert field.to_bytes() == body
    assert len(field) == int.from_bytes(body, "big").bit_count()
    assert all(0 <= index < size for index in field)


# --- the targets of the other modules ------------------------------------------------------------
# Imported last so they register after these; ``TARGETS`` above is the one registry they fill.
from tests.fuzz import targets_dht, targets_peers, targets_webseed  # noqa: E402, F401
