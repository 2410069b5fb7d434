"""torviz spread over simulated hosts (testing/hosts.py), started as a user would start it
on several machines.

Strategy: `TorvizCluster` runs `torviz-coordinator keys init` on the coordinator's host, writes
one config per process (the shared part: bus, data endpoint, heartbeats; then its
`[security]`), starts `torviz-coordinator start` with `embedded_agents = false`, and each agent
as `python -m torviz.services.<kind> --coordinator BUS --agent-id ID --keys DIR --config FILE`
on its host. Agents on the coordinator's host use their key bundles (`agents/NAME/`) in place; an
agent elsewhere gets a copy, as deploy/README.md says. The CLI (`status --json`, `add`,
`shutdown`) runs on the coordinator's host too, against the daemon's state directory.

Rules:
- Every process is started through `NamespaceHosts.start`, so `NamespaceHosts.close` stops it
  whatever happens; `TorvizCluster.stop` shuts the daemon down first (bounded).
- Every wait is bounded and fails naming what was awaited, with the last status and the tail
  of the coordinator's log.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from testing.hosts import HostProcess, HostsError, NamespaceHosts

__all__ = ["COORDINATOR", "TorvizCluster", "summary"]

COORDINATOR = [sys.executable, "-m", "torviz.services.coordinator"]
_START_TIMEOUT_S = 30.0
_POLL_S = 0.5
_CLI_NOISE = "welcomed cli"
"""Logged by the coordinator for every CLI request: left out of failure messages."""


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string for these values


def summary(document: dict[str, Any]) -> str:
    """One line for a ``status --json`` document: each torrent's state and progress, each
    agent's id and connections (the full document is too long for a failure message)."""
    torrents = [
        f"{t.get('name')} {t.get('state')} {float(t.get('progress', 0)):.2f} "
        f"({t.get('pieces_verified')}/{t.get('num_pieces')}, {t.get('peers')} peers)"
        for t in document.get("torrents", [])
    ]
    agents = [
        f"{a.get('id')}:{a.get('connections')}c/{a.get('last_heartbeat', 0):.0f}s"
        for a in document.get("agents", [])
    ]
    return f"torrents [{'; '.join(torrents)}] agents [{' '.join(agents)}]"


class TorvizCluster:
    """torviz spread over simulated hosts, started as a user would start it.

    The coordinator host (``coordinator_host``) runs ``torviz-coordinator start`` with
    ``embedded_agents = false``, its bus on ``tcp://ADDRESS:bus_port`` with CURVE keys and its
    control socket in its state directory (ipc), plus the storage agent (data on
    ``tcp://ADDRESS:data_port``) and the tracker agent, which use their bundles in the
    coordinator's keys folder in place. Peer agents run on other hosts, each with a copy of its
    own bundle (its pair, the coordinator's public key), as deploy/README.md says.

    Args:
        hosts: the simulated hosts.
        work_dir: state, downloads, keys and configs go below it.
        coordinator_host: index of the coordinator's host.
        bus_port, data_port: the tcp ports of the bus and the storage agent's data socket.
        heartbeat_interval: seconds, for ``[coordinator] heartbeat_interval``.
        extra_config: more TOML appended to every config (e.g. ``[peer_agent]`` settings).
        source: run torviz from this copy of ``shared`` and ``services`` (a benchmark's frozen
            tree: it becomes every process's working directory and ``PYTHONPATH``); default:
            the repository.
    """

    def __init__(
        self,
        hosts: NamespaceHosts,
        work_dir: Path,
        *,
        coordinator_host: int = 1,
        bus_port: int = 7700,
        data_port: int = 7701,
        heartbeat_interval: float = 1.0,
        extra_config: str = "",
        source: Path | None = None,
    ) -> None:
        self.hosts = hosts
        self.work_dir = work_dir
        self.home = coordinator_host
        address = hosts[coordinator_host].address
        self.bus = f"tcp://{address}:{bus_port}"
        self.data = f"tcp://{address}:{data_port}"
        self.keys_dir = work_dir / "keys"
        self.state_dir = work_dir / "state"
        self.download_dir = work_dir / "dl"
        self.log_dir = work_dir / "logs"
        self.heartbeat_interval = heartbeat_interval
        self.extra_config = extra_config
        self.cwd = source
        self.env = {"PYTHONPATH": str(source)} if source is not None else {}
        self.coordinator: HostProcess | None = None
        self.agents: dict[str, HostProcess] = {}
        self.download_dir.mkdir(parents=True, exist_ok=True)

    # keys and configs

    def keys(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """``torviz-coordinator keys ARGV`` on the coordinator host."""
        return self.hosts.run(self.home, [*COORDINATOR, "keys", *argv], env=self.env, cwd=self.cwd)

    def init_keys(self, agent_names: Sequence[str], keys_dir: Path | None = None) -> Path:
        """``torviz-coordinator keys init --dir DIR NAME...`` on the coordinator host: the
        coordinator's pair, and per agent a pair, its public key in ``authorized/`` and its
        bundle ``agents/NAME/``. Returns the folder.

        Raises:
            HostsError: ``keys_failed`` with the command's output.
        """
        target = keys_dir or self.keys_dir
        result = self.keys("init", "--dir", str(target), *agent_names)
        if result.returncode != 0:
            raise HostsError(
                "keys_failed",
                f"keys init --dir {target} {' '.join(agent_names)} exited "
                f"{result.returncode}: {result.stderr.strip() or result.stdout.strip()}",
            )
        return target

    def bundle(self, name: str, source: Path | None = None) -> Path:
        """Agent ``name``'s bundle in a keys folder (default: the coordinator's):
        ``agents/NAME/``, which an agent on the coordinator's host uses in place."""
        return (source or self.keys_dir) / "agents" / name

    def agent_keys(self, name: str, source: Path | None = None) -> Path:
        """Agent ``name``'s bundle copied out, as to another host (deploy/README.md)."""
        target = self.work_dir / "hosts-keys" / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.bundle(name, source), target)
        return target

    def config(self, name: str, body: str = "") -> Path:
        """A config file for one process: the shared part, then ``body``."""
        text = "\n".join(
            [
                "[coordinator]",
                f"bus = {_toml_string(self.bus)}",
                "embedded_agents = false",
                f"heartbeat_interval = {self.heartbeat_interval}",
                "heartbeat_misses = 3",
                "",
                "[storage_agent]",
                f"data = {_toml_string(self.data)}",
                "",
                "[tracker_agent]",
                "dht = false",
                "announce_timeout = 5.0",
                "",
                body,
                self.extra_config,
            ]
        )
        path = self.work_dir / f"{name}.toml"
        path.write_text(text)
        return path

    def _security(self, keys_dir: Path, key_name: str = "") -> str:
        lines = ["[security]", f"keys_dir = {_toml_string(str(keys_dir))}"]
        if key_name:
            lines.append(f"key_name = {_toml_string(key_name)}")
        return "\n".join(lines) + "\n"

    # processes

    def start_coordinator(self) -> HostProcess:
        """``torviz-coordinator start`` on the coordinator host; waits for ``daemon.json``.

        Raises:
            HostsError: ``process_exited`` or ``timeout`` (with its log).
        """
        config = self.config("coordinator", self._security(self.keys_dir))
        argv = [
            *COORDINATOR,
            "start",
            "--config",
            str(config),
            "--state-dir",
            str(self.state_dir),
            "--download-dir",
            str(self.download_dir),
        ]
        (self.state_dir / "daemon.json").unlink(missing_ok=True)
        process = self.hosts.start(
            self.home, "coordinator", argv, env=self.env, log_dir=self.log_dir, cwd=self.cwd
        )
        self.coordinator = process
        deadline = time.monotonic() + 30.0
        while not (self.state_dir / "daemon.json").exists():
            if not process.is_running():
                raise HostsError(
                    "process_exited", f"the coordinator exited: {process.log_tail(_CLI_NOISE)}"
                )
            if time.monotonic() > deadline:
                raise HostsError(
                    "timeout", f"the coordinator did not start: {process.log_tail(_CLI_NOISE)}"
                )
            time.sleep(0.1)
        return process

    def start_agent(
        self,
        kind: str,
        agent_id: str,
        *,
        host: int | None = None,
        keys_dir: Path | None = None,
        key_name: str = "",
        extra: Sequence[str] = (),
        config: str = "",
    ) -> HostProcess:
        """``torviz-<kind> --coordinator BUS --agent-id ID --keys DIR --config FILE`` on ``host``.

        Args:
            kind: ``storage_agent``, ``tracker_agent`` or ``peer_agent``.
            agent_id: also its key name unless ``key_name`` is given.
            host: where it runs (default: the coordinator's host).
            keys_dir: its keys folder (default: its bundle in the coordinator's folder).
            key_name: ``[security] key_name`` (default: the agent id).
            extra: more options (``--data`` and ``--state-dir`` are added for storage).
            config: more TOML for this agent's config only (e.g. its ``[peer_agent]`` ports).
        """
        keys = keys_dir or self.bundle(key_name or agent_id)
        config_path = self.config(agent_id, self._security(keys, key_name) + config)
        argv = [
            sys.executable,
            "-m",
            f"torviz.services.{kind}",
            "--coordinator",
            self.bus,
            "--agent-id",
            agent_id,
            "--keys",
            str(keys),
            "--config",
            str(config_path),
            *extra,
        ]
        if kind == "storage_agent":
            argv += ["--data", self.data, "--state-dir", str(self.work_dir / "storage-state")]
        process = self.hosts.start(
            host or self.home, agent_id, argv, env=self.env, log_dir=self.log_dir, cwd=self.cwd
        )
        self.agents[agent_id] = process
        return process

    # the CLI

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """``torviz-coordinator ARGV --state-dir STATE`` on the coordinator host."""
        return self.hosts.run(
            self.home,
            [*COORDINATOR, *argv, "--state-dir", str(self.state_dir)],
            env=self.env,
            cwd=self.cwd,
        )

    def status(self) -> dict[str, Any]:
        """``status --json``: ``{"torrents": [...], "agents": [...]}``.

        Raises:
            HostsError: ``cli_failed`` when the command fails.
        """
        result = self.cli("status", "--json")
        if result.returncode != 0:
            raise HostsError("cli_failed", f"status --json: {result.stderr.strip()}")
        document = json.loads(result.stdout)
        assert isinstance(document, dict)
        return document

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """Poll ``status --json`` until ``predicate`` holds; a CLI failure counts as not yet.

        Raises:
            HostsError: ``timeout`` naming ``what``, with the last status and the coordinator's
                log tail.
        """
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                document = self.status()
            except (HostsError, ValueError, subprocess.TimeoutExpired) as exc:
                last = str(exc)
            else:
                if predicate(document):
                    return document
                last = summary(document)
            if time.monotonic() > deadline:
                log = self.coordinator.log_tail(_CLI_NOISE) if self.coordinator else ""
                raise HostsError(
                    "timeout",
                    f"{what}: not within {timeout:.0f} s; last status: {last}; "
                    f"coordinator log: {log}",
                )
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """Ask the daemon to shut down, then stop every process (bounded)."""
        if self.coordinator is not None and self.coordinator.is_running():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.cli("shutdown")
            self.coordinator.wait(10.0)
        for process in [*self.agents.values(), *([self.coordinator] if self.coordinator else [])]:
            process.stop()
