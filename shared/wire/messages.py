"""Peer wire messages (BEP 3, BEP 5, BEP 6, BEP 10) as one frozen dataclass each.

Strategy: a message is plain data; how it travels (length prefix, message id, byte layout) is the
business of ``shared.wire.codec`` alone, so nothing outside the codec knows a message id. The
union ``Message`` is closed: a ``match`` over it with one case per class is exhaustive, and mypy
checks that.

Rules:
- Fields are what the frame says, nothing more. A decoded ``Have(piece=7)`` only promises that
  the peer wrote 7 in a 32-bit field; whether the torrent has a piece 7 is for the peer session.
- Integer fields are unsigned 32-bit on the wire (``Port.port`` 16-bit). Messages are not
  checked on construction (the decoder builds them on the download hot path); ``encode`` refuses
  an out-of-range field with ``ValueError``, which is a bug on our side, never the peer's.
- Messages without fields are singletons in practice (``CHOKE`` etc.), but any instance
  compares equal to any other of its class.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CHOKE",
    "HAVE_ALL",
    "HAVE_NONE",
    "INTERESTED",
    "KEEP_ALIVE",
    "NOT_INTERESTED",
    "UNCHOKE",
    "AllowedFast",
    "Bitfield",
    "Cancel",
    "Choke",
    "Extended",
    "Have",
    "HaveAll",
    "HaveNone",
    "Interested",
    "KeepAlive",
    "Message",
    "NotInterested",
    "Piece",
    "Port",
    "RejectRequest",
    "Request",
    "SuggestPiece",
    "Unchoke",
]


# --- BEP 3 -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """A zero-length frame; it only proves the connection is alive."""


@dataclass(frozen=True, slots=True)
class Choke:
    """The sender will not serve our requests until it unchokes us."""


@dataclass(frozen=True, slots=True)
class Unchoke:
    """The sender will now serve our requests."""


@dataclass(frozen=True, slots=True)
class Interested:
    """The sender wants pieces we have."""


@dataclass(frozen=True, slots=True)
class NotInterested:
    """The sender wants nothing we have."""


@dataclass(frozen=True, slots=True)
class Have:
    """The sender has completed and verified piece ``piece``."""

    piece: int


@dataclass(frozen=True, slots=True)
class Bitfield:
    """The pieces the sender has, piece 0 in the high bit of the first byte.

    ``bits`` is the raw payload: its length and spare trailing bits are checked against the
    torrent's piece count by the peer session, which knows it.
    """

    bits: bytes


@dataclass(frozen=True, slots=True)
class Request:
    """Please send ``length`` bytes at ``offset`` within piece ``piece``."""

    piece: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Piece:
    """A block of data: ``len(data)`` bytes at ``offset`` within piece ``piece``.

    ``data`` is ``bytes`` when the decoder copied the block out of its buffer, or the writable
    ``memoryview`` a ``block_sink`` supplied when the decoder wrote the block there directly
    (see ``MessageDecoder``). Equality compares the bytes either way.
    """

    piece: int
    offset: int
    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class Cancel:
    """Withdraw an earlier ``Request`` with the same three fields."""

    piece: int
    offset: int
    length: int


# --- BEP 5 -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Port:
    """The UDP port of the sender's DHT node."""

    port: int


# --- BEP 6 (fast extension) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HaveAll:
    """The sender has every piece (replaces the bitfield)."""


@dataclass(frozen=True, slots=True)
class HaveNone:
    """The sender has no piece (replaces the bitfield)."""


@dataclass(frozen=True, slots=True)
class SuggestPiece:
    """The sender suggests we download piece ``piece`` (it is cheap for it to serve)."""

    piece: int


@dataclass(frozen=True, slots=True)
class RejectRequest:
    """The sender will not serve our ``Request`` with the same three fields."""

    piece: int
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class AllowedFast:
    """We may request blocks of piece ``piece`` even while choked."""

    piece: int


# --- BEP 10 (extension protocol) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Extended:
    """An extension message: ``ext_id`` 0 is the extension handshake, other ids are the ones
    the receiver assigned in its own handshake's ``m`` dictionary."""

    ext_id: int
    payload: bytes


Message = (
    KeepAlive
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | Have
    | Bitfield
    | Request
    | Piece
    | Cancel
    | Port
    | HaveAll
    | HaveNone
    | SuggestPiece
    | RejectRequest
    | AllowedFast
    | Extended
)

# Shared instances of the field-less messages, so the decoder allocates nothing for them.
KEEP_ALIVE = KeepAlive()
CHOKE = Choke()
UNCHOKE = Unchoke()
INTERESTED = Interested()
NOT_INTERESTED = NotInterested()
HAVE_ALL = HaveAll()
HAVE_NONE = HaveNone()
