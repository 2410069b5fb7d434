"""Which address the peer agent announces: the configured one, its listen host, or its route
to the coordinator (a connected UDP socket, which sends nothing; loopback only here)."""

from __future__ import annotations

import ipaddress

import pytest

from torviz.services.peer_agent.address import Advertiser, coordinator_host, resolve_advertise_host
from torviz.shared.errors import ConfigError
from torviz.shared.types import PeerAddress


@pytest.mark.parametrize(
    ("endpoint", "host"),
    [
        ("tcp://127.0.0.7:7700", "127.0.0.7"),
        ("tcp://[::1]:7700", "::1"),
        ("tcp://Coordinator.Example:7700", "coordinator.example"),
        ("ipc:///run/torviz/bus", None),
        ("inproc://bus", None),
        ("nonsense", None),
        ("tcp://:7700", None),
    ],
)
def test_the_coordinator_host_of_an_endpoint(endpoint: str, host: str | None) -> None:
    assert coordinator_host(endpoint) == host


def test_advertise_host_wins() -> None:
    advertiser = Advertiser("127.0.0.9", "127.0.0.8", "tcp://127.0.0.7:7700")
    assert advertiser.address(6881) == PeerAddress("127.0.0.9", 6881)


def test_a_concrete_listen_host_is_announced() -> None:
    advertiser = Advertiser("", "127.0.0.8", "tcp://127.0.0.7:7700")
    assert advertiser.address(6999) == PeerAddress("127.0.0.8", 6999)


@pytest.mark.parametrize("wildcard", ["", "0.0.0.0"])
def test_a_wildcard_listener_announces_its_route_to_the_coordinator(wildcard: str) -> None:
    advertiser = Advertiser("", wildcard, "tcp://127.0.0.7:7700")
    address = advertiser.address(6881)
    assert address is not None and address.port == 6881
    assert ipaddress.ip_address(address.host).is_loopback  # the route to a loopback address


def test_an_ipv6_wildcard_listener_reaches_an_ipv6_coordinator_over_ipv6() -> None:
    address = Advertiser("", "::", "tcp://[::1]:7700").address(6881)
    assert address == PeerAddress("::1", 6881)


@pytest.mark.parametrize(("listen_host", "expected"), [("0.0.0.0", "127.0.0.1"), ("::", "::1")])
def test_a_local_coordinator_means_loopback(listen_host: str, expected: str) -> None:
    advertiser = Advertiser("", listen_host, "ipc:///tmp/torviz-bus")
    assert advertiser.address(6881) == PeerAddress(expected, 6881)


def test_an_ipv4_listener_cannot_announce_a_route_over_ipv6() -> None:
    # Only an IPv6 route exists to the coordinator, and IPv4 peers could not use it.
    assert Advertiser("", "0.0.0.0", "tcp://[::1]:7700").address(6881) is None


@pytest.mark.parametrize(
    ("configured", "resolved"),
    [("127.0.0.5", "127.0.0.5"), ("::ffff:127.0.0.5", "127.0.0.5"), ("localhost", None)],
)
def test_advertise_host_is_resolved_once(configured: str, resolved: str | None) -> None:
    host = resolve_advertise_host(configured)
    if resolved is not None:
        assert host == resolved
    else:
        assert ipaddress.ip_address(host).is_loopback


# A label over 63 characters fails before any lookup: no name server is asked.
@pytest.mark.parametrize("bad", ["0.0.0.0", "::", "x" * 64 + ".example"])
def test_an_unusable_advertise_host_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_advertise_host(bad)
    assert caught.value.reason == "bad_advertise_host"
    assert "advertise_host" in str(caught.value)
