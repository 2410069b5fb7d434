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

import logging

from .core.storage import Buffer, Storage
from .hashing import sha1_matches

__all__ = ["close_storage", "read_block", "verify_and_write"]

log = logging.getLogger(__name__)


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
