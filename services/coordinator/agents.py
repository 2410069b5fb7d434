"""The agents connected to this coordinator, and which one gets the next peer.

An agent is known by its ZeroMQ routing identity from the moment its ``Hello`` is welcomed
until it says ``Goodbye``, its process exits, or it is silent for too long (``silent``). What
it offers (capacity, a peer agent's address for incoming peers, a storage agent's data
endpoint) arrives in ``AgentInfo`` right after. Peer agents are chosen by the ``placement``
policy, so a new peer agent on another host starts taking connections at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from shared.bus import AgentInfo, Hello, ServiceKind
from shared.types import PeerAddress

from .placement import Load, choose

__all__ = ["Agent", "AgentRegistry"]


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
    download_rate: float = 0.0
    upload_rate: float = 0.0

    def offered(self, info: AgentInfo) -> None:
        self.capacity = info.capacity
        self.listen_address = info.listen_address
        self.data_endpoint = info.data_endpoint
        self.curve_public_key = info.curve_public_key


class AgentRegistry:
    def __init__(self) -> None:
        self._agents: dict[bytes, Agent] = {}

    def join(self, identity: bytes, hello: Hello, now: float) -> Agent:
        kind = ServiceKind(hello.service)
        agent = Agent(identity, kind, hello.agent_id, hello.host, hello.pid, last_heard=now)
        self._agents[identity] = agent
        return agent

    def leave(self, identity: bytes) -> Agent | None:
        return self._agents.pop(identity, None)

    def get(self, identity: bytes) -> Agent | None:
        return self._agents.get(identity)

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

    def __iter__(self) -> Iterator[Agent]:
        return iter(list(self._agents.values()))
