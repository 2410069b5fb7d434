"""How ``status`` shows the DHT: a line per tracker agent running a DHT node and per torrent it
looks up, and the ``dht`` objects of ``status --json``.

The top-level ``dht`` object of ``--json`` sums every tracker agent's node (``null`` when no
DHT node runs); each agent with a node has its own under ``agents[].dht``; each torrent a DHT
node looks up has ``dht`` (peers found, nodes announced to, seconds to its next lookup), else
``null``. A peer found through the DHT shows the source ``dht`` in the peer list.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torviz.shared.bus import AgentStatus, DhtSummary, DhtTorrentSummary

__all__ = ["agent_dht_text", "dht_json", "dht_totals_json", "torrent_dht_json", "torrent_dht_text"]


def dht_json(summary: DhtSummary | None) -> dict[str, Any] | None:
    """One DHT node's summary as JSON (None: no node)."""
    if summary is None:
        return None
    return {
        "port": summary.port,
        "nodes": summary.nodes,
        "good_nodes": summary.good_nodes,
        "lookups": summary.lookups,
        "stored_peers": summary.stored_peers,
        "queries_received": summary.queries_received,
        "packets_dropped": summary.packets_dropped,
    }


def dht_totals_json(agents: Iterable[AgentStatus]) -> dict[str, Any] | None:
    """The top-level ``dht`` object: every DHT node's counters summed (None: no node)."""
    summaries = [agent.dht for agent in agents if agent.dht is not None]
    if not summaries:
        return None
    keys = (
        "nodes",
        "good_nodes",
        "lookups",
        "stored_peers",
        "queries_received",
        "packets_dropped",
    )
    totals: dict[str, Any] = {"dht_nodes": len(summaries)}
    for key in keys:
        totals[key] = sum(int(getattr(summary, key)) for summary in summaries)
    return totals


def torrent_dht_json(row: DhtTorrentSummary | None) -> dict[str, Any] | None:
    """A torrent's ``dht`` object (None: no DHT node looks it up)."""
    if row is None:
        return None
    return {
        "peers_found": row.peers_found,
        "announced_to": row.announced_to,
        "next_lookup": row.next_lookup_in,
    }


def agent_dht_text(agent: AgentStatus) -> str:
    """``    dht  port 6881, 312 nodes (250 good), 2 lookups, ...`` under a tracker agent's
    line; empty without a DHT node."""
    summary = agent.dht
    if summary is None:
        return ""
    return (
        f"    dht        UDP port {summary.port}, {summary.nodes} nodes ({summary.good_nodes} "
        f"good), {summary.lookups} lookups, {summary.stored_peers} peers stored, "
        f"{summary.queries_received} queries answered, {summary.packets_dropped} dropped"
    )


def torrent_dht_text(row: DhtTorrentSummary | None) -> str:
    """``  dht        12 peers found, announced to 8 nodes, next lookup in 14m`` (empty: no
    DHT node looks the torrent up)."""
    if row is None:
        return ""
    wait = row.next_lookup_in
    then = "" if wait is None else f", next lookup in {_duration(wait)}"
    found = f"{row.peers_found} peers found, announced to {row.announced_to} nodes"
    return f"  dht        {found}{then}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"
