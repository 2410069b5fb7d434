"""What an announce says and what a tracker answers, independent of HTTP or UDP.

Strategy: the HTTP codec (``http.py``) and the UDP codec (``udp.py``) both take an
``AnnounceRequest`` and both produce an ``AnnounceResponse`` or an ``AnnounceFailure``, so the
tracker agent handles one result type whatever the URL scheme. Event names (HTTP) and event
numbers (UDP) live here, next to the enum, and nowhere else.

Rules:
- An ``AnnounceRequest`` is our own data: a field out of range is a bug on our side and
  raises ``ValueError`` at construction.
- An ``AnnounceResponse`` holds values already made safe: intervals clamped to
  [MIN_ANNOUNCE_INTERVAL, MAX_ANNOUNCE_INTERVAL] (a tracker asking for 0 s would make us hammer
  it, one asking for 10 years would make us forget it), peers filtered and bounded.
- Text from a tracker (failure reason, warning) is decoded leniently and cut to
  MAX_TRACKER_TEXT characters, with control characters replaced: it ends up on a user's screen.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from torviz.shared.types import InfoHash, PeerAddress, PeerId

__all__ = [
    "DEFAULT_ANNOUNCE_INTERVAL",
    "FAILURE_CODES",
    "MAX_ANNOUNCE_INTERVAL",
    "MAX_PEERS_PER_REPLY",
    "MAX_TRACKER_TEXT",
    "MIN_ANNOUNCE_INTERVAL",
    "AnnounceEvent",
    "AnnounceFailure",
    "AnnounceRequest",
    "AnnounceResponse",
    "ScrapeStats",
    "TrackerPeer",
    "clamp_interval",
    "tracker_text",
]

MIN_ANNOUNCE_INTERVAL = 30
"""Seconds: a shorter ``interval`` or ``min interval`` from a tracker is raised to this."""

MAX_ANNOUNCE_INTERVAL = 86_400
"""Seconds (one day): a longer ``interval`` or ``min interval`` is lowered to this."""

DEFAULT_ANNOUNCE_INTERVAL = 1_800
"""Seconds: used when an HTTP reply has no ``interval`` (libtorrent does the same)."""

MAX_PEERS_PER_REPLY = 10_000
"""Peers kept from one reply (IPv4, IPv6 and dictionary peers together); the rest are cut.

Real trackers send at most a few hundred (numwant defaults to 50). Cutting rather than refusing
keeps the useful part of an oversized but well-formed reply; memory and time stay bounded
because the codecs check lengths before slicing and stop counting at this bound.
"""

MAX_TRACKER_TEXT = 512
"""Characters kept of a failure reason, warning or UDP error message."""

_U32 = 1 << 32
_I63 = 1 << 63


class AnnounceEvent(enum.Enum):
    """Why an announce is sent (BEP 3 ``event``; BEP 15 event numbers)."""

    NONE = "none"
    COMPLETED = "completed"
    STARTED = "started"
    STOPPED = "stopped"

    @property
    def http_value(self) -> str | None:
        """The ``event=`` query value, or None when the parameter is left out (regular announce)."""
        return None if self is AnnounceEvent.NONE else self.value

    @property
    def udp_value(self) -> int:
        """The 32-bit event number of a BEP 15 announce request."""
        return _UDP_EVENT_NUMBERS[self]

    @classmethod
    def from_udp(cls, number: int) -> AnnounceEvent:
        """The event for a BEP 15 event number.

        Raises:
            ValueError: the number is not 0-3.
        """
        for event, value in _UDP_EVENT_NUMBERS.items():
            if value == number:
                return event
        raise ValueError(f"unknown UDP announce event number {number}")


_UDP_EVENT_NUMBERS = {
    AnnounceEvent.NONE: 0,
    AnnounceEvent.COMPLETED: 1,
    AnnounceEvent.STARTED: 2,
    AnnounceEvent.STOPPED: 3,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnounceRequest:
    """One announce, as both HTTP and UDP trackers take it.

    Attributes:
        info_hash: the torrent.
        peer_id: our 20-byte id for this session.
        port: the TCP port we accept peers on, 1..65535.
        uploaded: bytes sent to peers since the ``started`` event.
        downloaded: bytes received from peers since the ``started`` event.
        left: bytes still missing (not computable from ``downloaded``: resume, hash failures).
        event: why this announce is sent; NONE for the regular re-announce.
        numwant: peers wanted, or None for the tracker's default (UDP sends -1).
        key: a random 32-bit value fixed per torrent session, so a tracker can recognise us
            across IP changes and across IPv4/IPv6 announces (BEP 7, BEP 15).
        compact: ask for BEP 23 compact peer lists (HTTP only).
        no_peer_id: ask the tracker to leave peer ids out of dictionary peers (HTTP only).
        ip: our address as we want the tracker to publish it, or None (the tracker uses the
            packet's source). UDP can carry only an IPv4 literal here.
        trackerid: the ``tracker id`` a previous reply of this tracker gave, echoed back
            (HTTP only).
    """

    info_hash: InfoHash
    peer_id: PeerId
    port: int
    uploaded: int
    downloaded: int
    left: int
    event: AnnounceEvent = AnnounceEvent.NONE
    numwant: int | None = None
    key: int = 0
    compact: bool = True
    no_peer_id: bool = False
    ip: str | None = None
    trackerid: bytes | None = None

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"announce port out of range: {self.port}")
        for name in ("uploaded", "downloaded", "left"):
            value = getattr(self, name)
            # UDP carries these as 64-bit integers that some trackers read as signed.
            if not 0 <= value < _I63:
                raise ValueError(f"announce {name} out of range: {value}")
        if self.numwant is not None and not 0 <= self.numwant < (1 << 31):
            raise ValueError(f"announce numwant out of range: {self.numwant}")
        if not 0 <= self.key < _U32:
            raise ValueError(f"announce key is not a 32-bit value: {self.key}")
        if self.ip is not None and not self.ip:
            raise ValueError("announce ip is empty; use None to let the tracker decide")


@dataclass(frozen=True, slots=True)
class TrackerPeer:
    """A peer from a tracker reply; ``peer_id`` only comes with dictionary-model peers."""

    address: PeerAddress
    peer_id: PeerId | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnounceResponse:
    """A successful announce, from either protocol.

    Attributes:
        interval: seconds until the next regular announce, clamped to the sane range.
        min_interval: seconds the tracker wants at least between announces, clamped, or None.
        complete: seeders the tracker knows (UDP ``seeders``), or None if not said.
        incomplete: leechers the tracker knows (UDP ``leechers``), or None if not said.
        peers: distinct peers in reply order, IPv4 before IPv6; invalid ones left out.
        tracker_id: opaque value to echo as ``trackerid`` in later announces, or None.
        warning: a message to show the user (the announce still succeeded), or None.
        dropped_peers: entries left out: invalid (port 0, unspecified/multicast/broadcast
            address, host name, malformed entry), duplicate, or beyond MAX_PEERS_PER_REPLY.
    """

    interval: int
    min_interval: int | None = None
    complete: int | None = None
    incomplete: int | None = None
    peers: tuple[TrackerPeer, ...] = ()
    tracker_id: bytes | None = None
    warning: str | None = None
    dropped_peers: int = 0

    @property
    def addresses(self) -> tuple[PeerAddress, ...]:
        """The peers' addresses, in reply order."""
        return tuple(peer.address for peer in self.peers)


FAILURE_CODES: dict[int, str] = {
    100: "invalid request type",
    101: "missing info_hash",
    102: "missing peer_id",
    103: "missing port",
    150: "invalid info_hash",
    151: "invalid peer_id",
    152: "invalid numwant",
    200: "info_hash not found",
    500: "eventless request too soon",
    900: "generic error",
}
"""The classic numeric ``failure code`` values some trackers send next to ``failure reason``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnounceFailure:
    """The tracker refused the announce (``failure reason``; UDP error packets too).

    Attributes:
        reason: the tracker's own text, made printable and cut to MAX_TRACKER_TEXT.
        code: the numeric ``failure code``, when the tracker sent one.
        retry_in: minutes before trying again (BEP 31 ``retry in``), when sent.
        never_retry: the tracker said ``retry in: never`` (BEP 31): it is not a tracker for us.
    """

    reason: str
    code: int | None = None
    retry_in: int | None = None
    never_retry: bool = False

    @property
    def cause(self) -> str | None:
        """What a known ``failure code`` means, e.g. ``"invalid info_hash"``."""
        return None if self.code is None else FAILURE_CODES.get(self.code)

    @property
    def message(self) -> str:
        """One line for the user naming the cause, e.g.
        ``tracker refused the announce: invalid info_hash (code 150): bad hash``."""
        text = self.reason or "no reason given"
        if self.code is None:
            return f"tracker refused the announce: {text}"
        cause = self.cause or "unknown failure code"
        return f"tracker refused the announce: {cause} (code {self.code}): {text}"


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    """Swarm counts from a scrape (BEP 48; BEP 15 seeders/completed/leechers).

    Attributes:
        complete: peers with the whole torrent (seeders).
        downloaded: completions the tracker has ever registered.
        incomplete: peers still downloading (leechers).
    """

    complete: int
    downloaded: int
    incomplete: int


def clamp_interval(seconds: int) -> int:
    """Bring a tracker-supplied interval into [MIN_ANNOUNCE_INTERVAL, MAX_ANNOUNCE_INTERVAL]."""
    return max(MIN_ANNOUNCE_INTERVAL, min(MAX_ANNOUNCE_INTERVAL, seconds))


def tracker_text(raw: bytes) -> str:
    """Make text a tracker sent safe to show: UTF-8 (lenient), printable, one bounded line.

    Only the first ``4 * MAX_TRACKER_TEXT`` bytes are decoded, so a huge message costs nothing.
    """
    text = raw[: 4 * MAX_TRACKER_TEXT].decode("utf-8", errors="replace")
    text = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    return text[:MAX_TRACKER_TEXT]
