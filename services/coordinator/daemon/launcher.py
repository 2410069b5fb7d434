"""Starting the three agents as local child processes (the embedded default), and stopping them.

Each child gets ``--parent-pid`` so it exits on its own if this process dies, even by SIGKILL.
``stop`` waits a bounded time for the children to leave after the coordinator sent them
``Shutdown``, then terminates and finally kills what is left: ``torviz-coordinator start`` never
leaves a process behind. An agent still starting (not registered, so no ``Shutdown`` reaches it)
is terminated at once (``terminate_unregistered``): it stops as on any SIGTERM.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from torviz.shared.bus import ServiceKind

__all__ = ["AgentProcess", "Launcher"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AgentProcess:
    kind: ServiceKind
    agent_id: str
    process: subprocess.Popen[bytes]
    expected_exit: bool = False


class Launcher:
    """Starts and supervises the embedded agents.

    Args:
        bus: the coordinator's bus endpoint.
        data: the storage agent's data endpoint.
        config_file: passed on to every agent, when the daemon was given one.
        state_dir: where the storage agent keeps its resume state and the tracker agent its
            DHT table (none: they keep none).
        log_level: passed on to every agent.
        log_file: passed on to every agent (None: they log to stderr).
        keys: ``(keys_dir, key_name)`` when the coordinator uses CURVE keys: the embedded
            agents use the coordinator's own key pair, which its sockets always admit.
    """

    def __init__(
        self,
        *,
        bus: str,
        data: str,
        config_file: str | None,
        state_dir: str | None = None,
        log_level: str = "INFO",
        log_file: str | None = None,
        keys: tuple[str, str] | None = None,
    ) -> None:
        self.bus = bus
        self.keys = keys
        self.data = data
        self.state_dir = state_dir
        self.config_file = config_file
        self.log_level = log_level
        self.log_file = log_file
        self.agents: list[AgentProcess] = []

    def start_all(self) -> None:
        """Storage first (peer agents send it pieces), then peers, then the tracker agent."""
        for kind in (ServiceKind.STORAGE_AGENT, ServiceKind.PEER_AGENT, ServiceKind.TRACKER_AGENT):
            self.start(kind)

    def start(self, kind: ServiceKind) -> AgentProcess:
        agent_id = f"{kind.value}-{os.getpid()}-{len(self.agents) + 1}"
        argv = [
            sys.executable,
            "-m",
            f"torviz.services.{kind.value}",
            "--coordinator",
            self.bus,
            "--agent-id",
            agent_id,
            "--parent-pid",
            str(os.getpid()),
            "--log-level",
            self.log_level,
        ]
        if self.log_file:
            argv += ["--log-file", self.log_file]
        if self.config_file:
            argv += ["--config", self.config_file]
        if self.keys is not None:
            argv += ["--keys", self.keys[0], "--key-name", self.keys[1]]
        if kind is ServiceKind.STORAGE_AGENT:
            argv += ["--data", self.data]
        if kind is not ServiceKind.PEER_AGENT and self.state_dir:
            argv += ["--state-dir", self.state_dir]  # resume state; the DHT's table
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
        agent = AgentProcess(kind, agent_id, process)
        self.agents.append(agent)
        log.info("started %s (pid %d)", agent_id, process.pid)
        return agent

    def check(self, on_exit: Callable[[AgentProcess, int], None]) -> None:
        """Report each agent that exited without being asked to, once."""
        for agent in list(self.agents):
            code = agent.process.poll()
            if code is not None:
                self.agents.remove(agent)
                if not agent.expected_exit:
                    on_exit(agent, code)

    def terminate_unregistered(self, registered: set[str]) -> None:
        """SIGTERM the agents not in ``registered`` (still starting: no ``Shutdown`` reaches
        them over the bus), so that ``stop`` does not wait its whole timeout for them."""
        for agent in self.agents:
            if agent.agent_id not in registered and agent.process.poll() is None:
                agent.expected_exit = True
                agent.process.terminate()

    def stop(self, timeout: float = 8.0) -> None:
        """Wait for the agents to leave (they were sent ``Shutdown``), then end them."""
        for agent in self.agents:
            agent.expected_exit = True
        deadline = time.monotonic() + timeout
        for agent in self.agents:
            _wait(agent.process, deadline - time.monotonic())
        for agent in self.agents:
            if agent.process.poll() is None:
                log.warning("%s did not stop in time: terminating it", agent.agent_id)
                agent.process.terminate()
                if not _wait(agent.process, 2.0):
                    agent.process.kill()
                    agent.process.wait()
        self.agents.clear()


def _wait(process: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        process.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        return False
    return True
