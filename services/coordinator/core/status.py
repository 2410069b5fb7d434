"""Torrents and agents as the user sees them: the records of ``status``, and the one line
``diagnose`` gives on a torrent that finds no peers.

A magnet link's torrent fetching its info dictionary shows state METADATA with its progress
(``metadata``), no size and no pieces; each connection shows its ``v`` and where its address
came from. A web seed's session is a row of ``peer_list`` with its URL and retry state (no
address) but counts neither in ``peers`` nor in ``seeds``; every web seed URL of a torrent, running
or not, is a row of ``web_seeds``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from torviz.shared.bus import (
    MAX_ANNOUNCE_ROWS,
    MAX_PEER_ROWS,
    MAX_TRACKER_ROWS,
    AgentStatus,
    AnnounceStatus,
    DhtTorrentSummary,
    PeerStatus,
    ServiceKind,
    SessionTotals,
    TorrentRow,
    TorrentStatus,
    TrackerState,
    TrackerStateChanged,
    TrackerStatus,
)

from .agents import Agent, AgentRegistry
from .dht_links import dht_totals
from .torrent import Torrent
from .torrent_detail import torrent_detail

__all__ = [
    "agent_status",
    "diagnose",
    "round_rate",
    "session_totals",
    "torrent_row",
    "torrent_status",
]


def _trackers(
    reports: Mapping[str, tuple[TrackerStateChanged, float]], now: float
) -> tuple[TrackerStatus, ...]:
    """Tracker URLs by tier and URL; deadlines relative to ``now``."""
    return tuple(
        TrackerStatus(
            url=report.url,
            tier=report.tier,
            state=report.state,
            error=report.error,
            seeders=report.seeders,
            leechers=report.leechers,
            completed=report.completed,
            next_announce_in=None
            if report.next_announce_in is None
            else max(0.0, report.next_announce_in - (now - received)),
        )
        for report, received in sorted(
            reports.values(), key=lambda item: (item[0].tier, item[0].url)
        )
    )[:MAX_TRACKER_ROWS]


def torrent_status(
    torrent: Torrent,
    now: float,
    dht: DhtTorrentSummary | None = None,
    agents: AgentRegistry | None = None,
    *,
    detail: bool = False,
    web_seeds: bool = True,
) -> TorrentStatus:
    """The status of ``torrent`` at ``now`` (tracker deadlines are relative to it).

    Args:
        dht: what the tracker agents' DHT nodes found for it (``dht_links.torrent_dht``).
        agents: the registry, to name the peer agent and host of each connection.
        detail: add its files and piece map (``torrent_detail``).
        web_seeds: the ``web_seeds`` switch (off: its URLs show as disabled).
    """
    total = torrent.total_length
    announces = tuple(
        AnnounceStatus(
            tracker_agent=announce.tracker_id,
            host=announce.host,
            port=announce.port,
            peer_agent=announce.peer_agent,
            totals=announce.totals,
            trackers=_trackers(torrent.announce_results.get(identity, {}), now),
        )
        for identity, announce in list(torrent.announces.items())[:MAX_ANNOUNCE_ROWS]
    )
    peers = tuple(
        PeerStatus(
            address=peer.address,
            client=peer.client,
            flags=peer.flags,
            download_rate=peer.download_rate,
            upload_rate=peer.upload_rate,
            downloaded=peer.downloaded,
            uploaded=peer.uploaded,
            progress=len(peer.bits) / torrent.num_pieces if torrent.num_pieces else 0.0,
            version=peer.version,
            source=peer.source,
            agent=holder.agent_id if (holder := _holder(agents, peer.agent)) else "",
            host=holder.host if holder else "",
            url=peer.url,
            web_seed=peer.web_seed,
        )
        for peer in list(torrent.swarm.peers.values())[:MAX_PEER_ROWS]
    )
    return TorrentStatus(
        info_hash=torrent.info_hash,
        name=torrent.name,
        state=torrent.state,
        progress=_progress(torrent),
        total_length=total,
        downloaded=torrent.downloaded,
        uploaded=torrent.uploaded,
        download_rate=torrent.download_rate,
        upload_rate=torrent.upload_rate,
        peers=torrent.peer_count,
        seeds=torrent.seeds,
        pieces_verified=torrent.pieces_verified,
        num_pieces=torrent.num_pieces,
        save_path=torrent.save_path,
        error=torrent.error,
        trackers=_trackers(torrent.trackers, now),
        peer_list=peers,
        check_progress=torrent.check_progress,
        announces=announces,
        reachable=all(announce.reachable for announce in torrent.announces.values()),
        metadata=torrent.fetch.progress() if torrent.fetch is not None else None,
        dht=dht,
        detail=torrent_detail(torrent) if detail else None,
        web_seeds=torrent.web_seeds.rows(_live_bytes(torrent), enabled=web_seeds),
    )


def _live_bytes(torrent: Torrent) -> Callable[[str], int]:
    """Bytes a live connection of ``torrent`` delivered, by peer key (0 when gone)."""
    peers = torrent.swarm.peers
    return lambda key: record.downloaded if (record := peers.get(key)) is not None else 0


def _holder(agents: AgentRegistry | None, identity: bytes) -> Agent | None:
    return agents.get(identity) if agents is not None else None


def _progress(torrent: Torrent) -> float:
    total = torrent.total_length
    if not total:
        return float(torrent.metainfo is not None)
    return min(1.0, torrent.verified_bytes / total)


def round_rate(rate: float) -> float:
    """A rate to 3 significant digits (under 1 B/s: 0), so noise is no change of a row."""
    return float(f"{rate:.3g}") if rate >= 1.0 else 0.0


def torrent_row(torrent: Torrent) -> TorrentRow:
    """``torrent`` as a list shows it (``SessionChanges.rows``), rates rounded."""
    return TorrentRow(
        info_hash=torrent.info_hash,
        name=torrent.name,
        state=torrent.state,
        progress=_progress(torrent),
        total_length=torrent.total_length,
        left=max(0, torrent.total_length - torrent.verified_bytes) if torrent.metainfo else 0,
        download_rate=round_rate(torrent.download_rate),
        upload_rate=round_rate(torrent.upload_rate),
        peers=torrent.peer_count,
        seeds=torrent.seeds,
        error=torrent.error,
        check_progress=torrent.check_progress,
        metadata=torrent.fetch.progress() if torrent.fetch is not None else None,
    )


def session_totals(torrents: Iterable[Torrent], agents: AgentRegistry) -> SessionTotals:
    """The session in numbers: rates, torrents, connections, agents, hosts, DHT nodes."""
    down = up = 0.0
    count = peers = 0
    for torrent in torrents:
        count += 1
        peers += torrent.peer_count
        down += torrent.download_rate
        up += torrent.upload_rate
    every = list(agents)
    dht = dht_totals(agents.of_kind(ServiceKind.TRACKER_AGENT))
    return SessionTotals(
        download_rate=min(1e15, down),
        upload_rate=min(1e15, up),
        torrents=count,
        peers=peers,
        agents=len(every),
        hosts=len({agent.host for agent in every}),
        dht_nodes=dht.nodes if dht is not None else None,
    )


def diagnose(
    torrent: Torrent, tracker_agent: bool, dht: DhtTorrentSummary | None = None, nodes: int = 0
) -> str:
    """One line on why ``torrent`` finds no peers (for the one-shot download's error).

    Args:
        torrent: the torrent.
        tracker_agent: whether a tracker agent runs.
        dht: what the DHT found for it (None: no DHT node looks it up).
        nodes: DHT nodes in the tracker agents' tables.
    """
    magnet = torrent.magnet if torrent.metainfo is None else None
    no_trackers = not any(torrent.tiers) and (magnet is None or not magnet.trackers)
    if no_trackers and (magnet is None or not magnet.peers):
        source = "the magnet link names" if magnet is not None else "the torrent lists"
        if dht is None:
            why = "the torrent is private" if torrent.private else "the DHT is off"
            return f"{source} no tracker and no peer, and {why}"
        if dht.peers_found:
            return f"the DHT found {dht.peers_found} peers but none stayed connected"
        if not nodes:
            return f"{source} no tracker, and the DHT knows no node (no bootstrap node answered)"
        return f"{source} no tracker, and the DHT ({nodes} nodes) found no peer yet"
    if not any(torrent.tiers):
        return "the torrent lists no tracker"
    if not tracker_agent:
        return "the tracker agent is not running"
    states = [state for state, _ in torrent.trackers.values()]
    if not states:
        return "no tracker has answered yet"
    failed = [state for state in states if state.state is TrackerState.FAILED]
    if len(failed) == len(states):
        errors = "; ".join(f"{state.url}: {state.error or 'failed'}" for state in failed[:3])
        return f"every tracker failed: {errors}"
    if torrent.swarm.tried:
        return f"{len(torrent.swarm.tried)} peers were found but none stayed connected"
    return "the trackers know no other peer for this torrent"


def agent_status(agent: Agent, now: float, incoming: int = 0) -> AgentStatus:
    """One connected agent at ``now``: its load, rates, address and when it was last heard.

    Args:
        incoming: how many of a peer agent's connections the peers opened.
    """
    address = agent.data_endpoint
    if agent.listen_address is not None:
        host, port = agent.listen_address.host, agent.listen_address.port
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    elif agent.kind is ServiceKind.TRACKER_AGENT:
        address = agent.announce_host
    return AgentStatus(
        agent_id=agent.agent_id,
        role=agent.kind,
        host=agent.host,
        pid=agent.pid,
        connections=agent.connections,
        capacity=agent.capacity,
        download_rate=agent.download_rate,
        upload_rate=agent.upload_rate,
        last_heartbeat=max(0.0, now - agent.last_heard),
        address=address,
        incoming=incoming,
        dht=agent.dht.summary if agent.dht is not None else None,
    )
