"""The DHT shell's pure rules: what local-only mode may reach, when status goes up, peers found
in bus-sized batches."""

from __future__ import annotations

import pytest

from torviz.services.tracker_agent.core.dht_rules import (
    StatusReports,
    is_local_host,
    peers_discovered,
    public_entries,
)
from torviz.shared.bus import MAX_BATCH, DhtSummary, DhtTorrentSummary, PeerSource
from torviz.shared.config import DEFAULT_DHT_BOOTSTRAP
from torviz.shared.errors import ConfigError
from torviz.shared.types import InfoHash, PeerAddress

IH = InfoHash(b"\x01" * 20)
OTHER = InfoHash(b"\x02" * 20)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("192.168.1.1", True),
        ("fd00::3", True),
        ("169.254.0.1", True),
        ("8.8.8.8", False),
        ("2001:4860::8888", False),
        ("router.bittorrent.com", False),
        ("localhost", False),  # a name is never trusted: it is not resolved in local-only mode
    ],
)
def test_local_hosts(host: str, local: bool) -> None:
    assert is_local_host(host) is local


def test_the_default_bootstrap_list_is_all_public_and_loopback_lists_are_not() -> None:
    assert public_entries(DEFAULT_DHT_BOOTSTRAP) == list(DEFAULT_DHT_BOOTSTRAP)
    assert public_entries(["127.0.0.1:6881", "[::1]:7000", "1.1.1.1:6881"]) == ["1.1.1.1:6881"]
    with pytest.raises(ConfigError):
        public_entries(["no-port"])


def summary(nodes: int) -> DhtSummary:
    return DhtSummary(nodes, nodes, 0, 0, 0, 0, 6881)


def test_status_goes_up_when_changed_at_most_every_interval() -> None:
    reports = StatusReports(interval=2.0)
    row = DhtTorrentSummary(IH, 1, 0, 900.0)
    first = reports.due(summary(1), [row], 0.0)
    assert first is not None and first.summary.nodes == 1 and first.torrents == (row,)
    assert reports.due(summary(1), [row], 5.0) is None  # unchanged
    later_wait = DhtTorrentSummary(IH, 1, 0, 300.0)
    assert reports.due(summary(1), [later_wait], 6.0) is None  # only the countdown moved
    assert reports.due(summary(2), [row], 7.0) is not None
    assert reports.due(summary(3), [row], 8.0) is None  # too soon
    assert reports.due(summary(3), [row], 9.0) is not None
    reports.reset()
    assert reports.due(summary(3), [row], 9.5) is not None  # a new registration


def test_status_rows_are_sorted_and_bounded() -> None:
    rows = [DhtTorrentSummary(InfoHash(i.to_bytes(20, "big")), 0, 0, None) for i in range(5000)]
    report = StatusReports().due(summary(1), list(reversed(rows)), 0.0)
    assert report is not None and report.torrents == tuple(rows[:MAX_BATCH])


def test_peers_found_are_deduplicated_and_batched() -> None:
    peers = [PeerAddress("10.0.0.1", 1 + i % 5000) for i in range(6000)]
    messages = peers_discovered(IH, peers)
    assert [len(m.peers) for m in messages] == [MAX_BATCH, 5000 - MAX_BATCH]
    assert all(m.source is PeerSource.DHT and m.info_hash == IH for m in messages)
    assert peers_discovered(OTHER, []) == []
