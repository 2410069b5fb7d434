"""The agents connected to this coordinator, and which one gets the next peer.

An agent is known by its ZeroMQ routing identity from the moment its ``Hello`` is welcomed
until it says ``Goodbye``, its process exits, or it is silent for too long (``silent``). What
it offers (capacity, a peer agent's address for incoming peers, a storage agent's data
endpoint) arrives in ``AgentInfo`` right after. Peer agents are chosen by the ``placement``
policy, so a new peer agent on another host starts taking connections at once.

One agent id, one live process: each agent process connects under its own routing identity
(``<agent id>/<incarnation>``), and the registry holds at most one per agent id. A ``Hello``
for an agent id registered under another identity is judged by ``judge_hello`` (pure, the
time passed in):

- the registered process's connection is gone (it exited: ``connected`` is False), or it is
  quiet (not heard for more than ``quiet_after``, one heartbeat interval) and the newcomer is
  on the same host: a restart; the old registration is forgotten, the newcomer welcomed;
- else a second live process: refused (``duplicate_refusal``), the live one left alone.

The same identity saying ``Hello`` again (the same process, after it lost the coordinator) is
a new registration of that process.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from torviz.shared.bus import (
    AgentInfo,
    DhtStatusChanged,
    Hello,
    Rejected,
    RejectReason,
    ServiceKind,
)
from torviz.shared.types import PeerAddress

from .placement import Load, choose

__all__ = ["Agent", "AgentRegistry", "HelloVerdict", "duplicate_refusal", "judge_hello"]


@dataclass(slots=True)
class Agent:
    identity: bytes
    kind: ServiceKind
    agent_id: str
    host: str
    pid: int
    last_heard: float
    """When anything last arrived from it (monotonic seconds)."""
    connections: int = 0
    """Peer agents: connections open or being opened."""
    capacity: int = 0
    """From ``AgentInfo``; 0 until it arrives."""
    listen_address: PeerAddress | None = None
    """A peer agent's address for incoming peers."""
    data_endpoint: str = ""
    """A storage agent's data endpoint."""
    curve_public_key: str = ""
    """A storage agent's data endpoint key (Z85), empty without CURVE."""
    announce_host: str = ""
    """A tracker agent's address as trackers see it; empty until told."""
    dht_port: int = 0
    """A tracker agent's DHT port (UDP); 0: no DHT node."""
    dht: DhtStatusChanged | None = None
    """A tracker agent's last DHT report."""
    download_rate: float = 0.0
    upload_rate: float = 0.0

    def offered(self, info: AgentInfo) -> None:
        self.capacity = info.capacity
        self.listen_address = info.listen_address
        self.data_endpoint = info.data_endpoint
        self.curve_public_key = info.curve_public_key
        self.announce_host = info.announce_host
        self.dht_port = info.dht_port
        if not info.dht_port:
            self.dht = None


class HelloVerdict(enum.Enum):
    """What a welcomed ``Hello`` is to the agents registered."""

    NEW = "new"
    """No process of that agent id is registered."""
    AGAIN = "again"
    """The registered process itself (same routing identity) says hello again."""
    RESTART = "restart"
    """A new process of the agent, whose registered process exited or went quiet here."""
    DUPLICATE = "duplicate"
    """A second process while the registered one lives: refuse it."""


def judge_hello(
    registered: Agent | None,
    identity: bytes,
    hello: Hello,
    now: float,
    *,
    quiet_after: float,
    connected: bool,
) -> HelloVerdict:
    """Tell a restart from a second live process of one agent id.

    Args:
        registered: the agent registered under ``hello.agent_id``, if any.
        identity: the newcomer's routing identity.
        hello: the newcomer's ``Hello``.
        now: the time (monotonic seconds).
        quiet_after: seconds unheard after which the registered process counts as quiet (one
            heartbeat interval; 0 or less: never, without heartbeats).
        connected: whether the registered process still has a connection (a process that
            exited has none).
    """
    if registered is None:
        return HelloVerdict.NEW
    if registered.identity == identity:
        return HelloVerdict.AGAIN
    if not connected:
        return HelloVerdict.RESTART
    quiet = quiet_after > 0 and now - registered.last_heard > quiet_after
    if quiet and registered.host == hello.host:
        return HelloVerdict.RESTART
    return HelloVerdict.DUPLICATE


def duplicate_refusal(registered: Agent, now: float) -> Rejected:
    """The answer to a second live process of ``registered``'s agent id."""
    kind = registered.kind.value.replace("_", " ")
    return Rejected(
        RejectReason.DUPLICATE_AGENT,
        f"{kind} {registered.agent_id!r} already runs on {registered.host} (pid "
        f"{registered.pid}, heard {max(0.0, now - registered.last_heard):.1f} s ago): an agent "
        "id runs in exactly one process; give this one another --agent-id",
    )


class AgentRegistry:
    def __init__(self) -> None:
        self._agents: dict[bytes, Agent] = {}
        self._by_id: dict[str, bytes] = {}
        """Agent id -> the routing identity of its registered process."""

    def join(self, identity: bytes, hello: Hello, now: float) -> Agent:
        """Register a welcomed process; it replaces any other under the same agent id in the
        index (the caller forgets that one first: ``leave``)."""
        kind = ServiceKind(hello.service)
        agent = Agent(identity, kind, hello.agent_id, hello.host, hello.pid, last_heard=now)
        self._agents[identity] = agent
        self._by_id[hello.agent_id] = identity
        return agent

    def leave(self, identity: bytes) -> Agent | None:
        agent = self._agents.pop(identity, None)
        if agent is not None and self._by_id.get(agent.agent_id) == identity:
            del self._by_id[agent.agent_id]
        return agent

    def get(self, identity: bytes) -> Agent | None:
        return self._agents.get(identity)

    def named(self, agent_id: str) -> Agent | None:
        """The registered process of agent ``agent_id``, if any."""
        identity = self._by_id.get(agent_id)
        return None if identity is None else self._agents.get(identity)

    def heard(self, identity: bytes, now: float) -> Agent | None:
        """Note that ``identity`` is alive; returns it if it is a known agent."""
        agent = self._agents.get(identity)
        if agent is not None:
            agent.last_heard = max(agent.last_heard, now)
        return agent

    def silent(self, now: float, limit: float) -> list[Agent]:
        """Agents not heard from for more than ``limit`` seconds."""
        return [agent for agent in self._agents.values() if now - agent.last_heard > limit]

    def listen_addresses(self) -> set[PeerAddress]:
        """Where our peer agents accept peers: never worth dialling."""
        return {agent.listen_address for agent in self._agents.values() if agent.listen_address}

    def of_kind(self, kind: ServiceKind) -> list[Agent]:
        return [agent for agent in self._agents.values() if agent.kind is kind]

    def first(self, kind: ServiceKind) -> Agent | None:
        return next((agent for agent in self._agents.values() if agent.kind is kind), None)

    def peer_agent_for_next_peer(self) -> Agent | None:
        """The peer agent that should dial the next peer (``placement``), or ``None``."""
        agents = self.of_kind(ServiceKind.PEER_AGENT)
        loads = [
            Load(agent.connections, agent.capacity, agent.download_rate + agent.upload_rate)
            for agent in agents
        ]
        index = choose(loads)
        return None if index is None else agents[index]

    def peer_agent_for_web_seed(self, sessions: Mapping[bytes, int]) -> Agent | None:
        """The peer agent to run the next web seed session: placement's choice, each agent's
        web seed ``sessions`` (by identity) counted as connections and the connection limits
        left out (a web seed takes no connection slot); ``None`` without a peer agent."""
        agents = self.of_kind(ServiceKind.PEER_AGENT)
        loads = [
            Load(
                agent.connections + sessions.get(agent.identity, 0),
                0,
                agent.download_rate + agent.upload_rate,
            )
            for agent in agents
        ]
        index = choose(loads)
        return None if index is None else agents[index]

    def __iter__(self) -> Iterator[Agent]:
        return iter(list(self._agents.values()))
