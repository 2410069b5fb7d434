"""A tracker agent refused as a second process of its agent id stops with exit status 2 (a
config error: the systemd units do not restart it) and one error line with the coordinator's
text; a version mismatch stays exit 1."""

from __future__ import annotations

import pytest

from tests.services.tracker_agent.conftest import StartAgent
from tests.services.tracker_agent.harness import Coordinator
from torviz.shared.bus import Hello, Rejected, RejectReason

TEXT = (
    "tracker agent 'ta-test' already runs on host-a (pid 1, heard 0.2 s ago): an agent id runs "
    "in exactly one process; give this one another --agent-id"
)


@pytest.mark.parametrize(
    ("reason", "code"), [(RejectReason.DUPLICATE_AGENT, 2), (RejectReason.VERSION_MISMATCH, 1)]
)
def test_a_refused_tracker_agent_exits_with_the_refusals_status(
    coordinator: Coordinator, start_agent: StartAgent, reason: RejectReason, code: int
) -> None:
    agent = start_agent(welcome=False)
    coordinator.wait_for(lambda m: isinstance(m, Hello), 5.0)
    coordinator.send(Rejected(reason, TEXT))
    assert agent.wait_exit(10.0) == code
    errors = [line for line in agent.log().splitlines() if "ERROR" in line]
    assert len(errors) == 1 and TEXT in errors[0], errors
