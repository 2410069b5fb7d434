"""The data endpoint keeps one live link per peer agent and answers a quiet link's probe.

A peer agent process links under its own routing identity (``<agent id>/<incarnation>``); a new
process of the same agent (a restart) replaces the old one's link, so nothing of a process that
is gone stays welcomed. A peer agent probes a link that is silent while pieces wait with a
``Heartbeat``; the agent answers it, so that a live but busy storage agent is never taken for a
dead link. The coordinator refusing this agent as a second process of its id stops it with
exit status 2 (a config error the systemd units do not restart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq

from torviz.shared.bus import Heartbeat, Rejected, RejectReason, ServiceKind, Welcome, make_hello

from .harness import WAIT, AgentProcess, FakeCoordinator, PeerClient


def hello_as(client: PeerClient, agent_id: str, pid: int) -> object:
    return client.hello(make_hello(ServiceKind.PEER_AGENT, agent_id, "test", pid))


def test_a_probe_of_a_quiet_link_is_answered(
    agent: AgentProcess, zmq_context: zmq.Context[Any], short_dir: Path
) -> None:
    client = PeerClient(zmq_context, f"ipc://{short_dir}/data", "pa1/0000aaaa")
    assert isinstance(hello_as(client, "pa1", 100), Welcome)
    client.send(Heartbeat(7))
    assert client.recv() == Heartbeat(7)


def test_a_new_process_of_a_peer_agent_replaces_the_old_ones_link(
    agent: AgentProcess, zmq_context: zmq.Context[Any], short_dir: Path
) -> None:
    data = f"ipc://{short_dir}/data"
    old = PeerClient(zmq_context, data, "pa1/0000aaaa")
    assert isinstance(hello_as(old, "pa1", 100), Welcome)
    other = PeerClient(zmq_context, data, "pa2/0000cccc")
    assert isinstance(hello_as(other, "pa2", 102), Welcome)
    new = PeerClient(zmq_context, data, "pa1/0000bbbb")
    assert isinstance(hello_as(new, "pa1", 101), Welcome)
    # The old process's identity is forgotten: it would have to say hello again.
    old.send(Heartbeat(1))
    answer = old.recv()
    assert isinstance(answer, Rejected) and answer.reason == "hello_first", answer
    # The new process and the other agent keep their links.
    for client in (new, other):
        client.send(Heartbeat(2))
        assert client.recv() == Heartbeat(2)
    assert "peer agent pa1 links again from pid 101 on test: its link from pid 100" in agent.log()


def test_a_duplicate_agent_refusal_exits_2_with_one_error_line(
    start_agent: Any, coordinator: FakeCoordinator
) -> None:
    process: AgentProcess = start_agent()
    coordinator.welcome()
    text = (
        "storage agent 'sa-test' already runs on host-a (pid 1, heard 0.4 s ago): an agent id "
        "runs in exactly one process; give this one another --agent-id"
    )
    # As the coordinator answers the Hello of a second process (here: said again at once).
    coordinator.send(Rejected(RejectReason.DUPLICATE_AGENT, text))
    assert process.wait(WAIT) == 2
    errors = [line for line in process.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and text in errors[0], errors
    assert "Traceback" not in process.log()
