"""The real tracker agent process against opentracker on loopback, the test as its coordinator.

Two other peers announce to opentracker straight from the test (from their own 127.0.0.x
addresses), so the agent must find them; a third announce from the test shows whether
opentracker still lists the agent. Scrapes run after every announce here
(``scrape_interval = 0``), so their counts show in the agent's reports.
"""

from __future__ import annotations

import signal
import time

import pytest

from testing import Swarm
from tests.services.tracker_agent.conftest import StartAgent
from tests.services.tracker_agent.fakes import SilentTcpServer
from tests.services.tracker_agent.harness import (
    ME,
    WAIT,
    Coordinator,
    fresh_info_hash,
    listed,
    scrape,
    swarm_with_two_peers,
    track,
    wait_until_forgotten,
)
from torviz.shared.bus import (
    Message,
    Shutdown,
    TorrentCompleted,
    TrackerState,
    TrackerStateChanged,
    UntrackTorrent,
    UpdateTransfer,
)
from torviz.shared.types import InfoHash

pytestmark = pytest.mark.interop

SCRAPING = "announce_timeout = 1.0\nscrape_interval = 0"


def scraped(url: str, seeders: int, leechers: int, completed: int):
    """A predicate: a report of ``url`` carrying these scrape counts."""

    def match(m: Message) -> bool:
        return (
            isinstance(m, TrackerStateChanged)
            and m.url == url
            and (m.seeders, m.leechers, m.completed) == (seeders, leechers, completed)
        )

    return match


def announce_started(info_hash: InfoHash, url: str):
    """A predicate: the report that the agent starts an announce of ``info_hash`` to ``url``."""

    def match(m: Message) -> bool:
        return (
            isinstance(m, TrackerStateChanged)
            and (m.info_hash, m.url) == (info_hash, url)
            and m.state is TrackerState.ANNOUNCING
        )

    return match


def test_http_announce_and_scrape_report_peers_and_states_then_untrack_is_stopped(
    swarm: Swarm, coordinator: Coordinator, start_agent: StartAgent
):
    info_hash, tracker, others = swarm_with_two_peers(swarm)
    url = tracker.http_announce_url
    start_agent(SCRAPING)
    coordinator.send(track(info_hash, (url,)))
    announcing = coordinator.state(url, TrackerState.ANNOUNCING)
    assert (announcing.info_hash, announcing.tier, announcing.error) == (info_hash, 0, None)
    working = coordinator.state(url, TrackerState.WORKING)
    assert (working.seeders, working.leechers, working.error) == (1, 2, None)
    assert working.next_announce_in is not None and working.next_announce_in > 60
    coordinator.wait_for(lambda m: others <= coordinator.peers(info_hash), WAIT)
    # The scrape after the announce: 1 seeder, 2 leechers (us included), nobody completed yet.
    coordinator.wait_for(scraped(url, 1, 2, 0), WAIT)
    assert ME in listed(tracker, info_hash)

    completing = len(coordinator.received)
    coordinator.send(UpdateTransfer(info_hash, uploaded=0, downloaded=1000, left=0))
    coordinator.send(TorrentCompleted(info_hash))
    coordinator.wait_for(scraped(url, 2, 2, 1), WAIT)  # the agent's scrape after "completed"
    stats = scrape(tracker.host, tracker.port, info_hash)
    assert (stats.downloaded, stats.complete) == (1, 2)  # we are a seeder now, counted once

    coordinator.send(UntrackTorrent(info_hash))
    wait_until_forgotten(tracker, info_hash)
    # Counted once, and no other announce after it: every announce the agent starts is
    # reported as announcing first. Tracking another torrent is the barrier: its report comes
    # after every report the agent made before it took the untrack (one socket, in order).
    barrier = fresh_info_hash()
    coordinator.send(track(barrier, (url,)))
    coordinator.wait_for(announce_started(barrier, url), WAIT)
    started = [m for m in coordinator.received[completing:] if announce_started(info_hash, url)(m)]
    assert len(started) == 1, started  # the completed announce alone


def test_udp_announce_and_scrape_report_peers_then_untrack_is_stopped(
    swarm: Swarm, coordinator: Coordinator, start_agent: StartAgent
):
    info_hash, tracker, others = swarm_with_two_peers(swarm)
    url = tracker.udp_announce_url
    start_agent(SCRAPING)
    coordinator.send(track(info_hash, (url,)))
    working = coordinator.state(url, TrackerState.WORKING)
    assert (working.seeders, working.leechers) == (1, 2)
    coordinator.wait_for(lambda m: others <= coordinator.peers(info_hash), WAIT)
    coordinator.wait_for(scraped(url, 1, 2, 0), WAIT)  # a UDP scrape (action 2)
    assert ME in listed(tracker, info_hash)
    # BEP 15 event 1 (completed), counted once; the scrape that follows shows it.
    coordinator.send(UpdateTransfer(info_hash, uploaded=0, downloaded=1000, left=0))
    coordinator.send(TorrentCompleted(info_hash))
    coordinator.wait_for(scraped(url, 2, 2, 1), WAIT)
    coordinator.send(UntrackTorrent(info_hash))
    wait_until_forgotten(tracker, info_hash)


def test_shutdown_is_bounded_with_a_tracker_that_never_answers(
    swarm: Swarm, coordinator: Coordinator, start_agent: StartAgent
):
    info_hash, tracker, _ = swarm_with_two_peers(swarm)
    with SilentTcpServer() as silent:
        # A long announce timeout: only the stop bound may limit the shutdown.
        agent = start_agent("announce_timeout = 30.0", "--announce-to-all-tiers")
        coordinator.send(track(info_hash, (tracker.http_announce_url,), (silent.url,)))
        coordinator.state(tracker.http_announce_url, TrackerState.WORKING)
        coordinator.state(silent.url, TrackerState.ANNOUNCING)
        started = time.monotonic()
        coordinator.send(Shutdown("test"))
        assert agent.wait_exit(8.0) == 0, agent.log()
        assert time.monotonic() - started < 5.0
        # Both trackers were told: the silent one got the stopped announce on a new connection.
        assert ME not in listed(tracker, info_hash)
        assert len(silent.accepted) >= 2


def test_sigterm_still_announces_stopped(
    swarm: Swarm, coordinator: Coordinator, start_agent: StartAgent
):
    info_hash, tracker, _ = swarm_with_two_peers(swarm)
    agent = start_agent()
    coordinator.send(track(info_hash, (tracker.http_announce_url,)))
    coordinator.state(tracker.http_announce_url, TrackerState.WORKING)
    assert ME in listed(tracker, info_hash)
    agent.process.send_signal(signal.SIGTERM)
    assert agent.wait_exit(8.0) == 0, agent.log()
    assert ME not in listed(tracker, info_hash)
