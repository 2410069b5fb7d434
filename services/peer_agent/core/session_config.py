"""The settings of every peer session: limits, timers and what we tell peers about us.

The agent builds one from its ``[peer_agent]`` section (``settings.py``); tests pass their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torviz.shared.bus import MAX_METADATA_BYTES

from .extensions import default_client_name
from .pipeline import QueueDepthPolicy

__all__ = ["SessionConfig"]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    client_name: str = field(default_factory=default_client_name)
    """Our ``v`` in the extension handshake (``torviz <version>``)."""
    listen_port: int = 0
    """Our ``p`` in the extension handshake; 0 leaves it out."""
    our_reqq: int = 500
    """How many requests we queue for a peer (our ``reqq``)."""
    pipeline: QueueDepthPolicy = field(default_factory=QueueDepthPolicy)
    handshake_timeout: float = 20.0
    keepalive_interval: float = 110.0
    idle_timeout: float = 180.0
    request_timeout: float = 30.0
    snub_timeout: float = 60.0
    """Seconds without a block, while the peer unchokes us and we wait, before it is snubbed."""
    uninterested_timeout: float = 600.0
    """Seconds in which neither side is interested before the connection is closed."""
    max_rejects_per_piece: int = 3
    allowed_fast_count: int = 10
    """Pieces in the allowed-fast set we grant a peer with fewer pieces than that (BEP 6 k)."""
    max_bad_requests: int = 250
    """Requests we cannot serve (malformed, pieces we lack) tolerated from a peer with the
    fast extension before it is disconnected; also requests beyond our reqq tolerated from a
    peer that was told it (see ``upload.py``)."""
    max_metadata_size: int = MAX_METADATA_BYTES
    """The largest info dictionary (``total_size``) accepted from a peer, in bytes."""
    allocate: Callable[[int], bytearray] = bytearray
    """Makes piece buffers. Blocks overwrite every byte before a buffer leaves (an unfinished
    one is dropped), so an allocator that skips zeroing is safe."""
