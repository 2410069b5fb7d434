"""Who gets a connection slot of a torrent: a cap per host, a share for our dials, replacement.

Strategy: a pure policy the ``Registry`` consults before it admits a connection. It sees the
torrent's connections as ``Occupant`` rows (key, host, direction, when each was last useful)
and the clock, and answers ``Admit`` (perhaps naming an idle connection to close for the
newcomer) or ``Refuse``. Nothing here keeps state; the registry records usefulness as the
agent observes its sessions (``Registry.observe``).

Rules (libtorrent's ``attach_peer`` in spirit):
- One host holds at most ``max_per_host`` connections of a torrent, counted in both
  directions, so one address cannot fill the torrent's slots. Only incoming connections are
  refused for it: the coordinator chooses whom we dial.
- Incoming connections hold at most ``max_incoming`` of the ``max_per_torrent`` slots: the
  rest (``outgoing_share``, rounded down) stays for the peers the coordinator dials.
- A connection is idle while neither side is interested and no payload moves either way; one
  idle for ``replace_after`` seconds or more may be replaced. An incoming peer that finds the
  agent, the torrent or the incoming share full takes the slot of the connection of the same
  torrent idle longest (an incoming one when the incoming share is what is full; ties go to
  the host holding the most connections). Without such a connection it is refused.
- Outgoing dials never replace anyone: they are refused when the agent or the torrent is full.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_PER_HOST",
    "DEFAULT_OUTGOING_SHARE",
    "DEFAULT_REPLACE_AFTER",
    "Admit",
    "Occupant",
    "Refuse",
    "SlotLimits",
    "Verdict",
    "decide",
    "least_useful",
]

DEFAULT_MAX_PER_HOST = 4
"""Connections of one torrent with one IP address: a NAT hides a few peers, an attacker many."""
DEFAULT_OUTGOING_SHARE = 0.2
"""Share of a torrent's slots kept for the peers we dial."""
DEFAULT_REPLACE_AFTER = 60.0
"""Seconds without interest either way and without payload before a connection may be replaced."""


@dataclass(frozen=True, slots=True)
class SlotLimits:
    """The limits of one agent.

    Raises:
        ValueError: a limit below one, a share outside [0, 1), a negative delay.
    """

    max_connections: int = 200
    """Connections of the whole agent."""
    max_per_torrent: int = 100
    max_per_host: int = DEFAULT_MAX_PER_HOST
    outgoing_share: float = DEFAULT_OUTGOING_SHARE
    replace_after: float = DEFAULT_REPLACE_AFTER

    def __post_init__(self) -> None:
        if min(self.max_connections, self.max_per_torrent, self.max_per_host) < 1:
            raise ValueError("an agent holds at least one connection, per torrent and per host")
        if not 0.0 <= self.outgoing_share < 1.0:
            raise ValueError(f"outgoing_share must be in [0, 1), not {self.outgoing_share}")
        if not self.replace_after >= 0.0:
            raise ValueError(f"replace_after must be 0 or more seconds, not {self.replace_after}")

    @property
    def max_incoming(self) -> int:
        """Slots of a torrent incoming connections may hold (at least one)."""
        return self.max_per_torrent - int(self.max_per_torrent * self.outgoing_share)


@dataclass(frozen=True, slots=True)
class Occupant:
    """One connection of the torrent, as the policy sees it."""

    key: str
    host: str
    """The peer's IP address, normalised (``shared.types.normalize_host``)."""
    incoming: bool
    useful_at: float
    """The last time either side was interested or payload moved (its opening at first)."""


@dataclass(frozen=True, slots=True)
class Admit:
    replace: str | None = None
    """The key of the idle connection to close for the newcomer, if the slots are full."""


@dataclass(frozen=True, slots=True)
class Refuse:
    reason: str
    """``too_many_from_host``, ``too_many_connections``, ``too_many_for_torrent`` or
    ``too_many_incoming``."""
    message: str


Verdict = Admit | Refuse


def decide(
    limits: SlotLimits,
    occupants: Sequence[Occupant],
    agent_total: int,
    host: str,
    *,
    incoming: bool,
    now: float,
    may_replace: bool = True,
) -> Verdict:
    """Decide about a new connection of a torrent.

    Args:
        limits: the agent's limits.
        occupants: the torrent's live connections.
        agent_total: the agent's live connections, every torrent included.
        host: the new peer's normalised IP address.
        incoming: whether the peer dialled us.
        now: the clock.
        may_replace: whether an idle connection may make room (else a full one refuses).

    Returns:
        ``Admit`` (with the connection to replace, if any) or ``Refuse``.
    """
    if incoming:
        same_host = sum(1 for occupant in occupants if occupant.host == host)
        if same_host >= limits.max_per_host:
            return Refuse(
                "too_many_from_host",
                f"{host} already holds {same_host} connections of this torrent",
            )
    full: Refuse | None = None
    incoming_only = False
    if agent_total >= limits.max_connections:
        full = Refuse(
            "too_many_connections",
            f"this agent already holds {limits.max_connections} connections",
        )
    elif len(occupants) >= limits.max_per_torrent:
        full = Refuse(
            "too_many_for_torrent",
            f"this agent already holds {limits.max_per_torrent} connections for the torrent",
        )
    if incoming and sum(1 for occupant in occupants if occupant.incoming) >= limits.max_incoming:
        incoming_only = True
        full = full or Refuse(
            "too_many_incoming",
            f"incoming peers already hold {limits.max_incoming} connections of the torrent",
        )
    if full is None:
        return Admit()
    if not incoming or not may_replace:
        return full
    victim = least_useful(occupants, now, limits.replace_after, incoming_only=incoming_only)
    if victim is None:
        return full
    return Admit(replace=victim.key)


def least_useful(
    occupants: Sequence[Occupant], now: float, after: float, *, incoming_only: bool = False
) -> Occupant | None:
    """The connection idle longest, if one has been idle for ``after`` seconds or more.

    Args:
        occupants: the torrent's connections.
        now: the clock.
        after: seconds of idleness that make a connection replaceable.
        incoming_only: consider only connections the peer opened.

    Returns:
        The connection to replace, or None. Of equally idle ones, the one whose host holds the
        most connections.
    """
    hosts = Counter(occupant.host for occupant in occupants)
    candidates = [
        occupant
        for occupant in occupants
        if now - occupant.useful_at >= after and (occupant.incoming or not incoming_only)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda occupant: (occupant.useful_at, -hosts[occupant.host]))
