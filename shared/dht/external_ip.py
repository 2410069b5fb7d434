"""Our external address as other nodes see it (BEP 42 ``ip``), decided by distinct voters.

Strategy: every answer to one of our queries may carry ``ip``, the address our packet came from
as the responder saw it. One node can lie, so a candidate address wins only once ``needed``
distinct responder IPs named it and it holds a strict majority of the votes of the round. A
decision ends the round; a later round may decide another address (we moved, a NAT rebooted).

Rules:
- One vote per responder IP per round (its first); a round keeps at most ``max_candidates``
  candidates and ``max_voters`` voters, so a flood of answers costs bounded memory.
- A round that fills up without a decision starts over.
- Only the IP matters, not the port (a NAT may map every flow to another port).
"""

from __future__ import annotations

__all__ = ["AddressVotes"]


class AddressVotes:
    """The votes of one round, and the address decided last."""

    def __init__(self, *, needed: int = 3, max_candidates: int = 16, max_voters: int = 64) -> None:
        """No votes yet.

        Args:
            needed: Distinct voters an address needs to win.
            max_candidates: Addresses tracked in one round.
            max_voters: Voters counted in one round.

        Raises:
            ValueError: ``needed`` below 1 or above ``max_voters``.
        """
        if not 1 <= needed <= max_voters:
            raise ValueError("an external address needs 1..max_voters votes")
        self.needed = needed
        self.max_candidates = max_candidates
        self.max_voters = max_voters
        self.decided: str | None = None
        self._votes: dict[str, set[str]] = {}
        self._voters: set[str] = set()

    def vote(self, candidate: str, voter: str) -> str | None:
        """Count one responder's view of our address.

        Args:
            candidate: The IP the responder says we have.
            voter: The responder's own IP.

        Returns:
            The address when this vote decided one that differs from the last decided; else None.
        """
        if voter in self._voters:
            return None
        if candidate not in self._votes and len(self._votes) >= self.max_candidates:
            self._new_round()
            return None
        self._voters.add(voter)
        self._votes.setdefault(candidate, set()).add(voter)
        count = len(self._votes[candidate])
        if count >= self.needed and 2 * count > len(self._voters):
            self._new_round()
            if candidate != self.decided:
                self.decided = candidate
                return candidate
            return None
        if len(self._voters) >= self.max_voters:
            self._new_round()
        return None

    def _new_round(self) -> None:
        self._votes.clear()
        self._voters.clear()
