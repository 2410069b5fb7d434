"""The DHT test fixtures keep to loopback and check what they are given, without starting
anything: libtorrent peers joining a DHT, the libtorrent DHT process, the hostile nodes and their
own bencode, and torviz's DHT config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from testing.dht import torviz_dht_config
from testing.hostile_dht import HostileConfig, bdecode, bencode
from testing.lt_dht import DHT_LOOPBACK, LtDhtConfig
from testing.lt_peer import LtPeerConfig, PeerConfigError


def _peer(**changes: object) -> LtPeerConfig:
    values: dict[str, object] = {
        "role": "seeder",
        "torrent": Path("t.torrent"),
        "save_path": Path("."),
        "listen_host": "127.0.0.2",
        "dht_nodes": ("127.0.0.3:6881",),
        "settings": DHT_LOOPBACK,
        **changes,
    }
    return LtPeerConfig(**values)  # type: ignore[arg-type]


def test_a_peer_joins_a_loopback_dht_only_with_the_dht_settings() -> None:
    config = _peer(dht_announce_every=1.0)
    assert LtPeerConfig.from_json(config.to_json()) == config
    with pytest.raises(PeerConfigError, match=r"127\.0\.0\.0/8"):
        _peer(dht_nodes=("10.0.0.1:6881",))
    with pytest.raises(PeerConfigError, match="DHT on"):
        _peer(settings={})
    with pytest.raises(PeerConfigError, match="not host:port"):
        _peer(dht_nodes=("127.0.0.3",))


def test_the_libtorrent_dht_process_refuses_other_addresses() -> None:
    config = LtDhtConfig(hosts=("127.0.0.2", "127.0.0.3"), extra_bootstrap=("127.0.0.1:7000",))
    assert LtDhtConfig.from_json(config.to_json()) == config
    with pytest.raises(PeerConfigError, match=r"127\.0\.0\.0/8"):
        LtDhtConfig(hosts=("192.168.1.2",))
    with pytest.raises(PeerConfigError, match=r"127\.0\.0\.0/8"):
        LtDhtConfig(hosts=("127.0.0.2",), extra_bootstrap=("router.bittorrent.com:6881",))
    assert DHT_LOOPBACK["enable_dht"] is True
    assert DHT_LOOPBACK["dht_restrict_routing_ips"] is False


def test_hostile_nodes_stay_on_loopback_and_their_bencode_is_strict() -> None:
    with pytest.raises(ValueError, match="loopback"):
        HostileConfig("flood", "8.8.8.8:53")
    with pytest.raises(ValueError, match="mode"):
        HostileConfig("nonsense", "127.0.0.1:6881")  # type: ignore[arg-type]
    message = {"t": b"aa", "y": "q", "q": "ping", "a": {"id": b"x" * 20}}
    assert bencode(message) == b"d1:ad2:id20:" + b"x" * 20 + b"e1:q4:ping1:t2:aa1:y1:qe"
    assert bdecode(bencode(message))[b"a"][b"id"] == b"x" * 20
    for broken in (b"d1:t2:aa", b"l" * 100 + b"e" * 100, b"5:abc", b"i1ei2e"):
        with pytest.raises((ValueError, IndexError)):
            bdecode(broken)


def test_torviz_dht_config_names_only_loopback_nodes(tmp_path: Path) -> None:
    path = torviz_dht_config(tmp_path / "t.toml", 7001, ["127.0.0.2:6881"], dht_port=7002)
    section = tomllib.loads(path.read_text())["tracker_agent"]
    assert section["dht"] is True and section["dht_port"] == 7002
    assert section["dht_bootstrap"] == ["127.0.0.2:6881"]
    with pytest.raises(AssertionError, match="loopback"):
        torviz_dht_config(tmp_path / "u.toml", 7001, ["router.utorrent.com:6881"])
