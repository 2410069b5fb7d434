"""Which endpoints are local and which are tcp (those need keys), and which strings are
refused (a table each)."""

from __future__ import annotations

import pytest

from torviz.shared.endpoints import MAX_ENDPOINT, Endpoint, is_local, is_tcp, parse_endpoint
from torviz.shared.errors import ConfigError


@pytest.mark.parametrize(
    ("endpoint", "local", "tcp"),
    [
        ("ipc:///run/user/1000/torviz/bus.sock", True, False),
        ("inproc://zeromq.zap.01", True, False),
        ("tcp://127.0.0.1:7700", True, True),
        ("tcp://127.0.0.1:*", True, True),
        ("tcp://127.213.7.3:0", True, True),
        ("tcp://127.255.255.254:65535", True, True),
        ("tcp://localhost:7700", True, True),
        ("tcp://LocalHost:7700", True, True),
        ("tcp://[::1]:7700", True, True),
        ("tcp://::1:7700", True, True),
        ("tcp://[::ffff:127.0.0.1]:7700", True, True),
        ("TCP://127.0.0.1:7700", True, True),
        ("tcp://0.0.0.0:7700", False, True),
        ("tcp://*:7700", False, True),
        ("tcp://*:*", False, True),
        ("tcp://[::]:7700", False, True),
        ("tcp://:::7700", False, True),
        ("tcp://10.213.7.3:7700", False, True),
        ("tcp://128.0.0.1:7700", False, True),
        ("tcp://[::2]:7700", False, True),
        ("tcp://[::ffff:10.0.0.1]:7700", False, True),
        ("tcp://example.org:7700", False, True),
        ("tcp://localhost.localdomain:7700", False, True),
        ("tcp://127.1:7700", False, True),  # a name to libzmq's resolver: not trusted
        ("tcp://lo:7700", False, True),  # an interface name
        ("tcp://eth0:7700", False, True),
    ],
)
def test_locality_table(endpoint: str, local: bool, tcp: bool) -> None:
    assert is_local(endpoint) is local
    assert is_tcp(endpoint) is tcp


def test_parts() -> None:
    assert parse_endpoint("tcp://[::1]:7700") == Endpoint("tcp", host="::1", port="7700")
    assert parse_endpoint("tcp://Example.ORG:*") == Endpoint("tcp", host="example.org", port="*")
    assert parse_endpoint("ipc:///tmp/a.sock") == Endpoint("ipc", path="/tmp/a.sock")
    assert parse_endpoint("inproc://x") == Endpoint("inproc", path="x")


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("", "bad_endpoint"),
        ("127.0.0.1:7700", "bad_endpoint"),
        ("://127.0.0.1:7700", "bad_endpoint"),
        ("tcp://", "bad_endpoint"),
        ("ipc://", "bad_endpoint"),
        ("ipc://@abstract-name", "abstract_ipc"),  # no owner, no mode: open to every user
        ("udp://127.0.0.1:7700", "unsupported_transport"),
        ("pgm://eth0;239.192.1.1:5555", "unsupported_transport"),
        ("ws://127.0.0.1:80", "unsupported_transport"),
        ("tcp://127.0.0.1", "bad_tcp_endpoint"),
        ("tcp://127.0.0.1:", "bad_tcp_endpoint"),
        ("tcp://:7700", "bad_tcp_endpoint"),
        ("tcp://127.0.0.1:65536", "bad_tcp_endpoint"),
        ("tcp://127.0.0.1:-1", "bad_tcp_endpoint"),
        ("tcp://127.0.0.1:77a", "bad_tcp_endpoint"),
        ("tcp://127.0.0.1:\u0661\u0662", "bad_tcp_endpoint"),  # Arabic-Indic digits
        ("tcp://[::1]", "bad_tcp_endpoint"),
        ("tcp://[]:7700", "bad_tcp_endpoint"),
        ("tcp://[::1:7700", "bad_tcp_endpoint"),
        ("tcp://10.0.0.2:5555;127.0.0.1:5555", "bad_tcp_endpoint"),
        ("tcp://127.0.0.1:" + "1" * MAX_ENDPOINT, "endpoint_too_long"),
    ],
)
def test_malformed_endpoints(endpoint: str, reason: str) -> None:
    for check in (is_local, is_tcp, parse_endpoint):
        with pytest.raises(ConfigError) as caught:
            check(endpoint)
        assert caught.value.reason == reason
        assert "\n" not in str(caught.value)
        assert len(str(caught.value)) < 200


def test_a_long_endpoint_is_shortened_in_the_message() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_endpoint("udp://" + "x" * 500)
    assert len(str(caught.value)) < 200
