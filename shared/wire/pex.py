"""BEP 11 peer exchange (``ut_pex``): the bencoded payload of ``Extended(ut_pex_id, payload)``.

Payload keys (all optional byte strings): ``added`` / ``dropped`` (compact IPv4, 6 bytes per
peer), ``added6`` / ``dropped6`` (compact IPv6, 18 bytes per peer), ``added.f`` / ``added6.f``
(one flag byte per added peer). Flag bits, as BEP 11 lists them: 0x01 prefers encryption (the
``e`` of the extension handshake), 0x02 seed / upload only, 0x04 supports uTP, 0x08 supports
``ut_holepunch``, 0x10 outgoing connection (the peer is reachable).

Strategy: decode with the lenient bencode decoder under ``NETWORK_LIMITS`` (the frame is already
bounded by ``MessageDecoder``), check each list's stride first, then slice at most
``max_entries`` entries of each list; the rest is counted in ``skipped``, never parsed, so a
flood of 10,000 addresses costs one division and ``max_entries`` slices. Compact entries are
decoded by the tracker's compact-peer codec (``shared/tracker/peers.py``), one entry at a time
so that each added peer keeps its own flag byte.

Rules:
- A list whose length is not a multiple of its stride is refused (``bad_pex_length``): entry
  boundaries are lost. A payload that is not one bencoded dictionary is ``bad_pex``; so is a
  known key whose value is not a byte string (BEP 11 has no other type for them).
- Unusable entries (port 0, unspecified, multicast or broadcast address) are dropped and
  counted in ``skipped``; unknown keys are ignored.
- A flags string shorter than its list gives 0 to the peers it does not cover, and extra flag
  bytes are ignored. (libtorrent 2.x is stricter: it ignores the whole ``added`` list when
  ``added.f`` is missing or of another length; torviz keeps the addresses, with no flags.)
- ``encode_pex`` always writes the six keys (empty strings included), as libtorrent's full
  peer list does; a flags tuple must match its list.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

from torviz.shared.bencode import NETWORK_LIMITS, Value, decode_prefix, encode
from torviz.shared.errors import BencodeError, TrackerError, WireError
from torviz.shared.tracker.peers import (
    COMPACT_V4_SIZE,
    COMPACT_V6_SIZE,
    decode_compact_v4,
    decode_compact_v6,
    encode_compact_v4,
    encode_compact_v6,
)
from torviz.shared.types import PeerAddress

__all__ = [
    "MAX_PEX_ENTRIES",
    "PEX_EXTENSION_NAME",
    "DecodedPex",
    "PexFlags",
    "PexMessage",
    "decode_pex",
    "encode_pex",
]

PEX_EXTENSION_NAME = "ut_pex"
"""The name of BEP 11 in the ``m`` dictionary of the extension handshake."""

MAX_PEX_ENTRIES = 100
"""Default cap on entries decoded per list (libtorrent's ``max_peer_entries`` is 100 too)."""


class PexFlags(IntFlag):
    """The bits of one ``added.f`` / ``added6.f`` byte (BEP 11)."""

    PREFERS_ENCRYPTION = 0x01
    SEED = 0x02
    SUPPORTS_UTP = 0x04
    SUPPORTS_HOLEPUNCH = 0x08
    REACHABLE = 0x10


@dataclass(frozen=True, slots=True)
class PexMessage:
    """One ``ut_pex`` message. ``added_flags[i]`` is the flag byte of ``added[i]`` (0..255).

    Attributes:
        added: IPv4 peers the sender connected to since its last message.
        added_flags: one flag byte per ``added`` peer.
        dropped: IPv4 peers the sender lost since its last message.
        added6: as ``added``, IPv6.
        added6_flags: one flag byte per ``added6`` peer.
        dropped6: as ``dropped``, IPv6.
    """

    added: tuple[PeerAddress, ...] = ()
    added_flags: tuple[int, ...] = ()
    dropped: tuple[PeerAddress, ...] = ()
    added6: tuple[PeerAddress, ...] = ()
    added6_flags: tuple[int, ...] = ()
    dropped6: tuple[PeerAddress, ...] = ()


@dataclass(frozen=True, slots=True)
class DecodedPex:
    """What ``decode_pex`` made of a payload.

    Attributes:
        message: the usable entries.
        skipped: entries left out: past ``max_entries`` in their list, or unusable.
    """

    message: PexMessage
    skipped: int


_LIST_KEYS = (b"added", b"added.f", b"dropped", b"added6", b"added6.f", b"dropped6")


def decode_pex(payload: bytes, *, max_entries: int = MAX_PEX_ENTRIES) -> DecodedPex:
    """Decode the payload of a ``ut_pex`` extended message.

    Args:
        payload: the bytes after the extended message id.
        max_entries: most entries decoded from each of the four peer lists.

    Returns:
        The message and how many entries were skipped.

    Raises:
        WireError: ``bad_pex`` (not one bencoded dictionary within ``NETWORK_LIMITS``, or a
            known key that is not a byte string), ``bad_pex_length`` (a list whose length is
            not a multiple of 6 or 18).
    """
    try:
        value, end = decode_prefix(payload, strict=False, limits=NETWORK_LIMITS)
        if end != len(payload):
            raise BencodeError("trailing_data", "bytes after the end of the value", end)
    except BencodeError as exc:
        raise WireError("bad_pex", f"ut_pex message is not valid bencode: {exc}") from exc
    if not isinstance(value, dict):
        raise WireError(
            "bad_pex", f"ut_pex message is a bencoded {type(value).__name__}, not a dictionary"
        )
    fields = {key: _byte_string(value, key) for key in _LIST_KEYS}
    added, added_flags, skipped_a = _decode_list(
        fields[b"added"], fields[b"added.f"], 4, max_entries
    )
    dropped, _, skipped_d = _decode_list(fields[b"dropped"], b"", 4, max_entries)
    added6, added6_flags, skipped_a6 = _decode_list(
        fields[b"added6"], fields[b"added6.f"], 6, max_entries
    )
    dropped6, _, skipped_d6 = _decode_list(fields[b"dropped6"], b"", 6, max_entries)
    return DecodedPex(
        PexMessage(added, added_flags, dropped, added6, added6_flags, dropped6),
        skipped_a + skipped_d + skipped_a6 + skipped_d6,
    )


def _byte_string(value: dict[bytes, Value], key: bytes) -> bytes:
    item = value.get(key, b"")
    if not isinstance(item, bytes):
        raise WireError(
            "bad_pex", f"ut_pex key {key.decode()!r} is a {type(item).__name__}, not a string"
        )
    return item


def _decode_list(
    data: bytes, flags: bytes, version: int, max_entries: int
) -> tuple[tuple[PeerAddress, ...], tuple[int, ...], int]:
    stride = COMPACT_V4_SIZE if version == 4 else COMPACT_V6_SIZE
    if len(data) % stride:
        raise WireError(
            "bad_pex_length",
            f"ut_pex IPv{version} list is {len(data)} bytes, not a multiple of {stride}",
        )
    entries = len(data) // stride
    taken = min(entries, max(max_entries, 0))
    skipped = entries - taken
    decode_one = decode_compact_v4 if version == 4 else decode_compact_v6
    peers: list[PeerAddress] = []
    peer_flags: list[int] = []
    view = memoryview(data)
    for index in range(taken):
        try:
            found, _ = decode_one(bytes(view[index * stride : (index + 1) * stride]), limit=1)
        except TrackerError as exc:  # unreachable: the stride is checked above
            raise WireError("bad_pex_length", str(exc)) from exc
        if not found:
            skipped += 1
            continue
        peers.append(found[0])
        peer_flags.append(flags[index] if index < len(flags) else 0)
    return tuple(peers), tuple(peer_flags), skipped


def encode_pex(message: PexMessage) -> bytes:
    """The bencoded payload for ``message``: all six keys, sorted as bencode requires.

    Raises:
        ValueError: a flags tuple whose length differs from its list, a flag outside 0..255,
            or a peer of the wrong address family for its list (a bug in the caller).
    """
    for label, peers, flags in (
        ("added", message.added, message.added_flags),
        ("added6", message.added6, message.added6_flags),
    ):
        if len(peers) != len(flags):
            raise ValueError(f"{label} has {len(peers)} peers but {len(flags)} flag bytes")
        if any(not 0 <= flag <= 255 for flag in flags):
            raise ValueError(f"{label} flags must be 0..255")
    return encode(
        {
            b"added": encode_compact_v4(message.added),
            b"added.f": bytes(message.added_flags),
            b"dropped": encode_compact_v4(message.dropped),
            b"added6": encode_compact_v6(message.added6),
            b"added6.f": bytes(message.added6_flags),
            b"dropped6": encode_compact_v6(message.dropped6),
        }
    )
