"""No test joins the public DHT: the suite runs every DHT local-only, and a tracker agent left
with the public routers (the default) binds its port and sends them nothing."""

from __future__ import annotations

import os
import time

from tests.services.tracker_agent.conftest import StartAgent
from tests.services.tracker_agent.harness import Coordinator
from torviz.services.tracker_agent.core.dht_rules import LOCAL_ONLY_ENV
from torviz.shared.bus import AgentInfo, DhtStatusChanged
from torviz.shared.config import DEFAULT_DHT_BOOTSTRAP


def test_the_suite_runs_every_dht_local_only() -> None:
    # tests/conftest.py sets it for this process and every process a test starts.
    assert os.environ.get(LOCAL_ONLY_ENV) == "1"


def test_an_agent_left_with_the_public_routers_stays_off_the_public_dht(
    coordinator: Coordinator, start_agent: StartAgent
) -> None:
    agent = start_agent('announce_timeout = 1.0\ndht = true\nbind_address = "127.0.0.1"\n')
    info = coordinator.wait_for(lambda m: isinstance(m, AgentInfo), 10.0)
    assert isinstance(info, AgentInfo) and info.dht_port  # the DHT is on, with the defaults
    status = coordinator.wait_for(lambda m: isinstance(m, DhtStatusChanged), 10.0)
    assert isinstance(status, DhtStatusChanged) and status.summary.nodes == 0
    deadline = time.monotonic() + 10.0
    while "not joining through" not in agent.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = agent.log()
    assert f"not joining through {', '.join(DEFAULT_DHT_BOOTSTRAP)}" in log, log
    assert "does not resolve" not in log  # no name was even looked up
