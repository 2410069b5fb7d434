"""Fuzz targets for the DHT (BEP 5): the KRPC datagram codec and the routing table's state file.

Strategy: as in ``targets.py``: the fuzzer's bytes go to the parser and what the module
promises is checked. A KRPC datagram comes from anyone on the Internet; the table file comes from
disk, where it may be truncated, stale or garbage. For the table file the first input byte
chooses the table's options (IPv6, the BEP 42 check, tight limits), so every input replays the
same way.

Rules:
- ``decode_krpc`` raises only ``KrpcError`` with a listed reason; a reason that only a query can
  have comes with the query's ``t`` (so the node can answer 203). What decodes keeps the bounds
  of ``krpc.py``: ``t`` 1..16 bytes, at most ``MAX_NODES`` nodes per family (each of that family,
  with a usable port), at most ``MAX_VALUES`` values, a token of at most ``MAX_TOKEN_SIZE``
  bytes, a ``v`` of at most ``MAX_VERSION_SIZE``, an error text of at most 256 characters; and it
  re-encodes to a datagram within ``MAX_DATAGRAM_SIZE`` that decodes to the same message (the
  two documented exceptions: an unknown method that is not ASCII, and an error text whose
  replacement characters make it longer than the datagram allows).
- ``RoutingTable.load`` never raises. An unusable file gives an empty table with the fallback id
  and a one-line reason; a usable one gives a consistent table: at most ``k`` nodes per bucket,
  1..160 buckets, one node per id and per IP, all of the table's family, never our own id,
  passing the BEP 42 check when one is set, confirmed and questionable, caches within their cap,
  no more nodes kept than the file held; and ``load(dump())`` gives back the same nodes.
"""

from __future__ import annotations

from tests.fuzz import seeds
from tests.fuzz.registry import fuzz_target
from torviz.shared.bencode import decode
from torviz.shared.dht.buckets import ip_key
from torviz.shared.dht.krpc import (
    MAX_DATAGRAM_SIZE,
    MAX_NODES,
    MAX_TOKEN_SIZE,
    MAX_TRANSACTION_ID_SIZE,
    MAX_VALUES,
    MAX_VERSION_SIZE,
    AnnouncePeer,
    Error,
    KrpcMessage,
    Query,
    Response,
    UnknownQuery,
    decode_krpc,
    encode_krpc,
)
from torviz.shared.dht.node_id import (
    ID_BITS,
    NodeId,
    bucket_index,
    distance,
    is_bep42_exempt,
    is_secure_node_id,
)
from torviz.shared.dht.routing import NodeState, RoutingLimits, RoutingTable
from torviz.shared.errors import KrpcError
from torviz.shared.types import PeerAddress

__all__: list[str] = []

# --- KRPC (BEP 5, 32, 42, 43) -------------------------------------------------------------------

_QUERY_REASONS = frozenset(
    {"bad_method", "bad_args", "bad_target", "bad_info_hash", "bad_port", "bad_want"}
)
_KRPC_REASONS = _QUERY_REASONS | {
    "too_large",
    "bad_bencode",
    "not_a_dict",
    "bad_transaction_id",
    "bad_message_type",
    "bad_node_id",
    "bad_token",
    "bad_response",
    "bad_nodes",
    "bad_nodes6",
    "too_many_nodes",
    "too_many_nodes6",
    "bad_values",
    "too_many_values",
    "bad_error",
}
_KNOWN_METHODS = frozenset({"ping", "find_node", "get_peers", "announce_peer"})
_MAX_ERROR_TEXT = 256


def _usable(address: PeerAddress | None) -> bool:
    return address is None or 0 < address.port < 65536


def _check_krpc(message: KrpcMessage) -> None:
    assert 1 <= len(message.t) <= MAX_TRANSACTION_ID_SIZE
    assert message.version is None or len(message.version) <= MAX_VERSION_SIZE
    match message:
        case Query(args=UnknownQuery(method=method)):
            assert method not in _KNOWN_METHODS, method
        case Query(args=AnnouncePeer() as announce):
            assert len(announce.token) <= MAX_TOKEN_SIZE
            assert (0 if announce.implied_port else 1) <= announce.port <= 0xFFFF
        case Response():
            assert len(message.nodes) <= MAX_NODES and len(message.nodes6) <= MAX_NODES
            assert all(not n.address.is_ipv6 for n in message.nodes), message.nodes
            assert all(n.address.is_ipv6 for n in message.nodes6), message.nodes6
            assert len(message.values) <= MAX_VALUES
            assert message.token is None or len(message.token) <= MAX_TOKEN_SIZE
            assert _usable(message.ip)
        case Error():
            assert len(message.message) <= _MAX_ERROR_TEXT
            assert _usable(message.ip)


def _reencodes_within_limits(message: KrpcMessage) -> bool:
    """Whether ``encode_krpc`` owes us a datagram for this decoded message (see the rules)."""
    if isinstance(message, Query) and isinstance(message.args, UnknownQuery):
        return message.args.method.isascii()
    if isinstance(message, Error):
        return "\ufffd" not in message.message
    return True


@fuzz_target(seeds.krpc_datagrams, max_len=MAX_DATAGRAM_SIZE + 64)
def fuzz_dht_krpc(data: bytes) -> None:
    """KRPC datagrams: only ``KrpcError`` with a listed reason (and the query's ``t`` where the
    node must answer 203); decoded messages within bounds; ``decode(encode(m)) == m``."""
    try:
        message = decode_krpc(data)
    except KrpcError as exc:
        assert exc.reason in _KRPC_REASONS, exc.reason
        if exc.reason in _QUERY_REASONS:
            assert exc.transaction_id is not None, f"{exc.reason} without the query's t"
        if exc.transaction_id is not None:
            assert 1 <= len(exc.transaction_id) <= MAX_TRANSACTION_ID_SIZE
        return
    _check_krpc(message)
    try:
        encoded = encode_krpc(message)
    except ValueError:
        assert not _reencodes_within_limits(message), f"encode_krpc refused {message!r}"
        return
    assert len(encoded) <= MAX_DATAGRAM_SIZE
    assert decode_krpc(encoded) == message, message
    assert encode_krpc(decode_krpc(encoded)) == encoded


# --- the routing table's state file -------------------------------------------------------------

_NOW = 1000.0
_FALLBACK_ID = NodeId(b"\x5a" * 20)
_TIGHT = RoutingLimits(k=2, max_replacements=2)
_TABLE_OPTIONS = 8  # bit 0: IPv6 table, bit 1: BEP 42 check, bit 2: tight limits


def _entries(data: bytes, ipv6: bool) -> int:
    """How many entries a file that ``load`` accepted holds (its ``nodes`` over the stride)."""
    value = decode(data, strict=True)
    assert isinstance(value, dict)
    nodes = value[b"nodes"]
    assert isinstance(nodes, bytes)
    return len(nodes) // (20 + (16 if ipv6 else 4) + 2)


def _check_table(table: RoutingTable, limits: RoutingLimits, *, checked: bool) -> None:
    own = table.own_id
    assert 1 <= table.bucket_count <= ID_BITS
    statuses = list(table.nodes(_NOW))
    counts = table.counts(_NOW)
    assert len(statuses) == len(table) == counts.nodes
    assert counts.buckets == table.bucket_count
    assert counts.replacements <= limits.max_replacements * table.bucket_count
    assert counts.questionable == counts.nodes, counts  # loaded: confirmed, not yet good
    per_bucket: dict[int, int] = {}
    for status in statuses:
        info = status.info
        assert info.id != own, "our own id in the table"
        assert info.address.is_ipv6 == table.ipv6, info
        assert status.in_bucket and status.confirmed and status.failures == 0, status
        assert status.state is NodeState.QUESTIONABLE, status
        if checked:
            host = info.address.host
            assert is_bep42_exempt(host) or is_secure_node_id(info.id, host), info
        index = min(bucket_index(own, info.id), table.bucket_count - 1)
        per_bucket[index] = per_bucket.get(index, 0) + 1
        assert info.id in table
    assert all(count <= limits.k for count in per_bucket.values()), per_bucket
    assert len({s.info.id for s in statuses}) == len(statuses), "an id twice"
    # One node per IP; per IP and port for a local IP.
    assert len({ip_key(s.info.address) for s in statuses}) == len(statuses), "an IP twice"
    closest = table.closest(own, 8)
    assert len(closest) <= 8 and set(closest) <= {s.info for s in statuses}
    assert closest == sorted(closest, key=lambda info: distance(info.id, own))


@fuzz_target(
    lambda: [
        bytes([flags]) + body
        for flags in range(_TABLE_OPTIONS)
        for body in seeds.routing_table_files()
    ],
    max_len=16384,
)
def fuzz_dht_table_file(data: bytes) -> None:
    """The routing table's state file: byte 0 picks the options. ``load`` never raises; an
    unusable file gives an empty table and a reason; a usable one a consistent, bounded table
    that survives ``load(dump())``."""
    if not data:
        return
    flags, body = data[0] % _TABLE_OPTIONS, data[1:]
    ipv6, checked = bool(flags & 1), bool(flags & 2)
    limits = _TIGHT if flags & 4 else RoutingLimits()
    id_check = is_secure_node_id if checked else None

    def load(blob: bytes) -> tuple[RoutingTable, str | None, int]:
        loaded = RoutingTable.load(
            blob, _NOW, fallback_id=_FALLBACK_ID, limits=limits, id_check=id_check, ipv6=ipv6
        )
        assert loaded.table.ipv6 == ipv6 and loaded.table.limits == limits
        return loaded.table, loaded.reason, loaded.skipped

    table, reason, skipped = load(body)
    if reason is not None:
        assert reason.strip() and "\n" not in reason, repr(reason)
        assert table.own_id == _FALLBACK_ID and len(table) == 0 and skipped == 0
        assert table.counts(_NOW).replacements == 0
        return
    _check_table(table, limits, checked=checked)
    counts = table.counts(_NOW)
    dumped = table.dump()
    kept = _entries(dumped, ipv6)
    assert kept == counts.nodes + counts.replacements  # every loaded node is confirmed
    assert skipped >= 0 and kept + skipped == _entries(body, ipv6), (kept, skipped)
    again, again_reason, again_skipped = load(dumped)
    assert again_reason is None and again_skipped == 0, (again_reason, again_skipped)
    assert again.own_id == table.own_id
    assert {s.info for s in again.nodes(_NOW)} == {s.info for s in table.nodes(_NOW)}
