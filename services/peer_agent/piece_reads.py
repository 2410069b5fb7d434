"""The agent's side of uploads: its one piece cache and the reads it sends on the storage links.

Strategy: a connection that needs a whole piece to upload asks the agent's inbox
(``ReadPiece`` with an ``AsyncResult``); the agent hands it to ``PieceReads.read``. A hit sets
the result at once; a miss has the pure ``PieceCache`` (``core/piece_cache.py``) plan
``ReadBlock`` chunks, which go out on the torrent's storage link, and the ``BlockRead`` or
``ReadFailed`` replies that come back to the inbox (``on_storage``) complete the load and set
every waiting result. ``expire`` (every second) fails loads that took too long; ``forget``
drops a detached torrent's pieces and fails its loads.

Rules:
- Everything here runs in the agent's inbox: the cache has one caller, no lock.
- A read of a piece the agent does not hold (unknown torrent, index out of range) is answered
  at once with a ``ReadError``, never sent to storage.
"""

from __future__ import annotations

from collections.abc import Callable

import gevent.event

from torviz.shared import bus
from torviz.shared.types import InfoHash

from .core.piece_cache import Outcome, PieceCache, Read, ReadError
from .core.torrents import Torrent
from .storage_link import StorageLinks

__all__ = ["PieceReads"]


class PieceReads:
    """The piece cache of every connection of the agent, filled over the storage links.

    Args:
        capacity: bytes of pieces the cache holds at most.
        storage: the agent's storage links (a read goes out on its torrent's).
        allocate: makes piece buffers.
    """

    def __init__(
        self, capacity: int, storage: StorageLinks, allocate: Callable[[int], bytearray]
    ) -> None:
        self._cache: PieceCache[gevent.event.AsyncResult] = PieceCache(
            max(1, capacity), allocate=allocate
        )
        self._storage = storage

    def read(
        self,
        torrent: Torrent | None,
        info_hash: InfoHash,
        piece: int,
        result: gevent.event.AsyncResult,
        now: float,
    ) -> None:
        """Set ``result`` to the piece (now, or once loaded) or to a ``ReadError``.

        Args:
            torrent: the attached torrent of ``info_hash``, None if it is not attached.
            info_hash: the torrent asked for.
            piece: the piece index asked for.
            result: where the piece (a ``bytearray``) or a ``ReadError`` goes.
            now: monotonic seconds.
        """
        if torrent is None or torrent.geometry is None or not torrent.geometry.has_piece(piece):
            result.set(ReadError("unknown_torrent", f"no piece {piece} of {info_hash} here"))
            return
        size = torrent.geometry.piece_size(piece)
        endpoint = torrent.storage_endpoint
        data, reads = self._cache.get(info_hash, piece, size, endpoint, result, now)
        if data is not None:
            result.set(data)
        self._send(reads)

    def on_storage(self, message: bus.Message, data: memoryview | None, now: float) -> bool:
        """A message from a storage link: a read's reply completes its load.

        Args:
            message: what the storage agent sent.
            data: its data frame, if any.
            now: monotonic seconds.

        Returns:
            Whether it was a read's reply (anything else is the link's to handle).
        """
        match message:
            case bus.BlockRead():
                self._resolve(self._cache.on_block_read(message, data, now))
            case bus.ReadFailed():
                self._resolve(self._cache.on_read_failed(message, now))
            case _:
                return False
        return True

    def expire(self, now: float) -> None:
        """Fail the loads that took too long."""
        self._resolve(self._cache.expire(now))

    def forget(self, info_hash: InfoHash, now: float) -> None:
        """Drop a detached torrent's pieces and fail its loads."""
        self._resolve(self._cache.forget(info_hash, now))

    def _resolve(self, outcome: Outcome[gevent.event.AsyncResult]) -> None:
        for waiter, value in outcome.resolved:
            waiter.set(value)
        self._send(outcome.reads)

    def _send(self, reads: list[Read]) -> None:
        for read in reads:
            link = self._storage.get(read.endpoint)
            if link is not None:
                link.send(read.message)
