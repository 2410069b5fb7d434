"""Which address the peer agent announces for incoming peers (``AgentInfo.listen_address``).

Strategy: the coordinator hands this address to trackers and to other agents, so it must be one
that other hosts can dial. In order of preference:

1. ``[peer_agent] advertise_host``, when set (an IP address, or a name resolved at start);
2. ``listen_host``, when it names one concrete address (not a wildcard);
3. the local address the kernel would use to reach the coordinator's host: a UDP socket is
   "connected" to it (which only picks a route, no packet is sent) and asked for its own
   address. An ipc or inproc coordinator is on this host: loopback.

The port is always the listener's bound port. Computed again at each ``AgentInfo`` (every
``Welcome``), so a host whose addresses changed announces the new one after a re-registration.

Rules:
- A wrong ``advertise_host`` is the user's to fix: ``ConfigError`` at start, one line.
- Anything else that fails (no route to the coordinator) is logged and announces no address:
  the agent still dials out.
"""

from __future__ import annotations

import contextlib
import logging
import socket

from shared.endpoints import parse_endpoint
from shared.errors import ConfigError
from shared.types import PeerAddress

from .torrents import normalize_host

__all__ = ["WILDCARDS", "Advertiser", "coordinator_host", "resolve_advertise_host"]

log = logging.getLogger(__name__)

WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})
"""``listen_host`` values that mean every local address."""
_DISCARD_PORT = 9  # any port will do: connecting a UDP socket sends nothing


def resolve_advertise_host(host: str) -> str:
    """``[peer_agent] advertise_host`` as an IP address (a name is resolved once, now).

    Raises:
        ConfigError: ``bad_advertise_host``: a wildcard, or a name that does not resolve.
    """
    if host in WILDCARDS:
        raise ConfigError(
            "bad_advertise_host",
            f"[peer_agent] advertise_host must be an address other hosts can dial, not {host!r}",
        )
    address = normalize_host(host)
    if address is not None:
        return address
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise ConfigError(
            "bad_advertise_host", f"[peer_agent] advertise_host {host!r} does not resolve: {exc}"
        ) from None
    for *_, sockaddr in infos:
        address = normalize_host(str(sockaddr[0]))
        if address is not None:
            return address
    raise ConfigError("bad_advertise_host", f"[peer_agent] advertise_host {host!r} has no address")


def coordinator_host(endpoint: str) -> str | None:
    """The host part of a ``tcp://HOST:PORT`` endpoint (brackets of IPv6 removed); None for
    an endpoint on this host (ipc, inproc) or one without a host."""
    try:
        parts = parse_endpoint(endpoint)
    except ConfigError:
        return None
    return parts.host or None


class Advertiser:
    """Computes the announced address for a listener's port.

    Args:
        advertise_host: the resolved ``advertise_host`` ("" when not set).
        listen_host: ``[peer_agent] listen_host``.
        coordinator: the coordinator's bus endpoint.
    """

    def __init__(self, advertise_host: str, listen_host: str, coordinator: str) -> None:
        self._fixed = advertise_host or (
            normalize_host(listen_host) if listen_host not in WILDCARDS else None
        )
        self._ipv6_listener = ":" in listen_host
        self._coordinator = coordinator
        self._warned = False

    def address(self, port: int) -> PeerAddress | None:
        """Where peers reach the listener bound at ``port``; None if that cannot be told."""
        host = self._fixed or self._route_to_coordinator()
        if host is None:
            return None
        return PeerAddress(host, port)

    def _route_to_coordinator(self) -> str | None:
        target = coordinator_host(self._coordinator)
        if target is None:
            return "::1" if self._ipv6_listener else "127.0.0.1"
        # An IPv4 listener only takes IPv4 peers; an IPv6 wildcard takes both (dual stack).
        family = socket.AF_UNSPEC if self._ipv6_listener else socket.AF_INET
        try:
            infos = socket.getaddrinfo(target, _DISCARD_PORT, family, socket.SOCK_DGRAM)
            for family_, kind, proto, _, sockaddr in infos:
                with contextlib.closing(socket.socket(family_, kind, proto)) as probe:
                    probe.connect(sockaddr)
                    host = normalize_host(str(probe.getsockname()[0]))
                if host is not None:
                    return host
        except (OSError, UnicodeError) as exc:
            if not self._warned:
                self._warned = True
                log.warning(
                    "cannot tell which address peers reach this agent at (no route to the "
                    "coordinator's host %s: %s): set [peer_agent] advertise_host",
                    target,
                    exc,
                )
        return None
