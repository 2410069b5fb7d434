"""Which peer agent dials the next peer: a pure policy over the agents' load.

Strategy: every peer agent gets a load score, and the lowest wins. The score adds two shares:

- connections over capacity (``AgentInfo.capacity``): an agent that holds 40 of its 200
  connections is at 0.2, one at 40 of 50 at 0.8;
- its transfer rate over the busiest agent's rate: the agent moving the most bytes is at 1.0,
  an idle one at 0.0. Connections differ a lot in what they carry (a seeder on a fast link
  against a trickle), so counting connections alone can pile the fast ones on one host.

A new agent has neither connections nor traffic, so it gets the next peers until it carries
its share; ties go to the agent with fewer connections, then the one that joined first. A full
agent (connections at capacity) is never chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Load", "choose"]

_NOMINAL_CAPACITY = 200


@dataclass(frozen=True, slots=True)
class Load:
    """What the policy knows of one peer agent."""

    connections: int
    """Connections open or being opened."""
    capacity: int
    """Most connections it holds (0: unknown yet, counted as unlimited)."""
    rate: float
    """Bytes per second, down and up, over all its connections."""


def choose(loads: Sequence[Load]) -> int | None:
    """The index of the agent to dial the next peer, or ``None`` when every agent is full.

    Args:
        loads: one entry per peer agent, in the order they joined.
    """
    busiest = max((load.rate for load in loads), default=0.0)
    best: tuple[float, int, int] | None = None
    for index, load in enumerate(loads):
        if load.capacity and load.connections >= load.capacity:
            continue
        key = (_score(load, busiest), load.connections, index)
        if best is None or key < best:
            best = key
    return None if best is None else best[2]


def _score(load: Load, busiest: float) -> float:
    # An agent that has not told its capacity yet is scored by its connections against a
    # nominal capacity, so it neither wins everything nor nothing.
    capacity = load.capacity or _NOMINAL_CAPACITY
    share = load.connections / capacity
    return share + (load.rate / busiest if busiest > 0 else 0.0)
