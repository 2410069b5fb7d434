"""The agent command line shared by every agent: ``--coordinator`` (``--bus``), keys, config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from torviz.shared.config import SecurityConfig
from torviz.shared.runtime.agent import parse_agent_args

ENDPOINT = "tcp://10.0.0.1:7700"


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data")


def test_coordinator_is_the_endpoint_and_bus_an_alias():
    options = parse_agent_args("storage_agent", ["--coordinator", ENDPOINT, "--data", "d"], _extra)
    assert options.bus == ENDPOINT and options.extra.data == "d"
    assert options.agent_id.startswith("storage_agent-")
    assert vars(options.extra) == {"data": "d"}  # the common options stay out of extra
    assert parse_agent_args("peer_agent", ["--bus", ENDPOINT]).bus == ENDPOINT
    same = parse_agent_args("peer_agent", ["--bus", ENDPOINT, "--coordinator", ENDPOINT])
    assert same.bus == ENDPOINT


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        ([], "the following arguments are required: --coordinator"),
        (["--bus", "ipc://a", "--coordinator", "ipc://b"], "--bus is another name for"),
    ],
)
def test_a_missing_or_ambiguous_endpoint_exits_2(argv, error, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_agent_args("tracker_agent", argv)
    assert exited.value.code == 2
    assert error in capsys.readouterr().err


def test_help_names_coordinator_and_keys_but_hides_bus(capsys):
    with pytest.raises(SystemExit):
        parse_agent_args("peer_agent", ["--help"])
    shown = capsys.readouterr().out
    assert "--coordinator ENDPOINT" in shown and "--keys DIR" in shown and "--key-name" in shown
    assert "--bus" not in shown


def test_keys_and_key_name_override_the_security_section(tmp_path: Path):
    config = tmp_path / "torviz.toml"
    config.write_text('[security]\nkeys_dir = "/etc/torviz/keys"\nkey_name = "shared"\n')
    base = ["--coordinator", ENDPOINT, "--config", str(config)]
    loaded = parse_agent_args("peer_agent", base).config
    assert loaded.security == SecurityConfig("/etc/torviz/keys", "shared")
    overridden = parse_agent_args("peer_agent", [*base, "--keys", "/k", "--key-name", "pa7"])
    assert overridden.config.security == SecurityConfig("/k", "pa7")
    assert overridden.config.peer_agent == loaded.peer_agent  # nothing else changes
    only_name = parse_agent_args("peer_agent", [*base, "--key-name", "pa8"]).config
    assert only_name.security == SecurityConfig("/etc/torviz/keys", "pa8")
    plain = parse_agent_args("peer_agent", ["--coordinator", ENDPOINT, "--keys", "/k"]).config
    assert plain.security == SecurityConfig("/k", "")


def test_heartbeat_misses_below_one_is_one_line_and_exit_2(tmp_path: Path, capsys):
    config = tmp_path / "torviz.toml"
    config.write_text("[coordinator]\nheartbeat_misses = 0\n")
    with pytest.raises(SystemExit) as exited:
        parse_agent_args("peer_agent", ["--coordinator", ENDPOINT, "--config", str(config)])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"torviz: error: config {config}: coordinator.heartbeat_misses must be at least 1, not 0\n"
    )
