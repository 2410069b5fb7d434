"""Every error torviz raises on purpose, in one place.

Rules:
- ``str(error)`` is one line a user can read: what is wrong and, where it helps, what to do.
  The CLI prints exactly that line and exits non-zero; it never shows a traceback for these.
- Each error carries a machine-readable ``reason`` (a short snake_case code) so tests and
  callers can match on the cause without parsing text.
- Errors caused by a remote party (a peer, a tracker, a DHT node, another service on the bus)
  are raised by codecs and turned into a dropped connection or packet at the boundary; they
  never crash an actor.
"""

from __future__ import annotations

__all__ = [
    "BencodeError",
    "BusError",
    "ConfigError",
    "KrpcError",
    "MagnetError",
    "MetainfoError",
    "TorvizError",
    "TrackerError",
    "WebSeedError",
    "WireError",
]


class TorvizError(Exception):
    """Base of all deliberate torviz errors.

    Args:
        reason: a stable snake_case code naming the cause (e.g. ``"path_traversal"``).
        message: one human-readable line.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


class BencodeError(TorvizError):
    """Malformed or over-limit bencoded data; ``offset`` is the byte where it went wrong."""

    def __init__(self, reason: str, message: str, offset: int) -> None:
        super().__init__(reason, f"{message} at byte {offset}")
        self.offset = offset


class MetainfoError(TorvizError):
    """A .torrent (or an info dictionary from ut_metadata) that torviz refuses to use."""


class MagnetError(TorvizError):
    """A magnet URI that cannot be used."""


class WireError(TorvizError):
    """A peer broke the peer wire protocol; the connection is dropped."""


class KrpcError(TorvizError):
    """A DHT datagram (BEP 5 KRPC) that cannot be used; the packet is dropped.

    ``transaction_id`` is set when the datagram was a query whose ``t`` could be read, so the
    node can still answer it with error 203 (protocol error).
    """

    def __init__(self, reason: str, message: str, transaction_id: bytes | None = None) -> None:
        super().__init__(reason, message)
        self.transaction_id = transaction_id


class TrackerError(TorvizError):
    """A tracker request or reply that failed."""


class WebSeedError(TorvizError):
    """A web seed (BEP 19) URL that cannot be used, or an HTTP reply that breaks its contract."""


class BusError(TorvizError):
    """A malformed, over-limit or incompatible message between torviz services."""


class ConfigError(TorvizError):
    """A configuration file or option that cannot be used."""
