"""Bus messages of the storage agent's control channel: coordinator <-> storage agent (80-99).

Strategy: the coordinator opens, closes and rechecks torrents; the storage agent reports what it
found, each verified or rejected piece, corrupt blocks traced to their senders, its failures and
a recheck's progress. Rules: see ``shared.bus.schema``.
"""

from __future__ import annotations

from typing import Annotated

from torviz.shared.types import InfoHash

from ..vocabulary import (
    MAX_METAINFO_BYTES,
    Bitfield,
    Name,
    PeerKeys,
    PieceCount,
    PieceNo,
    Size,
    Text,
)
from .registry import Message, bus_message

# --- coordinator <-> storage agent (80-99) ------------------------------------------------------


@bus_message(tag=80)
class OpenTorrent(Message):
    """Open (and check or resume) a torrent's files; the agent checks SHA-1(raw_info)."""

    info_hash: InfoHash
    raw_info: Annotated[bytes, Size(1, MAX_METAINFO_BYTES)]
    save_path: Text


@bus_message(tag=81)
class CloseTorrent(Message):
    """Flush resume state and close the files; answered by ``TorrentClosed``.

    With ``delete_files`` the torrent's files (and its resume state) are deleted as well;
    without it they are never touched.
    """

    info_hash: InfoHash
    delete_files: bool


@bus_message(tag=82)
class RecheckTorrent(Message):
    """Hash every piece on disk again, trusting nothing; answered by ``TorrentOpened``."""

    info_hash: InfoHash


@bus_message(tag=90)
class TorrentOpened(Message):
    """The files are open; ``have`` holds the pieces already verified on disk."""

    info_hash: InfoHash
    have: Bitfield


@bus_message(tag=91)
class PieceVerified(Message):
    """A piece matched its SHA-1 and is on disk."""

    info_hash: InfoHash
    piece: PieceNo


@bus_message(tag=92)
class PieceRejected(Message):
    """A piece failed its SHA-1; nothing was written. ``contributors`` are suspects."""

    info_hash: InfoHash
    piece: PieceNo
    contributors: PeerKeys


@bus_message(tag=93)
class StorageFailed(Message):
    """A file operation failed; ``errno_name`` is e.g. ``"ENOSPC"`` (empty when not an OSError)."""

    info_hash: InfoHash
    file: Text
    errno_name: Name
    message: Text


@bus_message(tag=95)
class CheckProgress(Message):
    """A check of the files on disk (at open or recheck) has hashed ``checked`` of ``total``."""

    info_hash: InfoHash
    checked: PieceCount
    total: PieceCount


@bus_message(tag=96)
class CorruptBlocksTraced(Message):
    """A piece that failed its SHA-1 with blocks from several peers was fetched again and
    verified; its blocks compared with the failed copy's name who sent bad data (libtorrent's
    smart ban). ``liars`` sent at least one block that differs from the verified piece;
    ``cleared`` sent only blocks that match it."""

    info_hash: InfoHash
    piece: PieceNo
    liars: PeerKeys
    cleared: PeerKeys


@bus_message(tag=94)
class TorrentClosed(Message):
    """The files are closed and resume state is flushed."""

    info_hash: InfoHash
