"""The UDP tracker protocol (BEP 15, with BEP 41 URL data) as a sans-IO codec.

Strategy: one frozen dataclass per packet, both directions, so a test (or a fake tracker) can
build and read every packet. The client side decodes a reply against what it sent: the
transaction id it chose and, for scrapes, how many hashes it asked about. Retransmission and
the connection-id lifetime are policy for the tracker agent; only the constants live here.

Rules:
- All integers are big-endian. Counts and ids are unsigned (``connection_id`` 64-bit, the rest
  32-bit) except ``num_want``, which is signed (-1: the tracker's default).
- Reply checks, in BEP 15 order: at least 8 bytes (``truncated``), our transaction id
  (``wrong_transaction``), an error packet (``tracker_error``, with the tracker's text), the
  action we expect (``wrong_action``), then the full length (``truncated``).
- Trailing bytes: BEP 15 says packets may grow, so bytes after a fixed-size packet (connect
  request and response, announce request) or after the last expected scrape entry are
  ignored; after an announce request they are parsed as BEP 41 options (URL data kept, other
  options skipped, a malformed tail ignored). The peer list of an announce response has no
  length field: its size is the rest of the packet, so a rest that is not a multiple of 6
  (IPv4) or 18 (IPv6) is refused as ``bad_compact_length`` rather than guessed at.
- The peer format (6 or 18 bytes) follows the address family of the tracker's socket: the
  caller says which with ``ipv6``. Peers with port 0 or unusable addresses are dropped and
  counted in ``dropped_peers``, as over HTTP.
- A packet larger than MAX_PACKET_SIZE is refused (``too_large``) before anything else.
- A scrape request carries 1..MAX_SCRAPE_HASHES info-hashes in both directions: the decoder
  refuses more (``too_many_hashes``), as the encoder does.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from torviz.shared.errors import TrackerError
from torviz.shared.tracker.model import (
    MAX_PEERS_PER_REPLY,
    AnnounceEvent,
    AnnounceFailure,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    TrackerPeer,
    clamp_interval,
    tracker_text,
)
from torviz.shared.tracker.peers import (
    decode_compact_v4,
    decode_compact_v6,
    encode_compact_v4,
    encode_compact_v6,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

__all__ = [
    "ANNOUNCE_REQUEST_SIZE",
    "CONNECTION_ID_LIFETIME",
    "MAX_PACKET_SIZE",
    "MAX_SCRAPE_HASHES",
    "PROTOCOL_ID",
    "ConnectRequest",
    "ConnectResponse",
    "UdpAnnounceRequest",
    "UdpAnnounceResponse",
    "UdpErrorResponse",
    "UdpRequest",
    "UdpResponse",
    "UdpScrapeRequest",
    "UdpScrapeResponse",
    "UdpTrackerError",
    "decode_announce_response",
    "decode_connect_response",
    "decode_error_response",
    "decode_request",
    "decode_scrape_response",
    "encode_request",
    "encode_response",
]

PROTOCOL_ID = 0x41727101980
"""The magic ``protocol_id`` of a connect request."""

CONNECTION_ID_LIFETIME = 60
"""Seconds a client may use a connection id after receiving it (trackers accept it for 120)."""

MAX_SCRAPE_HASHES = 74
"""Info-hashes in one scrape request (BEP 15: "up to about 74")."""

ANNOUNCE_REQUEST_SIZE = 98
"""Bytes of an announce request without BEP 41 options."""

MAX_PACKET_SIZE = 65_535
"""Bytes of the largest UDP payload; anything larger did not come from a socket."""

_CONNECT = 0
_ANNOUNCE = 1
_SCRAPE = 2
_ERROR = 3

_HEADER = struct.Struct(">QII")  # connection_id / protocol_id, action, transaction_id
_REPLY_HEADER = struct.Struct(">II")  # action, transaction_id
_CONNECT_RESPONSE = struct.Struct(">IIQ")
# connection_id, action, transaction_id, info_hash, peer_id, downloaded, left, uploaded,
# event, ip, key, num_want, port
_ANNOUNCE_REQUEST = struct.Struct(">QII20s20sQQQIIIiH")
_ANNOUNCE_RESPONSE = struct.Struct(">IIIII")  # action, transaction_id, interval, leechers, seeders
_SCRAPE_ENTRY = struct.Struct(">III")  # seeders, completed, leechers

_OPTION_END = 0
_OPTION_NOP = 1
_OPTION_URL_DATA = 2


class UdpTrackerError(TrackerError):
    """The tracker answered with an error packet; ``text`` is its message, made printable."""

    def __init__(self, text: str) -> None:
        super().__init__("tracker_error", f"tracker error: {text or 'no message'}")
        self.text = text

    def to_failure(self) -> AnnounceFailure:
        """The same refusal as the HTTP codec reports it."""
        return AnnounceFailure(reason=self.text)


# --- requests (client -> tracker) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """Ask for a connection id (16 bytes)."""

    transaction_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpAnnounceRequest:
    """An announce (98 bytes, then optional BEP 41 options).

    Attributes:
        ip: our IPv4 address as a 32-bit integer; 0 lets the tracker use the packet's source
            (and is the only sensible value over IPv6).
        num_want: peers wanted; -1 for the tracker's default.
        url_data: path and query of the ``udp://`` URL (BEP 41), sent as URL-data options when
            not empty; some trackers need it to find a passkey.
    """

    connection_id: int
    transaction_id: int
    info_hash: InfoHash
    peer_id: PeerId
    downloaded: int
    left: int
    uploaded: int
    event: AnnounceEvent
    ip: int
    key: int
    num_want: int
    port: int
    url_data: bytes = b""

    @classmethod
    def from_request(
        cls,
        request: AnnounceRequest,
        *,
        connection_id: int,
        transaction_id: int,
        url_data: bytes = b"",
    ) -> UdpAnnounceRequest:
        """The UDP form of ``request``; HTTP-only fields (compact, no_peer_id, trackerid) and a
        non-IPv4 ``ip`` have no place in it and are left out."""
        ip = 0
        if request.ip is not None:
            try:
                ip = int(ipaddress.IPv4Address(request.ip))
            except ValueError:
                ip = 0
        return cls(
            connection_id=connection_id,
            transaction_id=transaction_id,
            info_hash=request.info_hash,
            peer_id=request.peer_id,
            downloaded=request.downloaded,
            left=request.left,
            uploaded=request.uploaded,
            event=request.event,
            ip=ip,
            key=request.key,
            num_want=-1 if request.numwant is None else request.numwant,
            port=request.port,
            url_data=url_data,
        )


@dataclass(frozen=True, slots=True)
class UdpScrapeRequest:
    """Ask for the counts of 1..MAX_SCRAPE_HASHES torrents (16 + 20 * n bytes)."""

    connection_id: int
    transaction_id: int
    info_hashes: tuple[InfoHash, ...]


UdpRequest = ConnectRequest | UdpAnnounceRequest | UdpScrapeRequest


# --- responses (tracker -> client) ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    """A connection id, valid for CONNECTION_ID_LIFETIME seconds (16 bytes)."""

    transaction_id: int
    connection_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpAnnounceResponse:
    """An announce reply as sent: ``interval`` is the raw value (see ``to_response``).

    Attributes:
        dropped_peers: entries the decoder left out (invalid, or beyond MAX_PEERS_PER_REPLY);
            never encoded.
    """

    transaction_id: int
    interval: int
    leechers: int
    seeders: int
    peers: tuple[PeerAddress, ...] = ()
    dropped_peers: int = 0

    def to_response(self) -> AnnounceResponse:
        """The protocol-independent result: interval clamped, duplicate peers removed."""
        unique = tuple(dict.fromkeys(self.peers))
        return AnnounceResponse(
            interval=clamp_interval(self.interval),
            complete=self.seeders,
            incomplete=self.leechers,
            peers=tuple(TrackerPeer(address) for address in unique),
            dropped_peers=self.dropped_peers + len(self.peers) - len(unique),
        )


@dataclass(frozen=True, slots=True)
class UdpScrapeResponse:
    """Counts for each requested torrent, in request order (8 + 12 * n bytes)."""

    transaction_id: int
    stats: tuple[ScrapeStats, ...]


@dataclass(frozen=True, slots=True)
class UdpErrorResponse:
    """The tracker refused a request (8 bytes, then the message text)."""

    transaction_id: int
    message: str


UdpResponse = ConnectResponse | UdpAnnounceResponse | UdpScrapeResponse | UdpErrorResponse


# --- encoding ---------------------------------------------------------------------------------


def encode_request(packet: UdpRequest) -> bytes:
    """The bytes of a client request.

    Raises:
        ValueError: a field out of range for its wire width, or a scrape of 0 or more than
            MAX_SCRAPE_HASHES hashes.
    """
    try:
        match packet:
            case ConnectRequest(transaction_id):
                return _HEADER.pack(PROTOCOL_ID, _CONNECT, transaction_id)
            case UdpAnnounceRequest():
                fixed = _ANNOUNCE_REQUEST.pack(
                    packet.connection_id,
                    _ANNOUNCE,
                    packet.transaction_id,
                    packet.info_hash.raw,
                    packet.peer_id.raw,
                    packet.downloaded,
                    packet.left,
                    packet.uploaded,
                    packet.event.udp_value,
                    packet.ip,
                    packet.key,
                    packet.num_want,
                    packet.port,
                )
                return fixed + _url_data_options(packet.url_data)
            case UdpScrapeRequest(connection_id, transaction_id, info_hashes):
                if not 0 < len(info_hashes) <= MAX_SCRAPE_HASHES:
                    raise ValueError(
                        f"a UDP scrape carries 1..{MAX_SCRAPE_HASHES} hashes, "
                        f"not {len(info_hashes)}"
                    )
                header = _HEADER.pack(connection_id, _SCRAPE, transaction_id)
                return header + b"".join(h.raw for h in info_hashes)
    except struct.error as exc:
        raise ValueError(f"field out of range in {packet!r}: {exc}") from exc


def _url_data_options(url_data: bytes) -> bytes:
    """BEP 41 URL-data options: chunks of at most 255 bytes, concatenated by the tracker."""
    out = bytearray()
    for start in range(0, len(url_data), 255):
        chunk = url_data[start : start + 255]
        out += bytes((_OPTION_URL_DATA, len(chunk)))
        out += chunk
    return bytes(out)


def encode_response(packet: UdpResponse, *, ipv6: bool = False) -> bytes:
    """The bytes of a tracker reply.

    Args:
        packet: the reply.
        ipv6: announce replies only: pack peers as 18-byte IPv6 entries instead of 6-byte IPv4.

    Raises:
        ValueError: a field out of range, or a peer of the other address family.
    """
    try:
        match packet:
            case ConnectResponse(transaction_id, connection_id):
                return _CONNECT_RESPONSE.pack(_CONNECT, transaction_id, connection_id)
            case UdpAnnounceResponse():
                header = _ANNOUNCE_RESPONSE.pack(
                    _ANNOUNCE,
                    packet.transaction_id,
                    packet.interval,
                    packet.leechers,
                    packet.seeders,
                )
                peers = encode_compact_v6(packet.peers) if ipv6 else encode_compact_v4(packet.peers)
                return header + peers
            case UdpScrapeResponse(transaction_id, stats):
                entries = b"".join(
                    _SCRAPE_ENTRY.pack(s.complete, s.downloaded, s.incomplete) for s in stats
                )
                return _REPLY_HEADER.pack(_SCRAPE, transaction_id) + entries
            case UdpErrorResponse(transaction_id, message):
                return _REPLY_HEADER.pack(_ERROR, transaction_id) + message.encode("utf-8")
    except struct.error as exc:
        raise ValueError(f"field out of range in {packet!r}: {exc}") from exc


# --- decoding: tracker side -------------------------------------------------------------------


def decode_request(data: bytes) -> UdpRequest:
    """Decode a client request, as a tracker would.

    Raises:
        TrackerError: ``too_large``, ``truncated``, ``bad_protocol_id`` (connect request without
            the magic constant), ``wrong_action``, ``bad_event`` (event number not 0-3),
            ``bad_length`` (a scrape request with a partial info-hash), ``too_many_hashes`` (a
            scrape request of more than MAX_SCRAPE_HASHES, which ``encode_request`` refuses too).
    """
    _check_size(data)
    if len(data) < _HEADER.size:
        raise _truncated("request", len(data), _HEADER.size)
    connection_id, action, transaction_id = _HEADER.unpack_from(data)
    if action == _CONNECT:
        if connection_id != PROTOCOL_ID:
            raise TrackerError(
                "bad_protocol_id", f"connect request has protocol id 0x{connection_id:x}"
            )
        return ConnectRequest(transaction_id)
    if action == _ANNOUNCE:
        return _decode_announce_request(data)
    if action == _SCRAPE:
        body = len(data) - _HEADER.size
        if body == 0:
            raise _truncated("scrape request", len(data), _HEADER.size + 20)
        if body % 20:
            raise TrackerError(
                "bad_length", f"scrape request carries {body} bytes of info-hashes, not 20 each"
            )
        count = body // 20
        if count > MAX_SCRAPE_HASHES:
            raise TrackerError(
                "too_many_hashes",
                f"scrape request carries {count} info-hashes; the limit is {MAX_SCRAPE_HASHES}",
            )
        hashes = tuple(
            InfoHash(data[start : start + 20]) for start in range(_HEADER.size, len(data), 20)
        )
        return UdpScrapeRequest(connection_id, transaction_id, hashes)
    raise TrackerError("wrong_action", f"request has unknown action {action}")


def _decode_announce_request(data: bytes) -> UdpAnnounceRequest:
    if len(data) < ANNOUNCE_REQUEST_SIZE:
        raise _truncated("announce request", len(data), ANNOUNCE_REQUEST_SIZE)
    (
        connection_id,
        _,
        transaction_id,
        info_hash,
        peer_id,
        downloaded,
        left,
        uploaded,
        event_number,
        ip,
        key,
        num_want,
        port,
    ) = _ANNOUNCE_REQUEST.unpack_from(data)
    try:
        event = AnnounceEvent.from_udp(event_number)
    except ValueError as exc:
        raise TrackerError("bad_event", str(exc)) from exc
    return UdpAnnounceRequest(
        connection_id=connection_id,
        transaction_id=transaction_id,
        info_hash=InfoHash(info_hash),
        peer_id=PeerId(peer_id),
        downloaded=downloaded,
        left=left,
        uploaded=uploaded,
        event=event,
        ip=ip,
        key=key,
        num_want=num_want,
        port=port,
        url_data=_parse_options(data, ANNOUNCE_REQUEST_SIZE),
    )


def _parse_options(data: bytes, pos: int) -> bytes:
    """Collect BEP 41 URL data; other options are skipped and a malformed tail ends parsing."""
    url_data = bytearray()
    end = len(data)
    while pos < end:
        option = data[pos]
        pos += 1
        if option == _OPTION_END:
            break
        if option == _OPTION_NOP:
            continue
        if pos >= end or pos + 1 + data[pos] > end:
            break  # a length byte or data cut short: not options after all
        length = data[pos]
        if option == _OPTION_URL_DATA:
            url_data += data[pos + 1 : pos + 1 + length]
        pos += 1 + length
    return bytes(url_data)


# --- decoding: client side --------------------------------------------------------------------


def decode_connect_response(data: bytes, transaction_id: int) -> ConnectResponse:
    """Decode the reply to our ConnectRequest with ``transaction_id``.

    Raises:
        UdpTrackerError: the tracker sent an error packet (reason ``tracker_error``).
        TrackerError: ``too_large``, ``truncated``, ``wrong_transaction``, ``wrong_action``.
    """
    _check_reply(data, transaction_id, _CONNECT, "connect")
    if len(data) < _CONNECT_RESPONSE.size:
        raise _truncated("connect response", len(data), _CONNECT_RESPONSE.size)
    _, _, connection_id = _CONNECT_RESPONSE.unpack_from(data)
    return ConnectResponse(transaction_id, connection_id)


def decode_announce_response(
    data: bytes, transaction_id: int, *, ipv6: bool
) -> UdpAnnounceResponse:
    """Decode the reply to our announce with ``transaction_id``.

    Args:
        data: the datagram.
        transaction_id: the id our request carried.
        ipv6: the tracker's socket is IPv6, so peers are 18-byte entries (BEP 15).

    Raises:
        UdpTrackerError: the tracker sent an error packet (reason ``tracker_error``).
        TrackerError: ``too_large``, ``truncated``, ``wrong_transaction``, ``wrong_action``,
            ``bad_compact_length``.
    """
    _check_reply(data, transaction_id, _ANNOUNCE, "announce")
    if len(data) < _ANNOUNCE_RESPONSE.size:
        raise _truncated("announce response", len(data), _ANNOUNCE_RESPONSE.size)
    _, _, interval, leechers, seeders = _ANNOUNCE_RESPONSE.unpack_from(data)
    decode_peers = decode_compact_v6 if ipv6 else decode_compact_v4
    peers, dropped = decode_peers(data[_ANNOUNCE_RESPONSE.size :], limit=MAX_PEERS_PER_REPLY)
    return UdpAnnounceResponse(
        transaction_id=transaction_id,
        interval=interval,
        leechers=leechers,
        seeders=seeders,
        peers=tuple(peers),
        dropped_peers=dropped,
    )


def decode_scrape_response(data: bytes, transaction_id: int, count: int) -> UdpScrapeResponse:
    """Decode the reply to our scrape of ``count`` info-hashes with ``transaction_id``.

    Returns:
        Exactly ``count`` entries, in the order the hashes were requested; entries beyond
        ``count`` (and a partial one) are trailing bytes and ignored.

    Raises:
        UdpTrackerError: the tracker sent an error packet (reason ``tracker_error``).
        TrackerError: ``too_large``, ``truncated`` (fewer than ``count`` entries),
            ``wrong_transaction``, ``wrong_action``.
    """
    _check_reply(data, transaction_id, _SCRAPE, "scrape")
    needed = _REPLY_HEADER.size + count * _SCRAPE_ENTRY.size
    if len(data) < needed:
        raise _truncated(f"scrape response for {count} hashes", len(data), needed)
    stats = tuple(
        ScrapeStats(*_SCRAPE_ENTRY.unpack_from(data, _REPLY_HEADER.size + i * _SCRAPE_ENTRY.size))
        for i in range(count)
    )
    return UdpScrapeResponse(transaction_id, stats)


def decode_error_response(data: bytes) -> UdpErrorResponse:
    """Decode an error packet (action 3) whatever request it answers.

    The message is everything after the header (BEP 15 gives it no length or terminator), made
    printable and bounded; a trailing NUL, which some trackers send, is dropped.

    Raises:
        TrackerError: ``too_large``, ``truncated``, ``wrong_action``.
    """
    _check_size(data)
    if len(data) < _REPLY_HEADER.size:
        raise _truncated("error response", len(data), _REPLY_HEADER.size)
    action, transaction_id = _REPLY_HEADER.unpack_from(data)
    if action != _ERROR:
        raise TrackerError("wrong_action", f"expected an error packet, got action {action}")
    return UdpErrorResponse(transaction_id, tracker_text(data[_REPLY_HEADER.size :]))


def _check_reply(data: bytes, transaction_id: int, action: int, name: str) -> None:
    _check_size(data)
    if len(data) < _REPLY_HEADER.size:
        raise _truncated(f"{name} response", len(data), _REPLY_HEADER.size)
    got_action, got_transaction = _REPLY_HEADER.unpack_from(data)
    if got_transaction != transaction_id:
        raise TrackerError(
            "wrong_transaction",
            f"{name} response has transaction id {got_transaction}, expected {transaction_id}",
        )
    if got_action == _ERROR:
        raise UdpTrackerError(decode_error_response(data).message)
    if got_action != action:
        raise TrackerError(
            "wrong_action", f"expected a {name} response (action {action}), got {got_action}"
        )


def _check_size(data: bytes) -> None:
    if len(data) > MAX_PACKET_SIZE:
        raise TrackerError(
            "too_large", f"packet of {len(data)} bytes exceeds the UDP limit {MAX_PACKET_SIZE}"
        )


def _truncated(what: str, size: int, needed: int) -> TrackerError:
    return TrackerError("truncated", f"{what} is {size} bytes, needs at least {needed}")
