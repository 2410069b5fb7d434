"""BEP 15 packets: exact bytes built by hand from the BEP's layout tables, both directions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.shared.tracker.strategies import (
    i63,
    info_hashes,
    peer_ids,
    ports,
    u32,
    u64,
    v4_peers,
    v6_peers,
)
from torviz.shared.errors import TrackerError
from torviz.shared.tracker import (
    CONNECTION_ID_LIFETIME,
    MAX_SCRAPE_HASHES,
    PROTOCOL_ID,
    AnnounceEvent,
    AnnounceFailure,
    AnnounceRequest,
    ConnectRequest,
    ConnectResponse,
    ScrapeStats,
    UdpAnnounceRequest,
    UdpAnnounceResponse,
    UdpErrorResponse,
    UdpRequest,
    UdpResponse,
    UdpScrapeRequest,
    UdpScrapeResponse,
    UdpTrackerError,
    decode_announce_response,
    decode_connect_response,
    decode_error_response,
    decode_request,
    decode_scrape_response,
    encode_request,
    encode_response,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

CONN = 0x0123456789ABCDEF
HASH_A = InfoHash(bytes.fromhex("0123456789abcdef0123456789abcdef01234567"))
HASH_B = InfoHash(bytes(range(20)))
PEER = PeerId(b"-TV0001-abcdefghijkl")


def h(text: str) -> bytes:
    """Hex with spaces and newlines between fields, for readable vectors."""
    return bytes.fromhex("".join(text.split()))


ANNOUNCE = UdpAnnounceRequest(
    connection_id=CONN,
    transaction_id=0x11223344,
    info_hash=HASH_A,
    peer_id=PEER,
    downloaded=0x1000,
    left=0x7FFFFFFFFFFFFFFF,
    uploaded=5,
    event=AnnounceEvent.STOPPED,
    ip=0x7F000001,
    key=0xDEADBEEF,
    num_want=-1,
    port=6881,
)
ANNOUNCE_BYTES = h(
    """
    0123456789abcdef 00000001 11223344
    0123456789abcdef0123456789abcdef01234567
    2d5456303030312d6162636465666768696a6b6c
    0000000000001000 7fffffffffffffff 0000000000000005
    00000003 7f000001 deadbeef ffffffff 1ae1
    """
)

# (packet, exact bytes, ipv6) for the client -> tracker direction.
REQUESTS: list[tuple[UdpRequest, bytes]] = [
    (ConnectRequest(0x01020304), h("0000041727101980 00000000 01020304")),
    (ANNOUNCE, ANNOUNCE_BYTES),
    (
        UdpScrapeRequest(CONN, 0xA0B0C0D0, (HASH_A, HASH_B)),
        h(
            "0123456789abcdef 00000002 a0b0c0d0"
            "0123456789abcdef0123456789abcdef01234567"
            "000102030405060708090a0b0c0d0e0f10111213"
        ),
    ),
]

# (packet, exact bytes, ipv6) for the tracker -> client direction.
RESPONSES: list[tuple[UdpResponse, bytes, bool]] = [
    (ConnectResponse(0x01020304, CONN), h("00000000 01020304 0123456789abcdef"), False),
    (
        UdpAnnounceResponse(
            transaction_id=0x11223344,
            interval=1800,
            leechers=3,
            seeders=5,
            peers=(PeerAddress("127.0.0.1", 6881), PeerAddress("192.168.0.1", 51413)),
        ),
        h("00000001 11223344 00000708 00000003 00000005 7f000001 1ae1 c0a80001 c8d5"),
        False,
    ),
    (
        UdpAnnounceResponse(
            transaction_id=0x11223344,
            interval=1800,
            leechers=0,
            seeders=1,
            peers=(PeerAddress("::1", 6881), PeerAddress("2001:db8::1", 51413)),
        ),
        h(
            "00000001 11223344 00000708 00000000 00000001"
            "00000000000000000000000000000001 1ae1"
            "20010db8000000000000000000000001 c8d5"
        ),
        True,
    ),
    (
        UdpAnnounceResponse(transaction_id=7, interval=60, leechers=0, seeders=0),
        h("00000001 00000007 0000003c 00000000 00000000"),
        False,
    ),
    (
        UdpScrapeResponse(0xA0B0C0D0, (ScrapeStats(5, 100, 3), ScrapeStats(0, 0, 0))),
        h("00000002 a0b0c0d0 00000005 00000064 00000003 00000000 00000000 00000000"),
        False,
    ),
    (
        UdpErrorResponse(0x01020304, "not authorized"),
        h("00000003 01020304") + b"not authorized",
        False,
    ),
]


def decode_reply(packet: UdpResponse, data: bytes, ipv6: bool) -> UdpResponse:
    """Decode ``data`` the way a client that sent the matching request would."""
    match packet:
        case ConnectResponse():
            return decode_connect_response(data, packet.transaction_id)
        case UdpAnnounceResponse():
            return decode_announce_response(data, packet.transaction_id, ipv6=ipv6)
        case UdpScrapeResponse():
            return decode_scrape_response(data, packet.transaction_id, len(packet.stats))
        case UdpErrorResponse():
            return decode_error_response(data)


def test_constants_from_bep_15() -> None:
    assert PROTOCOL_ID == 0x41727101980
    assert CONNECTION_ID_LIFETIME == 60
    assert MAX_SCRAPE_HASHES == 74
    assert len(ANNOUNCE_BYTES) == 98


@pytest.mark.parametrize(("packet", "data"), REQUESTS, ids=lambda v: type(v).__name__)
def test_request_vectors(packet: UdpRequest, data: bytes) -> None:
    assert encode_request(packet) == data
    assert decode_request(data) == packet


@pytest.mark.parametrize(("packet", "data"), REQUESTS, ids=lambda v: type(v).__name__)
def test_request_with_trailing_bytes(packet: UdpRequest, data: bytes) -> None:
    # Connect and announce are fixed-size (BEP 15: packets may grow), a scrape request's hash
    # list fills the packet, so only whole hashes may follow.
    if isinstance(packet, UdpScrapeRequest):
        longer = decode_request(data + HASH_B.raw)
        assert isinstance(longer, UdpScrapeRequest)
        assert longer.info_hashes == (*packet.info_hashes, HASH_B)
        with pytest.raises(TrackerError) as caught:
            decode_request(data + b"\x00")
        assert caught.value.reason == "bad_length"
    else:
        assert decode_request(data + b"\x01\x01\x00garbage") == packet


@pytest.mark.parametrize(("packet", "data"), REQUESTS, ids=lambda v: type(v).__name__)
def test_request_prefixes_are_refused(packet: UdpRequest, data: bytes) -> None:
    for size in range(len(data)):
        if isinstance(packet, UdpScrapeRequest) and size > 16 and (size - 16) % 20 == 0:
            # A whole number of hashes is a smaller scrape, not a broken one.
            shorter = decode_request(data[:size])
            assert isinstance(shorter, UdpScrapeRequest)
            assert shorter.info_hashes == packet.info_hashes[: (size - 16) // 20]
            continue
        with pytest.raises(TrackerError) as caught:
            decode_request(data[:size])
        assert caught.value.reason in ("truncated", "bad_length"), size


@pytest.mark.parametrize(("packet", "data", "ipv6"), RESPONSES, ids=lambda v: type(v).__name__)
def test_response_vectors(packet: UdpResponse, data: bytes, ipv6: bool) -> None:
    assert encode_response(packet, ipv6=ipv6) == data
    assert decode_reply(packet, data, ipv6) == packet


@pytest.mark.parametrize(("packet", "data", "ipv6"), RESPONSES, ids=lambda v: type(v).__name__)
def test_response_with_trailing_bytes(packet: UdpResponse, data: bytes, ipv6: bool) -> None:
    match packet:
        case ConnectResponse() | UdpScrapeResponse():
            # Fixed-size: what follows is ignored (BEP 15 says packets may grow).
            assert decode_reply(packet, data + b"\xff" * 13, ipv6) == packet
        case UdpAnnounceResponse():
            # The peer list is the rest of the packet: a partial entry is refused...
            with pytest.raises(TrackerError) as caught:
                decode_reply(packet, data + b"\x7f\x00\x00", ipv6)
            assert caught.value.reason == "bad_compact_length"
            # ...and a whole extra entry is a peer.
            extra = bytes(15) + b"\x02\x00\x01" if ipv6 else b"\x7f\x00\x00\x02\x00\x01"
            longer = decode_reply(packet, data + extra, ipv6)
            assert isinstance(longer, UdpAnnounceResponse)
            assert len(longer.peers) == len(packet.peers) + 1
        case UdpErrorResponse():
            # The message runs to the end of the packet: trailing bytes are message text.
            longer = decode_reply(packet, data + b" (really)", ipv6)
            assert longer == UdpErrorResponse(packet.transaction_id, "not authorized (really)")


@pytest.mark.parametrize(("packet", "data", "ipv6"), RESPONSES, ids=lambda v: type(v).__name__)
def test_response_prefixes(packet: UdpResponse, data: bytes, ipv6: bool) -> None:
    for size in range(len(data)):
        prefix = data[:size]
        if isinstance(packet, UdpAnnounceResponse) and size >= 20:
            stride = 18 if ipv6 else 6
            if (size - 20) % stride == 0:
                decoded = decode_reply(packet, prefix, ipv6)
                assert isinstance(decoded, UdpAnnounceResponse)
                assert decoded.peers == packet.peers[: (size - 20) // stride]
                continue
            expected = "bad_compact_length"
        elif isinstance(packet, UdpErrorResponse) and size >= 8:
            assert decode_reply(packet, prefix, ipv6) == UdpErrorResponse(
                packet.transaction_id, prefix[8:].decode().strip()
            )
            continue
        else:
            expected = "truncated"
        with pytest.raises(TrackerError) as caught:
            decode_reply(packet, prefix, ipv6)
        assert caught.value.reason == expected, size


def test_error_packet_answers_any_request() -> None:
    error = h("00000003 01020304") + b"Connection ID missmatch.\x00"
    with pytest.raises(UdpTrackerError) as caught:
        decode_connect_response(error, 0x01020304)
    assert caught.value.reason == "tracker_error"
    assert caught.value.text == "Connection ID missmatch."
    assert str(caught.value) == "tracker error: Connection ID missmatch."
    assert caught.value.to_failure() == AnnounceFailure(reason="Connection ID missmatch.")
    for decode in (
        lambda d: decode_announce_response(d, 0x01020304, ipv6=False),
        lambda d: decode_scrape_response(d, 0x01020304, 1),
    ):
        with pytest.raises(UdpTrackerError):
            decode(error)


def _announce_reply(tid: int = 1, peers: bytes = b"") -> bytes:
    return h(f"00000001 {tid:08x} 00000708 00000000 00000000") + peers


MALFORMED_REPLIES = [
    ("empty", b"", "truncated"),
    ("seven bytes", _announce_reply()[:7], "truncated"),
    ("other transaction", _announce_reply(tid=2), "wrong_transaction"),
    ("error of another transaction", h("00000003 00000002") + b"x", "wrong_transaction"),
    ("scrape action", h("00000002 00000001"), "wrong_action"),
    ("unknown action", h("00000009 00000001") + bytes(12), "wrong_action"),
    ("error packet", h("00000003 00000001") + b"go away", "tracker_error"),
    ("header only (opentracker, unlisted hash)", h("00000001 00000001"), "truncated"),
    ("19 bytes", _announce_reply()[:19], "truncated"),
    ("partial peer", _announce_reply(peers=b"\x7f\x00\x00\x01\x1a"), "bad_compact_length"),
    ("too large", _announce_reply(peers=bytes(6 * 11_000)), "too_large"),
]


@pytest.mark.parametrize(
    ("data", "reason"),
    [(d, r) for _, d, r in MALFORMED_REPLIES],
    ids=[n for n, *_ in MALFORMED_REPLIES],
)
def test_malformed_announce_replies(data: bytes, reason: str) -> None:
    with pytest.raises(TrackerError) as caught:
        decode_announce_response(data, 1, ipv6=False)
    assert caught.value.reason == reason


def test_ipv6_peer_list_of_ipv4_length_is_refused() -> None:
    with pytest.raises(TrackerError) as caught:
        decode_announce_response(_announce_reply(peers=bytes(12)), 1, ipv6=True)
    assert caught.value.reason == "bad_compact_length"


def test_malformed_connect_and_scrape_replies() -> None:
    with pytest.raises(TrackerError) as caught:
        decode_connect_response(h("00000000 00000001 01234567"), 1)
    assert caught.value.reason == "truncated"
    with pytest.raises(TrackerError) as caught:
        decode_scrape_response(h("00000002 00000001") + bytes(12), 1, 2)
    assert caught.value.reason == "truncated"
    with pytest.raises(TrackerError) as caught:
        decode_error_response(h("00000001 00000001"))
    assert caught.value.reason == "wrong_action"


MALFORMED_REQUESTS = [
    ("connect without protocol id", h("0000000000000005 00000000 00000001"), "bad_protocol_id"),
    ("unknown action", h("0123456789abcdef 00000009 00000001"), "wrong_action"),
    ("short header", h("0000041727101980 000000"), "truncated"),
    ("announce cut at 97", ANNOUNCE_BYTES[:97], "truncated"),
    ("announce event 4", ANNOUNCE_BYTES[:80] + h("00000004") + ANNOUNCE_BYTES[84:], "bad_event"),
    ("scrape without hashes", h("0123456789abcdef 00000002 00000001"), "truncated"),
    ("scrape with partial hash", h("0123456789abcdef 00000002 00000001") + bytes(19), "bad_length"),
    # Found by tests/fuzz (tracker_udp): decoded, then refused by encode_request.
    (
        "scrape of 75 hashes",
        h("0123456789abcdef 00000002 00000001") + bytes(20 * 75),
        "too_many_hashes",
    ),
    ("too large", h("0123456789abcdef 00000002 00000001") + bytes(20 * 3300), "too_large"),
]


@pytest.mark.parametrize(
    ("data", "reason"),
    [(d, r) for _, d, r in MALFORMED_REQUESTS],
    ids=[n for n, *_ in MALFORMED_REQUESTS],
)
def test_malformed_requests(data: bytes, reason: str) -> None:
    with pytest.raises(TrackerError) as caught:
        decode_request(data)
    assert caught.value.reason == reason


def test_announce_from_request_maps_fields() -> None:
    request = AnnounceRequest(
        info_hash=HASH_A,
        peer_id=PEER,
        port=6881,
        uploaded=1,
        downloaded=2,
        left=3,
        event=AnnounceEvent.COMPLETED,
        key=42,
        ip="10.0.0.7",
        trackerid=b"ignored over UDP",
        compact=False,
    )
    packet = UdpAnnounceRequest.from_request(request, connection_id=CONN, transaction_id=9)
    assert packet.num_want == -1 and packet.ip == 0x0A000007 and packet.event.udp_value == 1
    data = encode_request(packet)
    assert data[80:98] == h("00000001 0a000007 0000002a ffffffff 1ae1")
    with_v6 = UdpAnnounceRequest.from_request(
        AnnounceRequest(
            info_hash=HASH_A, peer_id=PEER, port=1, uploaded=0, downloaded=0, left=0, ip="::1"
        ),
        connection_id=CONN,
        transaction_id=9,
    )
    assert with_v6.ip == 0  # the field is 32 bits wide; IPv6 cannot go there (BEP 15)


def test_bep41_url_data() -> None:
    short = UdpAnnounceRequest.from_request(
        AnnounceRequest(info_hash=HASH_A, peer_id=PEER, port=1, uploaded=0, downloaded=0, left=0),
        connection_id=CONN,
        transaction_id=1,
        url_data=b"/announce?passkey=abc",
    )
    data = encode_request(short)
    assert data[98:] == b"\x02\x15/announce?passkey=abc"
    assert decode_request(data) == short
    long_path = b"/" + b"p" * 299
    data = encode_request(
        UdpAnnounceRequest.from_request(
            AnnounceRequest(
                info_hash=HASH_A, peer_id=PEER, port=1, uploaded=0, downloaded=0, left=0
            ),
            connection_id=CONN,
            transaction_id=1,
            url_data=long_path,
        )
    )
    assert data[98] == 2 and data[99] == 255 and data[355] == 2 and data[356] == 45
    decoded = decode_request(data)
    assert isinstance(decoded, UdpAnnounceRequest) and decoded.url_data == long_path
    # NOP, an unknown option (skipped by its length), URL data, end of options, then junk.
    options = b"\x01\x09\x02zz\x02\x03/ab\x00\x02\x05junk"
    decoded = decode_request(ANNOUNCE_BYTES + options)
    assert isinstance(decoded, UdpAnnounceRequest) and decoded.url_data == b"/ab"
    # A length byte running past the end ends option parsing; what came before is kept.
    decoded = decode_request(ANNOUNCE_BYTES + b"\x02\x02/a\x02\x09/b")
    assert isinstance(decoded, UdpAnnounceRequest) and decoded.url_data == b"/a"


def test_encoders_refuse_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        encode_request(ConnectRequest(2**32))
    with pytest.raises(ValueError):
        encode_request(UdpScrapeRequest(CONN, 1, ()))
    with pytest.raises(ValueError):
        encode_request(UdpScrapeRequest(CONN, 1, (HASH_A,) * 75))
    with pytest.raises(ValueError):
        encode_response(
            UdpAnnounceResponse(
                transaction_id=1,
                interval=1,
                leechers=0,
                seeders=0,
                peers=(PeerAddress("::1", 1),),
            ),
            ipv6=False,
        )


def test_to_response_clamps_and_deduplicates() -> None:
    reply = UdpAnnounceResponse(
        transaction_id=1,
        interval=0,
        leechers=4,
        seeders=2,
        peers=(PeerAddress("10.0.0.1", 1), PeerAddress("10.0.0.1", 1), PeerAddress("10.0.0.2", 1)),
        dropped_peers=3,
    )
    result = reply.to_response()
    assert result.interval == 30
    assert result.complete == 2 and result.incomplete == 4
    assert result.addresses == (PeerAddress("10.0.0.1", 1), PeerAddress("10.0.0.2", 1))
    assert result.dropped_peers == 4
    assert (
        decode_announce_response(
            _announce_reply(peers=h("7f000001 0000 00000000 1ae1 e0000001 1ae1 7f000001 1ae1")),
            1,
            ipv6=False,
        ).dropped_peers
        == 3
    )  # port 0, 0.0.0.0, multicast


# --- round trips ------------------------------------------------------------------------------

announce_requests = st.builds(
    UdpAnnounceRequest,
    connection_id=u64,
    transaction_id=u32,
    info_hash=info_hashes,
    peer_id=peer_ids,
    downloaded=u64,
    left=u64,
    uploaded=u64,
    event=st.sampled_from(AnnounceEvent),
    ip=u32,
    key=u32,
    num_want=st.integers(-(2**31), 2**31 - 1),
    port=st.integers(0, 65535),
    url_data=st.binary(max_size=600),
)
requests = st.one_of(
    st.builds(ConnectRequest, u32),
    announce_requests,
    st.builds(
        UdpScrapeRequest,
        u64,
        u32,
        st.lists(info_hashes, min_size=1, max_size=MAX_SCRAPE_HASHES).map(tuple),
    ),
)


@given(requests)
def test_request_round_trip(packet: UdpRequest) -> None:
    assert decode_request(encode_request(packet)) == packet


@given(
    st.one_of(
        st.tuples(st.builds(ConnectResponse, u32, u64), st.booleans()),
        st.booleans().flatmap(
            lambda ipv6: st.tuples(
                st.builds(
                    UdpAnnounceResponse,
                    transaction_id=u32,
                    interval=u32,
                    leechers=u32,
                    seeders=u32,
                    peers=st.lists(v6_peers if ipv6 else v4_peers, max_size=50).map(tuple),
                ),
                st.just(ipv6),
            )
        ),
        st.tuples(
            st.builds(
                UdpScrapeResponse,
                u32,
                st.lists(st.builds(ScrapeStats, u32, u32, u32), max_size=74).map(tuple),
            ),
            st.booleans(),
        ),
        st.tuples(
            st.builds(
                UdpErrorResponse,
                u32,
                st.text(st.characters(categories=["L", "N"]), max_size=100),
            ),
            st.booleans(),
        ),
    )
)
def test_response_round_trip(case: tuple[UdpResponse, bool]) -> None:
    packet, ipv6 = case
    assert decode_reply(packet, encode_response(packet, ipv6=ipv6), ipv6) == packet


@given(i63, i63, i63, ports, u32)
def test_announce_request_fields_survive(
    uploaded: int, downloaded: int, left: int, port: int, key: int
) -> None:
    request = AnnounceRequest(
        info_hash=HASH_A,
        peer_id=PEER,
        port=port,
        uploaded=uploaded,
        downloaded=downloaded,
        left=left,
        key=key,
    )
    packet = UdpAnnounceRequest.from_request(request, connection_id=CONN, transaction_id=1)
    decoded = decode_request(encode_request(packet))
    assert isinstance(decoded, UdpAnnounceRequest)
    assert (decoded.uploaded, decoded.downloaded, decoded.left, decoded.port, decoded.key) == (
        uploaded,
        downloaded,
        left,
        port,
        key,
    )
