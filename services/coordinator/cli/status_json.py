"""``status --json``: a ``StatusReport`` as one JSON document, everything the terminal UI shows.

The document: ``torrents`` (each one's numbers, trackers, announces, DHT, peers with the agent
and host holding each connection, ``web_seeds``: each web seed URL's state, and ``detail`` when
the daemon was asked for it: files, ``file_count`` and the piece map), ``agents``, ``dht``
(every DHT node summed), ``events`` (the daemon's log, oldest first) and ``totals`` (the
session's rates and counts).

Rules:
- Texts are given as the daemon sent them (JSON escapes what needs escaping); info hashes in
  hex; a value the daemon does not know is ``null``.
- The piece map is ``{"cells": STRING, "origins": [{"agent_id", "host"}...]}``, one
  character per piece as ``piece_cells`` writes them (``.`` missing, ``>`` downloading,
  ``?`` checking, ``#`` have, ``0``-``9``, ``a``-``z``, ... for ``origins[i]``).
- A file's ``progress`` is ``completed / length`` (an empty file is complete: 1.0).
- A web seed in ``peer_list`` has ``address`` null, its ``url``, and ``web_seed``: its retry
  state from the peer agent (``state``, ``failures``, ``retry_in``, ``last_error``,
  ``disabled_files``, ``in_flight``); a peer has ``url`` and ``web_seed`` null.
"""

from __future__ import annotations

from typing import Any

from torviz.shared.bus import (
    AgentStatus,
    FileStatus,
    PeerStatus,
    SessionEvent,
    SessionTotals,
    StatusReport,
    TorrentDetail,
    TorrentStatus,
    TrackerStatus,
    WebSeedReport,
    WebSeedRow,
)

from ..core.announcers import host_port
from .dht_status import dht_json, dht_totals_json, torrent_dht_json
from .piece_cells import cells_text

__all__ = [
    "agent_json",
    "detail_json",
    "event_json",
    "file_progress",
    "peer_json",
    "report_json",
    "torrent_json",
    "totals_json",
    "tracker_json",
    "web_seed_report_json",
    "web_seed_row_json",
]


def report_json(report: StatusReport) -> dict[str, Any]:
    """The whole ``status --json`` document."""
    return {
        "torrents": [torrent_json(torrent) for torrent in report.torrents],
        "agents": [agent_json(agent) for agent in report.agents],
        "dht": dht_totals_json(report.agents),
        "events": [event_json(event) for event in report.events],
        "totals": totals_json(report.totals),
    }


def torrent_json(torrent: TorrentStatus) -> dict[str, Any]:
    """One torrent, with its ``detail`` (``null`` when the daemon was not asked for it)."""
    return {
        "info_hash": torrent.info_hash.hex,
        "name": torrent.name,
        "state": torrent.state.value,
        "progress": torrent.progress,
        "total_size": torrent.total_length,
        "downloaded": torrent.downloaded,
        "uploaded": torrent.uploaded,
        "download_rate": torrent.download_rate,
        "upload_rate": torrent.upload_rate,
        "peers": torrent.peers,
        "seeds": torrent.seeds,
        "pieces_verified": torrent.pieces_verified,
        "num_pieces": torrent.num_pieces,
        "save_path": torrent.save_path,
        "error": torrent.error,
        "check_progress": torrent.check_progress,
        "metadata": None
        if torrent.metadata is None
        else {
            "peers_asked": torrent.metadata.peers_asked,
            "received": torrent.metadata.received,
            "size": torrent.metadata.size,
        },
        "trackers": [tracker_json(tracker) for tracker in torrent.trackers],
        "announces": [
            {
                "tracker_agent": announce.tracker_agent,
                "address": host_port(announce.host, announce.port) if announce.host else "",
                "port": announce.port,
                "peer_agent": announce.peer_agent or None,
                "reports_totals": announce.totals,
                "trackers": [tracker_json(tracker) for tracker in announce.trackers],
            }
            for announce in torrent.announces
        ],
        "reachable": torrent.reachable,
        "dht": torrent_dht_json(torrent.dht),
        "peer_list": [peer_json(peer) for peer in torrent.peer_list],
        "web_seeds": [web_seed_row_json(row) for row in torrent.web_seeds],
        "detail": None if torrent.detail is None else detail_json(torrent.detail),
    }


def peer_json(peer: PeerStatus) -> dict[str, Any]:
    """One peer connection; ``agent`` and ``host``: the peer agent holding it (``null`` when
    the daemon does not say)."""
    return {
        "address": None if peer.address is None else str(peer.address),
        "client": peer.client,
        "flags": peer.flags,
        "download_rate": peer.download_rate,
        "upload_rate": peer.upload_rate,
        "downloaded": peer.downloaded,
        "uploaded": peer.uploaded,
        "progress": peer.progress,
        "version": peer.version,
        "source": peer.source.value,
        "agent": peer.agent or None,
        "host": peer.host or None,
        "url": peer.url or None,
        "web_seed": None if peer.web_seed is None else web_seed_report_json(peer.web_seed),
    }


def web_seed_report_json(report: WebSeedReport) -> dict[str, Any]:
    """A running web seed's retry state, as its peer agent reports it."""
    return {
        "state": report.state.value,
        "failures": report.failures,
        "retry_in": report.retry_in,
        "last_error": report.last_error,
        "disabled_files": report.disabled_files,
        "in_flight": report.in_flight,
    }


def web_seed_row_json(row: WebSeedRow) -> dict[str, Any]:
    """One web seed URL of a torrent, running or not."""
    return {
        "url": row.url,
        "state": row.state.value,
        "message": row.message,
        "downloaded": row.downloaded,
        "hash_failures": row.hash_failures,
    }


def detail_json(detail: TorrentDetail) -> dict[str, Any]:
    """A torrent's files and piece map."""
    return {
        "files": [_file_json(entry) for entry in detail.files],
        "file_count": detail.file_count,
        "pieces": {
            "cells": cells_text(detail.pieces.cells),
            "origins": [
                {"agent_id": origin.agent_id, "host": origin.host}
                for origin in detail.pieces.origins
            ],
        },
    }


def _file_json(entry: FileStatus) -> dict[str, Any]:
    return {
        "path": entry.path,
        "length": entry.length,
        "completed": entry.completed,
        "progress": file_progress(entry),
    }


def file_progress(entry: FileStatus) -> float:
    """The fraction of a file in verified pieces, 0.0 to 1.0 (an empty file: 1.0)."""
    if entry.length <= 0:
        return 1.0
    return min(1.0, max(0.0, entry.completed / entry.length))


def tracker_json(tracker: TrackerStatus) -> dict[str, Any]:
    """One tracker URL's latest result."""
    return {
        "url": tracker.url,
        "tier": tracker.tier,
        "state": tracker.state.value,
        "last_error": tracker.error,
        "next_announce": tracker.next_announce_in,
        "seeders": tracker.seeders,
        "leechers": tracker.leechers,
        "completed": tracker.completed,
    }


def agent_json(agent: AgentStatus) -> dict[str, Any]:
    """One agent connected to the coordinator."""
    return {
        "id": agent.agent_id,
        "role": agent.role.value,
        "host": agent.host,
        "pid": agent.pid,
        "connections": agent.connections,
        "capacity": agent.capacity,
        "download_rate": agent.download_rate,
        "upload_rate": agent.upload_rate,
        "last_heartbeat": agent.last_heartbeat,
        "address": agent.address,
        "incoming": agent.incoming,
        "dht": dht_json(agent.dht),
    }


def event_json(event: SessionEvent) -> dict[str, Any]:
    """One line of the daemon's log; ``age`` in seconds, ``info_hash`` hex or ``null``."""
    return {
        "seq": event.seq,
        "age": event.age,
        "level": event.level.value,
        "text": event.text,
        "info_hash": None if event.info_hash is None else event.info_hash.hex,
    }


def totals_json(totals: SessionTotals | None) -> dict[str, Any] | None:
    """The session's rates and counts (``null``: the daemon sent none)."""
    if totals is None:
        return None
    return {
        "download_rate": totals.download_rate,
        "upload_rate": totals.upload_rate,
        "torrents": totals.torrents,
        "peers": totals.peers,
        "agents": totals.agents,
        "hosts": totals.hosts,
        "dht_nodes": totals.dht_nodes,
    }
