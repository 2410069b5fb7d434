"""KRPC codec: BEP 5's own example packets, datagrams captured from libtorrent 2.1, broken
input with the exact reason, and hypothesis round trips.

The libtorrent vectors come from tests/vectors/dht/capture_libtorrent_dht.py (its docstring tells
how); libtorrent_dht.json records the ids, addresses and tokens of that run and the queries we
sent (built there by hand), which libtorrent answered: ``encode_krpc`` must write them exactly.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.bencode import encode
from torviz.shared.dht.krpc import (
    MAX_DATAGRAM_SIZE,
    MAX_NODES,
    MAX_VALUES,
    AnnouncePeer,
    Error,
    ErrorCode,
    FindNode,
    GetPeers,
    KrpcMessage,
    Ping,
    Query,
    Response,
    UnknownQuery,
    Want,
    decode_compact_address,
    decode_krpc,
    decode_nodes,
    decode_nodes6,
    decode_peers,
    encode_compact_address,
    encode_krpc,
    encode_nodes,
    encode_nodes6,
    encode_peers,
)
from torviz.shared.dht.node_id import NodeId, NodeInfo, common_prefix_length
from torviz.shared.errors import KrpcError
from torviz.shared.types import InfoHash, PeerAddress

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "dht"

A_ID = NodeId(b"abcdefghij0123456789")
M_ID = NodeId(b"mnopqrstuvwxyz123456")
M_HASH = InfoHash(b"mnopqrstuvwxyz123456")

# BEP 5, "Example Packets", byte for byte.
BEP5_EXAMPLES: list[tuple[str, bytes, KrpcMessage]] = [
    (
        "ping query",
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        Query(b"aa", Ping(A_ID)),
    ),
    (
        "ping response",
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        Response(b"aa", M_ID),
    ),
    (
        "find_node query",
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e1:q9:find_node"
        b"1:t2:aa1:y1:qe",
        Query(b"aa", FindNode(A_ID, M_ID)),
    ),
    (
        "get_peers query",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e1:q9:get_peers"
        b"1:t2:aa1:y1:qe",
        Query(b"aa", GetPeers(A_ID, M_HASH)),
    ),
    (
        "get_peers response with peers",
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee"
        b"1:t2:aa1:y1:re",
        Response(
            b"aa",
            A_ID,
            values=(
                PeerAddress("97.120.106.101", ord(".") * 256 + ord("u")),  # "axje" ".u"
                PeerAddress("105.100.104.116", ord("n") * 256 + ord("m")),  # "idht" "nm"
            ),
            token=b"aoeusnth",
        ),
    ),
    (
        "announce_peer query",
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti6881e"
        b"5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        Query(b"aa", AnnouncePeer(A_ID, M_HASH, 6881, b"aoeusnth")),
    ),
    (
        # The BEP's dictionary form of the same query has implied_port: 1 (its bencoded line
        # leaves it out); canonical bencode puts the key before info_hash.
        "announce_peer query with implied_port",
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
        b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        Query(b"aa", AnnouncePeer(A_ID, M_HASH, 6881, b"aoeusnth", implied_port=True)),
    ),
    (
        "error",
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        Error(b"aa", 201, "A Generic Error Ocurred"),
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "message"), BEP5_EXAMPLES, ids=[e[0] for e in BEP5_EXAMPLES]
)
def test_bep5_examples_decode_and_encode_exactly(
    name: str, data: bytes, message: KrpcMessage
) -> None:
    assert decode_krpc(data) == message
    assert encode_krpc(message) == data


@pytest.mark.parametrize(
    ("name", "data", "message"), BEP5_EXAMPLES, ids=[e[0] for e in BEP5_EXAMPLES]
)
def test_every_cut_or_extended_example_is_a_krpc_error(
    name: str, data: bytes, message: KrpcMessage
) -> None:
    for end in range(len(data)):
        with pytest.raises(KrpcError):
            decode_krpc(data[:end])
    with pytest.raises(KrpcError) as info:
        decode_krpc(data + b"x")
    assert info.value.reason == "bad_bencode"
    assert "bytes after the end" in str(info.value)


def test_bep5_placeholder_nodes_are_refused() -> None:
    # BEP 5 shows "nodes": "def456..." (9 bytes): not a multiple of 26, so no entry is trusted.
    for data in (
        b"d1:rd2:id20:0123456789abcdefghij5:nodes9:def456...e1:t2:aa1:y1:re",
        b"d1:rd2:id20:abcdefghij01234567895:nodes9:def456...5:token8:aoeusnthe1:t2:aa1:y1:re",
    ):
        with pytest.raises(KrpcError) as info:
            decode_krpc(data)
        assert info.value.reason == "bad_nodes"
        assert str(info.value) == "nodes is 9 bytes, not a multiple of 26"


def test_query_properties() -> None:
    assert Query(b"aa", Ping(A_ID)).method == "ping"
    assert Query(b"aa", FindNode(A_ID, M_ID)).method == "find_node"
    assert Query(b"aa", GetPeers(A_ID, M_HASH)).method == "get_peers"
    assert Query(b"aa", AnnouncePeer(A_ID, M_HASH, 1, b"")).method == "announce_peer"
    assert Query(b"aa", UnknownQuery("vote")).method == "vote"
    assert Query(b"aa", Ping(A_ID)).node_id == A_ID
    assert Query(b"aa", UnknownQuery("vote")).node_id is None
    assert int(ErrorCode.METHOD_UNKNOWN) == 204


# -- BEP 43, BEP 32, BEP 42 ------------------------------------------------------------------


def test_read_only_flag() -> None:
    data = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping2:roi1e1:t2:aa1:y1:qe"
    assert decode_krpc(data) == Query(b"aa", Ping(A_ID), read_only=True)
    assert encode_krpc(Query(b"aa", Ping(A_ID), read_only=True)) == data
    not_one = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping2:roi0e1:t2:aa1:y1:qe"
    assert decode_krpc(not_one) == Query(b"aa", Ping(A_ID))


def test_want() -> None:
    base = b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:want"
    tail = b"e1:q9:find_node1:t2:aa1:y1:qe"
    both = base + b"l2:n42:n6e" + tail
    assert decode_krpc(both) == Query(b"aa", FindNode(A_ID, M_ID, Want.N4 | Want.N6))
    assert encode_krpc(Query(b"aa", FindNode(A_ID, M_ID, Want.N4 | Want.N6))) == both
    # unknown entries are ignored
    assert decode_krpc(base + b"l2:n62:zzi3ee" + tail) == Query(
        b"aa", FindNode(A_ID, M_ID, Want.N6)
    )
    get = Query(b"aa", GetPeers(A_ID, M_HASH, Want.N4))
    assert decode_krpc(encode_krpc(get)) == get
    assert b"4:wantl2:n4e" in encode_krpc(get)


def test_nodes6_and_ip6() -> None:
    node6 = NodeInfo(M_ID, PeerAddress("2001:db8::1", 6881))
    response = Response(
        b"aa",
        A_ID,
        nodes=(NodeInfo(M_ID, PeerAddress("10.0.0.1", 1)),),
        nodes6=(node6,),
        values=(PeerAddress("2001:db8::2", 51413), PeerAddress("1.2.3.4", 80)),
        token=b"tk",
        ip=PeerAddress("2001:db8::3", 4000),
    )
    data = encode_krpc(response)
    assert b"6:nodes638:" + M_ID.raw + bytes.fromhex("20010db8" + "00" * 11 + "01") in data
    assert b"2:ip18:" in data
    assert decode_krpc(data) == response


def test_bep42_ip_in_responses_and_errors() -> None:
    ip = PeerAddress("124.31.75.21", 6881)
    response = Response(b"aa", A_ID, ip=ip)
    data = (
        b"d2:ip6:"
        + bytes([124, 31, 75, 21, 0x1A, 0xE1])
        + b"1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re"
    )
    assert encode_krpc(response) == data
    assert decode_krpc(data) == response
    error = Error(b"aa", 203, "invalid token", ip=ip)
    assert decode_krpc(encode_krpc(error)) == error


@pytest.mark.parametrize(
    "raw",
    [b"\x01\x02\x03\x04\x05", b"\x01\x02\x03\x04\x00\x00", b"\x00\x00\x00\x00\x1a\xe1", b"x" * 7],
    ids=["5 bytes", "port 0", "unspecified", "7 bytes"],
)
def test_a_bad_ip_field_is_dropped_not_fatal(raw: bytes) -> None:
    data = b"d2:ip%d:%s1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re" % (len(raw), raw)
    assert decode_krpc(data) == Response(b"aa", A_ID)


def test_version_kept_when_short() -> None:
    data = b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:v4:LT\x02\x111:y1:re"
    assert decode_krpc(data) == Response(b"aa", A_ID, version=b"LT\x02\x11")
    assert encode_krpc(Response(b"aa", A_ID, version=b"LT\x02\x11")) == data
    long_v = b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:v17:" + b"v" * 17 + b"1:y1:re"
    assert decode_krpc(long_v) == Response(b"aa", A_ID)
    int_v = b"d1:rd2:id20:abcdefghij0123456789e1:t2:aa1:vi1e1:y1:re"
    assert decode_krpc(int_v) == Response(b"aa", A_ID)


def test_unknown_method_and_unknown_keys() -> None:
    data = b"d1:ad2:id20:abcdefghij01234567896:targeti1ee1:q3:get1:t2:aa1:y1:qe"
    assert decode_krpc(data) == Query(b"aa", UnknownQuery("get", A_ID))
    no_id = b"d1:ade1:q17:sample_infohashes1:t2:aa1:y1:qe"
    assert decode_krpc(no_id) == Query(b"aa", UnknownQuery("sample_infohashes"))
    assert encode_krpc(Query(b"aa", UnknownQuery("sample_infohashes"))) == no_id
    extra = b"d1:ad2:bsi1e2:id20:abcdefghij01234567894:seedi1ee1:q4:ping1:t2:aa1:y1:q1:zi9ee"
    assert decode_krpc(extra) == Query(b"aa", Ping(A_ID))


def test_unusable_compact_entries_are_dropped_one_by_one() -> None:
    good = NodeInfo(M_ID, PeerAddress("127.0.0.1", 6881))
    port0 = M_ID.raw + bytes([127, 0, 0, 1, 0, 0])
    unspecified = M_ID.raw + bytes([0, 0, 0, 0, 0x1A, 0xE1])
    multicast = M_ID.raw + bytes([224, 0, 0, 1, 0x1A, 0xE1])
    broadcast = M_ID.raw + bytes([255, 255, 255, 255, 0x1A, 0xE1])
    nodes = port0 + encode_nodes([good]) + unspecified + multicast + broadcast
    assert decode_nodes(nodes) == (good,)
    values = [b"\x7f\x00\x00\x01\x00\x00", b"\x7f\x00\x00\x01\x1a\xe1", b"\xe0\x00\x00\x01\x1a\xe1"]
    assert decode_peers(values) == (PeerAddress("127.0.0.1", 6881),)


def test_compact_helpers() -> None:
    v4 = NodeInfo(A_ID, PeerAddress("1.2.3.4", 0x1AE1))
    v6 = NodeInfo(M_ID, PeerAddress("::2", 1))
    assert encode_nodes([v4]) == A_ID.raw + b"\x01\x02\x03\x04\x1a\xe1"
    assert decode_nodes(encode_nodes([v4, v4])) == (v4, v4)
    assert decode_nodes6(encode_nodes6([v6])) == (v6,)
    assert decode_nodes(b"") == ()
    with pytest.raises(ValueError, match="not an IPv4 node"):
        encode_nodes([v6])
    with pytest.raises(ValueError, match="not an IPv6 node"):
        encode_nodes6([v4])
    peers = (PeerAddress("1.2.3.4", 5), PeerAddress("::1", 6))
    assert encode_peers(peers) == [b"\x01\x02\x03\x04\x00\x05", b"\x00" * 15 + b"\x01\x00\x06"]
    assert decode_peers(encode_peers(peers)) == peers
    assert decode_compact_address(encode_compact_address(peers[1])) == peers[1]
    assert decode_compact_address(b"12345") is None
    with pytest.raises(KrpcError, match="has 3 entries, limit is 2") as info:
        decode_nodes(encode_nodes([v4] * 3), limit=2)
    assert info.value.reason == "too_many_nodes"


# -- broken input ----------------------------------------------------------------------------

ID = b"20:abcdefghij0123456789"
HASH = b"20:mnopqrstuvwxyz123456"


def _q(method: bytes, args: bytes, t: bytes = b"1:t2:aa") -> bytes:
    return b"d1:ad" + args + b"e1:q" + b"%d:" % len(method) + method + t + b"1:y1:qe"


def _r(body: bytes) -> bytes:
    return b"d1:rd2:id" + ID + body + b"e1:t2:aa1:y1:re"


def _values(count: int, size: int = 6) -> bytes:
    return b"6:valuesl" + (b"%d:" % size + b"\x01" * size) * count + b"e"


BROKEN: list[tuple[str, bytes, str, str, bytes | None]] = [
    # name, datagram, reason, message, transaction_id
    (
        "oversized",
        b"x" * (MAX_DATAGRAM_SIZE + 1),
        "too_large",
        "datagram of 1501 bytes, limit is 1500",
        None,
    ),
    (
        "empty",
        b"",
        "bad_bencode",
        "not canonical bencode: input ends inside a value at byte 0",
        None,
    ),
    (
        "unsorted",
        b"d1:y1:q1:t2:aae",
        "bad_bencode",
        "not canonical bencode: dict keys are not in sorted order at byte 7",
        None,
    ),
    (
        "deep",
        b"l" * 20 + b"e" * 20,
        "bad_bencode",
        "not canonical bencode: nesting deeper than 16 at byte 16",
        None,
    ),
    ("not a dict", b"i1e", "not_a_dict", "a KRPC message is a bencoded dictionary", None),
    ("no t", b"d1:y1:qe", "bad_transaction_id", "t is not a string of 1..16 bytes", None),
    ("empty t", b"d1:t0:1:y1:qe", "bad_transaction_id", "t is not a string of 1..16 bytes", None),
    (
        "long t",
        b"d1:t17:" + b"t" * 17 + b"1:y1:qe",
        "bad_transaction_id",
        "t is not a string of 1..16 bytes",
        None,
    ),
    ("int t", b"d1:ti1e1:y1:qe", "bad_transaction_id", "t is not a string of 1..16 bytes", None),
    ("bad y", b"d1:t2:aa1:y1:xe", "bad_message_type", "y is not q, r or e", None),
    ("no y", b"d1:t2:aae", "bad_message_type", "y is not q, r or e", None),
    ("no q", b"d1:ade1:t2:aa1:y1:qe", "bad_method", "q is not a method name", b"aa"),
    ("empty q", b"d1:ade1:q0:1:t2:aa1:y1:qe", "bad_method", "q is not a method name", b"aa"),
    ("no a", b"d1:q4:ping1:t2:aa1:y1:qe", "bad_args", "a is not a dictionary", b"aa"),
    ("list a", b"d1:ale1:q4:ping1:t2:aa1:y1:qe", "bad_args", "a is not a dictionary", b"aa"),
    ("no id", _q(b"ping", b""), "bad_node_id", "id is not a 20-byte string", b"aa"),
    (
        "short id",
        _q(b"ping", b"2:id19:abcdefghij012345678"),
        "bad_node_id",
        "id is not a 20-byte string",
        b"aa",
    ),
    ("int id", _q(b"ping", b"2:idi1e"), "bad_node_id", "id is not a 20-byte string", b"aa"),
    (
        "no target",
        _q(b"find_node", b"2:id" + ID),
        "bad_target",
        "target is not a 20-byte string",
        b"aa",
    ),
    (
        "long target",
        _q(b"find_node", b"2:id" + ID + b"6:target21:" + b"x" * 21),
        "bad_target",
        "target is not a 20-byte string",
        b"aa",
    ),
    (
        "want not a list",
        _q(b"find_node", b"2:id" + ID + b"6:target" + HASH + b"4:want2:n4"),
        "bad_want",
        "want is not a list",
        b"aa",
    ),
    (
        "no info_hash",
        _q(b"get_peers", b"2:id" + ID),
        "bad_info_hash",
        "info_hash is not a 20-byte string",
        b"aa",
    ),
    (
        "announce no info_hash",
        _q(b"announce_peer", b"2:id" + ID + b"4:porti1e5:token1:x"),
        "bad_info_hash",
        "info_hash is not a 20-byte string",
        b"aa",
    ),
    (
        "port 0",
        _q(b"announce_peer", b"2:id" + ID + b"9:info_hash" + HASH + b"4:porti0e5:token1:x"),
        "bad_port",
        "port is not an integer in 1..65535",
        b"aa",
    ),
    (
        "port 65536",
        _q(b"announce_peer", b"2:id" + ID + b"9:info_hash" + HASH + b"4:porti65536e5:token1:x"),
        "bad_port",
        "port is not an integer in 1..65535",
        b"aa",
    ),
    (
        "negative port",
        _q(b"announce_peer", b"2:id" + ID + b"9:info_hash" + HASH + b"4:porti-1e5:token1:x"),
        "bad_port",
        "port is not an integer in 1..65535",
        b"aa",
    ),
    (
        "no port",
        _q(b"announce_peer", b"2:id" + ID + b"9:info_hash" + HASH + b"5:token1:x"),
        "bad_port",
        "port is not an integer in 1..65535",
        b"aa",
    ),
    (
        "string port",
        _q(b"announce_peer", b"2:id" + ID + b"9:info_hash" + HASH + b"4:port4:68815:token1:x"),
        "bad_port",
        "port is not an integer in 1..65535",
        b"aa",
    ),
    (
        "implied port 65536",
        _q(
            b"announce_peer",
            b"2:id" + ID + b"12:implied_porti1e9:info_hash" + HASH + b"4:porti65536e5:token1:x",
        ),
        "bad_port",
        "port is not an integer in 0..65535",
        b"aa",
    ),
    (
        "string implied_port",
        _q(
            b"announce_peer",
            b"2:id" + ID + b"12:implied_port1:19:info_hash" + HASH + b"4:porti1e5:token1:x",
        ),
        "bad_port",
        "implied_port is not an integer",
        b"aa",
    ),
    (
        "no token",
        _q(b"announce_peer", b"2:id" + ID + b"9:info_hash" + HASH + b"4:porti1e"),
        "bad_token",
        "token is not a string of at most 64 bytes",
        b"aa",
    ),
    (
        "long token",
        _q(
            b"announce_peer",
            b"2:id" + ID + b"9:info_hash" + HASH + b"4:porti1e5:token65:" + b"k" * 65,
        ),
        "bad_token",
        "token is not a string of at most 64 bytes",
        b"aa",
    ),
    ("no r", b"d1:t2:aa1:y1:re", "bad_response", "r is not a dictionary", None),
    ("response no id", b"d1:rde1:t2:aa1:y1:re", "bad_node_id", "id is not a 20-byte string", None),
    (
        "nodes 27 bytes",
        _r(b"5:nodes27:" + b"n" * 27),
        "bad_nodes",
        "nodes is 27 bytes, not a multiple of 26",
        None,
    ),
    ("nodes int", _r(b"5:nodesi1e"), "bad_nodes", "nodes is not a string", None),
    (
        "too many nodes",
        _r(b"5:nodes442:" + b"\x01" * 442),
        "too_many_nodes",
        "nodes has 17 entries, limit is 16",
        None,
    ),
    (
        "nodes6 26 bytes",
        _r(b"6:nodes626:" + b"n" * 26),
        "bad_nodes6",
        "nodes6 is 26 bytes, not a multiple of 38",
        None,
    ),
    ("nodes6 list", _r(b"6:nodes6le"), "bad_nodes6", "nodes6 is not a string", None),
    (
        "too many nodes6",
        _r(b"6:nodes6646:" + b"\x01" * 646),
        "too_many_nodes6",
        "nodes6 has 17 entries, limit is 16",
        None,
    ),
    (
        "token int",
        _r(b"5:tokeni1e"),
        "bad_token",
        "token is not a string of at most 64 bytes",
        None,
    ),
    ("values string", _r(b"6:values6:abcdef"), "bad_values", "values is not a list", None),
    (
        "value 7 bytes",
        _r(_values(1, 7)),
        "bad_values",
        "a values entry is not a 6- or 18-byte string",
        None,
    ),
    (
        "value int",
        _r(b"6:valuesli1ee"),
        "bad_values",
        "a values entry is not a 6- or 18-byte string",
        None,
    ),
    (
        "too many values",
        _r(_values(MAX_VALUES + 1)),
        "too_many_values",
        "values has 129 peers, limit is 128",
        None,
    ),
    ("no e", b"d1:t2:aa1:y1:ee", "bad_error", "e is not a list starting with an error code", None),
    (
        "empty e",
        b"d1:ele1:t2:aa1:y1:ee",
        "bad_error",
        "e is not a list starting with an error code",
        None,
    ),
    (
        "e string first",
        b"d1:el3:abce1:t2:aa1:y1:ee",
        "bad_error",
        "e is not a list starting with an error code",
        None,
    ),
]


@pytest.mark.parametrize(
    ("name", "data", "reason", "message", "t"), BROKEN, ids=[b[0] for b in BROKEN]
)
def test_broken_input(name: str, data: bytes, reason: str, message: str, t: bytes | None) -> None:
    with pytest.raises(KrpcError) as info:
        decode_krpc(data)
    assert (info.value.reason, str(info.value), info.value.transaction_id) == (reason, message, t)


def test_limits_are_inclusive() -> None:
    at_limit = _r(b"5:nodes416:" + (b"\x01" * 20 + b"\x7f\x00\x00\x01\x00\x01") * MAX_NODES)
    response = decode_krpc(at_limit)
    assert isinstance(response, Response)
    assert len(response.nodes) == MAX_NODES
    values = decode_krpc(_r(_values(MAX_VALUES)))
    assert isinstance(values, Response)
    assert len(values.values) == MAX_VALUES
    implied = _q(
        b"announce_peer",
        b"2:id" + ID + b"12:implied_porti1e9:info_hash" + HASH + b"4:porti0e5:token0:",
    )
    query = decode_krpc(implied)
    assert query == Query(b"aa", AnnouncePeer(NodeId(ID[3:]), InfoHash(HASH[3:]), 0, b"", True))
    no_port = _q(
        b"announce_peer", b"2:id" + ID + b"12:implied_porti1e9:info_hash" + HASH + b"5:token0:"
    )
    assert isinstance(decode_krpc(no_port), Query)
    token64 = _r(b"5:token64:" + b"k" * 64)
    assert isinstance(decode_krpc(token64), Response)
    t16 = b"d1:rd2:id" + ID + b"e1:t16:" + b"t" * 16 + b"1:y1:re"
    assert decode_krpc(t16) == Response(b"t" * 16, NodeId(ID[3:]))
    exactly_max = b"d1:rd2:id" + ID + b"e1:t2:aa1:y1:r1:z" + b"%d:" % 1445 + b"z" * 1445 + b"e"
    assert len(exactly_max) == MAX_DATAGRAM_SIZE
    assert isinstance(decode_krpc(exactly_max), Response)


def test_error_message_is_bounded_text() -> None:
    data = b"d1:eli202e300:" + b"\xff" * 300 + b"e1:t2:aa1:y1:ee"
    error = decode_krpc(data)
    assert isinstance(error, Error)
    assert error.code == ErrorCode.SERVER
    assert error.message == "\ufffd" * 256
    assert decode_krpc(b"d1:eli999ee1:t2:aa1:y1:ee") == Error(b"aa", 999, "")


def test_constructors_refuse_what_decode_refuses() -> None:
    with pytest.raises(ValueError, match="transaction id"):
        Query(b"", Ping(A_ID))
    with pytest.raises(ValueError, match="transaction id"):
        Response(b"t" * 17, A_ID)
    with pytest.raises(ValueError, match="transaction id"):
        Error(b"", 201, "x")
    with pytest.raises(ValueError, match="port out of range"):
        AnnouncePeer(A_ID, M_HASH, 0, b"x")
    with pytest.raises(ValueError, match="port out of range"):
        AnnouncePeer(A_ID, M_HASH, 65536, b"x", implied_port=True)
    with pytest.raises(ValueError, match="token longer"):
        AnnouncePeer(A_ID, M_HASH, 1, b"k" * 65)
    with pytest.raises(ValueError, match="token longer"):
        Response(b"aa", A_ID, token=b"k" * 65)


def test_encode_refuses_an_oversized_datagram() -> None:
    peers = tuple(PeerAddress(f"2001:db8::{i:x}", 1) for i in range(1, 72))
    fits = Response(b"aa", A_ID, values=peers[:60])
    assert len(encode_krpc(fits)) <= MAX_DATAGRAM_SIZE
    with pytest.raises(ValueError, match="exceeds 1500"):
        encode_krpc(Response(b"aa", A_ID, values=peers))


# -- hypothesis round trips ------------------------------------------------------------------

node_ids = st.binary(min_size=20, max_size=20).map(NodeId)
hashes = st.binary(min_size=20, max_size=20).map(InfoHash)
tids = st.binary(min_size=1, max_size=16)
versions = st.none() | st.binary(max_size=16)
ports = st.integers(min_value=1, max_value=65535)
v4 = st.builds(
    lambda a, p: PeerAddress(f"{a[0]}.{a[1]}.{a[2]}.{a[3]}", p),
    st.tuples(*(st.integers(1, 223),) + (st.integers(0, 255),) * 2 + (st.integers(1, 254),)),
    ports,
)
v6 = st.builds(lambda n, p: PeerAddress(f"2001:db8::{n:x}", p), st.integers(1, 0xFFFF), ports)
wants = st.sampled_from([Want.NONE, Want.N4, Want.N6, Want.N4 | Want.N6])
args = st.one_of(
    st.builds(Ping, node_ids),
    st.builds(FindNode, node_ids, node_ids, wants),
    st.builds(GetPeers, node_ids, hashes, wants),
    st.builds(AnnouncePeer, node_ids, hashes, ports, st.binary(max_size=64), st.booleans()),
    st.builds(
        UnknownQuery,
        st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20).filter(
            lambda m: m not in ("ping", "find_node", "get_peers", "announce_peer")
        ),
        st.none() | node_ids,
    ),
)
queries = st.builds(Query, tids, args, st.booleans(), versions)
responses = st.builds(
    Response,
    tids,
    node_ids,
    st.lists(st.builds(NodeInfo, node_ids, v4), max_size=8).map(tuple),
    st.lists(st.builds(NodeInfo, node_ids, v6), max_size=8).map(tuple),
    st.lists(st.one_of(v4, v6), max_size=20).map(tuple),
    st.none() | st.binary(max_size=64),
    st.none() | v4 | v6,
    versions,
)
errors = st.builds(
    Error, tids, st.integers(0, 999), st.text(max_size=100), st.none() | v4 | v6, versions
)


@given(st.one_of(queries, responses, errors))
def test_round_trip(message: KrpcMessage) -> None:
    assert decode_krpc(encode_krpc(message)) == message


@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_krpc_error(data: bytes) -> None:
    with contextlib.suppress(KrpcError):
        decode_krpc(data)


@given(
    st.dictionaries(
        st.sampled_from([b"t", b"y", b"q", b"a", b"r", b"e", b"ro", b"ip", b"v"]),
        st.one_of(
            st.integers(-1, 2),
            st.binary(max_size=30),
            st.sampled_from([b"q", b"r", b"e", b"ping", b"get_peers"]),
            st.lists(st.integers(0, 300), max_size=2),
            st.dictionaries(
                st.sampled_from(
                    [
                        b"id",
                        b"target",
                        b"info_hash",
                        b"port",
                        b"token",
                        b"implied_port",
                        b"want",
                        b"nodes",
                        b"values",
                    ]
                ),
                st.one_of(
                    st.integers(-1, 70000),
                    st.binary(max_size=40),
                    st.lists(st.binary(max_size=20), max_size=3),
                ),
                max_size=6,
            ),
        ),
    )
)
def test_structured_garbage_decodes_or_raises_krpc_error(message: dict[bytes, Any]) -> None:
    with contextlib.suppress(KrpcError):
        decode_krpc(encode(message))


# -- libtorrent captures ---------------------------------------------------------------------

MANIFEST: dict[str, Any] = json.loads((VECTORS / "libtorrent_dht.json").read_text())
US = MANIFEST["us"]
US_ID = NodeId.from_hex(US["id"])
US_ADDRESS = PeerAddress(US["host"], US["port"])
LT_A = NodeInfo(
    NodeId.from_hex(MANIFEST["sessions"]["A"]["id"]),
    PeerAddress(MANIFEST["sessions"]["A"]["host"], MANIFEST["sessions"]["A"]["port"]),
)
LT_B = NodeInfo(
    NodeId.from_hex(MANIFEST["sessions"]["B"]["id"]),
    PeerAddress(MANIFEST["sessions"]["B"]["host"], MANIFEST["sessions"]["B"]["port"]),
)
X = InfoHash.from_hex(MANIFEST["info_hash"])
A_TOKEN = bytes.fromhex(MANIFEST["a_token"])
LT_VERSION = b"LT\x02\x11"  # libtorrent 2.1.1: "LT", major, minor << 4 | tiny


def _lt(name: str) -> KrpcMessage:
    return decode_krpc((VECTORS / name).read_bytes())


def test_every_capture_is_listed_and_decodes() -> None:
    files = sorted(p.name for p in VECTORS.glob("lt_*.bin"))
    assert files == MANIFEST["files"]
    for name in files:
        data = (VECTORS / name).read_bytes()
        message = decode_krpc(data)
        assert message.version == LT_VERSION
        for end in range(0, len(data), 7):
            with pytest.raises(KrpcError):
                decode_krpc(data[:end])


def test_lt_queries() -> None:
    bootstrap = _lt("lt_bootstrap_get_peers_query.bin")
    assert isinstance(bootstrap, Query)
    assert isinstance(bootstrap.args, GetPeers)
    # libtorrent 2 bootstraps with get_peers ("bs": 1, ignored here) for an id near its own
    assert bootstrap.args.id in (LT_A.id, LT_B.id)
    assert common_prefix_length(bootstrap.args.id, bootstrap.args.info_hash) >= 64
    assert len(bootstrap.t) == 2
    get = _lt("lt_get_peers_query.bin")
    assert isinstance(get, Query)
    assert get.args == GetPeers(LT_B.id, X)
    assert not get.read_only
    # nothing we ignore in it: re-encoding gives libtorrent's bytes back
    assert encode_krpc(get) == (VECTORS / "lt_get_peers_query.bin").read_bytes()
    announce = _lt("lt_announce_peer_query.bin")
    assert isinstance(announce, Query)
    assert announce.args == AnnouncePeer(
        LT_B.id, X, MANIFEST["b_announce_port"], bytes.fromhex(MANIFEST["our_token"])
    )


def test_lt_responses() -> None:
    ping = _lt("lt_ping_response.bin")
    assert ping == Response(b"p1", LT_A.id, ip=US_ADDRESS, version=LT_VERSION)
    assert _lt("lt_ping_ro_response.bin") == Response(
        b"p2", LT_A.id, ip=US_ADDRESS, version=LT_VERSION
    )
    find = _lt("lt_find_node_response.bin")
    assert find == Response(b"f1", LT_A.id, nodes=(LT_B,), ip=US_ADDRESS, version=LT_VERSION)
    nodes = _lt("lt_get_peers_nodes_response.bin")
    assert isinstance(nodes, Response)
    assert (nodes.t, nodes.nodes, nodes.values, nodes.ip) == (b"g1", (LT_B,), (), US_ADDRESS)
    assert nodes.token is not None
    assert len(nodes.token) == 4
    first = _lt("lt_get_peers_response.bin")
    assert isinstance(first, Response)
    assert first.token == A_TOKEN
    b_peer = PeerAddress(LT_B.address.host, MANIFEST["b_announce_port"])
    assert first.values == (b_peer,)
    values = _lt("lt_get_peers_values_response.bin")
    assert isinstance(values, Response)
    us_peer = PeerAddress(US["host"], MANIFEST["our_announce_port"])
    assert set(values.values) == {b_peer, us_peer}
    assert _lt("lt_announce_peer_response.bin") == Response(
        b"a1", LT_A.id, ip=US_ADDRESS, version=LT_VERSION
    )


def test_lt_errors() -> None:
    assert _lt("lt_announce_peer_bad_token_error.bin") == Error(
        b"a2", ErrorCode.PROTOCOL, "invalid token", ip=US_ADDRESS, version=LT_VERSION
    )
    # libtorrent answers an unknown method with 203 "unknown message", not BEP 5's 204
    assert _lt("lt_frobnicate_error.bin") == Error(
        b"u1", ErrorCode.PROTOCOL, "unknown message", ip=US_ADDRESS, version=LT_VERSION
    )


def test_we_encode_the_queries_libtorrent_answered() -> None:
    x = X
    announce = AnnouncePeer(US_ID, x, MANIFEST["our_announce_port"], A_TOKEN)
    ours: dict[str, Query] = {
        "ping": Query(b"p1", Ping(US_ID)),
        "ping_ro": Query(b"p2", Ping(US_ID), read_only=True),
        "find_node": Query(b"f1", FindNode(US_ID, LT_B.id, Want.N4 | Want.N6)),
        "get_peers_nodes": Query(b"g1", GetPeers(US_ID, InfoHash(bytes(b ^ 0xFF for b in x.raw)))),
        "get_peers": Query(b"g2", GetPeers(US_ID, x)),
        "announce_peer": Query(b"a1", announce),
        "get_peers_values": Query(b"g3", GetPeers(US_ID, x)),
        "announce_peer_bad_token": Query(
            b"a2", AnnouncePeer(US_ID, x, announce.port, b"forged", implied_port=True)
        ),
        "frobnicate": Query(b"u1", UnknownQuery("frobnicate", US_ID)),
    }
    assert sorted(ours) == sorted(k for k in MANIFEST["sent"] if not k.startswith("reply_"))
    for kind, query in ours.items():
        sent = bytes.fromhex(MANIFEST["sent"][kind])
        assert encode_krpc(query) == sent, kind
        assert decode_krpc(sent) == query, kind


def test_we_encode_the_replies_libtorrent_acted_on() -> None:
    sent = {k: bytes.fromhex(v) for k, v in MANIFEST["sent"].items() if k.startswith("reply_")}
    assert sorted(sent) == ["reply_announce_peer", "reply_bootstrap_get_peers", "reply_get_peers"]
    our_token = bytes.fromhex(MANIFEST["our_token"])
    # B announced X to us with this token: libtorrent took the reply as a get_peers answer
    get = decode_krpc(sent["reply_get_peers"])
    assert isinstance(get, Response)
    assert (get.node_id, get.token, get.values) == (US_ID, our_token, ())
    assert get.nodes == (LT_A,)
    assert encode_krpc(get) == sent["reply_get_peers"]
    announce = decode_krpc(sent["reply_announce_peer"])
    assert isinstance(announce, Response)
    assert encode_krpc(announce) == sent["reply_announce_peer"]
    # the first bootstrap reply had no node to give: "nodes" is "0:" there, which encode_krpc
    # leaves out (an empty tuple is no key at all)
    bootstrap = decode_krpc(sent["reply_bootstrap_get_peers"])
    assert isinstance(bootstrap, Response)
    assert (bootstrap.nodes, bootstrap.token) == ((), our_token)
    assert encode_krpc(bootstrap) == sent["reply_bootstrap_get_peers"].replace(b"5:nodes0:", b"")
