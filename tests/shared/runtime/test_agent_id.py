"""An agent id names one agent: with ``/<incarnation>`` it is each of its processes' routing
identity, so ``--agent-id`` is bounded and holds no ``/``; a bad one is one line and exit 2."""

from __future__ import annotations

import pytest

from torviz.shared.bus.hello import routing_identity
from torviz.shared.runtime.agent import MAX_AGENT_ID, agent_id_problem, parse_agent_args

ENDPOINT = "ipc:///tmp/bus.sock"


@pytest.mark.parametrize(
    ("agent_id", "problem"),
    [
        ("peer-1", ""),
        ("p" * MAX_AGENT_ID, ""),
        ("p" * (MAX_AGENT_ID + 1), "at most"),
        ("é" * (MAX_AGENT_ID // 2 + 1), "at most"),  # bytes, not characters
        ("peer/1", "no '/'"),
        ("peer 1", "no '/' and no spaces"),
    ],
)
def test_an_agent_id_is_bounded_and_holds_no_slash(agent_id: str, problem: str) -> None:
    found = agent_id_problem(agent_id)
    assert (problem in found) if problem else found == ""
    if not found:  # every accepted id makes a routing identity ZeroMQ takes
        routing_identity(agent_id, "0a1b2c3d")


def test_a_bad_agent_id_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_agent_args("peer_agent", ["--coordinator", ENDPOINT, "--agent-id", "a/b"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--agent-id 'a/b': an agent id holds no '/'" in error
