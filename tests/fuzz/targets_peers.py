"""Fuzz targets for the extension messages peers send (BEP 9 ``ut_metadata``, BEP 11 ``ut_pex``).

Strategy: as in ``targets.py``: each target hands the fuzzer's bytes (the payload after the
extended message id) to the decoder and checks what the module promises, with the default caps
and with tight ones, so that the bounds are exercised by inputs of a few hundred bytes.

Rules:
- Only ``WireError`` escapes the decoders, with the reasons their docstrings list.
- ``ut_metadata``: what decodes lies within the caller's cap (``piece`` and ``total_size``), a
  data block has exactly the length ``piece`` and ``total_size`` imply, an unknown
  ``msg_type`` is 3..2^31-1, ``decode(encode(m)) == m``; a tighter cap only refuses, never
  changes a message.
- ``ut_pex``: at most ``max_entries`` peers per list, each of its list's family with a usable
  port, one flag byte per added peer; every entry is either kept or counted in ``skipped``
  (a tighter cap keeps a prefix of the same peers); ``decode(encode(m)) == m``.
"""

from __future__ import annotations

import ipaddress

from tests.fuzz import seeds
from tests.fuzz.registry import fuzz_target
from torviz.shared.errors import WireError
from torviz.shared.types import PeerAddress
from torviz.shared.wire.metadata import (
    DEFAULT_MAX_METADATA_SIZE,
    METADATA_PIECE_SIZE,
    MetadataData,
    MetadataMessage,
    MetadataReject,
    MetadataRequest,
    MetadataUnknown,
    decode_metadata_message,
    encode_metadata_message,
    metadata_piece_count,
    metadata_piece_length,
)
from torviz.shared.wire.pex import (
    MAX_PEX_ENTRIES,
    DecodedPex,
    PexMessage,
    decode_pex,
    encode_pex,
)

__all__: list[str] = []

# --- ut_metadata (BEP 9) ------------------------------------------------------------------------

_SMALL_METADATA = 2 * METADATA_PIECE_SIZE + 100  # three pieces, the last one short
_MAX_MSG_TYPE = (1 << 31) - 1


def _metadata(payload: bytes, max_total_size: int) -> MetadataMessage | None:
    try:
        message = decode_metadata_message(payload, max_total_size=max_total_size)
    except WireError as exc:
        assert exc.reason == "bad_metadata_message", exc.reason
        return None
    match message:
        case MetadataRequest(piece=piece) | MetadataReject(piece=piece):
            assert 0 <= piece < metadata_piece_count(max_total_size), piece
        case MetadataData(piece=piece, total_size=total_size, data=data):
            assert 0 < total_size <= max_total_size, total_size
            assert len(data) == metadata_piece_length(piece, total_size) <= METADATA_PIECE_SIZE
            assert payload.endswith(data)
        case MetadataUnknown(msg_type=msg_type):
            assert 3 <= msg_type <= _MAX_MSG_TYPE, msg_type
    if not isinstance(message, MetadataUnknown):
        again = decode_metadata_message(
            encode_metadata_message(message), max_total_size=max_total_size
        )
        assert again == message, (again, message)
    return message


@fuzz_target(seeds.metadata_payloads, max_len=2 * METADATA_PIECE_SIZE)
def fuzz_ut_metadata(data: bytes) -> None:
    """A ``ut_metadata`` payload: only ``bad_metadata_message``; fields within the cap; the
    data block exactly one piece's length; ``decode(encode(m)) == m``; a tight cap only
    refuses."""
    loose = _metadata(data, DEFAULT_MAX_METADATA_SIZE)
    tight = _metadata(data, _SMALL_METADATA)
    if tight is not None:
        assert loose == tight, (loose, tight)


# --- ut_pex (BEP 11) ----------------------------------------------------------------------------

_SMALL_PEX = 2


def _family_ok(peers: tuple[PeerAddress, ...], version: int) -> bool:
    return all(ipaddress.ip_address(p.host).version == version for p in peers)


def _pex(payload: bytes, max_entries: int) -> DecodedPex | None:
    try:
        decoded = decode_pex(payload, max_entries=max_entries)
    except WireError as exc:
        assert exc.reason in ("bad_pex", "bad_pex_length"), exc.reason
        return None
    message = decoded.message
    assert decoded.skipped >= 0
    for peers in (message.added, message.dropped, message.added6, message.dropped6):
        assert len(peers) <= max_entries, len(peers)
        assert all(0 < p.port < 65536 for p in peers)
    assert _family_ok(message.added, 4) and _family_ok(message.dropped, 4)
    assert _family_ok(message.added6, 6) and _family_ok(message.dropped6, 6)
    assert len(message.added_flags) == len(message.added)
    assert len(message.added6_flags) == len(message.added6)
    assert all(0 <= f <= 255 for f in (*message.added_flags, *message.added6_flags))
    assert decode_pex(encode_pex(message), max_entries=max_entries) == DecodedPex(message, 0)
    return decoded


def _kept(message: PexMessage) -> int:
    return len(message.added) + len(message.dropped) + len(message.added6) + len(message.dropped6)


@fuzz_target(seeds.pex_payloads, max_len=4096)
def fuzz_ut_pex(data: bytes) -> None:
    """A ``ut_pex`` payload: only ``bad_pex``/``bad_pex_length``; lists bounded, of the right
    family, flags aligned; every entry kept or counted skipped, under any cap;
    ``decode(encode(m)) == m``."""
    loose = _pex(data, MAX_PEX_ENTRIES)
    tight = _pex(data, _SMALL_PEX)
    assert (loose is None) == (tight is None), "the cap changed whether the payload decodes"
    if loose is None or tight is None:
        return
    assert _kept(loose.message) + loose.skipped == _kept(tight.message) + tight.skipped
    for name in ("added", "added_flags", "dropped", "added6", "added6_flags", "dropped6"):
        full, capped = getattr(loose.message, name), getattr(tight.message, name)
        assert full[: len(capped)] == capped, name  # the first usable entries of the same list
