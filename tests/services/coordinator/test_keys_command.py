"""``torviz-coordinator keys``: the files it makes, their modes, what it prints, re-runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import zmq.auth

from torviz.services.coordinator.cli import main
from torviz.services.coordinator.cli.commands.keys import default_keys_dir
from torviz.shared.config import SecurityConfig
from torviz.shared.runtime.curve import (
    authorized_keys,
    client_security,
    load_keypair,
    load_public_key,
    read_key_role,
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
        [sys.executable, "-m", "torviz.services.coordinator", "keys", "init", "pa1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "config" / "torviz" / "keys" / "authorized" / "pa1.key").exists()


def test_without_dir_the_configs_keys_dir_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    config = write_config(tmp_path / "config.toml")
    folder = tmp_path / "etc-keys"
    with config.open("a") as out:
        out.write(f'[security]\nkeys_dir = "{folder}"\n')
    code, _, err = run(capsys, "init", "--config", str(config), "pa1")
    assert (code, err) == (0, "")
    assert (folder / "authorized" / "pa1.key").exists()
    assert not (tmp_path / "config" / "torviz" / "keys").exists()


# --- roles ----------------------------------------------------------------------------------


def test_roles_are_given_or_implied_and_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys"
    names = ["peer:pa1", "storage", "tracker-2", "storage:st1", "peer-agents", "tracker:t"]
    assert run(capsys, "init", "--dir", str(folder), *names)[0] == 0
    expected = {
        "pa1": "peer_agent",
        "storage": "storage_agent",
        "tracker-2": "tracker_agent",
        "st1": "storage_agent",
        "peer-agents": "peer_agent",  # deploy/compose.yaml's shared peer key
        "t": "tracker_agent",
    }
    for name, role in expected.items():
        for path in (
            folder / "authorized" / f"{name}.key",
            folder / "agents" / name / f"{name}.key",
            folder / "agents" / name / f"{name}.key_secret",
            folder / "agents" / "storage" / "authorized" / f"{name}.key",
        ):
            assert read_key_role(path, name).value == role, path
    code, out, _ = run(capsys, "list", "--dir", str(folder))
    assert code == 0
    listed = {line.split()[0]: line.split()[1] for line in out.splitlines()[1:]}
    assert listed == {"coordinator": "coordinator", **expected}


def test_a_key_keeps_its_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "keys"
    assert run(capsys, "init", "--dir", str(folder), "storage", "pa1")[0] == 0
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    code, out, err = run(capsys, "init", "--dir", str(folder), "peer:storage")
    assert (code, out) == (2, "")
    assert err == (
        "torviz: error: agent storage already has a storage agent's key, not a peer agent's: a "
        f"key keeps its role; for a new key remove {folder}/authorized/storage.key and "
        f"{folder}/agents/storage/ first\n"
    )
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before
    # The same role again, or none, keeps the key.
    for again in ("storage:storage", "storage", "peer:pa1", "pa1"):
        code, out, _ = run(capsys, "init", "--dir", str(folder), again)
        assert code == 0 and "key kept" in out
    assert (folder / "authorized" / "storage.key").read_bytes() == before[
        folder / "authorized" / "storage.key"
    ]


def test_a_key_made_before_roles_keeps_working_with_its_names_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A keys folder from before roles: no metadata; each key takes its name's role, and keys
    init leaves it as it is (an explicit other role is a conflict, not a rewrite)."""
    folder = tmp_path / "keys"
    assert run(capsys, "init", "--dir", str(folder))[0] == 0
    for name in ("storage", "st1"):
        bundle = folder / "agents" / name
        bundle.mkdir(mode=0o700)
        public, _ = zmq.auth.create_certificates(bundle, name)
        shutil.copy(public, folder / "authorized" / f"{name}.key")
    old = (folder / "authorized" / "st1.key").read_bytes()
    code, out, _ = run(capsys, "init", "--dir", str(folder), "storage", "st1")
    assert code == 0
    assert "agent storage (storage agent, key kept" in out
    assert "agent st1 (peer agent, key kept" in out  # "st1" implies a peer agent
    code, _, err = run(capsys, "init", "--dir", str(folder), "storage:st1")
    assert code == 2 and "agent st1 already has a peer agent's key" in err
    assert (folder / "authorized" / "st1.key").read_bytes() == old


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["admin:pa1"], "bad role 'admin' in 'admin:pa1': use peer, storage or tracker"),
        (["peer_agent:pa1"], "bad role 'peer_agent'"),
        ([":pa1"], "bad role ''"),
        (["peer:"], "bad key name ''"),
        (["peer:a:b"], "bad role 'peer:a'"),
        (["peer:coordinator"], "'coordinator' is the coordinator's own key"),
        (["storage:x", "peer:x"], "agent x is given two roles, storage and peer"),
    ],
)
def test_bad_roles_are_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], names: list[str], message: str
) -> None:
    folder = tmp_path / "keys"
    code, out, err = run(capsys, "init", "--dir", str(folder), *names)
    assert (code, out) == (2, "")
    assert err.startswith("torviz: error: ") and message in err and err.count("\n") == 1
    assert not folder.exists()


# --- what keys init prints, when the config lacks what agents need -----------------------


def test_without_a_tcp_bus_it_says_what_to_set_instead_of_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys"
    for bus in ("", "ipc:///tmp/x/bus.sock", "tcp://0.0.0.0:7700", "tcp://10.0.0.1:*"):
        config = tmp_path / "single.toml"
        config.write_text(f'[coordinator]\nbus = "{bus}"\n' if bus else "")
        code, out, err = run(
            capsys, "init", "--dir", str(folder), "--config", str(config), "pa1", "storage"
        )
        assert (code, err) == (0, "")
        assert "torviz-peer-agent" not in out and "torviz-storage-agent" not in out
        notes = [line for line in out.splitlines() if line.startswith("no agent commands: ")]
        assert len(notes) == 1, out
        assert 'set [coordinator] bus = "tcp://ADDRESS:7700"' in notes[0]
        assert out.count("| ssh HOST ") == 2  # copying the bundles works whatever the config
    # The default config file, absent: the same note, naming it.
    code, out, _ = run(capsys, "init", "--dir", str(folder), "pa1")
    assert code == 0 and "no agent commands: " in out
    assert str(tmp_path / "xdg-config" / "torviz" / "config.toml") in out


def test_a_storage_agent_without_a_data_endpoint_gets_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys"
    config = write_config(tmp_path / "config.toml")  # a tcp bus, no [storage_agent] data
    code, out, _ = run(capsys, "init", "--dir", str(folder), "--config", str(config), "storage")
    assert code == 0 and "torviz-storage-agent" not in out
    assert (
        f"no command for the storage agent storage: {config} has no [storage_agent] data "
        'endpoint: set data = "tcp://ADDRESS:7701"' in out
    )


def test_a_broken_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[coordinator\n")
    code, out, err = run(capsys, "init", "--dir", str(tmp_path / "k"), "--config", str(config))
    assert (code, out) == (2, "") and str(config) in err and err.count("\n") == 1
    code, _, err = run(capsys, "init", "--config", str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml" in err and err.count("\n") == 1


# --- the printed commands, run as printed ----------------------------------------------------

_BIN = Path(sys.executable).parent
_REGISTER_TIMEOUT = 30.0
AGENTS = ("storage", "tracker", "peer-1")


def _fresh_host_support(tmp_path: Path) -> str:
    """Why a fresh host cannot be simulated here ("" if it can): it takes root, unshare,
    useradd and an overlay mount over /etc in a private mount namespace."""
    if os.geteuid() != 0:
        return "needs root (a private mount namespace per simulated host)"
    for tool in ("unshare", "useradd", "tar", "install", "chown"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not (_BIN / "torviz-storage-agent").exists():
        return f"the torviz console scripts are not installed in {_BIN}"
    probe = tmp_path / "probe"
    for sub in ("up", "work"):
        (probe / sub).mkdir(parents=True)
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _overlay("/etc", probe)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return "" if result.returncode == 0 else f"no overlay mount: {result.stderr!r}"


def _overlay(target: str, layer: Path) -> str:
    return (
        f"mount -t overlay overlay -o lowerdir={target},upperdir={layer}/up,"
        f"workdir={layer}/work {target}"
    )


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _printed_commands(out: str) -> dict[str, tuple[str, str]]:
    """Agent name -> (copy command, start command) as ``keys init`` printed them."""
    lines = out.splitlines()
    found = {}
    for at, line in enumerate(lines):
        if line.startswith("agent ") and line.endswith(":"):
            name = line.split()[1]
            copy, start = lines[at + 1], lines[at + 2]
            assert copy.startswith("  tar ") and start.startswith("  torviz-"), out
            found[name] = (copy.strip(), start.strip())
    return found


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_the_printed_commands_run_as_printed_on_fresh_hosts(tmp_path: Path) -> None:
    """``keys init --config`` on the coordinator's host; the coordinator started on that
    config; then, per agent, a fresh host (its own /etc and /var/lib: no /etc/torviz, no
    torviz keys, a torviz user as the guide makes) where the printed copy command (``ssh HOST``
    standing for the hop to it) and the printed start command run exactly as printed. Every
    agent registers with the coordinator over CURVE on loopback tcp."""
    why = _fresh_host_support(tmp_path)
    if why:
        pytest.skip(why)
    bus_port, data_port, peer_port, spare_port = _free_ports(4)
    keys, state = tmp_path / "keys", tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(
        "\n".join(
            [
                "[coordinator]",
                f'bus = "tcp://127.0.0.1:{bus_port}"',
                "embedded_agents = false",
                "heartbeat_interval = 1.0",
                f'download_dir = "{tmp_path / "downloads"}"',
                "[storage_agent]",
                f'data = "tcp://127.0.0.1:{data_port}"',
                "[security]",
                f'keys_dir = "{keys}"',
                "",
            ]
        )
    )
    (tmp_path / "downloads").mkdir()
    env = {**os.environ, "PATH": f"{_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    coordinator = [str(_BIN / "torviz-coordinator")]
    init = subprocess.run(
        [*coordinator, "keys", "init", "--dir", str(keys), "--config", str(config), *AGENTS],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    printed = _printed_commands(init.stdout)
    assert set(printed) == {"storage", "tracker", "peer-1"}
    processes: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "logs"
    logs.mkdir()

    def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_path,
                start_new_session=True,
            )
        processes.append(process)
        return process

    def status() -> dict[str, Any]:
        result = subprocess.run(
            [*coordinator, "status", "--json", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    try:
        spawn(
            "coordinator",
            [*coordinator, "start", "--config", str(config), "--state-dir", str(state)],
        )
        deadline = time.monotonic() + _REGISTER_TIMEOUT
        while not (state / "daemon.json").exists():
            assert processes[0].poll() is None, (logs / "coordinator.log").read_text()
            assert time.monotonic() < deadline, (logs / "coordinator.log").read_text()
            time.sleep(0.1)
        for name, (copy, start) in printed.items():
            host = tmp_path / "hosts" / name
            for layer in ("etc", "var-lib"):
                for sub in ("up", "work"):
                    (host / layer / sub).mkdir(parents=True)
            # The agent host's own config, as the guide has operators write it (peer agents
            # listen on loopback here); the printed copy command only makes sure it exists.
            (host / "etc" / "up" / "torviz").mkdir()
            (host / "etc" / "up" / "torviz" / "config.toml").write_text(
                f'[peer_agent]\nlisten_host = "127.0.0.1"\nlisten_ports = [{peer_port}, '
                f"{peer_port}]\n[tracker_agent]\ndht = false\n"
            )
            assert " | ssh HOST " in copy
            script = "\n".join(
                [
                    "set -e",
                    _overlay("/etc", host / "etc"),
                    _overlay("/var/lib", host / "var-lib"),
                    "useradd --system --user-group --no-log-init --no-create-home torviz",
                    copy.replace(" | ssh HOST ", " | sh -c "),
                    f"exec {start}",
                ]
            )
            unshare = ["unshare", "--mount", "--propagation", "private"]
            spawn(name, [*unshare, "sh", "-c", script])
        deadline = time.monotonic() + _REGISTER_TIMEOUT
        agents: dict[str, str] = {}
        while time.monotonic() < deadline and len(agents) < 3:
            for process in processes:
                assert process.poll() is None, {p.name: p.read_text() for p in logs.iterdir()}
            agents = {agent["id"]: agent["role"] for agent in status().get("agents", [])}
            time.sleep(0.3)
        assert agents == {
            "storage": "storage_agent",
            "tracker": "tracker_agent",
            "peer-1": "peer_agent",
        }, {p.name: p.read_text() for p in logs.iterdir()}
        # The bundle landed where the units look for it, readable by the torviz user only.
        bundle = tmp_path / "hosts" / "peer-1" / "etc" / "up" / "torviz" / "keys" / "agents"
        assert mode(bundle) == 0o700 and (bundle / "peer-1" / "peer-1.key_secret").is_file()
        assert (bundle / "peer-1").stat().st_uid != 0
        assert (tmp_path / "hosts" / "storage" / "var-lib" / "up" / "torviz" / "storage").is_dir()
        # A peer agent's key started as the storage agent: refused with the reason on the
        # agent's side (exit 2: a restart cannot mend it), logged once on the coordinator's.
        extra = subprocess.run(
            [*coordinator, "keys", "init", "--dir", str(keys), "peer-2"],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert extra.returncode == 0, extra.stderr
        wrong = [
            str(_BIN / "torviz-storage-agent"),
            *("--coordinator", f"tcp://127.0.0.1:{bus_port}", "--agent-id", "peer-2"),
            *("--keys", str(keys / "agents" / "peer-2"), "--data", f"tcp://127.0.0.1:{spare_port}"),
        ]
        refusal = (
            "the key 'peer-2' is a peer agent's key: it cannot register as the storage agent "
            "(make a storage key with `keys init storage`)"
        )
        for _ in range(2):
            refused = subprocess.run(
                wrong, capture_output=True, text=True, env=env, timeout=30, check=False
            )
            assert refused.returncode == 2, refused.stderr
            assert refusal in refused.stderr and "Traceback" not in refused.stderr
        coordinator_log = (logs / "coordinator.log").read_text()
        assert coordinator_log.count(f"bus: rejected peer-2 from 127.0.0.1: {refusal}") == 1
        assert coordinator_log.count("rejected peer-2") == 1
    finally:
        for process in reversed(processes):
            _stop(process)
