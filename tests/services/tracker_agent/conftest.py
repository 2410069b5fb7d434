"""Fixtures running the real tracker agent as a subprocess, with the test as its coordinator.

``coordinator`` binds a plain (blocking) pyzmq ROUTER on ipc; ``start_agent`` runs
``python -m torviz.services.tracker_agent`` against it with a config file (``extra``: more TOML
sections), answers its ``Hello`` (unless ``welcome=False``) and returns a ``RunningAgent``.
Every wait is bounded; every process is killed at teardown. Helpers live in ``harness.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from tests.services.tracker_agent.harness import AGENT_ID, POLICY, REPO, Coordinator, RunningAgent
from torviz.shared.bus import Hello, ServiceKind, check_hello

StartAgent = Callable[..., RunningAgent]


@pytest.fixture
def coordinator() -> Iterator[Coordinator]:
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.ROUTER_HANDOVER, 1)  # as the coordinator's: a new socket takes over
    # ipc in a private folder: agents refuse tcp without keys (any local user could listen)
    with tempfile.TemporaryDirectory(prefix="tvz-ta-", dir="/tmp") as folder:
        router.bind(f"ipc://{folder}/bus")
        endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
        coordinator = Coordinator(router, endpoint)
        try:
            yield coordinator
        finally:
            coordinator.socket.close(linger=0)  # the one bound now (a test may replace it)


@pytest.fixture
def start_agent(tmp_path: Path, coordinator: Coordinator) -> Iterator[StartAgent]:
    """Start the agent (config: the ``[tracker_agent]`` TOML body) and welcome it."""
    started: list[RunningAgent] = []

    def start(
        config: str = "announce_timeout = 1.0", *args: str, welcome: bool = True, extra: str = ""
    ):
        config_path = tmp_path / f"agent-{len(started)}.toml"
        off = "" if "dht" in config else "dht = false\n"  # the DHT only where a test wants it
        config_path.write_text(f"{extra}\n[tracker_agent]\n{off}{config}\n")
        log_path = tmp_path / f"agent-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "torviz.services.tracker_agent",
                 "--coordinator", coordinator.endpoint, "--config", str(config_path),
                 "--agent-id", AGENT_ID, "--log-level", "DEBUG",
                 "--parent-pid", str(os.getpid()), *args],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        agent = RunningAgent(process, log_path)
        started.append(agent)
        hello = coordinator.wait_for(lambda m: isinstance(m, Hello), 10.0)
        assert isinstance(hello, Hello) and hello.service == ServiceKind.TRACKER_AGENT
        if welcome:
            coordinator.send(check_hello(hello, POLICY))
        return agent

    try:
        yield start
    finally:
        for agent in started:
            if agent.process.poll() is None:
                agent.process.send_signal(signal.SIGKILL)
            agent.process.wait(5.0)
