"""Which address the peer agent announces for incoming peers (``AgentInfo.listen_address``).

Strategy: the coordinator hands this address to trackers and to other agents, so it must be one
that other hosts can dial. The host follows the rule every agent shares
(``shared.runtime.address``): ``[peer_agent] advertise_host`` when set, else ``listen_host``
when it names one concrete address, else the local address this host uses to reach the
coordinator (loopback for an ipc coordinator). The port is always the listener's bound port.
A tracker agent on the same host finds the same address by the same rule, which is how the
coordinator pairs them (``services/coordinator/core/announcers.py``).

Rules:
- A wrong ``advertise_host`` is the user's to fix: ``ConfigError`` at start, one line.
- Anything else that fails (no route to the coordinator) is logged and announces no address:
  the agent still dials out.
"""

from __future__ import annotations

from torviz.shared.runtime.address import WILDCARDS, HostAdvertiser, coordinator_host, resolve_host
from torviz.shared.types import PeerAddress

__all__ = ["WILDCARDS", "Advertiser", "coordinator_host", "resolve_advertise_host"]

_KEY = "[peer_agent] advertise_host"


def resolve_advertise_host(host: str) -> str:
    """``[peer_agent] advertise_host`` as an IP address (a name is resolved once, now).

    Raises:
        ConfigError: ``bad_advertise_host``: a wildcard, or a name that does not resolve.
    """
    return resolve_host(host, _KEY)


class Advertiser:
    """Computes the announced address for a listener's port.

    Args:
        advertise_host: the resolved ``advertise_host`` ("" when not set).
        listen_host: ``[peer_agent] listen_host``.
        coordinator: the coordinator's bus endpoint.
    """

    def __init__(self, advertise_host: str, listen_host: str, coordinator: str) -> None:
        self._host = HostAdvertiser(advertise_host, listen_host, coordinator, _KEY)

    def address(self, port: int) -> PeerAddress | None:
        """Where peers reach the listener bound at ``port``; None if that cannot be told."""
        host = self._host.host()
        return None if host is None else PeerAddress(host, port)
