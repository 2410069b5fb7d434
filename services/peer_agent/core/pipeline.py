"""How many block requests to keep outstanding with one peer.

Too few and a fast link idles between round trips; too many and a slow peer holds blocks hostage
that another could deliver, or drops requests beyond its own queue limit (libtorrent drops
requests past ``max_allowed_in_request_queue`` from peers without the fast extension, and we
would wait for them forever). So the depth follows the rate (enough blocks to cover
``queue_time`` seconds of transfer, as libtorrent's ``request_queue_time``) between a floor
and the smaller of our cap and the peer's advertised ``reqq``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PEER_DEFAULT_REQQ", "QueueDepthPolicy"]

PEER_DEFAULT_REQQ = 250
"""What we assume a peer accepts when its extension handshake names no ``reqq``
(libtorrent's historic default; BEP 10 suggests peers default to 250 as well)."""


@dataclass(frozen=True, slots=True)
class QueueDepthPolicy:
    minimum: int = 16
    """Outstanding requests before any rate is known: 256 KiB in flight."""
    maximum: int = 500
    """Our own cap, whatever the peer claims."""
    queue_time: float = 3.0
    """Seconds of transfer at the current rate to keep requested."""
    block_size: int = 16384

    def depth(self, rate: float, peer_reqq: int | None) -> int:
        """Outstanding requests to aim for.

        Args:
            rate: bytes per second currently received from the peer.
            peer_reqq: the ``reqq`` of the peer's extension handshake, if any.
        """
        ceiling = min(self.maximum, peer_reqq if peer_reqq else PEER_DEFAULT_REQQ)
        wanted = int(rate * self.queue_time / self.block_size)
        return max(1, min(ceiling, max(self.minimum, wanted)))
