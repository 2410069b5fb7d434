"""The embedded agents' launcher stops agents that never registered at once, not after its
whole timeout: real agent processes whose coordinator endpoint nobody binds (so they keep
trying, as agents still starting do when the daemon is asked to stop)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import LOOPBACK_CONFIG
from torviz.services.coordinator.daemon.launcher import Launcher

STOP_TIMEOUT = 8.0  # what the daemon gives its agents to leave after Shutdown


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    config = tmp_path / "config.toml"
    config.write_text(LOOPBACK_CONFIG)
    launcher = Launcher(
        bus=f"ipc://{tmp_path}/nobody.sock",
        data=f"ipc://{tmp_path}/data.sock",
        config_file=str(config),
        state_dir=str(tmp_path / "state"),
        log_file=str(tmp_path / "agents.log"),
    )
    try:
        yield launcher
    finally:
        for agent in launcher.agents:
            if agent.process.poll() is None:
                agent.process.kill()
                agent.process.wait(timeout=5)


def test_agents_that_never_registered_are_terminated_at_once(launcher: Launcher) -> None:
    launcher.start_all()
    processes = [agent.process for agent in launcher.agents]
    time.sleep(1.0)  # past their imports: each is trying to reach the coordinator
    assert all(process.poll() is None for process in processes)

    started = time.monotonic()
    launcher.terminate_unregistered(set())
    launcher.stop(timeout=STOP_TIMEOUT)
    took = time.monotonic() - started

    assert all(process.poll() is not None for process in processes)
    assert took < STOP_TIMEOUT / 2, f"stop waited {took:.1f} s for agents nobody could tell"


def test_registered_agents_are_left_to_their_shutdown(launcher: Launcher) -> None:
    launcher.start_all()
    storage, *others = launcher.agents
    launcher.terminate_unregistered({storage.agent_id})
    for agent in others:
        agent.process.wait(timeout=STOP_TIMEOUT)
    assert storage.process.poll() is None  # it was sent Shutdown: stop() waits for it
