"""The DHT as the coordinator sees it: which port peer agents tell peers, whom a peer's ``PORT``
goes to, and what ``status`` shows of the tracker agents' DHT nodes.

Strategy: the DHT nodes live in the tracker agents (``AgentInfo.dht_port``, 0 when off). A
peer agent tells its peers the port of the DHT node on its own host, the tracker agent paired
with it as ``announcers.py`` pairs them (its ``announce_host`` is the peer agent's listen
host); a peer's ``PORT`` goes to that node too, or to the first DHT node when none shares the
host. Pure: ``send`` is the outbox.

Rules:
- A private torrent (BEP 27) gets port 0: no DHT bit, no ``PORT``.
- ``PeerDhtPort`` becomes ``DhtNodeSeen`` once per address (the peer's host and the port it
  named), whichever torrent or connection it came from; ``MAX_SEEN`` addresses are
  remembered, the oldest forgotten first.
- A torrent's DHT row in ``status`` sums the rows of every tracker agent that reported it
  (peers found, nodes announced to), with the soonest next lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torviz.shared.bus import (
    DhtNodeSeen,
    DhtStatusChanged,
    DhtSummary,
    DhtTorrentSummary,
    Message,
    PeerDhtPort,
    ServiceKind,
)
from torviz.shared.types import InfoHash, PeerAddress

from .agents import Agent, AgentRegistry
from .torrent import Torrent

__all__ = [
    "MAX_SEEN",
    "DhtLinks",
    "dht_port_for",
    "dht_totals",
    "dht_tracker_for",
    "torrent_dht",
]

MAX_SEEN = 4096
"""Peer DHT addresses remembered as already passed on to a tracker agent."""


def dht_tracker_for(agents: AgentRegistry, peer_agent: Agent | None) -> Agent | None:
    """The tracker agent whose DHT node is on ``peer_agent``'s host (the ``announcers.py``
    pairing), else the first with a DHT node (by agent id) when ``peer_agent`` is None."""
    running = sorted(
        (agent for agent in agents.of_kind(ServiceKind.TRACKER_AGENT) if agent.dht_port),
        key=lambda agent: (agent.agent_id, agent.identity),
    )
    if peer_agent is None:
        return running[0] if running else None
    if peer_agent.listen_address is None:
        return None
    host = peer_agent.listen_address.host
    return next((agent for agent in running if agent.announce_host == host), None)


def dht_port_for(agents: AgentRegistry, peer_agent: Agent, *, private: bool) -> int:
    """The DHT port ``peer_agent`` tells its peers for a torrent (0: none)."""
    if private:
        return 0
    tracker = dht_tracker_for(agents, peer_agent)
    return tracker.dht_port if tracker is not None else 0


def torrent_dht(info_hash: InfoHash, trackers: Iterable[Agent]) -> DhtTorrentSummary | None:
    """A torrent's DHT row over every tracker agent's report (None: no node looks it up)."""
    rows = [
        row
        for agent in trackers
        if agent.dht is not None
        for row in agent.dht.torrents
        if row.info_hash == info_hash
    ]
    if not rows:
        return None
    waits = [row.next_lookup_in for row in rows if row.next_lookup_in is not None]
    return DhtTorrentSummary(
        info_hash,
        peers_found=min(2**32 - 1, sum(row.peers_found for row in rows)),
        announced_to=min(2**32 - 1, sum(row.announced_to for row in rows)),
        next_lookup_in=min(waits) if waits else None,
    )


def dht_totals(trackers: Iterable[Agent]) -> DhtSummary | None:
    """The tracker agents' DHT summaries summed (None: no DHT node reported)."""
    summaries = [agent.dht.summary for agent in trackers if agent.dht is not None]
    if not summaries:
        return None

    def total(field: str) -> int:
        return sum(int(getattr(summary, field)) for summary in summaries)

    return DhtSummary(
        nodes=min(2**32 - 1, total("nodes")),
        good_nodes=min(2**32 - 1, total("good_nodes")),
        lookups=min(2**32 - 1, total("lookups")),
        stored_peers=min(2**32 - 1, total("stored_peers")),
        queries_received=total("queries_received"),
        packets_dropped=total("packets_dropped"),
        port=summaries[0].port,
    )


class DhtLinks:
    """Passes peers' DHT ports on and keeps the tracker agents' DHT reports.

    Args:
        agents: the registered agents.
        send: the outbox.
    """

    def __init__(self, agents: AgentRegistry, send: Callable[[bytes, Message], None]) -> None:
        self._agents = agents
        self._send = send
        self._seen: dict[PeerAddress, None] = {}
        self._told: dict[bytes, int] = {}
        """Peer agent -> the DHT port its public torrents were last attached with."""

    def port_for(self, peer_agent: Agent, *, private: bool) -> int:
        """``dht_port_for``, noted for ``stale_peer_agents`` (public torrents)."""
        port = dht_port_for(self._agents, peer_agent, private=private)
        if not private:
            self._told[peer_agent.identity] = port
        return port

    def stale_peer_agents(self) -> list[Agent]:
        """Peer agents whose public torrents were attached with another DHT port than the
        one they should tell now (a tracker agent's DHT came, went or moved, or the peer
        agent's address arrived)."""
        self._told = {
            identity: port for identity, port in self._told.items() if self._agents.get(identity)
        }
        return [
            agent
            for identity, port in self._told.items()
            if (agent := self._agents.get(identity)) is not None
            and dht_port_for(self._agents, agent, private=False) != port
        ]

    def peer_port(self, torrent: Torrent, sender: bytes, message: PeerDhtPort) -> None:
        """A peer's ``PORT``: its node goes to the DHT node on the reporting peer agent's host
        (or the first one), once per address."""
        record = torrent.swarm.peers.get(message.peer)
        if record is None or record.agent != sender or record.address is None:
            return
        address = PeerAddress(record.address.host, message.port)
        if address in self._seen:
            return
        tracker = dht_tracker_for(self._agents, self._agents.get(sender))
        tracker = tracker or dht_tracker_for(self._agents, None)
        if tracker is None:
            return
        self._seen[address] = None
        if len(self._seen) > MAX_SEEN:
            del self._seen[next(iter(self._seen))]
        self._send(tracker.identity, DhtNodeSeen(address))

    def status_changed(self, sender: bytes, message: DhtStatusChanged) -> None:
        """A tracker agent's DHT report: kept on the agent for ``status``."""
        agent = self._agents.get(sender)
        if agent is not None and agent.kind is ServiceKind.TRACKER_AGENT:
            agent.dht = message
