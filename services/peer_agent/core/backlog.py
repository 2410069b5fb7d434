"""Accepted sockets waiting for their handshake header: who may wait, and for how long.

Strategy: a pure table the listener keeps, one entry per accepted socket whose first 48 bytes
have not arrived yet, with the clock passed in. ``admit`` decides about a socket just accepted
(and names the waiting one to drop for it), ``expired`` names the ones past their deadline,
``done`` forgets one that finished (routed, refused or dropped). The listener does the I/O:
it kills the reader of a dropped or expired socket, which closes it.

Rules:
- At most ``max_pending`` sockets wait at once, and at most ``max_per_host`` from one IP
  address: a socket from an address at its share is refused at once, so one host cannot jam
  the queue.
- When the queue is full, the socket waiting longest is dropped for the new one: idle or
  trickling sockets from many addresses cannot keep honest peers, which send their header at
  once, from getting in.
- A socket has ``timeout`` seconds to send its header, and only ``pressured_timeout`` while
  at least ``pressure_at`` sockets wait (the deadline of every waiting socket shrinks then).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "HEADER_TIMEOUT",
    "MAX_PENDING",
    "MAX_PENDING_PER_HOST",
    "PRESSURED_HEADER_TIMEOUT",
    "Backlog",
    "Decision",
]

HEADER_TIMEOUT = 10.0
"""Seconds an accepted peer has to send the first 48 bytes of its handshake."""
PRESSURED_HEADER_TIMEOUT = 2.0
"""The same while the queue is at least half full: an honest peer sends them in one packet."""
MAX_PENDING = 64
"""Accepted sockets waiting for their handshake header at once."""
MAX_PENDING_PER_HOST = 8
"""Of which from one IP address."""

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Decision(Generic[T]):
    """What to do with a socket just accepted."""

    admitted: bool
    """Whether it may wait for its header (else: close it now)."""
    drop: T | None = None
    """A waiting socket to drop to make room for it."""
    reason: str = ""
    """Why it was refused: ``too_many_from_host``."""


@dataclass(slots=True)
class _Entry:
    host: str
    since: float


class Backlog(Generic[T]):
    """The sockets waiting for their header, each named by a token of the caller's.

    Args:
        max_pending: sockets waiting at once.
        max_per_host: of which from one address.
        timeout: seconds a socket has to send its header.
        pressured_timeout: the same while ``pressure_at`` or more wait.
        pressure_at: sockets waiting from which the shorter deadline applies; None: half of
            ``max_pending``.

    Raises:
        ValueError: a limit below one, or a timeout that is not positive.
    """

    def __init__(
        self,
        *,
        max_pending: int = MAX_PENDING,
        max_per_host: int = MAX_PENDING_PER_HOST,
        timeout: float = HEADER_TIMEOUT,
        pressured_timeout: float = PRESSURED_HEADER_TIMEOUT,
        pressure_at: int | None = None,
    ) -> None:
        if max_pending < 1 or max_per_host < 1:
            raise ValueError("at least one socket may wait, from any address")
        if not (timeout > 0 and pressured_timeout > 0):
            raise ValueError("header timeouts must be positive")
        self.max_pending = max_pending
        self.max_per_host = max_per_host
        self.timeout = timeout
        self.pressured_timeout = pressured_timeout
        self.pressure_at = max(1, max_pending // 2) if pressure_at is None else max(1, pressure_at)
        self._entries: dict[T, _Entry] = {}  # in order of arrival: oldest first
        self._hosts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, token: object) -> bool:
        return token in self._entries

    @property
    def pressured(self) -> bool:
        """Whether the shorter deadline applies now."""
        return len(self._entries) >= self.pressure_at

    def admit(self, token: T, host: str, now: float) -> Decision[T]:
        """A socket from ``host`` was just accepted: let it wait, perhaps in the place of the
        one waiting longest (which the caller drops; it is forgotten here), or refuse it.

        Raises:
            ValueError: ``token`` waits already (a bug in the caller).
        """
        if token in self._entries:
            raise ValueError(f"{token!r} is waiting already")
        if self._hosts[host] >= self.max_per_host:
            return Decision(False, reason="too_many_from_host")
        drop = None
        if len(self._entries) >= self.max_pending:
            drop = next(iter(self._entries))
            self.done(drop)
        self._entries[token] = _Entry(host, now)
        self._hosts[host] += 1
        return Decision(True, drop)

    def done(self, token: T) -> None:
        """Forget a socket (its header arrived, or it was closed); unknown tokens are ignored."""
        entry = self._entries.pop(token, None)
        if entry is None:
            return
        self._hosts[entry.host] -= 1
        if self._hosts[entry.host] <= 0:
            del self._hosts[entry.host]

    def expired(self, now: float) -> list[T]:
        """The sockets past their deadline (forgotten here; the caller drops them)."""
        limit = self.pressured_timeout if self.pressured else self.timeout
        late = []
        for token, entry in self._entries.items():
            if now - entry.since < limit:
                break  # oldest first: the rest are younger
            late.append(token)
        for token in late:
            self.done(token)
        return late

    def next_deadline(self) -> float | None:
        """When the oldest waiting socket expires (at the current pressure), if any waits."""
        if not self._entries:
            return None
        limit = self.pressured_timeout if self.pressured else self.timeout
        return next(iter(self._entries.values())).since + limit
