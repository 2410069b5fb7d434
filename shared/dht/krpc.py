"""KRPC, the DHT's message format (BEP 5), with BEP 32 (IPv6), BEP 42 (``ip``) and BEP 43 (``ro``).

A KRPC message is one bencoded dict in one UDP datagram: ``t`` (transaction id, echoed in the
answer), ``y`` (``q`` query, ``r`` response, ``e`` error), optional ``v`` (client version). A
query has ``q`` (method) and ``a`` (arguments, always with the querier's ``id``); BEP 43 adds
``ro: 1`` for a read-only node (answer it, never add it to a routing table). A response has
``r`` (``id`` plus ``nodes`` / ``nodes6`` / ``values`` / ``token`` as the method gives) and, per
BEP 42, ``ip`` at the top level: the querier's address as the responder saw it (compact, 6 or
18 bytes). An error has ``e: [code, message]`` (201 generic, 202 server, 203 protocol, 204
method unknown). BEP 32 adds ``want: ["n4", "n6"]`` to find_node / get_peers and ``nodes6``
(38-byte entries) to their answers.

Strategy: refuse an oversized datagram before parsing, decode it with the strict bencode decoder
under ``NETWORK_LIMITS``, then check every field the message type uses; compact strings have their
stride checked first and their entry count bounded before anything is sliced. A response does not
say which method it answers (only the transaction does), so there is one ``Response`` type whose
optional fields the node interprets; a query is a ``Query`` wrapping one frozen dataclass per
method (a closed union, dispatch with ``match``). The compact ``nodes`` / ``values`` forms live
in ``compact`` and are re-exported here.

Rules:
- ``MAX_DATAGRAM_SIZE`` (1,500 bytes) bounds what we decode and what we encode. libtorrent sends
  at most about 1.4 KiB (8 nodes, 8 nodes6, up to 100 values fit); anything longer is either
  fragmented or an amplification attempt, so it is dropped unread.
- A message that cannot be used raises ``KrpcError(reason, message)``; when it was a query with a
  readable ``t``, ``KrpcError.transaction_id`` lets the node answer error 203.
- Ids, targets and info hashes are exactly 20 bytes. ``nodes`` is a multiple of 26 bytes and
  ``nodes6`` of 38, each at most ``MAX_NODES`` entries; ``values`` is a list of at most
  ``MAX_VALUES`` strings of 6 or 18 bytes; a token is at most ``MAX_TOKEN_SIZE`` bytes; ``t`` is
  1..``MAX_TRANSACTION_ID_SIZE`` bytes. An announce port is 1..65535 (0 allowed with
  ``implied_port``, where the source port is used instead).
- Unusable compact entries (port 0, unspecified, multicast or broadcast address) are dropped one
  by one, never an error; the rest of the answer stays usable.
- An unknown method decodes as ``UnknownQuery`` (the node answers 204); unknown keys are ignored.
  Advisory fields are dropped when malformed rather than failing the message: ``v`` (kept only
  when at most ``MAX_VERSION_SIZE`` bytes), ``ip`` (kept only when 6 or 18 bytes with a usable
  address and port), ``want`` entries other than ``n4`` / ``n6``.
- Encoding writes canonical bencode (sorted keys); empty ``nodes`` / ``nodes6`` / ``values`` and
  absent ``token`` / ``ip`` / ``v`` are left out, ``ro`` is written only when set.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Flag, IntEnum

from torviz.shared.bencode import NETWORK_LIMITS, Value, decode, encode
from torviz.shared.dht.compact import (
    COMPACT_NODE6_SIZE,
    COMPACT_NODE_SIZE,
    MAX_NODES,
    MAX_VALUES,
    decode_compact_address,
    decode_nodes,
    decode_nodes6,
    decode_peers,
    encode_compact_address,
    encode_nodes,
    encode_nodes6,
    encode_peers,
)
from torviz.shared.dht.node_id import NODE_ID_SIZE, NodeId, NodeInfo
from torviz.shared.errors import BencodeError, KrpcError
from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "COMPACT_NODE6_SIZE",
    "COMPACT_NODE_SIZE",
    "MAX_DATAGRAM_SIZE",
    "MAX_NODES",
    "MAX_TOKEN_SIZE",
    "MAX_TRANSACTION_ID_SIZE",
    "MAX_VALUES",
    "MAX_VERSION_SIZE",
    "AnnouncePeer",
    "Error",
    "ErrorCode",
    "FindNode",
    "GetPeers",
    "KrpcMessage",
    "Ping",
    "Query",
    "QueryArgs",
    "Response",
    "UnknownQuery",
    "Want",
    "decode_compact_address",
    "decode_krpc",
    "decode_nodes",
    "decode_nodes6",
    "decode_peers",
    "encode_compact_address",
    "encode_krpc",
    "encode_nodes",
    "encode_nodes6",
    "encode_peers",
]

MAX_DATAGRAM_SIZE = 1500
"""Largest datagram decoded or encoded, in bytes (see the module rules)."""

MAX_TOKEN_SIZE = 64
"""Longest announce token accepted (libtorrent's are 4 bytes, others up to 20)."""

MAX_TRANSACTION_ID_SIZE = 16
"""Longest ``t`` accepted (libtorrent and torviz send 2 bytes, a few clients 4 or 8)."""

MAX_VERSION_SIZE = 16
"""Longest ``v`` kept (BEP 20: 2 client letters and 2 version bytes)."""

_MAX_METHOD_SIZE = 64
_MAX_ERROR_MESSAGE = 256  # characters of an error message kept


class ErrorCode(IntEnum):
    """The error codes of BEP 5 (others exist, e.g. BEP 44's 205-207; ``Error.code`` is an int)."""

    GENERIC = 201
    SERVER = 202
    PROTOCOL = 203
    METHOD_UNKNOWN = 204


class Want(Flag):
    """BEP 32 ``want``: which address families' nodes the querier asks for (none = its own)."""

    NONE = 0
    N4 = 1
    N6 = 2


# -- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """``ping``: is the node alive? Answered with the responder's id only."""

    id: NodeId


@dataclass(frozen=True, slots=True)
class FindNode:
    """``find_node``: the K closest nodes to ``target`` the responder knows."""

    id: NodeId
    target: NodeId
    want: Want = Want.NONE


@dataclass(frozen=True, slots=True)
class GetPeers:
    """``get_peers``: peers of ``info_hash`` (``values``) or closer nodes, and a token."""

    id: NodeId
    info_hash: InfoHash
    want: Want = Want.NONE


@dataclass(frozen=True, slots=True)
class AnnouncePeer:
    """``announce_peer``: the querier downloads ``info_hash`` on TCP ``port``.

    With ``implied_port`` the responder uses the UDP source port and ignores ``port`` (which
    may then be 0). ``token`` is the one the responder gave in its get_peers answer.
    """

    id: NodeId
    info_hash: InfoHash
    port: int
    token: bytes
    implied_port: bool = False

    def __post_init__(self) -> None:
        low = 0 if self.implied_port else 1
        if not low <= self.port <= 0xFFFF:
            raise ValueError(f"announce port out of range: {self.port}")
        if len(self.token) > MAX_TOKEN_SIZE:
            raise ValueError(f"token longer than {MAX_TOKEN_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class UnknownQuery:
    """A query whose method we do not implement (BEP 44 ``get``, BEP 51 ...): answer 204.

    ``id`` is None when the arguments carry no usable id.
    """

    method: str
    id: NodeId | None = None


QueryArgs = Ping | FindNode | GetPeers | AnnouncePeer | UnknownQuery
"""The arguments of one query, one class per method."""

_METHODS: dict[type, bytes] = {
    Ping: b"ping",
    FindNode: b"find_node",
    GetPeers: b"get_peers",
    AnnouncePeer: b"announce_peer",
}


@dataclass(frozen=True, slots=True)
class Query:
    """A KRPC query (``y = q``).

    Attributes:
        t: the transaction id, 1..16 bytes, echoed by the answer.
        args: the method's arguments; the method name follows from their type.
        read_only: BEP 43 ``ro = 1``: the querier must not be put in routing tables.
        version: ``v``, the querier's client version, if given.
    """

    t: bytes
    args: QueryArgs
    read_only: bool = False
    version: bytes | None = None

    def __post_init__(self) -> None:
        _check_t(self.t)

    @property
    def method(self) -> str:
        """The method name on the wire: ``ping``, ``find_node``, ..."""
        if isinstance(self.args, UnknownQuery):
            return self.args.method
        return _METHODS[type(self.args)].decode("ascii")

    @property
    def node_id(self) -> NodeId | None:
        """The querier's id (None only for an unknown method without one)."""
        return self.args.id


@dataclass(frozen=True, slots=True)
class Response:
    """A KRPC response (``y = r``); which fields are set depends on the method answered.

    Attributes:
        t: the transaction id of the query answered.
        node_id: the responder's id.
        nodes: compact IPv4 nodes (find_node, get_peers without values).
        nodes6: compact IPv6 nodes (BEP 32).
        values: peers of the info hash (get_peers), IPv4 and IPv6 mixed.
        token: for a later announce_peer (get_peers).
        ip: BEP 42: the querier's address and port as the responder saw them.
        version: ``v``, the responder's client version, if given.
    """

    t: bytes
    node_id: NodeId
    nodes: tuple[NodeInfo, ...] = ()
    nodes6: tuple[NodeInfo, ...] = ()
    values: tuple[PeerAddress, ...] = ()
    token: bytes | None = None
    ip: PeerAddress | None = None
    version: bytes | None = None

    def __post_init__(self) -> None:
        _check_t(self.t)
        if self.token is not None and len(self.token) > MAX_TOKEN_SIZE:
            raise ValueError(f"token longer than {MAX_TOKEN_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class Error:
    """A KRPC error (``y = e``): ``code`` (see ``ErrorCode``) and a human-readable message."""

    t: bytes
    code: int
    message: str
    ip: PeerAddress | None = None
    version: bytes | None = None

    def __post_init__(self) -> None:
        _check_t(self.t)


KrpcMessage = Query | Response | Error
"""Every KRPC message."""


def _check_t(t: bytes) -> None:
    if not isinstance(t, bytes) or not 1 <= len(t) <= MAX_TRANSACTION_ID_SIZE:
        raise ValueError(f"a transaction id is 1..{MAX_TRANSACTION_ID_SIZE} bytes")


# -- decoding --------------------------------------------------------------------------------


def decode_krpc(datagram: bytes) -> KrpcMessage:
    """Decode one DHT datagram.

    Args:
        datagram: the UDP payload.

    Returns:
        The ``Query``, ``Response`` or ``Error`` it holds.

    Raises:
        KrpcError: with a reason naming the cause: ``too_large``, ``bad_bencode``,
            ``not_a_dict``, ``bad_transaction_id``, ``bad_message_type``, ``bad_method``,
            ``bad_args``, ``bad_node_id``, ``bad_target``, ``bad_info_hash``, ``bad_port``,
            ``bad_token``, ``bad_want``, ``bad_response``, ``bad_nodes``, ``bad_nodes6``,
            ``too_many_nodes``, ``too_many_nodes6``, ``bad_values``, ``too_many_values``,
            ``bad_error``. ``transaction_id`` is set for a query with a readable ``t``.
    """
    if len(datagram) > MAX_DATAGRAM_SIZE:
        raise KrpcError(
            "too_large", f"datagram of {len(datagram)} bytes, limit is {MAX_DATAGRAM_SIZE}"
        )
    try:
        message = decode(bytes(datagram), strict=True, limits=NETWORK_LIMITS)
    except BencodeError as exc:
        raise KrpcError("bad_bencode", f"not canonical bencode: {exc}") from None
    if not isinstance(message, dict):
        raise KrpcError("not_a_dict", "a KRPC message is a bencoded dictionary")
    t = message.get(b"t")
    if not isinstance(t, bytes) or not 1 <= len(t) <= MAX_TRANSACTION_ID_SIZE:
        raise KrpcError(
            "bad_transaction_id", f"t is not a string of 1..{MAX_TRANSACTION_ID_SIZE} bytes"
        )
    version = _version(message.get(b"v"))
    kind = message.get(b"y")
    if kind == b"q":
        try:
            return _decode_query(message, t, version)
        except KrpcError as exc:
            exc.transaction_id = t
            raise
    if kind == b"r":
        return _decode_response(message, t, version)
    if kind == b"e":
        return _decode_error(message, t, version)
    raise KrpcError("bad_message_type", "y is not q, r or e")


def _version(value: Value | None) -> bytes | None:
    if isinstance(value, bytes) and len(value) <= MAX_VERSION_SIZE:
        return value
    return None


def _ip(value: Value | None) -> PeerAddress | None:
    return decode_compact_address(value) if isinstance(value, bytes) else None


def _id(args: dict[bytes, Value], key: bytes, reason: str) -> bytes:
    value = args.get(key)
    if not isinstance(value, bytes) or len(value) != NODE_ID_SIZE:
        name = key.decode("ascii")
        raise KrpcError(reason, f"{name} is not a 20-byte string")
    return value


def _want(args: dict[bytes, Value]) -> Want:
    value = args.get(b"want")
    if value is None:
        return Want.NONE
    if not isinstance(value, list):
        raise KrpcError("bad_want", "want is not a list")
    want = Want.NONE
    for entry in value:
        if entry == b"n4":
            want |= Want.N4
        elif entry == b"n6":
            want |= Want.N6
    return want


def _decode_query(message: dict[bytes, Value], t: bytes, version: bytes | None) -> Query:
    method = message.get(b"q")
    if not isinstance(method, bytes) or not 0 < len(method) <= _MAX_METHOD_SIZE:
        raise KrpcError("bad_method", "q is not a method name")
    args = message.get(b"a")
    if not isinstance(args, dict):
        raise KrpcError("bad_args", "a is not a dictionary")
    read_only = message.get(b"ro") == 1
    parsed: QueryArgs
    if method not in _METHODS.values():
        raw_id = args.get(b"id")
        node_id = (
            NodeId(raw_id) if isinstance(raw_id, bytes) and len(raw_id) == NODE_ID_SIZE else None
        )
        parsed = UnknownQuery(method.decode("ascii", errors="replace"), node_id)
        return Query(t, parsed, read_only, version)
    node_id = NodeId(_id(args, b"id", "bad_node_id"))
    if method == b"ping":
        parsed = Ping(node_id)
    elif method == b"find_node":
        parsed = FindNode(node_id, NodeId(_id(args, b"target", "bad_target")), _want(args))
    elif method == b"get_peers":
        info_hash = InfoHash(_id(args, b"info_hash", "bad_info_hash"))
        parsed = GetPeers(node_id, info_hash, _want(args))
    else:
        parsed = _announce(args, node_id)
    return Query(t, parsed, read_only, version)


def _announce(args: dict[bytes, Value], node_id: NodeId) -> AnnouncePeer:
    info_hash = InfoHash(_id(args, b"info_hash", "bad_info_hash"))
    implied = args.get(b"implied_port", 0)
    if not isinstance(implied, int):
        raise KrpcError("bad_port", "implied_port is not an integer")
    implied_port = implied != 0
    port = args.get(b"port", 0 if implied_port else None)
    low = 0 if implied_port else 1
    if not isinstance(port, int) or not low <= port <= 0xFFFF:
        raise KrpcError("bad_port", f"port is not an integer in {low}..65535")
    token = args.get(b"token")
    if not isinstance(token, bytes) or len(token) > MAX_TOKEN_SIZE:
        raise KrpcError("bad_token", f"token is not a string of at most {MAX_TOKEN_SIZE} bytes")
    return AnnouncePeer(node_id, info_hash, port, token, implied_port)


def _decode_response(message: dict[bytes, Value], t: bytes, version: bytes | None) -> Response:
    body = message.get(b"r")
    if not isinstance(body, dict):
        raise KrpcError("bad_response", "r is not a dictionary")
    node_id = NodeId(_id(body, b"id", "bad_node_id"))
    nodes: tuple[NodeInfo, ...] = ()
    nodes6: tuple[NodeInfo, ...] = ()
    values: tuple[PeerAddress, ...] = ()
    raw = body.get(b"nodes")
    if raw is not None:
        if not isinstance(raw, bytes):
            raise KrpcError("bad_nodes", "nodes is not a string")
        nodes = decode_nodes(raw)
    raw = body.get(b"nodes6")
    if raw is not None:
        if not isinstance(raw, bytes):
            raise KrpcError("bad_nodes6", "nodes6 is not a string")
        nodes6 = decode_nodes6(raw)
    raw = body.get(b"values")
    if raw is not None:
        values = decode_peers(raw)
    token = body.get(b"token")
    if token is not None and (not isinstance(token, bytes) or len(token) > MAX_TOKEN_SIZE):
        raise KrpcError("bad_token", f"token is not a string of at most {MAX_TOKEN_SIZE} bytes")
    return Response(t, node_id, nodes, nodes6, values, token, _ip(message.get(b"ip")), version)


def _decode_error(message: dict[bytes, Value], t: bytes, version: bytes | None) -> Error:
    body = message.get(b"e")
    if not isinstance(body, list) or not body or not isinstance(body[0], int):
        raise KrpcError("bad_error", "e is not a list starting with an error code")
    text = body[1] if len(body) > 1 and isinstance(body[1], bytes) else b""
    readable = text.decode("utf-8", errors="replace")[:_MAX_ERROR_MESSAGE]
    return Error(t, body[0], readable, _ip(message.get(b"ip")), version)


# -- encoding --------------------------------------------------------------------------------


def encode_krpc(message: KrpcMessage) -> bytes:
    """Encode one message as a datagram (canonical bencode).

    Returns:
        The bytes to send.

    Raises:
        ValueError: the datagram would exceed ``MAX_DATAGRAM_SIZE``, or an IPv6 node sits in
            ``nodes`` (or IPv4 in ``nodes6``).
    """
    out: dict[bytes, object] = {b"t": message.t}
    match message:
        case Query(args=args):
            out[b"y"] = b"q"
            out[b"q"] = message.method.encode("ascii")
            out[b"a"] = _encode_args(args)
            if message.read_only:
                out[b"ro"] = 1
        case Response():
            out[b"y"] = b"r"
            body: dict[bytes, object] = {b"id": message.node_id.raw}
            if message.nodes:
                body[b"nodes"] = encode_nodes(message.nodes)
            if message.nodes6:
                body[b"nodes6"] = encode_nodes6(message.nodes6)
            if message.values:
                body[b"values"] = encode_peers(message.values)
            if message.token is not None:
                body[b"token"] = message.token
            out[b"r"] = body
            if message.ip is not None:
                out[b"ip"] = encode_compact_address(message.ip)
        case Error():
            out[b"y"] = b"e"
            out[b"e"] = [message.code, message.message.encode("utf-8")]
            if message.ip is not None:
                out[b"ip"] = encode_compact_address(message.ip)
    if message.version is not None:
        out[b"v"] = message.version
    data = encode(out)
    if len(data) > MAX_DATAGRAM_SIZE:
        raise ValueError(f"KRPC datagram of {len(data)} bytes exceeds {MAX_DATAGRAM_SIZE}")
    return data


def _want_list(want: Want) -> list[bytes]:
    return [name for flag, name in ((Want.N4, b"n4"), (Want.N6, b"n6")) if flag in want]


def _encode_args(args: QueryArgs) -> dict[bytes, object]:
    match args:
        case Ping(id=node_id):
            return {b"id": node_id.raw}
        case FindNode(id=node_id, target=target, want=want):
            out: dict[bytes, object] = {b"id": node_id.raw, b"target": target.raw}
            if want:
                out[b"want"] = _want_list(want)
            return out
        case GetPeers(id=node_id, info_hash=info_hash, want=want):
            out = {b"id": node_id.raw, b"info_hash": info_hash.raw}
            if want:
                out[b"want"] = _want_list(want)
            return out
        case AnnouncePeer():
            out = {
                b"id": args.id.raw,
                b"info_hash": args.info_hash.raw,
                b"port": args.port,
                b"token": args.token,
            }
            if args.implied_port:
                out[b"implied_port"] = 1
            return out
        case UnknownQuery(id=node_id):
            return {} if node_id is None else {b"id": node_id.raw}
