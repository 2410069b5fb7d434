"""HTTP tracker announces (BEP 3, BEP 7, BEP 23, failure codes, BEP 31 ``retry in``).

Strategy: two pure functions. ``build_announce_url`` turns an ``AnnounceRequest`` into the GET
URL; ``parse_announce_response`` turns the reply body into an ``AnnounceResponse`` or an
``AnnounceFailure``. Fetching the URL (and capping the body at MAX_RESPONSE_SIZE while reading
it) is the tracker agent's business.

Rules:
- Binary values (info_hash, peer_id, trackerid) are percent-encoded byte by byte: the RFC 3986
  unreserved characters ``A-Z a-z 0-9 - . _ ~`` stay as they are, every other byte becomes
  ``%XX`` with upper-case hex (what Transmission does; libtorrent also leaves ``!*()`` alone,
  which trackers decode to the same bytes). The base URL is kept as given, query included; its
  fragment is dropped (never sent over HTTP).
- Parameter order follows libtorrent: info_hash, peer_id, port, uploaded, downloaded, left,
  key (8 upper-case hex digits, zero padded, as libtorrent's ``%08X``), [event], [numwant],
  compact, [no_peer_id], [ip], [trackerid].
- Replies are decoded leniently with TRACKER_LIMITS: real trackers emit unsorted keys and a
  trailing newline, and refusing them would lose the swarm. Leniency stops there: duplicate
  keys, malformed integers, truncation and anything over the limits are refused.
- Field types are checked: a known field of the wrong type is ``bad_field``; unknown keys are
  ignored. A missing ``interval`` means DEFAULT_ANNOUNCE_INTERVAL; a missing ``peers`` means no
  peers (both common among real trackers). Intervals are clamped, peers filtered and bounded,
  see ``model.py`` and ``peers.py``.
"""

from __future__ import annotations

from torviz.shared.bencode import BencodeLimits, Value, decode
from torviz.shared.errors import BencodeError, TrackerError
from torviz.shared.tracker.model import (
    DEFAULT_ANNOUNCE_INTERVAL,
    MAX_PEERS_PER_REPLY,
    AnnounceFailure,
    AnnounceRequest,
    AnnounceResponse,
    TrackerPeer,
    clamp_interval,
    tracker_text,
)
from torviz.shared.tracker.peers import decode_compact_v4, decode_compact_v6, decode_peer_dicts
from torviz.shared.types import PeerAddress

__all__ = [
    "MAX_RESPONSE_SIZE",
    "TRACKER_LIMITS",
    "append_query",
    "build_announce_url",
    "decode_reply",
    "parse_announce_response",
    "percent_encode",
]

MAX_RESPONSE_SIZE = 1024 * 1024
"""Bytes of an HTTP tracker reply body accepted; the agent stops reading past this."""

TRACKER_LIMITS = BencodeLimits(
    max_size=MAX_RESPONSE_SIZE,
    max_depth=8,
    max_string_length=MAX_RESPONSE_SIZE,
    max_items=100_000,
)
"""Bencode bounds for announce and scrape replies: 1 MiB, depth 8, 100k entries.

A 1 MiB compact string is ~175k peers, of which MAX_PEERS_PER_REPLY are kept; 100k entries
allow ~25k dictionary peers, of which the same bound is kept.
"""

_MAX_TRACKER_ID = 1024  # a longer ``tracker id`` is ignored rather than echoed in every URL

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPES = tuple(chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256))


def percent_encode(data: bytes | str) -> str:
    """Percent-encode every byte except the RFC 3986 unreserved characters.

    Args:
        data: raw bytes, or text (encoded as UTF-8 first).

    Returns:
        ASCII text safe as a query value, e.g. ``b"\\x12\\x34a~"`` -> ``"%124a~"``.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return "".join(_ESCAPES[b] for b in raw)


def append_query(base_url: str, query: str) -> str:
    """Append ``query`` to a URL, keeping its own parameters and dropping its fragment.

    ``?`` starts the query when the URL has none; ``&`` joins it otherwise (none is added after
    a URL that already ends in ``?`` or ``&``).
    """
    url = base_url.split("#", 1)[0]
    if "?" not in url:
        return f"{url}?{query}"
    if url.endswith(("?", "&")):
        return f"{url}{query}"
    return f"{url}&{query}"


def build_announce_url(base_url: str, request: AnnounceRequest) -> str:
    """The GET URL announcing ``request`` to the HTTP tracker at ``base_url``.

    Args:
        base_url: the announce URL from the metainfo or magnet (existing query kept).
        request: what to announce.

    Returns:
        The full URL, e.g. ``http://t/announce?info_hash=%12...&peer_id=...&port=6881&...``.
    """
    params = [
        f"info_hash={percent_encode(request.info_hash.raw)}",
        f"peer_id={percent_encode(request.peer_id.raw)}",
        f"port={request.port}",
        f"uploaded={request.uploaded}",
        f"downloaded={request.downloaded}",
        f"left={request.left}",
    ]
    params.append(f"key={request.key:08X}")
    if request.event.http_value is not None:
        params.append(f"event={request.event.http_value}")
    if request.numwant is not None:
        params.append(f"numwant={request.numwant}")
    # Sent either way: BEP 23 lets trackers default to compact, so dictionaries must be asked for.
    params.append("compact=1" if request.compact else "compact=0")
    if request.no_peer_id:
        params.append("no_peer_id=1")
    if request.ip is not None:
        params.append(f"ip={percent_encode(request.ip)}")
    if request.trackerid is not None:
        params.append(f"trackerid={percent_encode(request.trackerid)}")
    return append_query(base_url, "&".join(params))


def decode_reply(body: bytes) -> dict[bytes, Value]:
    """Decode a tracker reply body (announce or scrape) to its top-level dictionary.

    Raises:
        TrackerError: ``bad_bencode`` (the BencodeError is the ``__cause__``, its reason and
            offset in the message) or ``not_a_dict``.
    """
    try:
        value = decode(body, strict=False, limits=TRACKER_LIMITS)
    except BencodeError as exc:
        raise TrackerError(
            "bad_bencode", f"tracker reply is not valid bencode ({exc.reason}): {exc}"
        ) from exc
    if not isinstance(value, dict):
        raise TrackerError("not_a_dict", "tracker reply is not a bencoded dictionary")
    return value


def parse_announce_response(body: bytes) -> AnnounceResponse | AnnounceFailure:
    """Parse the body of an HTTP announce reply.

    Args:
        body: the whole reply body (the caller caps it at MAX_RESPONSE_SIZE).

    Returns:
        ``AnnounceFailure`` when the tracker sent ``failure reason`` (or ``failure code``),
        otherwise ``AnnounceResponse``.

    Raises:
        TrackerError: ``bad_bencode``, ``not_a_dict``, ``bad_field`` (a known key with a value of
            the wrong type) or ``bad_compact_length`` (``peers``/``peers6`` length not a multiple
            of 6/18).
    """
    reply = decode_reply(body)
    if b"failure reason" in reply or b"failure code" in reply:
        return _failure(reply)

    interval = _optional_int(reply, b"interval")
    min_interval = _optional_int(reply, b"min interval")
    complete = _optional_int(reply, b"complete")
    incomplete = _optional_int(reply, b"incomplete")
    tracker_id = _optional_bytes(reply, b"tracker id")
    warning = _optional_bytes(reply, b"warning message")

    peers: list[TrackerPeer] = []
    seen: set[PeerAddress] = set()
    dropped = 0
    budget = MAX_PEERS_PER_REPLY

    def keep(found: list[TrackerPeer], skipped: int) -> None:
        nonlocal dropped, budget
        dropped += skipped
        for peer in found:
            if peer.address in seen:
                dropped += 1
                continue
            seen.add(peer.address)
            peers.append(peer)
        budget = MAX_PEERS_PER_REPLY - len(peers)

    raw_peers = reply.get(b"peers")
    if isinstance(raw_peers, bytes):
        addresses, skipped = decode_compact_v4(raw_peers, limit=budget)
        keep([TrackerPeer(address) for address in addresses], skipped)
    elif isinstance(raw_peers, list):
        keep(*decode_peer_dicts(raw_peers, limit=budget))
    elif raw_peers is not None:
        raise _bad_field(b"peers", "a string or a list")
    raw_peers6 = reply.get(b"peers6")
    if isinstance(raw_peers6, bytes):
        addresses, skipped = decode_compact_v6(raw_peers6, limit=budget)
        keep([TrackerPeer(address) for address in addresses], skipped)
    elif raw_peers6 is not None:
        raise _bad_field(b"peers6", "a string")

    return AnnounceResponse(
        interval=clamp_interval(DEFAULT_ANNOUNCE_INTERVAL if interval is None else interval),
        min_interval=None if min_interval is None else clamp_interval(min_interval),
        complete=_count(complete),
        incomplete=_count(incomplete),
        peers=tuple(peers),
        tracker_id=tracker_id if tracker_id and len(tracker_id) <= _MAX_TRACKER_ID else None,
        warning=None if warning is None else tracker_text(warning) or None,
        dropped_peers=dropped,
    )


def _failure(reply: dict[bytes, Value]) -> AnnounceFailure:
    reason = _optional_bytes(reply, b"failure reason")
    code = _optional_int(reply, b"failure code")
    retry = reply.get(b"retry in")
    retry_in: int | None = None
    never = False
    if isinstance(retry, int) and retry >= 0:
        retry_in = retry
    elif retry == b"never":
        never = True
    return AnnounceFailure(
        reason=tracker_text(reason or b""), code=code, retry_in=retry_in, never_retry=never
    )


def _count(value: int | None) -> int | None:
    """A peer count; a negative one means nothing."""
    return value if value is not None and value >= 0 else None


def _optional_int(reply: dict[bytes, Value], key: bytes) -> int | None:
    value = reply.get(key)
    if value is None or isinstance(value, int):
        return value
    raise _bad_field(key, "an integer")


def _optional_bytes(reply: dict[bytes, Value], key: bytes) -> bytes | None:
    value = reply.get(key)
    if value is None or isinstance(value, bytes):
        return value
    raise _bad_field(key, "a string")


def _bad_field(key: bytes, expected: str) -> TrackerError:
    name = key.decode("ascii")
    return TrackerError("bad_field", f"tracker reply field {name!r} is not {expected}")
