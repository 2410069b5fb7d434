"""``torviz-coordinator keys``: the files it makes, their modes, what it prints, re-runs."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from services.coordinator.cli import main
from services.coordinator.commands.keys import default_keys_dir
from shared.config import SecurityConfig
from shared.runtime.curve import (
    authorized_keys,
    client_security,
    load_keypair,
    load_public_key,
    server_security,
)


@pytest.fixture(autouse=True)
def _own_config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the real user's default config file."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))


def write_config(path: Path, bus: str = "tcp://10.0.0.1:7700", data: str = "") -> Path:
    """A coordinator's config with the given bus and storage data endpoints."""
    lines = ["[coordinator]", f'bus = "{bus}"', "embedded_agents = false"]
    if data:
        lines += ["[storage_agent]", f'data = "{data}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["keys", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_init_makes_private_keys_and_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys"
    config = write_config(tmp_path / "config.toml", data="tcp://10.0.0.1:7701")
    code, out, err = run(
        capsys, "init", "--dir", str(folder), "--config", str(config), "pa1", "storage:st1"
    )
    assert (code, err) == (0, "")
    for path in [folder, folder / "authorized", folder / "agents", folder / "agents" / "pa1"]:
        assert mode(path) == 0o700, path
    assert mode(folder / "agents" / "pa1" / "authorized") == 0o700
    assert mode(folder / "coordinator.key_secret") == 0o600
    assert mode(folder / "agents" / "pa1" / "pa1.key_secret") == 0o600
    assert mode(folder / "agents" / "st1" / "st1.key_secret") == 0o600
    assert not (folder / "authorized" / "pa1.key_secret").exists()
    assert sorted(p.name for p in (folder / "authorized").iterdir()) == ["pa1.key", "st1.key"]
    assert sorted(p.name for p in (folder / "agents" / "pa1").iterdir()) == [
        "authorized",
        "coordinator.key",
        "pa1.key",
        "pa1.key_secret",
    ]
    assert sorted(p.name for p in (folder / "agents" / "st1" / "authorized").iterdir()) == [
        "coordinator.key",
        "pa1.key",
        "st1.key",
    ]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no leftovers

    assert f"coordinator key pair made: {folder}/coordinator.key (public)" in out
    assert f'[security]\n  keys_dir = "{folder}"' in out
    # Per agent: a line naming it, the command that copies its bundle to its host (tar over
    # ssh, nothing to install first), the command that starts it there.
    copy = (
        "tar -C {folder}/agents -cf - {name} | ssh HOST 'install -d -m 0700 "
        "/etc/torviz/keys/agents && tar -C /etc/torviz/keys/agents -xf - && chown -R "
        "torviz:torviz /etc/torviz/keys && touch /etc/torviz/config.toml'"
    )
    lines = out.splitlines()
    at = lines.index("agent pa1 (peer agent, key made):")
    assert lines[at + 1 : at + 3] == [
        "  " + copy.format(folder=folder, name="pa1"),
        "  torviz-peer-agent --coordinator tcp://10.0.0.1:7700 --agent-id pa1 --keys "
        "/etc/torviz/keys/agents/pa1 --config /etc/torviz/config.toml",
    ]
    at = lines.index("agent st1 (storage agent, key made):")
    assert lines[at + 1 : at + 3] == [
        "  " + copy.format(folder=folder, name="st1"),
        "  torviz-storage-agent --coordinator tcp://10.0.0.1:7700 --agent-id st1 --keys "
        "/etc/torviz/keys/agents/st1 --config /etc/torviz/config.toml --data "
        "tcp://10.0.0.1:7701 --state-dir /var/lib/torviz/storage",
    ]
    assert "rsync" not in out and "<kind>" not in out and "COORDINATOR:PORT" not in out
    assert len(lines) < 20


def test_the_keys_made_work_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "keys"
    assert run(capsys, "init", "--dir", str(folder), "pa1", "st1")[0] == 0
    coordinator = load_keypair(folder, "coordinator")
    bundle = folder / "agents" / "pa1"
    agent = load_keypair(bundle, "pa1")
    assert load_public_key(bundle, "coordinator") == coordinator.public
    assert authorized_keys(folder)[agent.public].name == "pa1"
    keyed = SecurityConfig(keys_dir=str(bundle))
    client = client_security("tcp://10.0.0.1:7701", keyed, "pa1")
    assert client is not None and client.server_public == coordinator.public
    server = server_security(
        "tcp://0.0.0.0:7702", SecurityConfig(keys_dir=str(folder)), "coordinator"
    )
    assert server is not None and server.keys == coordinator
    # A storage agent admits the peer agents and the coordinator's embedded agents.
    storage_admits = authorized_keys(folder / "agents" / "st1")
    assert {entry.name for entry in storage_admits.values()} == {"coordinator", "pa1", "st1"}


def test_rerunning_adds_agents_and_keeps_every_existing_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys"
    assert run(capsys, "init", "--dir", str(folder), "pa1")[0] == 0
    coordinator = (folder / "coordinator.key_secret").read_bytes()
    pa1 = (folder / "agents" / "pa1" / "pa1.key_secret").read_bytes()
    code, out, _ = run(capsys, "init", "--dir", str(folder), "pa1", "pa2")
    assert code == 0
    assert (folder / "coordinator.key_secret").read_bytes() == coordinator
    assert (folder / "agents" / "pa1" / "pa1.key_secret").read_bytes() == pa1
    assert "coordinator key pair kept" in out
    assert "agent pa1 (peer agent, key kept, bundle refreshed):" in out
    assert "agent pa2 (peer agent, key made):" in out
    # The older bundle now knows the new agent.
    assert (folder / "agents" / "pa1" / "authorized" / "pa2.key").exists()
    # A removed agent disappears from every bundle at the next run.
    (folder / "authorized" / "pa2.key").unlink()
    assert run(capsys, "init", "--dir", str(folder))[0] == 0
    assert not (folder / "agents" / "pa1" / "authorized" / "pa2.key").exists()


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["coordinator"], "'coordinator' is the coordinator's own key"),
        (["../evil"], "bad key name '../evil'"),
        ([".."], "bad key name '..'"),
        (["a b"], "bad key name 'a b'"),
        (["x" * 65], "bad key name"),
        (["ok", ""], "bad key name ''"),
    ],
)
def test_bad_names_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], names: list[str], message: str
) -> None:
    folder = tmp_path / "keys"
    code, out, err = run(capsys, "init", "--dir", str(folder), *names)
    assert code == 2
    assert out == ""
    assert err.startswith("torviz: error: ") and message in err
    assert err.count("\n") == 1
    assert not folder.exists()


def test_broken_existing_keys_are_reported_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys"
    assert run(capsys, "init", "--dir", str(folder))[0] == 0
    (folder / "coordinator.key_secret").write_text("garbage")
    code, _, err = run(capsys, "init", "--dir", str(folder), "pa1")
    assert code == 2 and "coordinator.key_secret" in err and err.count("\n") == 1
    (folder / "coordinator.key_secret").unlink()
    code, _, err = run(capsys, "init", "--dir", str(folder), "pa1")
    assert code == 2 and "coordinator.key exists without coordinator.key_secret" in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, "init", "--dir", str(blocker / "keys"))
    assert code == 2 and err.startswith("torviz: error: ") and err.count("\n") == 1


def test_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "keys"
    code, _, err = run(capsys, "list", "--dir", str(folder))
    assert code == 2 and "no keys folder" in err
    assert run(capsys, "init", "--dir", str(folder), "pa1")[0] == 0
    code, out, _ = run(capsys, "list", "--dir", str(folder))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"keys folder: {folder}"
    assert lines[1].split() == [
        "coordinator",
        "coordinator",
        load_public_key(folder, "coordinator").decode(),
    ]
    assert lines[2].split() == [
        "pa1",
        "peer_agent",
        load_public_key(folder / "authorized", "pa1").decode(),
    ]


def test_the_default_folder_is_in_the_user_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert default_keys_dir() == tmp_path / "config" / "torviz" / "keys"
    result = subprocess.run(
        [sys.executable, "-m", "services.coordinator", "keys", "init", "pa1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "config" / "torviz" / "keys" / "authorized" / "pa1.key").exists()
