"""The core's log lines carry their torrent's tag as ``with_context`` gives it.

``core/`` imports nothing of ``shared.runtime`` (tests/shared/test_purity.py), so the tracker
agent's core tags its lines with plain ``logging`` ``extra``; here each such line is rendered by
the services' own handler next to the same message logged through
``shared.runtime.logging.with_context``, and the two must read alike but for the time.
"""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Iterator

import pytest

from torviz.services.tracker_agent.core.tracking import AnnounceJob, ScrapeJob, TrackerAgentCore
from torviz.shared.bus import TrackerTier, TrackTorrent
from torviz.shared.errors import TrackerError
from torviz.shared.runtime.logging import setup_logging, with_context
from torviz.shared.tracker import AnnounceResponse
from torviz.shared.types import InfoHash, PeerId

IH = InfoHash(bytes(range(20)))
LOGGER = "torviz.services.tracker_agent.core.tracking"
HTTP = "http://127.0.0.1:3/announce"
UDP = "udp://127.0.0.1:2"


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """The lines of the services' log handler, installed for one test only."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    setup_logging("tracker_agent", "INFO", stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _untimed(out: io.StringIO) -> list[str]:
    """Each line without its timestamp (the first word)."""
    return [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]


def _core(*tiers: tuple[str, ...], now: float = 0.0) -> TrackerAgentCore:
    core = TrackerAgentCore(numwant=50, rng=random.Random(5), patience=15.0, scrape_interval=0.0)
    command = TrackTorrent(
        info_hash=IH,
        tiers=tuple(TrackerTier(urls) for urls in tiers),
        peer_id=PeerId(b"-TV0100-abcdefghijkl"),
        listen_port=6881,
        private=False,
        uploaded=0,
        downloaded=0,
        left=1,
    )
    assert core.track(command, now) == []
    return core


def test_a_failed_scrape_is_logged_with_the_torrents_tag(out: io.StringIO) -> None:
    core = _core((HTTP,))
    (job,), _ = core.due(0.0)
    assert isinstance(job, AnnounceJob)
    core.finish(job, AnnounceResponse(peers=(), interval=1800), 1.0)
    (scrape,), _ = core.due(1.0)
    assert isinstance(scrape, ScrapeJob)
    failure = TrackerError("http_status", "HTTP 404 Not Found")
    assert core.finish_scrape(scrape, failure, 2.0) == []
    with_context(logging.getLogger(LOGGER), info_hash=IH).info(
        "%s: scrape failed: %s", HTTP, failure
    )
    ours, theirs = _untimed(out)
    assert ours == theirs
    assert f"INFO {LOGGER} [ih=00010203]: {HTTP}: scrape failed: " in ours


def test_an_overdue_udp_announce_is_logged_with_the_torrents_tag(out: io.StringIO) -> None:
    core = _core((UDP,))
    core.due(0.0)
    core.due(15.0)  # past its patience
    text = "no reply within 15 s, still retrying"
    with_context(logging.getLogger(LOGGER), info_hash=IH).warning("%s: %s", UDP, text)
    ours, theirs = _untimed(out)
    assert ours == theirs
    assert ours == f"tracker_agent WARNING {LOGGER} [ih=00010203]: {UDP}: {text}"
