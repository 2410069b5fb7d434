"""When to dial an address again after its connection ended: back-off, and giving up.

Strategy: every way an outgoing connection can end (a dial that failed, a connection the peer or
we closed, one the coordinator dropped itself) goes through ``RedialSchedule.ended``, which
either schedules one more dial or gives the address up for good. ``due`` hands back the
addresses whose wait is over and forgets them, so a schedule entry fires exactly once.

Rules:
- A final ending (the peer is ourselves, a duplicate, banned, sent corrupt data, both of us
  are seeds, a bad bitfield, another torrent, broken metadata) gives the address up: it is
  never dialled again while the torrent runs, even when a tracker lists it again.
- A connection that moved payload either way resets the count: the next dial waits
  ``base_delay``.
- Any other ending counts as a failure in a row: the wait doubles each time (10 s, 20 s,
  40 s ...), and after ``max_failures`` failures in a row the address is given up.
- Pure: the time is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from torviz.shared.bus import DisconnectReason
from torviz.shared.types import PeerAddress

__all__ = ["FINAL_REASONS", "RedialSchedule"]

FINAL_REASONS = frozenset(
    {
        DisconnectReason.BANNED,
        DisconnectReason.SENT_CORRUPT_DATA,
        DisconnectReason.BOTH_SEEDS,
        DisconnectReason.CONNECTED_TO_SELF,
        DisconnectReason.DUPLICATE_PEER,
        DisconnectReason.BAD_BITFIELD,
        DisconnectReason.WRONG_INFO_HASH,
        DisconnectReason.BAD_METADATA_MESSAGE,
    }
)
"""Why a connection ended that make dialling the address again pointless."""


@dataclass(slots=True)
class RedialSchedule:
    """Addresses to dial again, and addresses given up, for one torrent.

    Args:
        base_delay: seconds before the first redial after an ending.
        max_failures: unproductive endings in a row after which an address is given up.
    """

    base_delay: float = 10.0
    max_failures: int = 6
    _due: dict[PeerAddress, float] = field(default_factory=dict)
    _failures: dict[PeerAddress, int] = field(default_factory=dict)
    _given_up: set[PeerAddress] = field(default_factory=set)

    def ended(self, address: PeerAddress, now: float, reason: str, *, productive: bool) -> None:
        """A connection to ``address`` (or a dial) ended.

        Args:
            address: the peer's listen address (never an incoming connection's source port).
            now: the current time.
            reason: the reason code of the ending; one of ``FINAL_REASONS`` gives up.
            productive: payload moved in either direction on the connection.
        """
        self._due.pop(address, None)
        if reason in FINAL_REASONS:
            self.give_up(address)
            return
        if address in self._given_up:
            return
        failures = 0 if productive else self._failures.get(address, 0) + 1
        if failures > self.max_failures:
            self.give_up(address)
            return
        self._failures[address] = failures
        self._due[address] = now + self.base_delay * 2 ** max(0, failures - 1)

    def give_up(self, address: PeerAddress) -> None:
        """Never dial ``address`` again (until ``clear``)."""
        self._due.pop(address, None)
        self._failures.pop(address, None)
        self._given_up.add(address)

    def given_up(self, address: PeerAddress) -> bool:
        return address in self._given_up

    def due(self, now: float) -> list[PeerAddress]:
        """The addresses whose wait is over, oldest first; each is returned once."""
        ready = [address for address, when in self._due.items() if when <= now]
        ready.sort(key=self._due.__getitem__)
        for address in ready:
            del self._due[address]
        return ready

    def waiting(self) -> Iterable[PeerAddress]:
        """Addresses with a redial scheduled."""
        return self._due.keys()

    def clear(self) -> None:
        """Forget everything (the torrent stopped; its next start begins afresh)."""
        self._due.clear()
        self._failures.clear()
        self._given_up.clear()
