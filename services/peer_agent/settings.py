"""How one peer agent runs: its settings, and the session settings its connections share.

Strategy: ``__main__`` builds one frozen ``AgentSettings`` from the command line, the config
file and the key files (checked there, before any actor starts); the actor only reads it.
``session_config`` turns ``[peer_agent]`` into the ``SessionConfig`` every connection's
session gets, with a piece-buffer allocator that skips zeroing (see ``_unzeroed_bytearray``).
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from torviz.shared.config import PeerAgentConfig
from torviz.shared.runtime.curve import CurveClient, KeyPair

from .connection import CONNECT_TIMEOUT
from .core.extensions import default_client_name
from .core.pipeline import QueueDepthPolicy
from .core.session import SessionConfig
from .core.torrents import DEFAULT_MAX_CONNECTIONS

__all__ = ["AgentSettings", "session_config"]


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """What one peer agent process runs with."""

    agent_id: str
    """Unique among peer agents: the bus routing id and the prefix of every peer key."""
    bus_endpoint: str
    """The coordinator's bus."""
    config: PeerAgentConfig = field(default_factory=PeerAgentConfig)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Connections held at once; announced as the agent's capacity."""
    connect_timeout: float = CONNECT_TIMEOUT
    heartbeat_misses: int = 3
    """Heartbeat intervals of silence after which the coordinator counts as lost."""
    advertise_host: str = ""
    """``[peer_agent] advertise_host`` resolved to an IP address ("" when not set)."""
    curve: CurveClient | None = None
    """CURVE keys of the coordinator link; None: plain."""
    keys: KeyPair | None = None
    """The agent's own key pair, for storage endpoints that name a CURVE public key."""
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


def _unzeroed_bytearray() -> Callable[[int], bytearray]:
    """An allocator of piece buffers that skips zeroing them (CPython's
    ``PyByteArray_FromStringAndSize(NULL, n)``): the session overwrites every byte with
    received blocks before a buffer leaves, and zeroing costs a full pass over each piece.
    Falls back to ``bytearray`` where that API is not there."""
    try:
        make = ctypes.pythonapi.PyByteArray_FromStringAndSize
    except AttributeError:
        return bytearray
    make.restype = ctypes.py_object
    make.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)

    def allocate(size: int) -> bytearray:
        buffer: bytearray = make(None, size)
        return buffer

    return allocate


def session_config(config: PeerAgentConfig) -> SessionConfig:
    """The session settings of every connection (``listen_port`` is set once bound)."""
    return SessionConfig(
        client_name=default_client_name(),  # our `v`: torviz <version>
        our_reqq=max(1, config.max_peer_requests),
        pipeline=QueueDepthPolicy(maximum=config.max_request_queue),
        request_timeout=config.request_timeout,
        keepalive_interval=config.keepalive_interval,
        allocate=_unzeroed_bytearray(),
    )
