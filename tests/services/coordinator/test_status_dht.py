"""How ``status`` shows the DHT: a line per tracker agent with a DHT node and per torrent it
looks up; ``--json`` with a top-level ``dht`` object summing the nodes, one per agent and one
per torrent."""

from __future__ import annotations

import argparse
import dataclasses
import json

import pytest

from torviz.services.coordinator.cli.commands import remote
from torviz.shared.bus import (
    AgentStatus,
    DhtSummary,
    DhtTorrentSummary,
    PeerSource,
    PeerStatus,
    ServiceKind,
    StatusReport,
)
from torviz.shared.types import PeerAddress

from .test_status_announces import TORRENT

ROW = DhtTorrentSummary(TORRENT.info_hash, 12, 8, 840.0)
NODE_A = DhtSummary(300, 250, 2, 5, 1000, 3, 6881)
NODE_B = DhtSummary(100, 50, 1, 0, 10, 1, 6882)


def agent(agent_id: str, role: ServiceKind, dht: DhtSummary | None) -> AgentStatus:
    return AgentStatus(agent_id, role, "h", 1, 0, 0, 0.0, 0.0, 1.0, "10.0.0.1", 0, dht)


AGENTS = (
    agent("tracker-1", ServiceKind.TRACKER_AGENT, NODE_A),
    agent("tracker-2", ServiceKind.TRACKER_AGENT, NODE_B),
    agent("peer-1", ServiceKind.PEER_AGENT, None),
)
DHT_PEER = PeerStatus(
    PeerAddress("10.0.0.9", 6881), "lt", "D", 0.0, 0.0, 0, 0, 0.5, "", PeerSource.DHT
)
REPORT = StatusReport((dataclasses.replace(TORRENT, dht=ROW, peer_list=(DHT_PEER,)),), AGENTS)


def status(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *flags: str) -> str:
    monkeypatch.setattr(remote, "_report", lambda args, text, detail=False: REPORT)
    args = argparse.Namespace(id=None, json="--json" in flags)
    assert remote.run_status(args) == 0
    return capsys.readouterr().out


def test_json_has_a_dht_object_summing_the_nodes_and_one_per_agent_and_torrent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads(status(monkeypatch, capsys, "--json"))
    assert document["dht"] == {
        "dht_nodes": 2,
        "nodes": 400,
        "good_nodes": 300,
        "lookups": 3,
        "stored_peers": 5,
        "queries_received": 1010,
        "packets_dropped": 4,
    }
    agents = {a["id"]: a["dht"] for a in document["agents"]}
    assert agents["tracker-1"] == {
        "port": 6881,
        "nodes": 300,
        "good_nodes": 250,
        "lookups": 2,
        "stored_peers": 5,
        "queries_received": 1000,
        "packets_dropped": 3,
    }
    assert agents["peer-1"] is None
    torrent = document["torrents"][0]
    assert torrent["dht"] == {"peers_found": 12, "announced_to": 8, "next_lookup": 840.0}
    assert torrent["peer_list"][0]["source"] == "dht"


def test_without_a_dht_node_the_objects_are_null(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = StatusReport((TORRENT,), (agent("tracker-1", ServiceKind.TRACKER_AGENT, None),))
    monkeypatch.setattr(remote, "_report", lambda args, text, detail=False: bare)
    assert remote.run_status(argparse.Namespace(id=None, json=True)) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["dht"] is None
    assert document["agents"][0]["dht"] is None
    assert document["torrents"][0]["dht"] is None


def test_text_shows_a_dht_line_per_node_and_per_torrent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = status(monkeypatch, capsys).splitlines()
    assert "  dht        12 peers found, announced to 8 nodes, next lookup in 14m" in lines
    assert (
        "    dht        UDP port 6881, 300 nodes (250 good), 2 lookups, 5 peers stored, "
        "1000 queries answered, 3 dropped"
    ) in lines
    assert sum(1 for line in lines if line.startswith("    dht ")) == 2
    assert any(" dht " in line and line.startswith("  peer ") for line in lines)
