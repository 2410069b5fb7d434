"""Routing identities: one per agent process (``"<agent id>/<incarnation>"``), and the CURVE
endpoint's check that a caller's routing identity belongs to the agent its Hello names."""

from __future__ import annotations

import pytest

from torviz.shared.bus import Rejected, ServiceKind, make_hello
from torviz.shared.bus.hello import (
    MAX_ROUTING_IDENTITY,
    check_identity,
    is_routing_identity,
    routing_identity,
)

HELLO = make_hello(ServiceKind.PEER_AGENT, "peer-1", "host-a", 42)


def test_a_routing_identity_is_the_agent_id_and_the_incarnation() -> None:
    assert routing_identity("peer-1", "0a1b2c3d") == "peer-1/0a1b2c3d"


@pytest.mark.parametrize("incarnation", ["", "a/b"])
def test_an_incarnation_is_a_token_without_a_slash(incarnation: str) -> None:
    with pytest.raises(ValueError, match="incarnation"):
        routing_identity("peer-1", incarnation)


def test_a_routing_identity_fits_in_zeromq() -> None:
    longest = "p" * (MAX_ROUTING_IDENTITY - 9)
    assert len(routing_identity(longest, "0a1b2c3d")) == MAX_ROUTING_IDENTITY
    with pytest.raises(ValueError, match="too long"):
        routing_identity(longest + "p", "0a1b2c3d")


@pytest.mark.parametrize(
    ("routing_id", "allowed"),
    [
        (b"peer-1", True),  # the agent id itself (the CLI, older callers)
        (b"peer-1/0a1b2c3d", True),  # one process of peer-1
        (b"peer-1/", False),  # no incarnation
        (b"peer-1/a/b", False),  # the identity of a process of agent "peer-1/a"
        (b"peer-10/0a1b2c3d", False),  # another agent whose id starts the same
        (b"other/0a1b2c3d", False),
        (b"peer-", False),
    ],
)
def test_a_routing_identity_belongs_to_one_agent(routing_id: bytes, allowed: bool) -> None:
    assert is_routing_identity(routing_id, "peer-1") is allowed


def test_check_identity_accepts_a_process_of_the_agent_and_refuses_another() -> None:
    assert check_identity(HELLO, b"peer-1/0a1b2c3d", "peer-1", "coordinator") is None
    assert check_identity(HELLO, b"peer-1", "peer-1", "coordinator") is None
    refusal = check_identity(HELLO, b"other/0a1b2c3d", "peer-1", "coordinator")
    assert isinstance(refusal, Rejected)
    assert refusal.reason == "identity_not_allowed"
    assert "another routing identity" in refusal.message
