"""The version handshake: who is welcomed, who is rejected and why."""

from __future__ import annotations

import dataclasses

import pytest

from torviz.shared.bus import (
    BUS_PROTOCOL_VERSION,
    SCHEMA_DIGEST,
    HelloPolicy,
    Rejected,
    RejectReason,
    ServiceKind,
    Welcome,
    check_hello,
    check_identity,
    decode_message,
    encode_message,
    make_hello,
    raise_if_rejected,
)
from torviz.shared.errors import BusError

POLICY = HelloPolicy(
    service=ServiceKind.COORDINATOR,
    server_id="coord-1",
    accepts=frozenset({ServiceKind.PEER_AGENT, ServiceKind.TRACKER_AGENT}),
    heartbeat_interval=5.0,
)
HELLO = make_hello(ServiceKind.PEER_AGENT, "pa1", "host-a", 4242, ("fast",))


def test_make_hello_speaks_this_build() -> None:
    assert HELLO.protocol_version == BUS_PROTOCOL_VERSION
    assert HELLO.schema_digest == SCHEMA_DIGEST
    assert len(SCHEMA_DIGEST) == 16
    assert HELLO.service == "peer_agent"
    assert decode_message(encode_message(HELLO)) == HELLO


def test_an_accepted_hello_is_welcomed() -> None:
    answer = check_hello(HELLO, POLICY)
    assert answer == Welcome(
        protocol_version=BUS_PROTOCOL_VERSION,
        service="coordinator",
        server_id="coord-1",
        heartbeat_interval=5.0,
    )
    assert raise_if_rejected(answer) is answer


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        (
            {"protocol_version": BUS_PROTOCOL_VERSION + 1},
            "version_mismatch",
            [
                "peer_agent 'pa1' on host-a (pid 4242)",
                f"version {BUS_PROTOCOL_VERSION + 1}",
                f"speaks version {BUS_PROTOCOL_VERSION}",
            ],
        ),
        ({"protocol_version": 0}, "version_mismatch", ["version 0"]),
        (
            {"schema_digest": "ffffffffffffffff"},
            "schema_mismatch",
            ["ffffffffffffffff", SCHEMA_DIGEST],
        ),
        ({"service": "storage_agent"}, "service_not_accepted", ["peer_agent, tracker_agent"]),
        ({"service": "toaster"}, "service_not_accepted", ["toaster"]),
    ],
    ids=["newer", "older", "digest", "not accepted", "unknown kind"],
)
def test_a_mismatched_hello_is_rejected_naming_both_sides(
    change: dict[str, object], reason: str, words: list[str]
) -> None:
    answer = check_hello(dataclasses.replace(HELLO, **change), POLICY)  # type: ignore[arg-type]
    assert isinstance(answer, Rejected)
    assert answer.reason == reason
    for word in words:
        assert word in answer.message
    with pytest.raises(BusError) as caught:
        raise_if_rejected(answer)
    assert caught.value.reason == reason
    assert str(caught.value) == answer.message


def test_version_is_checked_before_the_digest() -> None:
    other = dataclasses.replace(
        HELLO, protocol_version=BUS_PROTOCOL_VERSION + 1, schema_digest="0" * 16
    )
    answer = check_hello(other, POLICY)
    assert isinstance(answer, Rejected) and answer.reason == "version_mismatch"


# --- a key's role -----------------------------------------------------------------------

PEER_AS_STORAGE = (
    "the key 'peer-1' is a peer agent's key: it cannot register as the storage agent (make a "
    "storage key with `keys init storage`)"
)


@pytest.mark.parametrize(
    ("service", "agent_id", "key_name", "key_role", "refusal"),
    [
        # A key registers as the kind of its role only.
        (ServiceKind.STORAGE_AGENT, "peer-1", "peer-1", "peer_agent", PEER_AS_STORAGE),
        (
            ServiceKind.TRACKER_AGENT,
            "peer-1",
            "peer-1",
            "peer_agent",
            "the key 'peer-1' is a peer agent's key: it cannot register as the tracker agent "
            "(make a tracker key with `keys init tracker`)",
        ),
        (
            ServiceKind.PEER_AGENT,
            "storage",
            "storage",
            "storage_agent",
            "the key 'storage' is a storage agent's key: it cannot register as a peer agent "
            "(make a peer key with `keys init peer:NAME`)",
        ),
        (ServiceKind.STORAGE_AGENT, "storage", "storage", "storage_agent", None),
        (ServiceKind.TRACKER_AGENT, "tracker-2", "tracker-2", "tracker_agent", None),
        (ServiceKind.PEER_AGENT, "peer-agents-h-1", "peer-agents", "peer_agent", None),
        # The endpoint's own key and the coordinator's may be any agent.
        (ServiceKind.STORAGE_AGENT, "storage_agent-9-1", "own", "peer_agent", None),
        (ServiceKind.STORAGE_AGENT, "coordinator-x", "coordinator", "coordinator", None),
        # No role known (no CURVE): only the name is checked, as before.
        (ServiceKind.STORAGE_AGENT, "peer-1", "peer-1", None, None),
        # ZeroMQ gave no role although the key is named: refused, never taken as any role.
        (
            ServiceKind.STORAGE_AGENT,
            "peer-1",
            "peer-1",
            "",
            "the key 'peer-1' is a key of no agent (''): it cannot register as the storage "
            "agent (make a storage key with `keys init storage`)",
        ),
    ],
)
def test_a_key_registers_only_as_its_role(
    service: ServiceKind, agent_id: str, key_name: str, key_role: str | None, refusal: str | None
) -> None:
    hello = make_hello(service, agent_id, "host-a", 1)
    answer = check_identity(hello, agent_id.encode(), key_name, "own", key_role)
    if refusal is None:
        assert answer is None
    else:
        assert answer == Rejected(RejectReason.IDENTITY_NOT_ALLOWED, refusal)


def test_the_role_is_checked_before_the_name() -> None:
    """A peer key claiming the storage agent's id hears about its role, the reason to fix."""
    hello = make_hello(ServiceKind.STORAGE_AGENT, "storage", "host-a", 1)
    answer = check_identity(hello, b"storage", "peer-1", "coordinator", "peer_agent")
    assert answer is not None and answer.message.startswith("the key 'peer-1' is a peer agent's")
