"""Keeping the tracker agents in line with who should announce each torrent.

Strategy: ``announcers.choose_announces`` decides who announces an open torrent (each tracker
agent announces the port of the peer agent on its own host); ``Announcing`` compares that with
what the tracker agents were told (``Torrent.announces``) and sends the difference:
``UntrackTorrent`` to each one no longer chosen, ``TrackTorrent`` to each one newly chosen, a
changed port being both. Pure: the time is passed in, commands leave through ``send``.

Rules:
- A torrent is announced only while open, or while a magnet link's torrent fetches its info
  dictionary (``left`` then a placeholder, ``Torrent.left``); a new torrent waits
  ``LISTEN_PORT_WAIT`` for a peer agent's listen port before announcing the configured one.
- While no peer agent has a listen port (they are restarting), what is announced stays.
- One announce reports the totals; the others report 0, so trackers do not count twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from torviz.shared.bus import (
    HostPort,
    Message,
    ServiceKind,
    TorrentCompleted,
    TorrentState,
    TrackerTier,
    TrackTorrent,
    UntrackTorrent,
    UpdateTransfer,
)
from torviz.shared.types import PeerId

from .agents import Agent, AgentRegistry
from .announcers import (
    Announce,
    PeerAgentView,
    TrackerAgentView,
    choose_announces,
    host_port,
    unreachable_hint,
)
from .torrent import Torrent

__all__ = ["LISTEN_PORT_WAIT", "MAX_DHT_NODES", "Announcing", "dht_nodes"]

log = logging.getLogger(__name__)

MAX_DHT_NODES = 64
"""A .torrent's DHT nodes passed on in ``TrackTorrent`` (the bus allows 64)."""

LISTEN_PORT_WAIT = 3.0
"""Seconds a new torrent waits for a peer agent's listen port before announcing anyway (the
configured ``listen_port``)."""


class Announcing:
    """Tells the tracker agents what to announce.

    Args:
        agents: the registered agents.
        send: the outbox.
        peer_id: our peer id for this run.
        listen_port: the port announced until a peer agent reports its own.
    """

    def __init__(
        self,
        agents: AgentRegistry,
        send: Callable[[bytes, Message], None],
        *,
        peer_id: PeerId,
        listen_port: int,
    ) -> None:
        self.agents = agents
        self._send = send
        self.peer_id = peer_id
        self.listen_port = listen_port

    def announcers_changed(
        self, torrents: Iterable[Torrent], gone: Agent | None, now: float
    ) -> None:
        """A peer or tracker agent joined, left (``gone``) or told its addresses: decide again
        who announces each open torrent. A tracker agent that left is not told to stop (it
        forgets its torrents when it registers again)."""
        torrents = list(torrents)
        if gone is not None:
            if gone.kind not in (ServiceKind.PEER_AGENT, ServiceKind.TRACKER_AGENT):
                return
            for torrent in torrents:
                torrent.announces.pop(gone.identity, None)
                torrent.announce_results.pop(gone.identity, None)
        for torrent in torrents:
            self.reannounce(torrent, now)

    def reannounce(self, torrent: Torrent, now: float) -> None:
        """Bring the tracker agents in line with ``announces_for``: ``UntrackTorrent`` to each
        one no longer chosen, ``TrackTorrent`` to each one newly chosen; a changed port is an
        ``UntrackTorrent`` followed by a ``TrackTorrent``."""
        chosen = {announce.tracker: announce for announce in self.announces_for(torrent, now)}
        before = torrent.announces
        if chosen == before:
            return
        for identity, announce in before.items():
            now_chosen = chosen.get(identity)
            if now_chosen is None or now_chosen.port != announce.port:
                self._send(identity, UntrackTorrent(torrent.info_hash))
                torrent.announce_results.pop(identity, None)
        torrent.announces = chosen
        for identity, announce in chosen.items():
            earlier = before.get(identity)
            if earlier is None or earlier.port != announce.port:
                self._track(torrent, announce)
        _log_announces(torrent, before)

    def announces_for(self, torrent: Torrent, now: float) -> tuple[Announce, ...]:
        """Who should announce ``torrent`` now (``announcers.py``)."""
        if torrent.swarm.picker is None and torrent.state is not TorrentState.METADATA:
            return ()
        peers = [
            PeerAgentView(agent.identity, agent.agent_id, agent.listen_address)
            for agent in self.agents.of_kind(ServiceKind.PEER_AGENT)
            if agent.listen_address is not None
        ]
        if not peers:
            if torrent.announces:
                # The peer agents are gone, perhaps restarting: keep what we announce rather
                # than stop and start every tracker twice.
                return tuple(torrent.announces.values())
            if now - torrent.added_at < LISTEN_PORT_WAIT:
                return ()  # announce our real port: wait briefly for a peer agent's AgentInfo
        trackers = [
            TrackerAgentView(agent.identity, agent.agent_id, agent.announce_host)
            for agent in self.agents.of_kind(ServiceKind.TRACKER_AGENT)
        ]
        return choose_announces(
            trackers, peers, private=torrent.private, fallback_port=self.listen_port
        )

    def untrack_all(self, torrent: Torrent) -> None:
        """The torrent stops: every announcing tracker agent announces ``stopped``."""
        info_hash = torrent.info_hash
        for identity in torrent.announces:
            self._send(identity, UntrackTorrent(info_hash))
        torrent.announces, torrent.announce_results = {}, {}

    def report_totals(self, torrent: Torrent) -> None:
        """Each announce gets the torrent's current totals (``totals_for``)."""
        for announce in torrent.announces.values():
            self._send(announce.tracker, totals_for(torrent, announce))

    def completed(self, torrent: Torrent) -> None:
        """Every piece verified: each announce gets its totals, then ``completed``, so the
        ``completed`` announce carries what was downloaded."""
        for announce in torrent.announces.values():
            self._send(announce.tracker, totals_for(torrent, announce))
            self._send(announce.tracker, TorrentCompleted(torrent.info_hash))

    def _track(self, torrent: Torrent, announce: Announce) -> None:
        totals = totals_for(torrent, announce)
        self._send(
            announce.tracker,
            TrackTorrent(
                info_hash=torrent.info_hash,
                tiers=tuple(TrackerTier(tier) for tier in torrent.tiers if tier),
                peer_id=self.peer_id,
                listen_port=announce.port,
                private=torrent.private,
                uploaded=totals.uploaded,
                downloaded=totals.downloaded,
                left=totals.left,
                dht_nodes=dht_nodes(torrent),
            ),
        )


def dht_nodes(torrent: Torrent) -> tuple[HostPort, ...]:
    """The .torrent's ``nodes`` (BEP 5), bootstrap candidates for the DHT; none for a private
    torrent or before the metadata is in."""
    metainfo = torrent.metainfo
    if metainfo is None or metainfo.info.private:
        return ()
    return tuple(HostPort(host, port) for host, port in metainfo.nodes[:MAX_DHT_NODES])


def totals_for(torrent: Torrent, announce: Announce) -> UpdateTransfer:
    """What ``announce`` reports: the totals, or 0 when another announce reports them."""
    info_hash, left = torrent.info_hash, torrent.left
    if announce.totals:
        return UpdateTransfer(info_hash, torrent.uploaded, torrent.downloaded, left)
    return UpdateTransfer(info_hash, 0, 0, left)


def _log_announces(torrent: Torrent, before: dict[bytes, Announce]) -> None:
    announces = list(torrent.announces.values())
    extra = {"info_hash": torrent.info_hash}
    if not announces:
        if before:
            log.info("%s: no tracker agent announces it now", torrent.name, extra=extra)
        return
    described = ", ".join(
        f"{a.tracker_id} {host_port(a.host or '?', a.port)}"
        + (f" for {a.peer_agent}" if a.peer_agent else "")
        for a in announces
    )
    log.info("%s: announced by %s", torrent.name, described, extra=extra)
    if len(announces) == 1 and not announces[0].reachable and announces[0].host:
        hint = unreachable_hint(announces[0].host, announces[0].port)
        log.warning("%s: %s", torrent.name, hint, extra=extra)
