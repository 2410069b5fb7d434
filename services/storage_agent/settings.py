"""How one storage agent runs: its endpoints, limits and resume state, from its command line and
its ``[storage_agent]`` config section (``__main__`` builds it; the actor only reads it).

Rules: frozen; every field has a unit and a default; ``__post_init__`` refuses values the agent
cannot run with (``ValueError``, turned into a one-line error by ``__main__``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torviz.shared.runtime.curve import CurveClient, CurveServer

__all__ = ["AgentSettings"]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """How one storage agent runs (from its command line and ``[storage_agent]`` config)."""

    agent_id: str
    """Unique name; the bus DEALER's routing id."""
    bus: str
    """The coordinator's bus endpoint."""
    data: str
    """Endpoint to bind for peer agents (``tcp://127.0.0.1:*`` picks a port). A wildcard
    host (``tcp://0.0.0.0:7701``) is announced with the address this host uses to reach the
    coordinator."""
    bus_curve: CurveClient | None = None
    """CURVE keys of the link to the coordinator; None: plain (ipc, or no keys folder)."""
    data_curve: CurveServer | None = None
    """CURVE keys of the data endpoint (it admits ``<keys_dir>/authorized``); None: plain."""
    heartbeat_misses: int = 3
    """Heartbeat intervals of silence after which the coordinator counts as lost
    (``[coordinator] heartbeat_misses``)."""
    preallocate: bool = False
    """Reserve each file's full size when it is created."""
    hash_threads: int = 2
    """Worker threads hashing and writing pieces (and rechecking)."""
    pieces_in_flight: int = 0
    """Pieces being hashed or written at once; 0: twice ``hash_threads``, at least 4."""
    reads_in_flight: int = 64
    """Block reads running at once."""
    data_hwm: int = 64
    """ZeroMQ high-water mark of the data socket, in messages per peer agent."""
    data_heartbeat: float = 10.0
    """Seconds between heartbeats told to peer agents in ``Welcome``."""
    stop_timeout: float = 2.0
    """Seconds to finish pieces in flight and flush every torrent when stopping."""
    state_dir: str | None = None
    """Folder of the resume database (``resume.sqlite``); None: no resume state is kept, every
    open checks the files on disk."""
    flush_interval: float = 5.0
    """Seconds between two flushes of the written pieces and their resume record (with
    ``state_dir`` only): the most a crash of the agent can take from the record."""

    def __post_init__(self) -> None:
        if self.hash_threads < 1 or self.reads_in_flight < 1 or self.data_hwm < 1:
            raise ValueError("hash_threads, reads_in_flight and data_hwm are at least 1")
        if self.heartbeat_misses < 1:
            raise ValueError(f"heartbeat_misses must be at least 1, not {self.heartbeat_misses}")
        if self.pieces_in_flight < 0:
            raise ValueError("pieces_in_flight is never negative")
        if not (math.isfinite(self.flush_interval) and self.flush_interval > 0):
            raise ValueError(f"flush_interval must be a positive number, not {self.flush_interval}")

    @property
    def piece_slots(self) -> int:
        """Pieces hashed or written at once (the capacity told to the coordinator)."""
        return self.pieces_in_flight or max(4, 2 * self.hash_threads)
