"""Outstanding DHT queries: 2-byte transaction ids matched to the node asked, with expiry.

Strategy: every query we send gets a fresh 2-byte ``t`` (BEP 5 leaves its form to the querier;
libtorrent sends 2 bytes too) from a counter started at a random value, skipping ids in use. The
record says who was asked and why; an answer is matched by ``t`` *and* by the address it comes
from, so a node that guesses or sniffs a transaction id cannot answer in another's name. Records
are kept in the order they were opened and all live ``timeout`` seconds, so expiry takes them
from the front.

Rules:
- At most ``capacity`` queries are outstanding; ``open`` refuses more (the caller drops the query
  and counts it), so a burst of work cannot grow this map without bound.
- An answer from another address than the one asked leaves the query open (the real node may
  still answer) and is reported as not matched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from torviz.shared.dht.node_id import RandomSource
from torviz.shared.types import PeerAddress

__all__ = ["TRANSACTION_ID_SIZE", "Pending", "Transactions"]

TRANSACTION_ID_SIZE = 2
"""Bytes in the transaction ids we send."""

_ID_SPACE = 1 << (8 * TRANSACTION_ID_SIZE)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pending(Generic[T]):
    """One outstanding query: where it went, when, and the caller's record of why."""

    t: bytes
    address: PeerAddress
    sent_at: float
    record: T


class Transactions(Generic[T]):
    """The queries waiting for an answer."""

    def __init__(self, rng: RandomSource, *, capacity: int = 4_096, timeout: float = 10.0) -> None:
        """No query outstanding.

        Args:
            rng: Picks the first transaction id.
            capacity: Most queries outstanding (below 65,536).
            timeout: Seconds until a query without answer expires.

        Raises:
            ValueError: ``capacity`` out of range or ``timeout`` not positive.
        """
        if not 0 < capacity < _ID_SPACE or not timeout > 0:
            raise ValueError("transactions need a capacity below 65536 and a positive timeout")
        self.capacity = capacity
        self.timeout = timeout
        self._next = rng.getrandbits(8 * TRANSACTION_ID_SIZE)
        self._open: dict[bytes, Pending[T]] = {}
        self._waiting_on: dict[PeerAddress, int] = {}
        """Address -> queries outstanding to it."""

    def __len__(self) -> int:
        return len(self._open)

    def open(self, address: PeerAddress, record: T, now: float) -> bytes | None:
        """Start a query to ``address``.

        Args:
            address: The node asked.
            record: What the caller needs when the answer (or the timeout) comes.
            now: The clock.

        Returns:
            The transaction id to send, or None when ``capacity`` queries are outstanding.
        """
        if len(self._open) >= self.capacity:
            return None
        while True:
            t = self._next.to_bytes(TRANSACTION_ID_SIZE, "big")
            self._next = (self._next + 1) % _ID_SPACE
            if t not in self._open:
                break
        self._open[t] = Pending(t, address, now, record)
        self._waiting_on[address] = self._waiting_on.get(address, 0) + 1
        return t

    def awaiting(self, address: PeerAddress) -> bool:
        """Whether a query to ``address`` waits for its answer (what comes from there may be
        that answer: the node lets it past the limits on incoming queries)."""
        return address in self._waiting_on

    def close(self, t: bytes, address: PeerAddress) -> Pending[T] | None:
        """Match an answer (a response or an error) to its query, and close it.

        Args:
            t: The answer's transaction id.
            address: Where the answer came from.

        Returns:
            The query answered, or None when no query with that id went to that address.
        """
        pending = self._open.get(t)
        if pending is None or pending.address != address:
            return None
        del self._open[t]
        self._forget(address)
        return pending

    def expire(self, now: float) -> list[Pending[T]]:
        """Close the queries that waited ``timeout`` seconds.

        Args:
            now: The clock.

        Returns:
            The expired queries, oldest first.
        """
        expired = []
        while self._open:
            pending = next(iter(self._open.values()))
            if now - pending.sent_at < self.timeout:
                break
            del self._open[pending.t]
            self._forget(pending.address)
            expired.append(pending)
        return expired

    def next_deadline(self) -> float | None:
        """When the oldest outstanding query expires, or None when none is outstanding."""
        for pending in self._open.values():
            return pending.sent_at + self.timeout
        return None

    def pending(self) -> list[Pending[T]]:
        """Every outstanding query, oldest first."""
        return list(self._open.values())

    def _forget(self, address: PeerAddress) -> None:
        left = self._waiting_on.pop(address) - 1
        if left:
            self._waiting_on[address] = left
