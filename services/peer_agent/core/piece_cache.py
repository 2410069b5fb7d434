"""Whole pieces read from the storage agent for uploading, kept in memory, without I/O.

Strategy: peers request 16 KiB blocks, usually every block of a piece in a row, often several
peers the same piece. So the agent reads a piece once, whole, and serves every block of it from
memory: one ``PieceCache`` per agent, shared by all its connections. A miss starts a load: the
piece is read in ``ReadBlock`` chunks of at most ``MAX_BLOCK_LENGTH`` bytes (the bus bound)
into one buffer; whoever asks for a piece that is loading waits for the same load. A finished
piece joins an LRU of complete pieces. The caller sends the ``Read`` requests this returns and
feeds back the storage agent's ``BlockRead``/``ReadFailed`` replies; each call returns the
waiters it resolved (with the piece's buffer or a ``ReadError``) and the next reads to send.
The waiter is opaque here (the agent uses a gevent ``AsyncResult``); the clock is passed in.

Rules:
- Memory stays bounded: complete pieces plus buffers being loaded never exceed ``capacity``
  bytes, except that one load always proceeds (a piece bigger than the whole cache is loaded
  alone and handed to its waiters, never cached). Loads that do not fit wait their turn.
- At most ``max_reads`` chunk reads are outstanding at once, so uploads never flood the storage
  link that also carries downloaded pieces.
- A buffer handed out is never written again: connections queue memoryviews of it to their
  sockets. Eviction only drops the cache's reference.
- Replies are checked against what was asked (request id, torrent, piece, offset, length); an
  unknown or late reply is ignored, a mismatching one fails its load (``bad_reply``), as does
  ``ReadFailed`` (its reason) and a load older than ``read_timeout`` (``read_timeout``).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from torviz.shared.bus import MAX_BLOCK_LENGTH, BlockRead, ReadBlock, ReadFailed
from torviz.shared.types import InfoHash

__all__ = ["Outcome", "PieceCache", "Read", "ReadError"]

W = TypeVar("W")
_Key = tuple[InfoHash, int]


@dataclass(frozen=True, slots=True)
class Read:
    """A ``ReadBlock`` to send to the storage agent at ``endpoint``."""

    endpoint: str
    message: ReadBlock


@dataclass(frozen=True, slots=True)
class ReadError:
    """Why a piece could not be read (``reason`` from ``ReadFailed``, or ours)."""

    reason: str
    message: str


@dataclass(slots=True)
class Outcome(Generic[W]):
    """What a call changed: waiters to resolve, and reads to send now."""

    resolved: list[tuple[W, bytearray | ReadError]] = field(default_factory=list)
    reads: list[Read] = field(default_factory=list)


class _Load(Generic[W]):
    __slots__ = (
        "buffer",
        "endpoint",
        "key",
        "next_offset",
        "received",
        "size",
        "started",
        "waiters",
    )

    def __init__(self, key: _Key, size: int, endpoint: str, waiter: W) -> None:
        self.key = key
        self.size = size
        self.endpoint = endpoint
        self.waiters = [waiter]
        self.buffer: bytearray | None = None  # allocated when the load becomes active
        self.next_offset = 0
        self.received = 0
        self.started = 0.0


class PieceCache(Generic[W]):
    """An LRU of whole pieces, bounded in bytes, filled from the storage agent.

    Args:
        capacity: bytes of complete and loading pieces held at most.
        chunk: bytes per ``ReadBlock`` (at most the bus's ``MAX_BLOCK_LENGTH``).
        max_reads: chunk reads outstanding at once.
        read_timeout: seconds a load may take before it fails.
        allocate: makes piece buffers (every byte is written before a buffer is handed out).
    """

    def __init__(
        self,
        capacity: int,
        *,
        chunk: int = MAX_BLOCK_LENGTH,
        max_reads: int = 16,
        read_timeout: float = 30.0,
        allocate: Callable[[int], bytearray] = bytearray,
    ) -> None:
        if capacity < 1 or not 0 < chunk <= MAX_BLOCK_LENGTH or max_reads < 1:
            raise ValueError("capacity, chunk and max_reads must be positive (chunk <= bus max)")
        self.capacity = capacity
        self._chunk = chunk
        self._max_reads = max_reads
        self._read_timeout = read_timeout
        self._allocate = allocate
        self._cached: OrderedDict[_Key, bytearray] = OrderedDict()
        self._loads: dict[_Key, _Load[W]] = {}
        self._waiting: deque[_Load[W]] = deque()  # loads not started for lack of room
        self._active: list[_Load[W]] = []  # started, in start order
        self._requests: dict[int, tuple[_Load[W], int, int]] = {}  # id -> (load, offset, length)
        self._ids = itertools.count(1)
        self.cached_bytes = 0
        self.loading_bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        """Complete pieces held."""
        return len(self._cached)

    def get(
        self, info_hash: InfoHash, piece: int, size: int, endpoint: str, waiter: W, now: float
    ) -> tuple[bytearray | None, list[Read]]:
        """A connection needs ``piece`` (``size`` bytes, stored at ``endpoint``).

        Returns:
            The piece if cached (the waiter is then not used); else None, and ``waiter`` is
            resolved by a later call, together with the reads to send now.
        """
        key = (info_hash, piece)
        data = self._cached.get(key)
        if data is not None:
            self._cached.move_to_end(key)
            self.hits += 1
            return data, []
        self.misses += 1
        load = self._loads.get(key)
        if load is not None:
            load.waiters.append(waiter)
            return None, []
        load = _Load(key, size, endpoint, waiter)
        self._loads[key] = load
        self._waiting.append(load)
        outcome: Outcome[W] = Outcome()
        self._pump(now, outcome)
        return None, outcome.reads

    def on_block_read(self, reply: BlockRead, data: memoryview | None, now: float) -> Outcome[W]:
        """The storage agent answered a read with bytes."""
        outcome: Outcome[W] = Outcome()
        entry = self._requests.pop(reply.request_id, None)
        if entry is None:
            return outcome  # late (its load already failed) or never ours
        load, offset, length = entry
        if (
            (reply.info_hash, reply.piece) != load.key
            or reply.offset != offset
            or data is None
            or data.nbytes != length
            or load.buffer is None
        ):
            self._fail(
                load,
                ReadError(
                    "bad_reply",
                    f"storage answered read {reply.request_id} with other bytes than asked",
                ),
                outcome,
            )
        else:
            load.buffer[offset : offset + length] = data
            load.received += length
            if load.received == load.size:
                self._complete(load, outcome)
        self._pump(now, outcome)
        return outcome

    def on_read_failed(self, reply: ReadFailed, now: float) -> Outcome[W]:
        """The storage agent could not serve a read: its whole load fails."""
        outcome: Outcome[W] = Outcome()
        entry = self._requests.pop(reply.request_id, None)
        if entry is not None:
            self._fail(entry[0], ReadError(reply.reason, reply.message), outcome)
            self._pump(now, outcome)
        return outcome

    def expire(self, now: float) -> Outcome[W]:
        """Fail the loads that took longer than ``read_timeout``."""
        outcome: Outcome[W] = Outcome()
        for load in [load for load in self._active if now - load.started >= self._read_timeout]:
            error = ReadError("read_timeout", f"no answer from storage for {self._read_timeout} s")
            self._fail(load, error, outcome)
        self._pump(now, outcome)
        return outcome

    def forget(self, info_hash: InfoHash, now: float) -> Outcome[W]:
        """Drop every piece of a torrent; its loads fail (``torrent_detached``)."""
        outcome: Outcome[W] = Outcome()
        for key in [key for key in self._cached if key[0] == info_hash]:
            self.cached_bytes -= len(self._cached.pop(key))
        error = ReadError("torrent_detached", "the torrent was detached")
        for load in [load for key, load in self._loads.items() if key[0] == info_hash]:
            self._fail(load, error, outcome)
        self._pump(now, outcome)
        return outcome

    # -- internals --------------------------------------------------------------------------------

    def _pump(self, now: float, outcome: Outcome[W]) -> None:
        """Start the loads that fit, then issue chunk reads up to ``max_reads``."""
        while self._waiting:
            load = self._waiting[0]
            self._evict(load.size)
            if self._active and self.cached_bytes + self.loading_bytes + load.size > self.capacity:
                break
            self._waiting.popleft()
            load.buffer = self._allocate(load.size)
            load.started = now
            self.loading_bytes += load.size
            self._active.append(load)
        for load in self._active:
            while len(self._requests) < self._max_reads and load.next_offset < load.size:
                offset = load.next_offset
                length = min(self._chunk, load.size - offset)
                load.next_offset += length
                request_id = next(self._ids)
                self._requests[request_id] = (load, offset, length)
                info_hash, piece = load.key
                message = ReadBlock(request_id, info_hash, piece, offset, length)
                outcome.reads.append(Read(load.endpoint, message))
            if len(self._requests) >= self._max_reads:
                break

    def _evict(self, wanted: int) -> None:
        """Drop least recently used pieces until ``wanted`` more bytes fit (or none is left)."""
        while self._cached and self.cached_bytes + self.loading_bytes + wanted > self.capacity:
            _, data = self._cached.popitem(last=False)
            self.cached_bytes -= len(data)

    def _complete(self, load: _Load[W], outcome: Outcome[W]) -> None:
        self._finish(load)
        data = load.buffer
        assert data is not None
        if load.size <= self.capacity:
            self._evict(load.size)
            self._cached[load.key] = data
            self.cached_bytes += load.size
        outcome.resolved.extend((waiter, data) for waiter in load.waiters)

    def _fail(self, load: _Load[W], error: ReadError, outcome: Outcome[W]) -> None:
        self._finish(load)
        for request_id in [rid for rid, entry in self._requests.items() if entry[0] is load]:
            del self._requests[request_id]  # a late reply to these is ignored
        outcome.resolved.extend((waiter, error) for waiter in load.waiters)

    def _finish(self, load: _Load[W]) -> None:
        """Take a load out of every index (it completed or failed)."""
        del self._loads[load.key]
        if load in self._active:
            self._active.remove(load)
            self.loading_bytes -= load.size
        elif load in self._waiting:
            self._waiting.remove(load)
