"""The DHT shell's decisions, without I/O: which bootstrap nodes a test run may reach, and
when the coordinator hears of the DHT node's state.

Strategy: ``services/tracker_agent/dht_service.py`` owns the UDP socket and the greenlets
around the sans-IO ``DhtNode`` (``shared/dht``); what it decides that needs no socket is here,
so it is tested with plain values and a fake clock.

Rules:
- Local-only mode (the test suite sets ``TORVIZ_DHT_LOCAL_ONLY=1`` for every process it
  starts): bootstrap entries other than loopback or private IP literals are skipped
  (``public_entries``, never resolved) and no datagram goes to a public address
  (``is_local_host``). So a test whose config leaves the DHT on with the public routers binds
  its port and stays silent, instead of joining the public DHT.
- ``DhtStatusChanged`` goes out when the summary or a torrent's row changed, at most once per
  ``STATUS_INTERVAL`` (``StatusReports``); the first one at once.
- Peers found go up as ``PeersDiscovered(source=DHT)`` in batches the bus accepts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from torviz.shared.bus import (
    MAX_BATCH,
    DhtStatusChanged,
    DhtSummary,
    DhtTorrentSummary,
    PeersDiscovered,
    PeerSource,
)
from torviz.shared.config import split_host_port
from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "LOCAL_ONLY_ENV",
    "STATUS_INTERVAL",
    "StatusReports",
    "is_local_host",
    "peers_discovered",
    "public_entries",
]

LOCAL_ONLY_ENV = "TORVIZ_DHT_LOCAL_ONLY"
"""Environment variable: when "1", the DHT reaches loopback and private addresses only."""

STATUS_INTERVAL = 2.0
"""Seconds at least between two ``DhtStatusChanged``."""


def is_local_host(host: str) -> bool:
    """Whether ``host`` is an IP literal on loopback, a private or a link-local network (what
    local-only mode may reach); a host name is not."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_link_local


def public_entries(entries: Iterable[str]) -> list[str]:
    """The ``host:port`` entries (``[tracker_agent] dht_bootstrap``) that could reach the
    public DHT: host names, and IP literals outside loopback and private networks.

    Raises:
        ConfigError: an entry is not ``host:port``.
    """
    public = []
    for entry in entries:
        host, _ = split_host_port(entry, "tracker_agent.dht_bootstrap")
        if not is_local_host(host):
            public.append(entry)
    return public


def peers_discovered(info_hash: InfoHash, peers: Sequence[PeerAddress]) -> list[PeersDiscovered]:
    """Peers the DHT found, as the coordinator hears of them (distinct, in bus-sized
    batches)."""
    distinct = list(dict.fromkeys(peers))
    return [
        PeersDiscovered(info_hash, tuple(distinct[start : start + MAX_BATCH]), PeerSource.DHT)
        for start in range(0, len(distinct), MAX_BATCH)
    ]


class StatusReports:
    """When to tell the coordinator the DHT node's state.

    Args:
        interval: seconds at least between two reports.
    """

    def __init__(self, interval: float = STATUS_INTERVAL) -> None:
        self.interval = interval
        self._last: tuple[DhtSummary, tuple[DhtTorrentSummary, ...]] | None = None
        self._sent_at: float | None = None

    def due(
        self,
        summary: DhtSummary,
        torrents: Sequence[DhtTorrentSummary],
        now: float,
    ) -> DhtStatusChanged | None:
        """The report to send now, or None (nothing changed, or the last one is too recent).

        ``next_lookup_in`` counts down on its own, so it does not make a row "changed".
        """
        rows = tuple(sorted(torrents, key=lambda row: row.info_hash.raw)[:MAX_BATCH])
        current = (summary, tuple(_steady(row) for row in rows))
        if self._last == current:
            return None
        if self._sent_at is not None and now - self._sent_at < self.interval:
            return None
        self._last, self._sent_at = current, now
        return DhtStatusChanged(summary, rows)

    def reset(self) -> None:
        """A new registration: the next report goes out whatever was sent before."""
        self._last = self._sent_at = None


def _steady(row: DhtTorrentSummary) -> DhtTorrentSummary:
    return DhtTorrentSummary(row.info_hash, row.peers_found, row.announced_to, None)
