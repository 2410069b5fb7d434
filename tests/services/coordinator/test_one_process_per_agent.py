"""One agent id, one live process: a restart is told from a second live process.

``judge_hello`` is pure and runs on explicit times; the core tests drive ``vet_hello`` (asked
before a ``Hello`` is welcomed) and ``agent_joined`` with fake agents whose routing
identities are ``<agent id>/<incarnation>``, as real agents' are.
"""

from __future__ import annotations

import logging

import pytest

from torviz.services.coordinator.core import Coordinator
from torviz.services.coordinator.core.agents import (
    Agent,
    HelloVerdict,
    duplicate_refusal,
    judge_hello,
)
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import AttachTorrent, Hello, Rejected, ServiceKind, make_hello

from .test_core import NUM_PIECES, STORAGE, connect, join, new_core, opened

OLD, NEW = b"peer-1/0000aaaa", b"peer-1/0000bbbb"
INTERVAL = 5.0


def hello(host: str = "host-a", pid: int = 200, agent_id: str = "peer-1") -> Hello:
    return make_hello(ServiceKind.PEER_AGENT, agent_id, host, pid)


def registered(last_heard: float, host: str = "host-a") -> Agent:
    return Agent(OLD, ServiceKind.PEER_AGENT, "peer-1", host, 100, last_heard=last_heard)


def judge(agent: Agent | None, newcomer: Hello, now: float, *, connected: bool = True) -> str:
    verdict = judge_hello(agent, NEW, newcomer, now, quiet_after=INTERVAL, connected=connected)
    return verdict.value


# --- the pure decision, on a fake clock ---------------------------------------------------------


def test_an_unknown_agent_id_is_new_and_the_same_process_again_is_again() -> None:
    assert judge(None, hello(), 10.0) == "new"
    same = judge_hello(
        registered(10.0), OLD, hello(pid=100), 10.0, quiet_after=INTERVAL, connected=True
    )
    assert same is HelloVerdict.AGAIN


@pytest.mark.parametrize(
    ("last_heard", "host", "connected", "verdict"),
    [
        (9.0, "host-a", True, "duplicate"),  # heard a second ago, still connected: alive
        (5.0, "host-a", True, "duplicate"),  # exactly one interval: not quiet yet
        (4.9, "host-a", True, "restart"),  # quiet, and the newcomer is on its host
        (4.9, "host-b", True, "duplicate"),  # quiet, but the newcomer is elsewhere
        (-100.0, "host-b", True, "duplicate"),  # long quiet yet connected, from elsewhere
        (9.9, "host-a", False, "restart"),  # its connection is gone: it exited
        (9.9, "host-b", False, "restart"),  # ... wherever the newcomer runs
    ],
)
def test_a_restart_is_told_from_a_second_live_process(
    last_heard: float, host: str, connected: bool, verdict: str
) -> None:
    assert judge(registered(last_heard), hello(host=host), 10.0, connected=connected) == verdict


def test_without_heartbeats_only_a_gone_connection_makes_a_restart() -> None:
    old = registered(-1000.0)
    kwargs = {"quiet_after": 0.0}
    assert judge_hello(old, NEW, hello(), 10.0, connected=True, **kwargs).value == "duplicate"
    assert judge_hello(old, NEW, hello(), 10.0, connected=False, **kwargs).value == "restart"


def test_the_refusal_names_the_live_process_and_what_to_do() -> None:
    refusal = duplicate_refusal(registered(7.5), 10.0)
    assert refusal.reason == "duplicate_agent"
    assert refusal.message == (
        "peer agent 'peer-1' already runs on host-a (pid 100, heard 2.5 s ago): an agent id "
        "runs in exactly one process; give this one another --agent-id"
    )


# --- the core -------------------------------------------------------------------------------------


def core_with_peer(now: float = 0.0) -> Coordinator:
    core = new_core(heartbeat_interval=INTERVAL)
    join(core, STORAGE, ServiceKind.STORAGE_AGENT)
    core.agent_joined(OLD, hello(pid=100), now)
    return core


def test_a_second_live_process_is_refused_once_logged_and_the_live_one_untouched(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = core_with_peer()
    info_hash = opened(core)
    connect(core, info_hash, OLD, "peer-1/1", 2, Bitfield.full(NUM_PIECES))
    asked: list[bytes] = []

    def connected(identity: bytes) -> bool:
        asked.append(identity)
        return True

    with caplog.at_level(logging.WARNING, logger="torviz.services.coordinator.core"):
        for _ in range(3):  # it says hello again and again: one warning
            refusal = core.vet_hello(NEW, hello(host="host-b", pid=300), 1.0, connected)
            assert isinstance(refusal, Rejected) and refusal.reason == "duplicate_agent"
            assert "already runs on host-a (pid 100" in refusal.message
    assert asked == [OLD, OLD, OLD]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "pid 300 on host-b" in warnings[0] and "pid 100 on host-a" in warnings[0]
    # Another pid of the duplicate is logged again.
    with caplog.at_level(logging.WARNING, logger="torviz.services.coordinator.core"):
        assert core.vet_hello(NEW, hello(host="host-b", pid=301), 1.0, connected) is not None
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2
    # The live one keeps its registration and its peer.
    assert core.agents.named("peer-1") is core.agents.get(OLD)
    assert core.status(0.0).torrents[0].peers == 1
    assert core.take_dropped() == []


def test_the_same_process_and_a_new_agent_pass_without_asking_the_socket() -> None:
    core = core_with_peer()

    def connected(identity: bytes) -> bool:
        raise AssertionError("asked only when another process is registered")

    assert core.vet_hello(OLD, hello(pid=100), 1.0, connected) is None
    assert core.vet_hello(b"peer-2/0000cccc", hello(agent_id="peer-2"), 1.0, connected) is None


def test_a_restart_forgets_the_old_process_and_attaches_the_new_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = core_with_peer()
    info_hash = opened(core)
    connect(core, info_hash, OLD, "peer-1/1", 2, Bitfield.full(NUM_PIECES))
    core.take_outbox()
    # SIGKILLed a moment ago: not quiet yet, but its connection is gone.
    assert core.vet_hello(NEW, hello(pid=200), 0.5, lambda identity: False) is None
    with caplog.at_level(logging.INFO, logger="torviz.services.coordinator.core"):
        core.agent_joined(NEW, hello(pid=200), 0.6)
    assert "peer-1 restarted (pid 100 -> pid 200)" in caplog.text
    assert "said hello again" not in caplog.text
    assert core.take_dropped() == [OLD]  # for the bus socket to forget
    assert core.agents.get(OLD) is None
    assert core.agents.named("peer-1") is core.agents.get(NEW)
    assert [a.agent_id for a in core.status(0.0).agents].count("peer-1") == 1
    assert core.status(0.0).torrents[0].peers == 0  # the old process's peer is gone
    attaches = [to for to, m in core.take_outbox() if isinstance(m, AttachTorrent)]
    assert attaches == [NEW]


def test_a_quiet_process_on_the_newcomers_host_is_replaced() -> None:
    core = core_with_peer(now=0.0)
    # Not heard for more than an interval (a hung process, a lost link), same host.
    assert core.vet_hello(NEW, hello(pid=200), INTERVAL + 0.1, lambda identity: True) is None
    core.agent_joined(NEW, hello(pid=200), INTERVAL + 0.1)
    assert core.take_dropped() == [OLD]
    # If it comes back, it is the second process now, and is refused.
    refusal = core.vet_hello(OLD, hello(pid=100), INTERVAL + 0.2, lambda identity: True)
    assert isinstance(refusal, Rejected) and "(pid 200," in refusal.message


def test_the_same_process_saying_hello_again_starts_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = core_with_peer()
    with caplog.at_level(logging.INFO, logger="torviz.services.coordinator.core"):
        core.agent_joined(OLD, hello(pid=100), 1.0)
    assert "peer-1 said hello again: starting it afresh" in caplog.text
    assert core.take_dropped() == []
    assert core.agents.named("peer-1") is core.agents.get(OLD)
