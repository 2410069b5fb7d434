"""Pieces on their way to one storage agent, kept until it says it dealt with them.

Strategy: a finished piece leaves a connection as ``StorePiece`` plus its buffer; the storage
agent answers each with ``PieceStored(info_hash, piece, reason)``. ``Deliveries`` keeps every
piece sent on one storage link (the message and the very buffer that was sent) until that
answer arrives, so that nothing is lost when the storage agent restarts or refuses for a while:

- ``reason`` empty: the piece is dealt with (hashed, or already verified); it is forgotten.
- a retryable refusal (``RETRYABLE``: the torrent is being checked or opened, is not open yet,
  or the agent is stopping) sends it again after ``RETRY_DELAY`` seconds, up to
  ``MAX_ATTEMPTS`` sends in all; then it is dropped (the coordinator fetches the piece again
  once its own wait for a verdict runs out).
- any other refusal drops it at once.
- ``Rejected("hello_first")`` on the link means the storage agent restarted and forgot us (and
  whatever it had not answered): the link says ``Hello`` again and every piece kept here is sent
  again, in the order it was first sent (``restarted``).
- a piece nobody answers for ``ANSWER_TIMEOUT`` seconds is dropped, so a storage agent that is
  gone for good cannot hold a window shut forever. While pieces wait, a silent link is probed
  every ``PROBE_INTERVAL`` seconds (the caller sends a ``Heartbeat``): a restarted storage agent
  answers it with ``hello_first``, which is how the link learns of the restart when no new piece
  is being sent (its connections stop reading while the window is full); a live storage agent
  answers it with a ``Heartbeat``.
- a link that hears nothing at all for ``RECONNECT_AFTER`` seconds while pieces wait (no
  ``PieceStored``, ``Welcome``, ``Heartbeat`` or ``Rejected``, probes unanswered) may be dead
  in a way that neither end sees (its connection taken over, a peer that stopped reading): the
  caller closes its socket, opens a new one to the same endpoint, says ``Hello`` and sends
  every piece kept here again, in order (``reconnect_due``). This is well within
  ``ANSWER_TIMEOUT``, so no link stays silently dead until its pieces are given up.

The window: ``full`` is true once ``window`` pieces are kept; the connections using the link
stop reading from their peers until an answer frees a place. It is a soft bound: a read that
was already under way may complete a few more pieces, which are kept all the same.

Rules:
- Pure: no sockets, no clock reads; every call that depends on time takes ``now``.
- A kept buffer is never written again: it is only read, by each send (zero-copy).
- Answers are matched by torrent and piece to the oldest matching piece in flight; an answer
  for nothing in flight (a duplicate, a late one) is ignored. Two copies of one piece (an
  endgame race) are kept as two deliveries and each takes one answer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from enum import StrEnum

from torviz.shared.bus import PieceStored, StorePiece, StoreRefusal
from torviz.shared.types import InfoHash

__all__ = [
    "ANSWER_TIMEOUT",
    "MAX_ATTEMPTS",
    "PROBE_INTERVAL",
    "RECONNECT_AFTER",
    "REJOIN_INTERVAL",
    "RETRYABLE",
    "RETRY_DELAY",
    "WINDOW",
    "Deliveries",
    "Delivery",
    "Settled",
    "Verdict",
]

WINDOW = 32
"""Pieces kept unanswered per storage link before its connections stop reading."""
RETRY_DELAY = 1.0
"""Seconds before a piece refused for a passing reason is sent again."""
MAX_ATTEMPTS = 30
"""Sends of one piece (the first included) before a piece that keeps being refused is dropped."""
ANSWER_TIMEOUT = 120.0
"""Seconds a sent piece may go unanswered before it is dropped."""
PROBE_INTERVAL = 2.0
"""Seconds of silence from the storage agent, while pieces wait, before the link is probed."""
RECONNECT_AFTER = 15.0
"""Seconds without a word from the storage agent, while pieces wait, before the link is opened
again (several unanswered probes; well under ``ANSWER_TIMEOUT``)."""
REJOIN_INTERVAL = 2.0
"""Seconds after a ``hello_first`` during which more of them are taken as echoes of the same
restart (every message sent before our new ``Hello`` gets one), unless welcomed meanwhile."""
RETRYABLE = frozenset(
    {
        StoreRefusal.TORRENT_CHECKING,
        StoreRefusal.TORRENT_NOT_OPEN,
        StoreRefusal.UNKNOWN_TORRENT,
        StoreRefusal.AGENT_STOPPING,
    }
)
"""Refusals that pass: a recheck, an open under way (after a storage restart the coordinator
opens its torrents again), a torrent not open yet, an agent stopping (its successor will take
the piece)."""

_Key = tuple[InfoHash, int]


class Verdict(StrEnum):
    """What an answer did to the piece it named."""

    DONE = "done"
    """Dealt with: forgotten."""
    RETRY = "retry"
    """Refused for a passing reason: sent again after ``RETRY_DELAY``."""
    GIVEN_UP = "given_up"
    """Refused for a passing reason ``MAX_ATTEMPTS`` times: dropped."""
    REFUSED = "refused"
    """Refused for good: dropped."""
    UNKNOWN = "unknown"
    """Nothing of that piece was in flight: ignored."""


@dataclass(slots=True)
class Delivery:
    """One piece sent and not yet dealt with."""

    message: StorePiece
    data: bytearray
    """The buffer that was sent; never written again."""
    attempts: int
    """Sends so far (resends after a storage restart are not counted: they repeat a send that
    was lost, not one that was refused)."""
    sent_at: float
    """When it was last sent, not counting resends after a storage restart: the answer timeout
    runs from here, so a piece that keeps meeting restarts (a storage agent crashing on it)
    is still given up in the end."""
    retry_at: float | None = None
    """When it is to be sent again after a refusal; None while it is in flight."""

    @property
    def key(self) -> _Key:
        return (self.message.info_hash, self.message.piece)


@dataclass(frozen=True, slots=True)
class Settled:
    """The outcome of one ``PieceStored``: the verdict and the delivery it concerned."""

    verdict: Verdict
    delivery: Delivery | None


class Deliveries:
    """The pieces sent on one storage link and not yet dealt with.

    Args:
        window: pieces kept before ``full``.
        retry_delay: seconds before a retryable refusal is sent again.
        max_attempts: sends of one piece before retryable refusals drop it.
        answer_timeout: seconds a sent piece may go unanswered.
        probe_interval: seconds of silence, while pieces wait, before ``probe_due``.
        rejoin_interval: seconds during which further ``hello_first`` answers are echoes.
        reconnect_after: seconds of silence, while pieces wait, before ``reconnect_due``.

    Raises:
        ValueError: a window or attempts below 1, or a reconnect before the first probe.
    """

    def __init__(
        self,
        *,
        window: int = WINDOW,
        retry_delay: float = RETRY_DELAY,
        max_attempts: int = MAX_ATTEMPTS,
        answer_timeout: float = ANSWER_TIMEOUT,
        probe_interval: float = PROBE_INTERVAL,
        rejoin_interval: float = REJOIN_INTERVAL,
        reconnect_after: float = RECONNECT_AFTER,
    ) -> None:
        if window < 1 or max_attempts < 1:
            raise ValueError("the window and the attempts are at least 1")
        if reconnect_after <= probe_interval:
            raise ValueError("a silent link is probed before it is opened again")
        self.window = window
        self.retry_delay = retry_delay
        self.max_attempts = max_attempts
        self.answer_timeout = answer_timeout
        self.probe_interval = probe_interval
        self.rejoin_interval = rejoin_interval
        self.reconnect_after = reconnect_after
        self._kept: dict[int, Delivery] = {}  # by serial: insertion order is send order
        self._by_piece: dict[_Key, list[int]] = {}
        self._serial = itertools.count()
        self._heard = float("-inf")  # last word from the storage agent (or first piece waiting)
        self._probed = float("-inf")  # last probe sent
        self._rejoined_at: float | None = None

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def full(self) -> bool:
        """Whether the window is full: connections should stop reading."""
        return len(self._kept) >= self.window

    def pending(self) -> list[Delivery]:
        """Every piece kept, in the order it was first sent."""
        return list(self._kept.values())

    def sent(self, message: StorePiece, data: bytearray, now: float) -> Delivery:
        """Keep a piece that was just sent for the first time."""
        delivery = Delivery(message, data, attempts=1, sent_at=now)
        serial = next(self._serial)
        self._kept[serial] = delivery
        self._by_piece.setdefault(delivery.key, []).append(serial)
        if len(self._kept) == 1:
            self._heard = now  # the silence that matters starts with the first piece waiting
        return delivery

    def settle(self, stored: PieceStored, now: float) -> Settled:
        """Apply the storage agent's answer for a piece.

        Returns:
            The verdict and the delivery it concerned; the caller logs drops. A ``RETRY``
            delivery is returned by ``due`` once its delay has passed.
        """
        self.heard(now)
        serial = self._in_flight((stored.info_hash, stored.piece))
        if serial is None:
            return Settled(Verdict.UNKNOWN, None)
        delivery = self._kept[serial]
        if stored.reason is StoreRefusal.NONE:
            verdict = Verdict.DONE
        elif stored.reason not in RETRYABLE:
            verdict = Verdict.REFUSED
        elif delivery.attempts >= self.max_attempts:
            verdict = Verdict.GIVEN_UP
        else:
            delivery.retry_at = now + self.retry_delay
            return Settled(Verdict.RETRY, delivery)
        self._forget(serial)
        return Settled(verdict, delivery)

    def due(self, now: float) -> list[Delivery]:
        """The refused pieces whose delay has passed, in send order; each counts as sent now.

        The caller sends each again (its ``message`` and ``data``).
        """
        ready = []
        for delivery in self._kept.values():
            if delivery.retry_at is not None and delivery.retry_at <= now:
                delivery.retry_at = None
                delivery.attempts += 1
                delivery.sent_at = now
                ready.append(delivery)
        return ready

    def restarted(self, now: float) -> list[Delivery] | None:
        """The storage agent answered ``hello_first``: it restarted and lost what it held.

        Returns:
            Every piece kept, in the order first sent, each now in flight again: the caller
            says ``Hello`` and then sends them all. None when this answer echoes a restart
            already handled (within ``rejoin_interval`` and not welcomed since): do nothing.
        """
        if self._rejoined_at is not None and now - self._rejoined_at < self.rejoin_interval:
            return None
        self._rejoined_at = now
        self.heard(now)
        kept = list(self._kept.values())
        for delivery in kept:
            delivery.retry_at = None
        return kept

    def welcomed(self) -> None:
        """The storage agent welcomed us: the next ``hello_first`` is a new restart."""
        self._rejoined_at = None

    def heard(self, now: float) -> None:
        """Anything arrived from the storage agent: the link is alive."""
        self._heard = max(self._heard, now)

    def expired(self, now: float) -> list[Delivery]:
        """Drop and return the pieces in flight unanswered for ``answer_timeout`` seconds."""
        stale = [
            serial
            for serial, delivery in self._kept.items()
            if delivery.retry_at is None and now - delivery.sent_at >= self.answer_timeout
        ]
        return [self._forget(serial) for serial in stale]

    def probe_due(self, now: float) -> bool:
        """Whether to send a probe now: pieces wait and the link was silent for a while.

        A True answer counts as a probe sent: the next one is due ``probe_interval`` later.
        """
        if not self._kept or now - max(self._heard, self._probed) < self.probe_interval:
            return False
        self._probed = now
        return True

    def reconnect_due(self, now: float) -> list[Delivery] | None:
        """Whether to open the link again: pieces wait and nothing at all was heard from the
        storage agent for ``reconnect_after`` seconds (its probes went unanswered).

        Returns:
            None while the link is not due; else every piece kept, in the order first sent,
            each now in flight again: the caller opens a new socket, says ``Hello`` and sends
            them all. The silence is counted afresh from now (resends are not new sends: the
            answer timeout still runs from each piece's own send).
        """
        if not self._kept or now - self._heard < self.reconnect_after:
            return None
        self._heard = self._probed = now
        self._rejoined_at = now  # answers to what the old socket sent are echoes
        kept = list(self._kept.values())
        for delivery in kept:
            delivery.retry_at = None
        return kept

    def next_deadline(self) -> float | None:
        """When ``due``, ``expired``, ``probe_due`` or ``reconnect_due`` may next have
        something; None if idle."""
        if not self._kept:
            return None
        deadline = min(
            max(self._heard, self._probed) + self.probe_interval,
            self._heard + self.reconnect_after,
        )
        for delivery in self._kept.values():
            if delivery.retry_at is not None:
                deadline = min(deadline, delivery.retry_at)
            else:
                deadline = min(deadline, delivery.sent_at + self.answer_timeout)
        return deadline

    def _in_flight(self, key: _Key) -> int | None:
        for serial in self._by_piece.get(key, ()):
            if self._kept[serial].retry_at is None:
                return serial
        return None

    def _forget(self, serial: int) -> Delivery:
        delivery = self._kept.pop(serial)
        serials = self._by_piece[delivery.key]
        serials.remove(serial)
        if not serials:
            del self._by_piece[delivery.key]
        return delivery
