"""The real agent against hostile trackers, next to opentracker, the test as its coordinator.

Every hostile tracker of ``fakes.py`` (garbage, truncated replies, a million-peer list,
redirect loops, silence, error packets, wrong transaction ids ...) gets its own torrent whose
second tier is a working opentracker, and one more torrent has opentracker alone. The agent
announces to all tiers at once (the config key), so the test sees that each hostile tracker
ends in one ``failed`` line and a log line, that nothing waits for it, and that the agent's
memory stays bounded while it refuses a 6 MB reply.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from testing import Swarm
from tests.services.tracker_agent.conftest import StartAgent
from tests.services.tracker_agent.fakes import (
    HOSTILE_HTTP,
    HOSTILE_UDP,
    FakeUdpTracker,
    HttpServer,
    Reply,
    SilentTcpServer,
)
from tests.services.tracker_agent.harness import (
    Coordinator,
    announce_others,
    fresh_info_hash,
    memory_kib,
    track,
)
from torviz.shared.bencode import encode
from torviz.shared.bus import Message, PeersDiscovered, Shutdown, TrackerState, TrackerStateChanged
from torviz.shared.tracker import encode_compact_v4, encode_compact_v6
from torviz.shared.types import InfoHash, PeerAddress

PATIENCE = 3.0
HOSTILE_CONFIG = f"""
announce_timeout = {PATIENCE}
announce_to_all_tiers = true
udp_retransmit_base = 0.5
"""
WARNING_BODY = encode(
    {b"interval": 1800, b"warning message": b"this tracker moves next week",
     b"peers": encode_compact_v4([PeerAddress("127.0.0.9", 7009)])}
)  # fmt: skip
MEMORY_BOUND_KIB = 10 * 1024
"""Growth of the agent's peak RSS allowed while it refuses the 6 MB reply (holding it would cost
12 MiB and more, parsing a million peers hundreds of MiB)."""


def report(
    coordinator: Coordinator,
    info_hash: InfoHash,
    url: str,
    state: TrackerState,
    timeout: float = 10.0,
) -> TrackerStateChanged:
    """The first report of ``url`` for ``info_hash`` in ``state`` (waiting up to ``timeout``)."""

    def match(m: Message) -> bool:
        return isinstance(m, TrackerStateChanged) and (m.info_hash, m.url, m.state) == (
            info_hash,
            url,
            state,
        )

    found = coordinator.wait_for(match, timeout)
    assert isinstance(found, TrackerStateChanged)
    return found


@pytest.fixture
def hostile() -> Iterator[dict[str, str]]:
    """Every hostile tracker, running: URL -> the start of the error it must produce."""
    with contextlib.ExitStack() as stack:
        routes: dict[str, Reply | Callable[[], Reply]] = {
            path: reply for path, (reply, _) in HOSTILE_HTTP.items()
        }
        http = stack.enter_context(HttpServer(routes))
        expected = {
            http.url(path): error for path, (_, error) in HOSTILE_HTTP.items() if path != "/loop2"
        }
        silent = stack.enter_context(SilentTcpServer())
        expected[silent.url] = f"timed out after {PATIENCE:g} s"
        for name, (script, error) in HOSTILE_UDP.items():
            udp = stack.enter_context(FakeUdpTracker(answer=script))
            expected[udp.url.replace("/announce", f"/{name}")] = error
        yield expected


@pytest.mark.interop
def test_each_hostile_tracker_fails_in_one_line_and_nothing_waits_for_it(
    swarm: Swarm,
    coordinator: Coordinator,
    start_agent: StartAgent,
    hostile: dict[str, str],
):
    hashes = {url: fresh_info_hash() for url in hostile}
    alone = fresh_info_hash()
    tracker = swarm.tracker([*hashes.values(), alone])
    good = tracker.http_announce_url
    others = {ih: announce_others(tracker, ih, (0,)) for ih in [*hashes.values(), alone]}
    with HttpServer({"/announce": Reply(body=WARNING_BODY)}) as warner:
        agent = start_agent(HOSTILE_CONFIG)
        baseline_kib, _ = memory_kib(agent.process.pid)
        started = time.monotonic()
        for url, info_hash in hashes.items():
            coordinator.send(track(info_hash, (url,), (good,)))
        warned = fresh_info_hash()
        coordinator.send(track(warned, (warner.url("/announce"),)))
        coordinator.send(track(alone, (good,)))

        # The good tracker works for every torrent, long before the silent ones give up.
        for info_hash in [*hashes.values(), alone]:
            report(coordinator, info_hash, good, TrackerState.WORKING)
            wanted = others[info_hash]
            coordinator.wait_for(lambda m: wanted <= coordinator.peers(info_hash), 5.0)  # noqa: B023
        assert time.monotonic() - started < PATIENCE

        # A warning is shown next to a working tracker.
        warning = report(coordinator, warned, warner.url("/announce"), TrackerState.WORKING)
        assert warning.error == "tracker warning: this tracker moves next week"

        # Each hostile tracker: failed, one line naming the cause, and a log line.
        for url, error in hostile.items():
            failed = report(coordinator, hashes[url], url, TrackerState.FAILED, PATIENCE + 10.0)
            assert failed.error is not None and failed.error.startswith(error), (url, failed)
            assert "\n" not in failed.error
            print(f"{url}: {failed.error}")
        log = agent.log_path.read_text()
        for url, error in hostile.items():
            assert f"{url}: " in log and error in log, (url, agent.log())
        assert "Traceback" not in log

        # The million-peer reply was refused without ever holding it.
        rss_kib, peak_kib = memory_kib(agent.process.pid)
        print(f"agent memory: baseline {baseline_kib} KiB, now {rss_kib} KiB, peak {peak_kib} KiB")
        assert peak_kib - baseline_kib < MEMORY_BOUND_KIB, (baseline_kib, rss_kib, peak_kib)
        found = [m for m in coordinator.received if isinstance(m, PeersDiscovered)]
        assert sum(len(m.peers) for m in found) < 100  # none of the million got through

        assert agent.process.poll() is None
        coordinator.send(Shutdown("test"))
        assert agent.wait_exit(10.0) == 0, agent.log()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_peers_from_http_peers6_and_the_udp_ipv6_layout(
    coordinator: Coordinator, start_agent: StartAgent
):
    v4 = [PeerAddress("127.0.0.5", 7005)]
    v6_http = [PeerAddress("::1", 7006), PeerAddress("2001:db8::7", 7007)]
    v6_udp = (PeerAddress("::1", 7008), PeerAddress("2001:db8::9", 7009))
    body = encode(
        {b"interval": 1800, b"peers": encode_compact_v4(v4), b"peers6": encode_compact_v6(v6_http)}
    )
    with (
        HttpServer({"/announce": Reply(body=body)}, host="::1") as http,
        FakeUdpTracker(v6_udp, host="::1") as udp,
    ):
        start_agent("announce_timeout = 2.0\nannounce_to_all_tiers = true")
        info_hash = fresh_info_hash()
        http_url = http.url("/announce")
        assert http_url.startswith("http://[::1]:") and udp.url.startswith("udp://[::1]:")
        coordinator.send(track(info_hash, (http_url,), (udp.url,)))
        report(coordinator, info_hash, http_url, TrackerState.WORKING)
        report(coordinator, info_hash, udp.url, TrackerState.WORKING)
        wanted = {*v4, *v6_http, *v6_udp}
        coordinator.wait_for(lambda m: wanted <= coordinator.peers(info_hash), 5.0)
        assert len(udp.announces) == 1  # 18-byte peers decoded from one IPv6 reply


def test_a_udp_tracker_past_its_patience_fails_then_its_late_answer_counts(
    coordinator: Coordinator, start_agent: StartAgent
):
    peers = (PeerAddress("127.0.0.6", 7010),)
    # Three connects are lost; BEP 15 retransmits (base 0.4 s here: at 0.4, 1.2 and 2.8 s)
    # outlive the agent's 1 s patience, and the fourth gets through.
    with FakeUdpTracker(peers, drop_first=3) as udp:
        start_agent("announce_timeout = 1.0\nudp_retransmit_base = 0.4")
        info_hash = fresh_info_hash()
        coordinator.send(track(info_hash, (udp.url,)))
        failed = report(coordinator, info_hash, udp.url, TrackerState.FAILED)
        assert failed.error == "no reply within 1 s, still retrying"
        working = report(coordinator, info_hash, udp.url, TrackerState.WORKING)
        assert working.error is None and working.seeders == 1
        assert coordinator.index(failed) < coordinator.index(working)
        coordinator.wait_for(lambda m: set(peers) <= coordinator.peers(info_hash), 5.0)
        assert udp.connects == 4 and len(udp.announces) == 1
