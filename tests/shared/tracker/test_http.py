"""HTTP announce: URL building (BEP 3 escaping) and reply parsing (BEP 3, 7, 23, 31)."""

from __future__ import annotations

import contextlib
import string
import time
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.shared.tracker.strategies import info_hashes, peer_ids
from torviz.shared.bencode import encode
from torviz.shared.errors import BencodeError, TrackerError
from torviz.shared.tracker import (
    MAX_PEERS_PER_REPLY,
    AnnounceEvent,
    AnnounceFailure,
    AnnounceRequest,
    AnnounceResponse,
    TrackerPeer,
    build_announce_url,
    encode_compact_v4,
    encode_compact_v6,
    parse_announce_response,
    percent_encode,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

# Every kind of byte: controls, space, the four unreserved marks, letters and digits at both
# ends of their ranges, and reserved characters that would break a query if left alone.
TRICKY_HASH = InfoHash(b"\x00\x1f -._~AZaz09%+&=?/#")
TRICKY_PEER = PeerId(b"-TV0001-\x80\xff!*()'\n:;@,")
UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


def request(**changes: object) -> AnnounceRequest:
    fields: dict[str, object] = {
        "info_hash": TRICKY_HASH,
        "peer_id": TRICKY_PEER,
        "port": 6881,
        "uploaded": 1,
        "downloaded": 2,
        "left": 3,
        "event": AnnounceEvent.STARTED,
        "numwant": 50,
        "key": 0x0BADCAFE,
    }
    fields.update(changes)
    return AnnounceRequest(**fields)  # type: ignore[arg-type]


def tokens(escaped: str) -> list[str]:
    """Split an escaped value into one token per original byte: ``x`` or ``%XX``."""
    out = []
    i = 0
    while i < len(escaped):
        step = 3 if escaped[i] == "%" else 1
        out.append(escaped[i : i + step])
        i += step
    return out


def test_info_hash_escaping_character_by_character() -> None:
    escaped = percent_encode(TRICKY_HASH.raw)
    assert escaped == "%00%1F%20-._~AZaz09%25%2B%26%3D%3F%2F%23"
    pieces = tokens(escaped)
    assert len(pieces) == 20
    for byte, piece in zip(TRICKY_HASH.raw, pieces, strict=True):
        if chr(byte) in UNRESERVED:
            assert piece == chr(byte)
        else:
            assert piece == f"%{byte:02X}"  # upper-case hex, always two digits


def test_peer_id_escaping() -> None:
    assert percent_encode(TRICKY_PEER.raw) == "-TV0001-%80%FF%21%2A%28%29%27%0A%3A%3B%40%2C"


def test_full_announce_url() -> None:
    url = build_announce_url("http://tracker.example:6969/announce", request())
    assert url == (
        "http://tracker.example:6969/announce"
        "?info_hash=%00%1F%20-._~AZaz09%25%2B%26%3D%3F%2F%23"
        "&peer_id=-TV0001-%80%FF%21%2A%28%29%27%0A%3A%3B%40%2C"
        "&port=6881&uploaded=1&downloaded=2&left=3&key=0BADCAFE&event=started"
        "&numwant=50&compact=1"
    )


@pytest.mark.parametrize(
    ("base", "start"),
    [
        (
            "http://t.example/announce?passkey=abc",
            "http://t.example/announce?passkey=abc&info_hash=",
        ),
        ("http://t.example/announce?", "http://t.example/announce?info_hash="),
        ("http://t.example/announce?a=1&", "http://t.example/announce?a=1&info_hash="),
        ("http://t.example/announce#frag", "http://t.example/announce?info_hash="),
        ("https://t.example/x/y.php?k=%41", "https://t.example/x/y.php?k=%41&info_hash="),
    ],
)
def test_base_url_query_is_kept(base: str, start: str) -> None:
    assert build_announce_url(base, request()).startswith(start)


def test_optional_parameters() -> None:
    base = "http://t/a"
    plain = build_announce_url(base, request(event=AnnounceEvent.NONE, numwant=None, key=1))
    assert "event=" not in plain and "numwant=" not in plain
    assert plain.endswith("&left=3&key=00000001&compact=1")
    assert build_announce_url(base, request(key=0xFFFFFFFF)).count("&key=FFFFFFFF&") == 1
    for event in (AnnounceEvent.COMPLETED, AnnounceEvent.STARTED, AnnounceEvent.STOPPED):
        assert f"&event={event.value}&" in build_announce_url(base, request(event=event))
    everything = build_announce_url(
        base,
        request(compact=False, no_peer_id=True, ip="2001:db8::1", trackerid=b"id 7\xff"),
    )
    assert everything.endswith("&compact=0&no_peer_id=1&ip=2001%3Adb8%3A%3A1&trackerid=id%207%FF")


def test_request_validation() -> None:
    for bad in (
        {"port": 0},
        {"port": 65536},
        {"left": -1},
        {"uploaded": 2**63},
        {"numwant": -1},
        {"key": 2**32},
        {"ip": ""},
    ):
        with pytest.raises(ValueError):
            request(**bad)


def test_event_numbers_and_names() -> None:
    assert [e.udp_value for e in AnnounceEvent] == [0, 1, 2, 3]
    assert [e.http_value for e in AnnounceEvent] == [None, "completed", "started", "stopped"]
    assert AnnounceEvent.from_udp(2) is AnnounceEvent.STARTED
    with pytest.raises(ValueError):
        AnnounceEvent.from_udp(4)


@given(info_hashes, peer_ids)
def test_escaped_values_decode_back(info_hash: InfoHash, peer_id: PeerId) -> None:
    url = build_announce_url("http://t/announce?x=1", request(info_hash=info_hash, peer_id=peer_id))
    query = url.split("?", 1)[1]
    params = dict(part.split("=", 1) for part in query.split("&"))
    assert unquote_to_bytes(params["info_hash"]) == info_hash.raw
    assert unquote_to_bytes(params["peer_id"]) == peer_id.raw
    for value in (params["info_hash"], params["peer_id"]):
        for piece in tokens(value):
            assert piece in UNRESERVED or (
                len(piece) == 3 and piece == piece.upper() and piece[0] == "%"
            )


# --- replies ----------------------------------------------------------------------------------

V4 = [PeerAddress("10.0.0.1", 6881), PeerAddress("192.168.1.20", 51413)]
V6 = [PeerAddress("2001:db8::1", 6881)]


def test_compact_reply_with_everything() -> None:
    body = encode(
        {
            "interval": 1800,
            "min interval": 900,
            "complete": 5,
            "incomplete": 3,
            "tracker id": b"abc\x00",
            "warning message": b"slow down\n",
            "peers": encode_compact_v4(V4),
            "peers6": encode_compact_v6(V6),
        }
    )
    assert parse_announce_response(body) == AnnounceResponse(
        interval=1800,
        min_interval=900,
        complete=5,
        incomplete=3,
        peers=tuple(TrackerPeer(a) for a in V4 + V6),
        tracker_id=b"abc\x00",
        warning="slow down",
    )


def test_dictionary_model_reply() -> None:
    pid = b"-XX0001-" + b"z" * 12
    body = encode(
        {
            "interval": 60,
            "peers": [
                {"ip": b"10.0.0.1", "port": 6881, "peer id": pid},
                {"ip": b"[2001:db8::2]", "port": 6882},  # bracketed IPv6
                {"ip": b"10.0.0.3", "port": 6883, "peer id": b"short"},  # bad id: kept, no id
                {"ip": b"tracker.example", "port": 6881},  # a host name: not resolved
                {"ip": b"10.0.0.4", "port": 0},  # port 0
                {"ip": b"0.0.0.0", "port": 1},  # unspecified
                {"ip": b"224.0.0.1", "port": 1},  # multicast
                {"ip": b"255.255.255.255", "port": 1},  # broadcast
                {"ip": b"10.0.0.5", "port": 70000},  # port out of range
                {"ip": 5, "port": 1},  # wrong type
                {"port": 1},  # no ip
                b"not a dict",
                {"ip": b"10.0.0.1", "port": 6881},  # duplicate
            ],
        }
    )
    reply = parse_announce_response(body)
    assert isinstance(reply, AnnounceResponse)
    assert reply.peers == (
        TrackerPeer(PeerAddress("10.0.0.1", 6881), PeerId(pid)),
        TrackerPeer(PeerAddress("2001:db8::2", 6882)),
        TrackerPeer(PeerAddress("10.0.0.3", 6883)),
    )
    assert reply.dropped_peers == 10
    assert reply.complete is None and reply.min_interval is None and reply.warning is None


def test_real_world_leniency() -> None:
    # Unsorted keys (complete after peers) and a trailing newline, as some trackers send.
    body = b"d8:intervali900e5:peers6:\x7f\x00\x00\x01\x1a\xe18:completei1ee\n"
    reply = parse_announce_response(body)
    assert isinstance(reply, AnnounceResponse)
    assert reply.addresses == (PeerAddress("127.0.0.1", 6881),) and reply.complete == 1
    # No interval (default 1800) and no peers at all.
    assert parse_announce_response(b"de") == AnnounceResponse(interval=1800)
    # Negative counts mean nothing; an oversized tracker id is not echoed back.
    reply = parse_announce_response(
        encode({"interval": 60, "complete": -1, "tracker id": b"x" * 2000})
    )
    assert isinstance(reply, AnnounceResponse)
    assert reply.complete is None and reply.tracker_id is None


@pytest.mark.parametrize(
    ("interval", "min_interval", "expected"),
    [
        (0, None, (30, None)),
        (-5, 5, (30, 30)),
        (29, 31, (30, 31)),
        (1800, 900, (1800, 900)),
        (10**12, 10**12, (86_400, 86_400)),
    ],
)
def test_intervals_are_clamped(
    interval: int, min_interval: int | None, expected: tuple[int, int | None]
) -> None:
    fields: dict[str, int] = {"interval": interval}
    if min_interval is not None:
        fields["min interval"] = min_interval
    reply = parse_announce_response(encode(fields))
    assert isinstance(reply, AnnounceResponse)
    assert (reply.interval, reply.min_interval) == expected


@pytest.mark.parametrize(
    ("fields", "expected", "message"),
    [
        (
            {"failure reason": b"Requested download is not authorized for use with this tracker."},
            AnnounceFailure(
                reason="Requested download is not authorized for use with this tracker."
            ),
            "tracker refused the announce: "
            "Requested download is not authorized for use with this tracker.",
        ),
        (
            {"failure reason": b"bad hash", "failure code": 150, "interval": 5},
            AnnounceFailure(reason="bad hash", code=150),
            "tracker refused the announce: invalid info_hash (code 150): bad hash",
        ),
        (
            {"failure reason": b"slow", "failure code": 500},
            AnnounceFailure(reason="slow", code=500),
            "tracker refused the announce: eventless request too soon (code 500): slow",
        ),
        (
            {"failure code": 200},
            AnnounceFailure(reason="", code=200),
            "tracker refused the announce: info_hash not found (code 200): no reason given",
        ),
        (
            {"failure reason": b"odd", "failure code": 777},
            AnnounceFailure(reason="odd", code=777),
            "tracker refused the announce: unknown failure code (code 777): odd",
        ),
        (
            {"failure reason": b"down", "retry in": 60},
            AnnounceFailure(reason="down", retry_in=60),
            "tracker refused the announce: down",
        ),
        (
            {"failure reason": b"not a tracker", "retry in": b"never"},
            AnnounceFailure(reason="not a tracker", never_retry=True),
            "tracker refused the announce: not a tracker",
        ),
        (
            {"failure reason": b"\x1b[31mred\xff\x00" + b"x" * 2000},
            # ESC and NUL become spaces (the leading one stripped), bad UTF-8 becomes U+FFFD.
            AnnounceFailure(reason=("[31mred\ufffd " + "x" * 2000)[:512]),
            None,
        ),
    ],
)
def test_failures(
    fields: dict[str, object], expected: AnnounceFailure, message: str | None
) -> None:
    reply = parse_announce_response(encode(fields))
    assert isinstance(reply, AnnounceFailure) and reply == expected
    if message is not None:
        assert reply.message == message


def test_every_failure_code_is_named() -> None:
    for code, cause in [
        (100, "invalid request type"),
        (101, "missing info_hash"),
        (102, "missing peer_id"),
        (103, "missing port"),
        (150, "invalid info_hash"),
        (151, "invalid peer_id"),
        (152, "invalid numwant"),
        (200, "info_hash not found"),
        (500, "eventless request too soon"),
        (900, "generic error"),
    ]:
        reply = parse_announce_response(encode({"failure reason": b"x", "failure code": code}))
        assert isinstance(reply, AnnounceFailure) and reply.cause == cause
        assert f"{cause} (code {code})" in reply.message


MALFORMED = [
    ("empty", b"", "bad_bencode"),
    ("garbage", b"garbage", "bad_bencode"),
    ("html error page", b"<title>Invalid Request</title>\n", "bad_bencode"),
    ("truncated", b"d8:intervali1800e5:peers12:\x7f\x00", "bad_bencode"),
    ("duplicate key", b"d8:intervali1e8:intervali2ee", "bad_bencode"),
    ("malformed integer", b"d8:intervali01ee", "bad_bencode"),
    ("too deep", b"d1:x" + b"l" * 20 + b"e" * 20 + b"e", "bad_bencode"),
    ("a list", b"le", "not_a_dict"),
    ("an integer", b"i5e", "not_a_dict"),
    ("interval is a string", b"d8:interval4:1800e", "bad_field"),
    ("complete is a list", b"d8:completelee", "bad_field"),
    ("peers is an integer", b"d5:peersi5ee", "bad_field"),
    ("peers6 is a list", b"d6:peers6lee", "bad_field"),
    ("failure reason is an integer", b"d14:failure reasoni1ee", "bad_field"),
    ("failure code is a string", b"d12:failure code3:150e", "bad_field"),
    ("tracker id is an integer", b"d10:tracker idi1ee", "bad_field"),
    ("peers not a multiple of 6", b"d5:peers7:\x7f\x00\x00\x01\x1a\xe1\x00e", "bad_compact_length"),
    ("peers6 not a multiple of 18", b"d6:peers617:" + bytes(17) + b"e", "bad_compact_length"),
]


@pytest.mark.parametrize(
    ("body", "reason"), [(b, r) for _, b, r in MALFORMED], ids=[n for n, *_ in MALFORMED]
)
def test_malformed_replies(body: bytes, reason: str) -> None:
    with pytest.raises(TrackerError) as caught:
        parse_announce_response(body)
    assert caught.value.reason == reason


def test_bencode_cause_is_kept() -> None:
    with pytest.raises(TrackerError) as caught:
        parse_announce_response(b"d8:intervali1800e")
    assert isinstance(caught.value.__cause__, BencodeError)
    assert caught.value.__cause__.reason == "truncated"
    assert "(truncated)" in str(caught.value)


def test_every_prefix_of_a_reply_is_refused_and_trailing_bytes_ignored() -> None:
    body = encode(
        {"interval": 1800, "peers": encode_compact_v4(V4), "peers6": encode_compact_v6(V6)}
    )
    whole = parse_announce_response(body)
    assert isinstance(whole, AnnounceResponse) and len(whole.peers) == 3
    for size in range(len(body)):
        with pytest.raises(TrackerError) as caught:
            parse_announce_response(body[:size])
        assert caught.value.reason == "bad_bencode", size
    assert parse_announce_response(body + b"\r\n") == whole
    assert parse_announce_response(body + b"trailing junk") == whole


def test_million_peer_replies_cost_bounded_time() -> None:
    started = time.monotonic()
    compact = b"d8:intervali60e5:peers6000000:" + bytes(6_000_000) + b"e"
    with pytest.raises(TrackerError) as caught:
        parse_announce_response(compact)
    assert caught.value.reason == "bad_bencode"
    assert isinstance(caught.value.__cause__, BencodeError)
    assert caught.value.__cause__.reason == "too_large"
    dicts = b"d8:intervali60e5:peersl" + b"d2:ip8:10.0.0.14:porti1ee" * 1_000_000 + b"ee"
    with pytest.raises(TrackerError) as caught:
        parse_announce_response(dicts)
    assert caught.value.reason == "bad_bencode"
    assert time.monotonic() - started < 1.0


def test_oversized_but_valid_replies_are_cut_to_the_bound() -> None:
    # 100,000 distinct compact peers (600 KB) fit the size limit; 10,000 are kept.
    peers = b"".join(
        bytes((10, i >> 16 & 0xFF, i >> 8 & 0xFF, i & 0xFF)) + b"\x1a\xe1" for i in range(100_000)
    )
    started = time.monotonic()
    reply = parse_announce_response(encode({"interval": 60, "peers": peers}))
    assert isinstance(reply, AnnounceResponse)
    assert len(reply.peers) == MAX_PEERS_PER_REPLY
    assert reply.dropped_peers == 100_000 - MAX_PEERS_PER_REPLY
    assert reply.peers[-1].address == PeerAddress("10.0.39.15", 6881)  # entry 9,999
    # peers6 gets no budget left after a full peers list.
    reply = parse_announce_response(
        encode({"interval": 60, "peers": peers[: 6 * MAX_PEERS_PER_REPLY], "peers6": bytes(18)})
    )
    assert isinstance(reply, AnnounceResponse)
    assert len(reply.peers) == MAX_PEERS_PER_REPLY and reply.dropped_peers == 1
    # 20,000 dictionary peers (~600 KB): the first 10,000 are kept, the rest only counted.
    dicts = [{"ip": f"10.{i >> 8 & 0xFF}.{i & 0xFF}.1".encode(), "port": 1} for i in range(20_000)]
    reply = parse_announce_response(encode({"interval": 60, "peers": dicts}))
    assert isinstance(reply, AnnounceResponse)
    assert len(reply.peers) == MAX_PEERS_PER_REPLY and reply.dropped_peers == 10_000
    assert time.monotonic() - started < 5.0


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(body: bytes) -> None:
    with contextlib.suppress(TrackerError):
        reply = parse_announce_response(body)
        assert isinstance(reply, AnnounceResponse | AnnounceFailure)
