"""Which address of this host other hosts reach it at: what agents tell the coordinator.

Strategy: a peer agent tells the coordinator where peers dial it (``AgentInfo.listen_address``)
and a tracker agent where its announces leave from (``AgentInfo.announce_host``, the address
trackers record and hand out). Both follow one rule, in order of preference:

1. the configured ``advertise_host``, when set (an IP address, or a name resolved at start);
2. the address the service binds to, when it names one concrete address (not a wildcard);
3. the local address the kernel would use to reach the coordinator's host: a UDP socket is
   "connected" to it (which only picks a route, no packet is sent) and asked for its own
   address. An ipc or inproc coordinator is on this host: loopback.

Computed again at each ``AgentInfo`` (every ``Welcome``), so a host whose addresses changed
tells the new one after a re-registration.

Rules:
- A wrong ``advertise_host`` is the user's to fix: ``ConfigError`` at start, one line naming
  the config key.
- Anything else that fails (no route to the coordinator) is logged once and gives no address.
"""

from __future__ import annotations

import contextlib
import logging
import socket

from torviz.shared.endpoints import parse_endpoint
from torviz.shared.errors import ConfigError
from torviz.shared.types import normalize_host

__all__ = ["WILDCARDS", "HostAdvertiser", "coordinator_host", "resolve_host"]

log = logging.getLogger(__name__)

WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})
"""Bind addresses that mean every local address."""
_DISCARD_PORT = 9  # any port will do: connecting a UDP socket sends nothing


def resolve_host(host: str, key: str) -> str:
    """A configured ``advertise_host`` as an IP address (a name is resolved once, now).

    Args:
        host: the configured value.
        key: the config key, for the error (``[peer_agent] advertise_host``).

    Raises:
        ConfigError: ``bad_advertise_host``: a wildcard, or a name that does not resolve.
    """
    if host in WILDCARDS:
        raise ConfigError(
            "bad_advertise_host", f"{key} must be an address other hosts can dial, not {host!r}"
        )
    address = normalize_host(host)
    if address is not None:
        return address
    try:
        host.encode("idna")  # a malformed name fails here, before a lookup on a thread
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise ConfigError("bad_advertise_host", f"{key} {host!r} does not resolve: {exc}") from None
    for *_, sockaddr in infos:
        address = normalize_host(str(sockaddr[0]))
        if address is not None:
            return address
    raise ConfigError("bad_advertise_host", f"{key} {host!r} has no address")


def coordinator_host(endpoint: str) -> str | None:
    """The host part of a ``tcp://HOST:PORT`` endpoint (brackets of IPv6 removed); None for
    an endpoint on this host (ipc, inproc) or one without a host."""
    try:
        parts = parse_endpoint(endpoint)
    except ConfigError:
        return None
    return parts.host or None


class HostAdvertiser:
    """Tells the address of this host that other hosts reach a service at.

    Args:
        advertise_host: the resolved ``advertise_host`` ("" when not set).
        bind_host: the address the service binds to (a wildcard or "" for any).
        coordinator: the coordinator's bus endpoint.
        key: the config key to name in the warning (``[peer_agent] advertise_host``).
    """

    def __init__(self, advertise_host: str, bind_host: str, coordinator: str, key: str) -> None:
        self._fixed = advertise_host or (
            normalize_host(bind_host) if bind_host not in WILDCARDS else None
        )
        self._ipv6 = ":" in bind_host
        self._coordinator = coordinator
        self._key = key
        self._warned = False

    def host(self) -> str | None:
        """The address, or None if it cannot be told (no route to the coordinator)."""
        return self._fixed or self._route_to_coordinator()

    def _route_to_coordinator(self) -> str | None:
        target = coordinator_host(self._coordinator)
        if target is None:
            return "::1" if self._ipv6 else "127.0.0.1"
        # An IPv4 binding only takes IPv4 peers; an IPv6 wildcard takes both (dual stack).
        family = socket.AF_UNSPEC if self._ipv6 else socket.AF_INET
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
                    "cannot tell which address other hosts reach this agent at (no route to "
                    "the coordinator's host %s: %s): set %s",
                    target,
                    exc,
                    self._key,
                )
        return None
