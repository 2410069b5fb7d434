"""The agents connected to this coordinator, and which one gets the next peer.

An agent is known by its ZeroMQ routing identity from the moment its ``Hello`` is welcomed
until it says ``Goodbye``, its process exits, or it stops answering. Peer agents are chosen
least-loaded first, so a new peer agent on another host starts taking connections at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from shared.bus import Hello, ServiceKind

__all__ = ["Agent", "AgentRegistry"]


@dataclass(slots=True)
class Agent:
    identity: bytes
    kind: ServiceKind
    agent_id: str
    host: str
    pid: int
    connections: int = 0
    """Peer agents: connections open or being opened."""


class AgentRegistry:
    def __init__(self) -> None:
        self._agents: dict[bytes, Agent] = {}

    def join(self, identity: bytes, hello: Hello) -> Agent:
        agent = Agent(identity, ServiceKind(hello.service), hello.agent_id, hello.host, hello.pid)
        self._agents[identity] = agent
        return agent

    def leave(self, identity: bytes) -> Agent | None:
        return self._agents.pop(identity, None)

    def get(self, identity: bytes) -> Agent | None:
        return self._agents.get(identity)

    def of_kind(self, kind: ServiceKind) -> list[Agent]:
        return [agent for agent in self._agents.values() if agent.kind is kind]

    def first(self, kind: ServiceKind) -> Agent | None:
        return next((agent for agent in self._agents.values() if agent.kind is kind), None)

    def least_loaded_peer_agent(self) -> Agent | None:
        agents = self.of_kind(ServiceKind.PEER_AGENT)
        return min(agents, key=lambda agent: agent.connections, default=None)

    def __iter__(self) -> Iterator[Agent]:
        return iter(list(self._agents.values()))
