"""The tracker agent's link to its coordinator: what it offers, heartbeats, and registering again.

The test plays the coordinator (a plain ROUTER) and a scripted HTTP tracker that records every
announce, so it can see that a new registration forgets the torrents without a ``stopped``
announce, and that the coordinator tracking them again starts them afresh.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.services.tracker_agent.conftest import StartAgent
from tests.services.tracker_agent.fakes import HttpServer, Reply
from tests.services.tracker_agent.harness import (
    AGENT_ID,
    POLICY,
    REPO,
    Coordinator,
    fresh_info_hash,
    track,
)
from torviz.shared.bencode import encode
from torviz.shared.bus import (
    AgentInfo,
    Heartbeat,
    Hello,
    ServiceKind,
    Shutdown,
    TrackerState,
    check_hello,
)
from torviz.shared.tracker import encode_compact_v4
from torviz.shared.types import PeerAddress


def offered(announce_host: str) -> AgentInfo:
    """A tracker agent's ``AgentInfo``: no capacity, only where its announces come from."""
    return AgentInfo(
        capacity=0,
        listen_address=None,
        data_endpoint="",
        curve_public_key="",
        announce_host=announce_host,
    )


# An ipc coordinator is on this host: announces leave from loopback, as far as it can tell.
NOTHING_OFFERED = offered("127.0.0.1")
ANSWER = encode({b"interval": 1800, b"peers": encode_compact_v4([PeerAddress("127.0.0.9", 7009)])})


def events(server: HttpServer) -> list[str]:
    """The ``event`` of every announce the tracker got, in order ("" for a regular one)."""
    found = []
    for path, _ in server.requests:
        parts = urllib.parse.urlsplit(path)
        if parts.path == "/announce":  # not the scrapes
            found.append(urllib.parse.parse_qs(parts.query).get("event", [""])[0])
    return found


def wait_events(server: HttpServer, wanted: list[str], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while events(server) != wanted:
        assert time.monotonic() < deadline, f"announces {events(server)}, wanted {wanted}"
        time.sleep(0.02)


def test_agent_info_follows_every_welcome_and_silence_means_hello_again(
    coordinator: Coordinator, start_agent: StartAgent
):
    agent = start_agent(welcome=False, extra="[coordinator]\nheartbeat_misses = 4")
    hello = coordinator.wait_for(lambda m: isinstance(m, Hello), 5.0)
    assert isinstance(hello, Hello) and hello.agent_id == AGENT_ID
    assert hello.service == ServiceKind.TRACKER_AGENT
    fast = dataclasses.replace(POLICY, heartbeat_interval=0.2)
    coordinator.send(check_hello(hello, fast))
    assert coordinator.recv(5.0) == NOTHING_OFFERED  # the first thing after the Welcome
    assert coordinator.recv(1.0) == Heartbeat(1)
    assert coordinator.recv(1.0) == Heartbeat(2)
    assert coordinator.recv(1.0) == Heartbeat(3)
    # The test coordinator never sends anything: after 4 x 0.2 s the agent says Hello again.
    coordinator.received.clear()
    again = coordinator.wait_for(lambda m: isinstance(m, Hello), 3.0)
    assert again == hello
    assert "lost the coordinator" in agent.log()
    coordinator.send(check_hello(hello, POLICY))
    assert coordinator.wait_for(lambda m: isinstance(m, AgentInfo), 5.0) == NOTHING_OFFERED


def test_a_restarted_coordinator_registers_the_agent_again_without_stopped_announces(
    coordinator: Coordinator, start_agent: StartAgent
):
    info_hash = fresh_info_hash()
    with HttpServer({"/announce": Reply(body=ANSWER)}) as tracker:
        url = tracker.url("/announce")
        agent = start_agent(welcome=False)
        hello = coordinator.wait_for(lambda m: isinstance(m, Hello), 5.0)
        assert isinstance(hello, Hello)
        beating = dataclasses.replace(POLICY, heartbeat_interval=0.3)
        coordinator.send(check_hello(hello, beating))
        coordinator.send(track(info_hash, (url,)))
        coordinator.state(url, TrackerState.WORKING)
        wait_events(tracker, ["started"])

        # A new coordinator: the agent's next heartbeat gets hello_first, and it says Hello.
        coordinator.replace()
        assert coordinator.answer_as_new(beating, 5.0) == hello
        assert coordinator.wait_for(lambda m: isinstance(m, AgentInfo), 5.0) == NOTHING_OFFERED

        # Tracked again by the new coordinator: a fresh start, then a clean stop. The agent
        # forgets its torrents on registering, before anything sent after the Welcome reaches
        # it (this track included), so a stopped announce on forgetting would be sent before
        # the second started and show in the tracker's list, in the middle or before the end.
        coordinator.send(track(info_hash, (url,)))
        coordinator.state(url, TrackerState.WORKING)
        wait_events(tracker, ["started", "started"])
        assert "forgot 1 torrents (no stopped announce)" in agent.log()
        coordinator.send(Shutdown("test"))
        assert agent.wait_exit(8.0) == 0, agent.log()
        assert events(tracker) == ["started", "started", "stopped"]  # one stopped: the last
    assert "Traceback" not in agent.log()


@pytest.mark.parametrize(
    ("config", "announce_host"),
    [
        ('bind_address = "127.0.0.3"', "127.0.0.3"),
        ('bind_address = "127.0.0.3"\nadvertise_host = "127.0.0.7"', "127.0.0.7"),
        ('bind_address = "0.0.0.0"', "127.0.0.1"),  # a wildcard: the route to the coordinator
    ],
)
def test_the_announce_address_is_advertise_host_else_a_concrete_bind_address(
    coordinator: Coordinator, start_agent: StartAgent, config: str, announce_host: str
):
    # What trackers will record is where announces leave from: the coordinator pairs this
    # address with the peer agent listening there.
    start_agent(config)
    info = coordinator.wait_for(lambda m: isinstance(m, AgentInfo), 5.0)
    assert info == offered(announce_host)


@pytest.mark.parametrize(
    ("value", "problem"), [("0.0.0.0", "not '0.0.0.0'"), ("x" * 64 + ".example", "resolve")]
)
def test_an_unusable_advertise_host_exits_2_with_one_line(
    coordinator: Coordinator, tmp_path: Path, value: str, problem: str
):
    config = tmp_path / "agent.toml"
    config.write_text(f'[tracker_agent]\nadvertise_host = "{value}"\n')
    finished = subprocess.run(
        [sys.executable, "-m", "torviz.services.tracker_agent",
         "--coordinator", coordinator.endpoint, "--agent-id", AGENT_ID, "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert finished.returncode == 2
    assert finished.stderr.startswith(
        "torviz-tracker-agent: error: [tracker_agent] advertise_host "
    ), finished.stderr
    assert problem in finished.stderr
    assert len(finished.stderr.strip().splitlines()) == 1


def test_missing_keys_for_a_tcp_coordinator_exit_2_with_one_line(
    coordinator: Coordinator, tmp_path: Path
):
    finished = subprocess.run(
        [sys.executable, "-m", "torviz.services.tracker_agent", "--coordinator", "tcp://127.0.0.1:9",
         "--agent-id", AGENT_ID, "--keys", str(tmp_path / "no-keys")],
        cwd=REPO, capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert finished.returncode == 2
    assert finished.stderr.startswith("torviz-tracker-agent: error: the keys folder ")
    assert len(finished.stderr.strip().splitlines()) == 1
