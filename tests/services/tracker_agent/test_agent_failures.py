"""Dead trackers next to a working one, and an agent the coordinator refuses.

The dead trackers are a port nobody listens on (connection refused) and a TCP server that
accepts and never answers (timed out). ``announce_timeout`` is 1-2 s through the config file.
"""

from __future__ import annotations

import time

import pytest

from testing import Swarm, free_port
from tests.services.tracker_agent.conftest import StartAgent
from tests.services.tracker_agent.fakes import SilentTcpServer
from tests.services.tracker_agent.harness import Coordinator, swarm_with_two_peers, track
from torviz.shared.bus import Rejected, RejectReason, TrackerState


@pytest.mark.interop
def test_dead_trackers_fail_with_one_line_and_the_next_tier_still_delivers(
    swarm: Swarm, coordinator: Coordinator, start_agent: StartAgent
):
    info_hash, tracker, others = swarm_with_two_peers(swarm)
    refused = f"http://127.0.0.1:{free_port()}/announce"
    with SilentTcpServer() as silent:
        start_agent("announce_timeout = 1.0")
        started = time.monotonic()
        # BEP 12: the tiers are tried in order, each dead one falling through to the next.
        coordinator.send(track(info_hash, (refused,), (silent.url,), (tracker.http_announce_url,)))
        failed = coordinator.state(refused, TrackerState.FAILED)
        assert (failed.tier, failed.error) == (0, "connection refused")
        assert failed.next_announce_in == pytest.approx(15.0, abs=1.0)
        timed_out = coordinator.state(silent.url, TrackerState.FAILED)
        assert (timed_out.tier, timed_out.error) == (1, "timed out after 1 s")
        working = coordinator.state(tracker.http_announce_url, TrackerState.WORKING)
        assert (working.tier, working.seeders, working.leechers) == (2, 1, 2)
        coordinator.wait_for(lambda m: others <= coordinator.peers(info_hash), 2.0)
        assert time.monotonic() - started < 4.0


@pytest.mark.interop
def test_a_hung_tracker_never_delays_the_others(
    swarm: Swarm, coordinator: Coordinator, start_agent: StartAgent
):
    info_hash, tracker, others = swarm_with_two_peers(swarm)
    refused = f"udp://127.0.0.1:{free_port()}"
    with SilentTcpServer() as silent:
        start_agent("announce_timeout = 2.0", "--announce-to-all-tiers")
        started = time.monotonic()
        coordinator.send(track(info_hash, (silent.url,), (refused,), (tracker.http_announce_url,)))
        working = coordinator.state(tracker.http_announce_url, TrackerState.WORKING)
        peers = coordinator.wait_for(lambda m: others <= coordinator.peers(info_hash), 2.0)
        assert time.monotonic() - started < 1.5  # long before the hung tracker's timeout
        failed = coordinator.state(refused, TrackerState.FAILED)
        assert failed.error == "connection refused"
        timed_out = coordinator.state(silent.url, TrackerState.FAILED, timeout=4.0)
        assert timed_out.error == "timed out after 2 s"
        assert coordinator.index(working) < coordinator.index(timed_out)
        assert coordinator.index(peers) < coordinator.index(timed_out)


def test_rejected_at_hello_exits_with_status_1(coordinator: Coordinator, start_agent: StartAgent):
    agent = start_agent(welcome=False)
    coordinator.send(Rejected(RejectReason.VERSION_MISMATCH, "speaks another version"))
    assert agent.wait_exit(8.0) == 1
    assert "refused this agent (version_mismatch): speaks another version" in agent.log()
    assert "Traceback" not in agent.log()
