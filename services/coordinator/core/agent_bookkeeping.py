"""Agent bookkeeping: who is registered, who may register, who is heard, who is gone.

Strategy: ``AgentBookkeeping`` owns the ``AgentRegistry`` and every rule about an agent's
presence, and tells its ``AgentListener`` (the ``Coordinator``) what the torrents must do
about it; it never touches a torrent itself. Pure: the time is passed in, heartbeats leave
through ``send``.

Rules:
- Before a ``Hello`` is welcomed, a second live process of a registered agent id is refused
  (``vet_hello``, judged by ``agents.judge_hello``); each refused process is logged once.
- A welcomed ``Hello`` from a registered identity starts that process afresh; from a new
  process of a registered agent id it is a restart: the old registration is forgotten and its
  identity goes to ``dropped`` for the bus socket to forget too.
- One storage agent serves a session: a second one is registered but stays idle.
- Heartbeats go to every agent each ``heartbeat_interval``; an agent silent for one interval
  has its connections' rates silenced, one silent for ``heartbeat_misses`` intervals is dead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from torviz.shared.bus import AgentInfo, Heartbeat, Hello, Message, Rejected, ServiceKind
from torviz.shared.config import CoordinatorConfig

from .agents import Agent, AgentRegistry, HelloVerdict, duplicate_refusal, judge_hello

__all__ = ["AgentBookkeeping", "AgentListener"]

log = logging.getLogger(__name__)

_MAX_DUPLICATES_LOGGED = 1024
"""Refused second processes remembered (so each is logged once) before the record restarts."""


class AgentListener(Protocol):
    """What the torrents do about agents coming and going (the ``Coordinator``)."""

    def agent_arrived(self, agent: Agent) -> None:
        """A welcomed agent that should serve: give it the torrents it should know about."""

    def agent_gone(self, agent: Agent) -> None:
        """An agent is gone: forget what it was doing."""

    def agent_offered(self, agent: Agent, info: AgentInfo) -> None:
        """An agent told its capacity and addresses (``AgentInfo``)."""

    def agents_quiet(self, identities: set[bytes]) -> None:
        """These agents missed a heartbeat: their connections' rates stop counting."""


class AgentBookkeeping:
    """The registered agents and the rules of their presence.

    Args:
        config: the coordinator's section of the configuration (heartbeats).
        send: the outbox.
        listener: told what the torrents must do.
    """

    def __init__(
        self,
        config: CoordinatorConfig,
        send: Callable[[bytes, Message], None],
        listener: AgentListener,
    ) -> None:
        self.config = config
        self.registry = AgentRegistry()
        self._send = send
        self._listener = listener
        self.dropped: list[bytes] = []
        """Agents forgotten for their silence or replaced by a restart, for the actor to forget
        on the bus socket too (so their next message is answered ``Rejected("hello_first")``)."""
        self._duplicates_logged: set[tuple[str, str, int]] = set()
        """(agent id, host, pid) of the second processes whose refusal was logged."""
        self._heartbeat_seq = 0
        self._next_heartbeat = 0.0

    def vet_hello(
        self, identity: bytes, hello: Hello, now: float, connected: Callable[[bytes], bool]
    ) -> Rejected | None:
        """Before an agent's ``Hello`` is welcomed: refuse a second live process of an agent
        id (``agents.judge_hello``); a restart or a new agent passes.

        Args:
            identity: the newcomer's routing identity.
            hello: its ``Hello``.
            now: the time (monotonic seconds).
            connected: asked only when another process of that agent id is registered:
                whether that one still has a connection (``BusSocket.reachable``).

        Returns:
            ``Rejected("duplicate_agent")`` to answer instead of ``Welcome``, or None.
        """
        registered = self.registry.named(hello.agent_id)
        if registered is None or registered.identity == identity:
            return None
        verdict = judge_hello(
            registered,
            identity,
            hello,
            now,
            quiet_after=self.config.heartbeat_interval,
            connected=connected(registered.identity),
        )
        if verdict is not HelloVerdict.DUPLICATE:
            return None
        refusal = duplicate_refusal(registered, now)
        seen = (hello.agent_id, hello.host, hello.pid)
        if seen not in self._duplicates_logged:
            if len(self._duplicates_logged) >= _MAX_DUPLICATES_LOGGED:
                self._duplicates_logged.clear()
            self._duplicates_logged.add(seen)
            log.warning(
                "refused a second process of %s %s: pid %d on %s says hello while pid %d on %s "
                "runs it (heard %.1f s ago); an agent id runs in exactly one process",
                registered.kind.value.replace("_", " "),
                hello.agent_id,
                hello.pid,
                hello.host,
                registered.pid,
                registered.host,
                max(0.0, now - registered.last_heard),
            )
        return refusal

    def joined(self, identity: bytes, hello: Hello, now: float) -> None:
        """A welcomed ``Hello``: register the process (forgetting what it or its previous
        process held) and have the listener give it its torrents.

        Args:
            identity: the agent's routing identity.
            hello: its ``Hello``.
            now: the time (monotonic seconds).
        """
        previous = self.registry.named(hello.agent_id)
        if self.registry.get(identity) is not None:
            log.info("%s said hello again: starting it afresh", hello.agent_id)
            self.left(identity)
        elif previous is not None:
            moved = "" if previous.host == hello.host else f" on {previous.host} -> {hello.host}"
            log.info(
                "%s restarted (pid %d -> pid %d%s)", hello.agent_id, previous.pid, hello.pid, moved
            )
            self.left(previous.identity)
            self.dropped.append(previous.identity)
        agent = self.registry.join(identity, hello, now)
        if agent.kind is ServiceKind.STORAGE_AGENT and self.storage_agent() is not agent:
            log.warning(
                "a second storage agent, %s on %s, stays idle: one storage agent serves a "
                "session (stop the other one)",
                agent.agent_id,
                agent.host,
            )
            return
        self._listener.agent_arrived(agent)

    def left(self, identity: bytes) -> Agent | None:
        """An agent is gone (goodbye, exit, silence): unregister it, tell the listener.

        Returns:
            The agent, or None if it was not registered.
        """
        agent = self.registry.leave(identity)
        if agent is not None:
            self._listener.agent_gone(agent)
        return agent

    def offered(self, sender: bytes, info: AgentInfo) -> None:
        """An agent's ``AgentInfo``: note what it offers, tell the listener."""
        agent = self.registry.get(sender)
        if agent is None:
            return
        agent.offered(info)
        log.info(
            "%s %s on %s offers capacity %d%s%s",
            agent.kind.value.replace("_", " "),
            agent.agent_id,
            agent.host,
            info.capacity,
            f", peers at {info.listen_address}" if info.listen_address else "",
            f", announces from {info.announce_host}" if info.announce_host else "",
        )
        self._listener.agent_offered(agent, info)

    def check(self, now: float) -> None:
        """Send heartbeats when due, and count agents silent for too long as dead."""
        interval = self.config.heartbeat_interval
        if interval <= 0:
            return
        limit = interval * self.config.heartbeat_misses
        quiet = {agent.identity for agent in self.registry.silent(now, interval)}
        if quiet:
            self._listener.agents_quiet(quiet)
        for agent in self.registry.silent(now, limit):
            log.warning(
                "%s %s on %s was silent for %.0f s: counted as dead, its work goes elsewhere",
                agent.kind.value.replace("_", " "),
                agent.agent_id,
                agent.host,
                now - agent.last_heard,
            )
            self.left(agent.identity)
            self.dropped.append(agent.identity)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + interval
            self._heartbeat_seq += 1
            for agent in self.registry:
                self._send(agent.identity, Heartbeat(self._heartbeat_seq))

    def measure(self, rates: dict[bytes, tuple[float, float]]) -> None:
        """Each peer agent's rates, summed over its open connections (placement's input)."""
        for agent in self.registry.of_kind(ServiceKind.PEER_AGENT):
            agent.download_rate, agent.upload_rate = rates.get(agent.identity, (0.0, 0.0))

    def storage_agent(self) -> Agent | None:
        """The storage agent serving the session: the first one that joined."""
        return self.registry.first(ServiceKind.STORAGE_AGENT)

    def take_dropped(self) -> list[bytes]:
        """The identities forgotten since the last call (see ``dropped``)."""
        dropped, self.dropped = self.dropped, []
        return dropped
