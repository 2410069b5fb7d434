"""BEP 32 in the tracker agent: a second UDP socket for IPv6 beside the IPv4 one, same port.

A real agent process bound on 127.0.0.1 with ``dht_bind6 = "::1"`` (loopback only: the
default ``::`` would listen on every address of the host) joins through a test ``DhtNode``
that runs IPv6 only on ``[::1]``: the IPv6 node enters the agent's IPv6 table (the status
report counts it), a raw ``get_peers`` over IPv6 with ``want = n6`` gets it back in ``nodes6``,
and the IPv4 socket answers on the same port. With ``dht_bind6 = ""`` nothing listens on IPv6;
when the IPv6 port is taken the agent says so in one line and runs IPv4 only. The suite's
local-only mode (tests/conftest.py) holds for IPv6 too: no public address is contacted.

Skipped, with the reason, on a host without ``::1`` (some CI containers).
"""

from __future__ import annotations

import random
import socket
import time

import pytest

from tests.services.tracker_agent.conftest import StartAgent
from tests.services.tracker_agent.harness import Coordinator, fresh_info_hash
from tests.services.tracker_agent.loopback_dht import LOOPBACK, LoopbackNode, free_udp_port
from torviz.shared.bus import AgentInfo, DhtStatusChanged
from torviz.shared.config import TrackerAgentConfig
from torviz.shared.dht.krpc import GetPeers, Ping, Query, Response, Want, decode_krpc, encode_krpc
from torviz.shared.dht.node_id import random_node_id
from torviz.shared.errors import ConfigError
from torviz.shared.types import PeerAddress

LOOPBACK6 = "::1"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind((LOOPBACK6, 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(
    not _has_ipv6_loopback(), reason="this host has no IPv6 loopback (cannot bind UDP [::1])"
)


def free_udp_port_both() -> int:
    """A UDP port free on 127.0.0.1 and on [::1] (at the time of asking)."""
    for _ in range(50):
        port = free_udp_port()
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOOPBACK6, port))
            except OSError:
                continue
        return port
    raise AssertionError("no UDP port free on both loopbacks in 50 tries")


def ask(family: socket.AddressFamily, host: str, port: int, query: Query) -> Response | None:
    """Send one raw KRPC query from a fresh loopback socket; its answer (queries the agent
    sends this socket meanwhile, like a ping of a newcomer, are skipped), or None within 2 s."""
    deadline = time.monotonic() + 2.0
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.sendto(encode_krpc(query), (host, port))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, source = sock.recvfrom(4096)
            except TimeoutError:
                return None
            assert (source[0], source[1]) == (host, port)  # from the socket asked, only
            answer = decode_krpc(data)
            if isinstance(answer, Response) and answer.t == query.t:
                return answer
    return None


def config6(port: int, bind6: str, bootstrap: list[PeerAddress]) -> str:
    nodes = ", ".join(f'"[{a.host}]:{a.port}"' for a in bootstrap)
    return (
        f'announce_timeout = 1.0\ndht = true\ndht_port = {port}\nbind_address = "{LOOPBACK}"\n'
        f'dht_bind6 = "{bind6}"\ndht_bootstrap = [{nodes}]\n'
    )


def pinged(family: socket.AddressFamily, host: str, port: int) -> bool:
    query = Query(b"p1", Ping(random_node_id(random.Random(3))))
    return ask(family, host, port, query) is not None


@needs_ipv6
def test_an_ipv6_node_enters_the_second_table_and_comes_back_in_nodes6(
    coordinator: Coordinator, start_agent: StartAgent
) -> None:
    ours = LoopbackNode(LOOPBACK6, seed=6)
    try:
        port = free_udp_port_both()
        agent6 = PeerAddress(LOOPBACK6, port)
        agent = start_agent(config6(port, LOOPBACK6, [ours.address]))
        info = coordinator.wait_for(lambda m: isinstance(m, AgentInfo), 10.0)
        assert isinstance(info, AgentInfo) and info.dht_port == port

        # It joins through the IPv6 node, over IPv6, from its DHT port.
        assert ours.pump(lambda: ("find_node", agent6) in ours.queries, 10.0)
        # Its answers reach it: our node enters the agent's IPv6 table, which status counts.
        ours.pump(lambda: False, 1.0)
        status = coordinator.wait_for(
            lambda m: isinstance(m, DhtStatusChanged) and m.summary.nodes >= 1, 10.0
        )
        assert isinstance(status, DhtStatusChanged) and status.summary.port == port

        # A get_peers over IPv6 asking for IPv6 nodes gets our node in nodes6.
        query = Query(b"g6", GetPeers(random_node_id(random.Random(4)), fresh_info_hash(), Want.N6))
        answer = ask(socket.AF_INET6, LOOPBACK6, port, query)
        assert answer is not None, "no answer over IPv6"
        assert ours.address in [node.address for node in answer.nodes6]
        assert answer.nodes == ()  # its IPv4 table is empty, and n4 was not asked for
        # The IPv4 socket answers on the same port.
        assert pinged(socket.AF_INET, LOOPBACK, port)
        assert "IPv4 and IPv6" in agent.log()
        assert "Traceback" not in agent.log()
    finally:
        ours.close()


@needs_ipv6
def test_an_empty_dht_bind6_listens_on_ipv4_only(
    coordinator: Coordinator, start_agent: StartAgent
) -> None:
    port = free_udp_port_both()
    agent = start_agent(config6(port, "", []))
    coordinator.wait_for(lambda m: isinstance(m, AgentInfo), 10.0)
    assert pinged(socket.AF_INET, LOOPBACK, port)
    assert not pinged(socket.AF_INET6, LOOPBACK6, port)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK6, port))  # free: the agent holds no IPv6 socket there
    assert f"listening on UDP {port}, IPv4 (" in agent.log()
    assert "IPv6" not in agent.log()


@needs_ipv6
def test_an_ipv6_port_taken_costs_the_ipv6_node_only_said_in_one_line(
    coordinator: Coordinator, start_agent: StartAgent
) -> None:
    port = free_udp_port_both()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as squatter:
        squatter.bind((LOOPBACK6, port))
        agent = start_agent(config6(port, LOOPBACK6, []))
        info = coordinator.wait_for(lambda m: isinstance(m, AgentInfo), 10.0)
        assert isinstance(info, AgentInfo) and info.dht_port == port
        assert pinged(socket.AF_INET, LOOPBACK, port)
    lines = [line for line in agent.log().splitlines() if "no IPv6 node" in line]
    assert len(lines) == 1 and "INFO" in lines[0] and f"[::1]:{port}" in lines[0]
    assert agent.process.poll() is None


def test_dht_bind6_defaults_to_every_ipv6_address_and_refuses_what_is_not_ipv6() -> None:
    assert TrackerAgentConfig().dht_bind6 == "::"
    assert TrackerAgentConfig(dht_bind6="").dht_bind6 == ""
    assert TrackerAgentConfig(dht_bind6="::1").dht_bind6 == "::1"
    for bad in ("127.0.0.1", "localhost", "[::1]", "::1:6881:x"):
        with pytest.raises(ConfigError, match="dht_bind6"):
            TrackerAgentConfig(dht_bind6=bad)
