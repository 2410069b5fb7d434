"""Config: the embedded defaults, typed and independent sections, bad values named by setting."""

from __future__ import annotations

import pytest

from torviz.shared.config import Config, PeerAgentConfig, parse_config
from torviz.shared.errors import ConfigError


def test_empty_file_gives_the_embedded_defaults() -> None:
    assert parse_config("") == Config()


def test_values_are_typed_and_sections_independent() -> None:
    config = parse_config(
        """
        [coordinator]
        control = "tcp://127.0.0.1:7700"
        max_peers_per_torrent = 10

        [peer_agent]
        listen_host = "127.0.0.2"
        listen_ports = [7000, 7010]
        request_timeout = 5
        """
    )
    assert config.coordinator.control == "tcp://127.0.0.1:7700"
    assert config.coordinator.max_peers_per_torrent == 10
    assert config.peer_agent == PeerAgentConfig(
        listen_host="127.0.0.2", listen_ports=(7000, 7010), request_timeout=5.0
    )
    assert isinstance(config.peer_agent.request_timeout, float)
    assert config.storage_agent == Config().storage_agent


@pytest.mark.parametrize(
    ("text", "reason", "names"),
    [
        ("[coordinater]\n", "unknown_section", "[coordinater]"),
        ("[coordinator]\ncontroll = 'x'\n", "unknown_key", "coordinator.controll"),
        ("[coordinator]\nmax_peers_per_torrent = '10'\n", "bad_type", "coordinator.max_peers"),
        ("[coordinator]\nmax_peers_per_torrent = true\n", "bad_type", "max_peers_per_torrent"),
        ("[peer_agent]\nlisten_ports = [1]\n", "bad_type", "peer_agent.listen_ports"),
        ("[peer_agent]\nlisten_ports = 6881\n", "bad_type", "peer_agent.listen_ports"),
        ("[coordinator]\nheartbeat_misses = 0\n", "bad_value", "coordinator.heartbeat_misses"),
        ("[coordinator]\nheartbeat_interval = -1\n", "bad_value", "heartbeat_interval"),
        ("coordinator = 3\n", "bad_section", "[coordinator]"),
        ("[coordinator\n", "bad_toml", "TOML"),
    ],
)
def test_bad_config_names_the_setting(text: str, reason: str, names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert caught.value.reason == reason
    assert names in str(caught.value)


def test_dht_settings_default_to_the_public_routers_and_the_peer_port() -> None:
    section = parse_config("").tracker_agent
    assert section.dht and section.dht_port == 0 and section.dht_state == ""
    assert "router.bittorrent.com:6881" in section.dht_bootstrap
    custom = parse_config(
        '[tracker_agent]\ndht_port = 7000\ndht_bootstrap = ["127.0.0.1:7001", "[::1]:7002"]\n'
        'dht_state = "/tmp/table.dat"\n'
    ).tracker_agent
    assert (custom.dht_port, custom.dht_bootstrap, custom.dht_state) == (
        7000,
        ("127.0.0.1:7001", "[::1]:7002"),
        "/tmp/table.dat",
    )


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("dht_port = 70000", "tracker_agent.dht_port"),
        ('dht_bootstrap = ["127.0.0.1"]', "'127.0.0.1' is not host:port"),
        ('dht_bootstrap = ["::1:6881"]', "'::1:6881' is not host:port"),
        ('dht_bootstrap = ["h:0"]', "'h:0' is not host:port"),
        ('dht_bootstrap = [":6881"]', "':6881' is not host:port"),
        ('dht_bootstrap = "h:1"', "tracker_agent.dht_bootstrap must be a list"),
    ],
)
def test_bad_dht_settings_are_named(value: str, names: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[tracker_agent]\n{value}\n")
    assert names in str(caught.value)
