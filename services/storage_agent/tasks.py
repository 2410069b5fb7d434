"""The blocking work of the storage agent: each function runs on a worker thread, never the hub.

Strategy: the actor decides, these functions do. Each one is a plain function of its arguments
(a store, a piece, a buffer) so that the actor can hand it to a threadpool as is, and tests can
call it directly. They never touch the actor's state and never talk to a socket.

Rules:
- Piece bytes arrive as a memoryview over a received ZeroMQ frame: they are hashed and written
  from that view, never copied.
- Nothing is written for a piece whose SHA-1 does not match.
- Failures leave as ``StorageError`` (or ``MetainfoError`` for a torrent that cannot be used);
  ``storage_failed`` turns either into the one-line ``StorageFailed`` the coordinator gets.
"""

from __future__ import annotations

import hashlib
import logging

from shared.bus import StorageFailed, clip_name, clip_text
from shared.errors import MetainfoError, TorvizError
from shared.metainfo import parse_info_dict
from shared.paths import MAX_PATH_DEPTH_CEILING
from shared.types import InfoHash

from .errors import StorageError
from .hashing import sha1_matches
from .store import Buffer, FileStorage, Storage

__all__ = [
    "close_storage",
    "is_expected_failure",
    "open_storage",
    "read_block",
    "storage_failed",
    "verify_and_write",
]

log = logging.getLogger(__name__)


def open_storage(
    info_hash: InfoHash, raw_info: bytes, save_path: str, *, preallocate: bool
) -> FileStorage:
    """Check an info dict against its hash, parse it and open its files under ``save_path``.

    Args:
        info_hash: what the coordinator says ``raw_info`` hashes to.
        raw_info: the exact bencoded info dict.
        save_path: the download directory (created if missing).
        preallocate: reserve each file's full size when it is created.

    Returns:
        The store; its folders and zero-length files exist, other files appear on first write.

    Raises:
        StorageError: ``info_hash_mismatch``, or the directory or an empty file cannot be made.
        MetainfoError: the info dict is not a usable torrent (bad bencode, unsafe path ...).
    """
    actual = hashlib.sha1(raw_info, usedforsecurity=False).digest()
    if actual != info_hash.raw:
        raise StorageError(
            "info_hash_mismatch",
            f"the info dictionary hashes to {actual.hex()}, not {info_hash.hex}: "
            "the coordinator sent the wrong torrent data",
        )
    # Lenient: the bytes are proven genuine by the hash, and real torrents are not always
    # canonical bencode. The coordinator applied the user's path depth limit; here only the
    # ceiling any setting may reach (walking a deep path costs one lstat per folder).
    info = parse_info_dict(raw_info, strict=False, max_path_depth=MAX_PATH_DEPTH_CEILING)
    return FileStorage(info, save_path, preallocate=preallocate)


def verify_and_write(storage: Storage, piece: int, data: Buffer, expected: bytes) -> bool:
    """Hash a whole piece and write it if it matches.

    Args:
        storage: the torrent's store.
        piece: the piece index (checked by the caller against the torrent).
        data: exactly the piece's bytes; a memoryview is hashed and written without a copy.
        expected: the piece's 20-byte SHA-1 from the torrent.

    Returns:
        True when the piece matched and is written; False when it did not (nothing written).

    Raises:
        StorageError: the write failed (``disk_full``, ``io_error`` ...).
    """
    if not sha1_matches(data, expected):
        return False
    storage.write_piece(piece, data)
    return True


def read_block(storage: Storage, piece: int, offset: int, length: int) -> bytes:
    """Read ``length`` bytes at ``offset`` inside ``piece``; errors as ``Storage.read``."""
    return storage.read(piece, offset, length)


def close_storage(storage: Storage) -> None:
    """Flush the store and close its files (descriptors are released even if the flush fails).

    Raises:
        StorageError: the flush failed; the data written since the last flush may be lost.
    """
    storage.close()


def storage_failed(info_hash: InfoHash, error: BaseException) -> StorageFailed:
    """The ``StorageFailed`` event for an error raised while handling a torrent.

    ``StorageError`` and ``MetainfoError`` keep their one-line message; anything else is a bug
    on our side and is reported as such, without a traceback.
    """
    file = ""
    errno_name = ""
    if isinstance(error, StorageError):
        file = error.path or ""
        errno_name = error.errno_name or ""
    if isinstance(error, TorvizError):
        message = error.message
    else:
        message = f"internal error in the storage agent: {type(error).__name__}: {error}"
    return StorageFailed(info_hash, clip_text(file), clip_name(errno_name), clip_text(message))


def is_expected_failure(error: BaseException) -> bool:
    """Whether ``error`` is one torviz raises on purpose (logged as one line, no traceback)."""
    return isinstance(error, StorageError | MetainfoError)
