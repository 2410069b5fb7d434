"""The version handshake every bus connection starts with, as pure functions.

Strategy: the connecting side sends ``Hello`` (built by ``make_hello``) as its first message;
the bound side answers with whatever ``check_hello`` returns, ``Welcome`` or ``Rejected``, and
ignores every other message from that peer until a ``Hello`` is welcomed. ``Hello``, ``Welcome``
and ``Rejected`` never change layout, so this works across protocol versions.

Rules:
- The protocol version is checked first, then the schema digest (two builds with the same
  version but a different schema), then the service kind.
- A rejection names both sides' values so the user can see which host needs updating.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from torviz.shared.errors import BusError

from .codec import SCHEMA_DIGEST
from .schema import BUS_PROTOCOL_VERSION
from .schema.agents import Hello, Rejected, Welcome
from .vocabulary import RejectReason, ServiceKind

__all__ = [
    "MAX_ROUTING_IDENTITY",
    "SERVICE_KINDS",
    "HelloPolicy",
    "check_hello",
    "check_identity",
    "is_routing_identity",
    "make_hello",
    "raise_if_rejected",
    "routing_identity",
]

SERVICE_KINDS = frozenset(kind.value for kind in ServiceKind)
MAX_ROUTING_IDENTITY = 255
"""Bytes: ZeroMQ refuses a longer routing identity."""


@dataclass(frozen=True, slots=True)
class HelloPolicy:
    """What the bound side of an endpoint accepts and tells its callers."""

    service: ServiceKind
    """The answering service, e.g. ``ServiceKind.COORDINATOR``."""
    server_id: str
    """The answering process's id (shown in logs on both ends)."""
    accepts: Collection[ServiceKind]
    """Service kinds allowed to connect to this endpoint."""
    heartbeat_interval: float
    """Seconds between heartbeats, told to the caller in ``Welcome``."""


def make_hello(
    service: ServiceKind, agent_id: str, host: str, pid: int, capabilities: tuple[str, ...] = ()
) -> Hello:
    """The ``Hello`` this build sends: current protocol version and schema digest.

    Args:
        service: the caller's kind.
        agent_id: a name unique among the caller's kind (e.g. ``"peer-agent-2"``).
        host: the caller's host name, for logs.
        pid: the caller's process id, for logs.
        capabilities: optional feature names, for later use.
    """
    return Hello(
        protocol_version=BUS_PROTOCOL_VERSION,
        schema_digest=SCHEMA_DIGEST,
        service=service.value,
        agent_id=agent_id,
        host=host,
        pid=pid,
        capabilities=capabilities,
    )


def check_hello(hello: Hello, policy: HelloPolicy) -> Welcome | Rejected:
    """Decide whether a caller may use this endpoint.

    Args:
        hello: the caller's first message.
        policy: what this endpoint accepts.

    Returns:
        ``Welcome`` to send back, or ``Rejected`` whose ``reason`` is ``version_mismatch``,
        ``schema_mismatch`` or ``service_not_accepted``.
    """
    who = f"{hello.service} {hello.agent_id!r} on {hello.host} (pid {hello.pid})"
    if hello.protocol_version != BUS_PROTOCOL_VERSION:
        return Rejected(
            RejectReason.VERSION_MISMATCH,
            f"{who} speaks bus protocol version {hello.protocol_version}, but this "
            f"{policy.service.value} speaks version {BUS_PROTOCOL_VERSION}: run the same torviz "
            "release on every host",
        )
    if hello.schema_digest != SCHEMA_DIGEST:
        return Rejected(
            RejectReason.SCHEMA_MISMATCH,
            f"{who} has bus schema {hello.schema_digest}, but this {policy.service.value} has "
            f"{SCHEMA_DIGEST} (both say version {BUS_PROTOCOL_VERSION}): run the same torviz "
            "build on every host",
        )
    if hello.service not in SERVICE_KINDS or ServiceKind(hello.service) not in policy.accepts:
        accepted = ", ".join(sorted(kind.value for kind in policy.accepts))
        return Rejected(
            RejectReason.SERVICE_NOT_ACCEPTED,
            f"{who} may not connect to this {policy.service.value} endpoint (accepts: {accepted})",
        )
    return Welcome(
        protocol_version=BUS_PROTOCOL_VERSION,
        service=policy.service.value,
        server_id=policy.server_id,
        heartbeat_interval=policy.heartbeat_interval,
    )


def routing_identity(agent_id: str, incarnation: str) -> str:
    """The routing identity of one process of an agent: ``"<agent id>/<incarnation>"``.

    Each agent process picks its incarnation once at start, so two processes started with the
    same agent id (a unit copied to a second host) never take over each other's connections
    (every bound endpoint sets ``ROUTER_HANDOVER``, so that a reconnect of the same process takes
    over its own identity); the coordinator then tells a restart from a second live process.

    Args:
        agent_id: the agent's id.
        incarnation: a short random token of this process (no ``/``).

    Returns:
        The identity; at most 255 bytes, ZeroMQ's limit.

    Raises:
        ValueError: the incarnation is empty or holds a ``/``, or the identity is too long.
    """
    if not incarnation or "/" in incarnation:
        raise ValueError(f"an incarnation is a non-empty token without '/', not {incarnation!r}")
    identity = f"{agent_id}/{incarnation}"
    if len(identity.encode()) > MAX_ROUTING_IDENTITY:
        raise ValueError(
            f"agent id {agent_id[:40]!r}... is too long: a routing identity holds at most "
            f"{MAX_ROUTING_IDENTITY} bytes"
        )
    return identity


def is_routing_identity(routing_id: bytes, agent_id: str) -> bool:
    """Whether ``routing_id`` is the agent id itself or ``routing_identity(agent_id, x)``.

    The part after ``<agent id>/`` holds no further ``/``, so agent ``a`` cannot take the
    identity of a process of agent ``a/b``.
    """
    own = agent_id.encode()
    if routing_id == own:
        return True
    prefix = own + b"/"
    rest = routing_id[len(prefix) :]
    return routing_id.startswith(prefix) and bool(rest) and b"/" not in rest


_ROLE_TEXT = {
    ServiceKind.PEER_AGENT.value: ("a peer agent", "peer"),
    ServiceKind.STORAGE_AGENT.value: ("the storage agent", "storage"),
    ServiceKind.TRACKER_AGENT.value: ("the tracker agent", "tracker"),
}


def _refuse_role(hello: Hello, key_name: str, key_role: str) -> Rejected:
    """The refusal of a key whose role is not the service its ``Hello`` names."""
    owner = _ROLE_TEXT.get(key_role)
    whose = f"a {owner[1]} agent's key" if owner else f"a key of no agent ({key_role[:40]!r})"
    wanted, short = _ROLE_TEXT.get(hello.service, (hello.service[:40], "peer"))
    make = "`keys init peer:NAME`" if short == "peer" else f"`keys init {short}`"
    return Rejected(
        RejectReason.IDENTITY_NOT_ALLOWED,
        f"the key {key_name!r} is {whose}: it cannot register as {wanted} (make a {short} key "
        f"with {make})",
    )


def check_identity(
    hello: Hello,
    routing_id: bytes,
    key_name: str,
    own_key_name: str,
    key_role: str | None = None,
) -> Rejected | None:
    """On an endpoint with CURVE keys: may the caller's key speak for the agent it names?

    A key pair belongs to one agent (its name is the agent id) or to a group of agents that
    share it (a scaled service: their ids start with ``<key name>-``). The routing identity, by
    which the endpoint addresses the caller and which a new connection can take over, must be
    the agent id or ``routing_identity(agent id, incarnation)``. The endpoint's own key
    (embedded agents use their coordinator's) may be any agent. Without this, any admitted key
    could take over another agent's identity.

    A key also has a role, the one service kind it may register as (``key_role``, from the ZAP
    handler): a peer agent's key cannot register as the storage agent. The endpoint's own key
    and the coordinator's (role ``coordinator``) may be any kind.

    Args:
        hello: the caller's ``Hello``.
        routing_id: the caller's ZeroMQ routing identity.
        key_name: the name the ZAP handler gave the caller's key.
        own_key_name: the name of the endpoint's own key pair.
        key_role: the role the ZAP handler gave the caller's key (a ``ServiceKind`` value;
            ``coordinator``: any); ``None``: roles are not checked.

    Returns:
        ``None`` when it may, else the ``Rejected`` (``identity_not_allowed``) to answer.
    """
    agent_id = hello.agent_id
    if not is_routing_identity(routing_id, agent_id):
        return Rejected(
            RejectReason.IDENTITY_NOT_ALLOWED,
            f"{hello.service} {agent_id!r} connected with another routing identity",
        )
    if (
        key_role is not None
        and key_name != own_key_name
        and key_role not in (hello.service, ServiceKind.COORDINATOR.value)
    ):
        return _refuse_role(hello, key_name, key_role)
    if key_name in (own_key_name, agent_id) or agent_id.startswith(f"{key_name}-"):
        return None
    return Rejected(
        RejectReason.IDENTITY_NOT_ALLOWED,
        f"{hello.service} {agent_id!r} uses the key of {key_name!r}: an agent's id must be its "
        f"key's name or start with '{key_name}-' (run it with --agent-id {key_name})",
    )


def raise_if_rejected(answer: Welcome | Rejected) -> Welcome:
    """The caller's side: return the ``Welcome``, or raise the ``Rejected`` as a ``BusError``.

    Raises:
        BusError: with the rejection's ``reason`` and ``message``.
    """
    if isinstance(answer, Rejected):
        raise BusError(answer.reason, answer.message)
    return answer
