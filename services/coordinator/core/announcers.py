"""Who announces a torrent to its trackers, and which port each announce names: a pure policy.

Trackers record the address an announce comes from and ignore the ``ip=`` it may carry, so the
address peers will dial is the announcing tracker agent's, and the port is the one we name.
A peer agent is reachable through trackers only if a tracker agent announces from its host
with its port. The deployment this serves runs a tracker agent beside each peer agent; the
coordinator pairs them by address: a tracker agent's ``AgentInfo.announce_host`` against a
peer agent's ``AgentInfo.listen_address``.

Rules (``choose_announces``; agents are taken in the order of their ids, so the choice does
not depend on who joined first):
- A tracker agent announces the port of the peer agent listening at its own announce address;
  several peer agents there: the first. Several tracker agents at one address: the first (the
  others would announce the same peer again).
- A tracker agent with no peer agent at its address announces nothing while another one does:
  it would put an address where nobody listens into the swarm.
- No tracker agent shares an address with a peer agent (one host whose agents report
  different addresses, or the tracker agent on the coordinator's host): the first tracker
  agent announces the first peer agent's port, as torviz did before it paired agents, and the
  announce is marked unreachable (``status`` says how to fix it). No peer agent listens at
  all: the configured default port.
- A private torrent is announced by one tracker agent only: private trackers flag a passkey
  seen at several addresses at once.
- The first announce reports the torrent's uploaded and downloaded bytes and the others 0, so
  that no tracker counts our traffic twice; ``left`` is the same for all.

Trade-off: every announce carries the same peer id (the one the peer agents' handshakes
carry, so a peer finds who the tracker named). Trackers that key peers by address
(opentracker, most public ones) list each address; a tracker that keys peers by peer id keeps
only the address it heard last, so it hands out one of our hosts at a time, and a peer that
drops duplicate peer ids (libtorrent with ``allow_multiple_connections_per_ip``) keeps one
connection to us of the several it may open.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torviz.shared.types import PeerAddress

__all__ = [
    "Announce",
    "PeerAgentView",
    "TrackerAgentView",
    "choose_announces",
    "host_port",
    "unreachable_hint",
]


@dataclass(frozen=True, slots=True)
class TrackerAgentView:
    """A tracker agent as the policy sees it."""

    identity: bytes
    agent_id: str
    host: str
    """Where its announces come from (``AgentInfo.announce_host``); empty: not known."""


@dataclass(frozen=True, slots=True)
class PeerAgentView:
    """A peer agent that listens for peers."""

    identity: bytes
    agent_id: str
    address: PeerAddress


@dataclass(frozen=True, slots=True)
class Announce:
    """One tracker agent announcing a torrent."""

    tracker: bytes
    """The tracker agent's identity."""
    tracker_id: str
    host: str
    """The address trackers see (the tracker agent's announce address; empty: not known)."""
    port: int
    """The port announced."""
    peer_agent: str
    """The id of the peer agent listening at ``host:port``; empty when none does."""
    totals: bool
    """This announce reports the uploaded and downloaded totals (the others report 0)."""

    @property
    def reachable(self) -> bool:
        """A peer agent listens where peers from the trackers will dial."""
        return bool(self.peer_agent)


def choose_announces(
    trackers: Iterable[TrackerAgentView],
    peers: Iterable[PeerAgentView],
    *,
    private: bool,
    fallback_port: int,
) -> tuple[Announce, ...]:
    """Decide which tracker agents announce a torrent, and which port each one names.

    Args:
        trackers: the tracker agents connected.
        peers: the peer agents that listen for peers.
        private: the torrent is private (one announce only).
        fallback_port: the port to announce when no peer agent listens.

    Returns:
        The announces, in the order of the tracker agents' ids; the first reports the totals.
        Empty only when there is no tracker agent.
    """
    by_tracker = sorted(trackers, key=lambda agent: (agent.agent_id, agent.identity))
    by_peer = sorted(peers, key=lambda agent: (agent.agent_id, agent.identity))
    listening: dict[str, PeerAgentView] = {}
    for listener in by_peer:
        listening.setdefault(listener.address.host, listener)
    chosen: list[tuple[TrackerAgentView, PeerAgentView | None]] = []
    hosts_taken: set[str] = set()
    for tracker in by_tracker:
        match = listening.get(tracker.host) if tracker.host else None
        if match is not None and tracker.host not in hosts_taken:
            hosts_taken.add(tracker.host)
            chosen.append((tracker, match))
    if not chosen and by_tracker:
        chosen.append((by_tracker[0], None))
    if private:
        chosen = chosen[:1]
    announces = []
    for index, (tracker, peer) in enumerate(chosen):
        if peer is not None:
            port, peer_id = peer.address.port, peer.agent_id
        else:  # no pairing: the old single-announce layout, unreachable
            port = by_peer[0].address.port if by_peer else fallback_port
            peer_id = ""
        announces.append(
            Announce(
                tracker=tracker.identity,
                tracker_id=tracker.agent_id,
                host=tracker.host,
                port=port,
                peer_agent=peer_id,
                totals=index == 0,
            )
        )
    return tuple(announces)


def unreachable_hint(host: str, port: int) -> str:
    """What ``status`` and the log say of an announce that no peer agent listens behind."""
    return (
        f"peers from trackers reach {host_port(host or '?', port)} only if a peer agent "
        "listens there: run a tracker agent on each peer agent's host"
    )


def host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
