"""The tracker agent's core without I/O: commands in, announce jobs and bus messages out.

Outcomes are built by hand (what the HTTP and UDP clients would return); every message the core
produces is also run through the bus codec, so a report that breaks the schema fails here.
"""

from __future__ import annotations

import random

import pytest

from torviz.services.tracker_agent.core.tracking import (
    PEERS_PER_MESSAGE,
    AnnounceJob,
    ScrapeJob,
    TrackerAgentCore,
)
from torviz.shared.bus import (
    Message,
    PeersDiscovered,
    PeerSource,
    TrackerState,
    TrackerStateChanged,
    TrackerTier,
    TrackTorrent,
    UpdateTransfer,
    decode_frames,
    encode_frames,
)
from torviz.shared.errors import BusError, TrackerError
from torviz.shared.tracker import (
    AnnounceEvent,
    AnnounceFailure,
    AnnounceResponse,
    ScrapeStats,
    TrackerPeer,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

IH = InfoHash(bytes(range(20)))
PEER_ID = PeerId(b"-TV0100-abcdefghijkl")
URL_A = "http://127.0.0.1:1/announce"
URL_B = "udp://127.0.0.1:2"


def track(*tiers: tuple[str, ...], port: int = 6881, left: int = 1000) -> TrackTorrent:
    return TrackTorrent(
        info_hash=IH,
        tiers=tuple(TrackerTier(urls) for urls in tiers),
        peer_id=PEER_ID,
        listen_port=port,
        private=False,
        uploaded=1,
        downloaded=2,
        left=left,
    )


def roundtrip(messages: list[Message]) -> list[Message]:
    """Every message must survive the bus codec unchanged."""
    for message in messages:
        assert decode_frames(encode_frames(message)) == (message, None)
    return messages


def response(peers: list[PeerAddress], **kwargs) -> AnnounceResponse:
    fields = {"interval": 1800, "complete": 3, "incomplete": 4} | kwargs
    return AnnounceResponse(peers=tuple(TrackerPeer(p) for p in peers), **fields)


@pytest.fixture
def core() -> TrackerAgentCore:
    return TrackerAgentCore(numwant=50, rng=random.Random(5))


def start(core: TrackerAgentCore, *tiers: tuple[str, ...], now: float = 0.0) -> list[AnnounceJob]:
    assert core.track(track(*tiers), now) == []
    jobs, reports = core.due(now)
    roundtrip(reports)
    return [job for job in jobs if isinstance(job, AnnounceJob)]


def due_one(core: TrackerAgentCore, now: float) -> AnnounceJob:
    (job,), _ = core.due(now)
    assert isinstance(job, AnnounceJob)
    return job


def scrape_due(core: TrackerAgentCore, now: float) -> ScrapeJob:
    (job,), _ = core.due(now)
    assert isinstance(job, ScrapeJob)
    return job


def test_first_announce_carries_started_totals_numwant_and_key(core):
    (job,) = start(core, (URL_A,))
    request = job.request
    assert (job.info_hash, job.url, job.tier, job.event) == (IH, URL_A, 0, AnnounceEvent.STARTED)
    assert (request.uploaded, request.downloaded, request.left) == (1, 2, 1000)
    assert (request.port, request.peer_id, request.numwant) == (6881, PEER_ID, 50)
    assert 0 <= request.key < 2**32
    assert core.next_deadline(0.0) is None  # waiting for the outcome


def test_announcing_report(core):
    core.track(track((URL_A,)), 0.0)
    _, reports = core.due(0.0)
    assert reports == [
        TrackerStateChanged(IH, URL_A, 0, TrackerState.ANNOUNCING, None, None, None, None, None)
    ]


def test_success_reports_working_and_the_peers(core):
    (job,) = start(core, (URL_A,))
    a, b = PeerAddress("127.0.0.2", 10), PeerAddress("::1", 11)
    messages = roundtrip(core.finish(job, response([a, b]), 5.0))
    assert messages == [
        TrackerStateChanged(IH, URL_A, 0, TrackerState.WORKING, None, 3, 4, None, 1800.0),
        PeersDiscovered(IH, (a, b), PeerSource.TRACKER),
    ]
    assert core.next_deadline(5.0) == 1805.0


def test_peers_are_deduplicated_and_batched_within_the_schema_bound(core):
    (job,) = start(core, (URL_A,))
    many = [PeerAddress("10.0.0.1", port) for port in range(1, 5001)]
    messages = roundtrip(core.finish(job, response([*many, *many[:10]]), 0.0))
    batches = [m for m in messages if isinstance(m, PeersDiscovered)]
    assert [len(b.peers) for b in batches] == [PEERS_PER_MESSAGE, 5000 - PEERS_PER_MESSAGE]
    assert [p for b in batches for p in b.peers] == many


def test_peers_per_message_is_the_schema_bound():
    peers = tuple(PeerAddress("10.0.0.1", port) for port in range(1, PEERS_PER_MESSAGE + 2))
    encode_frames(PeersDiscovered(IH, peers[:PEERS_PER_MESSAGE], PeerSource.TRACKER))
    with pytest.raises(BusError):
        encode_frames(PeersDiscovered(IH, peers, PeerSource.TRACKER))


def test_no_peers_no_peers_message(core):
    (job,) = start(core, (URL_A,))
    messages = core.finish(job, response([]), 0.0)
    assert [type(m) for m in messages] == [TrackerStateChanged]


def test_counts_are_clamped_to_u32(core):
    (job,) = start(core, (URL_A,))
    (state,) = roundtrip(core.finish(job, response([], complete=2**40, incomplete=-1), 0.0))
    assert isinstance(state, TrackerStateChanged)
    assert (state.seeders, state.leechers) == (2**32 - 1, None)


def test_tracker_refusal_reports_failed_with_its_reason_and_falls_through(core):
    first, _ = start(core, (URL_A, URL_B))[0], None
    refusal = AnnounceFailure(reason="Requested download is not authorized", retry_in=10)
    (state,) = roundtrip(core.finish(first, refusal, 1.0))
    assert isinstance(state, TrackerStateChanged)
    assert state.state is TrackerState.FAILED
    assert state.error == "tracker refused the announce: Requested download is not authorized"
    assert state.next_announce_in == 600.0  # BEP 31 retry in: 10 minutes
    jobs, _ = core.due(1.0)
    assert [j.url for j in jobs] == [URL_B if first.url == URL_A else URL_A]


def test_retry_never_disables_the_tracker(core):
    (job,) = start(core, (URL_A,))
    (state,) = core.finish(job, AnnounceFailure(reason="go away", never_retry=True), 1.0)
    assert isinstance(state, TrackerStateChanged)
    assert state.state is TrackerState.DISABLED
    assert core.next_deadline(1.0) is None


def test_network_error_reports_its_one_line(core):
    (job,) = start(core, (URL_A,))
    error = TrackerError("connection_refused", "connection refused")
    (state,) = roundtrip(core.finish(job, error, 1.0))
    assert isinstance(state, TrackerStateChanged)
    assert (state.state, state.error, state.next_announce_in) == (
        TrackerState.FAILED,
        "connection refused",
        15.0,
    )


def test_long_or_multiline_errors_become_one_bounded_line(core):
    (job,) = start(core, (URL_A,))
    (state,) = core.finish(job, TrackerError("x", "a\nb\r\n" + "c" * 5000), 1.0)
    assert isinstance(state, TrackerStateChanged) and state.error is not None
    assert state.error.startswith("a b c") and "\n" not in state.error
    assert len(state.error) == 1024 and state.error.endswith("...")


def test_unusable_urls_are_reported_disabled_once(core):
    reports = roundtrip(core.track(track(("wss://t/announce", URL_A), ("nonsense",)), 0.0))
    assert [(r.url, r.tier, r.state) for r in reports if isinstance(r, TrackerStateChanged)] == [
        ("wss://t/announce", 0, TrackerState.DISABLED),
        ("nonsense", 1, TrackerState.DISABLED),
    ]
    assert isinstance(reports[0], TrackerStateChanged) and reports[0].error is not None
    assert "unsupported tracker URL scheme 'wss'" in reports[0].error
    jobs, _ = core.due(0.0)
    assert [j.url for j in jobs] == [URL_A]


def test_listen_port_zero_disables_every_tracker(core):
    reports = core.track(track((URL_A,), port=0), 0.0)
    assert [r.state for r in reports if isinstance(r, TrackerStateChanged)] == [
        TrackerState.DISABLED
    ]
    assert core.due(0.0) == ([], [])


def test_update_totals_and_tracker_id_reach_the_next_announce(core):
    (job,) = start(core, (URL_A,))
    core.finish(job, response([], tracker_id=b"tid-1"), 0.0)
    core.update(UpdateTransfer(IH, uploaded=10, downloaded=20, left=30))
    (again,), _ = core.due(1800.0)
    request = again.request
    assert (request.uploaded, request.downloaded, request.left) == (10, 20, 30)
    assert (request.event, request.trackerid, request.key) == (
        AnnounceEvent.NONE,
        b"tid-1",
        job.request.key,
    )


def test_tracking_again_only_updates_totals(core):
    start(core, (URL_A,))
    assert core.track(track((URL_B,), left=5), 1.0) == []
    assert core.info_hashes == (IH,)
    assert core.schedule(IH).urls == (URL_A,)


def test_complete_announces_completed_with_left_zero(core):
    (job,) = start(core, (URL_A,))
    core.finish(job, response([]), 0.0)
    core.complete(IH, 100.0)
    (done,), _ = core.due(100.0)
    assert (done.event, done.request.left) == (AnnounceEvent.COMPLETED, 0)


def test_untrack_returns_stopped_jobs_and_drops_late_outcomes(core):
    (job,) = start(core, (URL_A,))
    core.finish(job, response([]), 0.0)
    (again,), _ = core.due(1800.0)
    stops = core.untrack(IH)
    assert [(s.url, s.event, s.request.numwant) for s in stops] == [
        (URL_A, AnnounceEvent.STOPPED, 0)
    ]
    assert core.finish(again, response([PeerAddress("127.0.0.2", 1)]), 1801.0) == []
    assert core.finish(stops[0], response([]), 1801.0) == []
    assert core.untrack(IH) == [] and core.info_hashes == ()
    assert core.next_deadline(1801.0) is None


def test_stale_job_of_the_same_url_is_ignored(core):
    (job,) = start(core, (URL_A,))
    core.finish(job, TrackerError("timed_out", "timed out after 1 s"), 1.0)
    (retry,), _ = core.due(16.0)
    assert core.finish(job, response([PeerAddress("127.0.0.2", 1)]), 17.0) == []
    assert core.finish(retry, response([]), 17.0) != []


def test_untrack_all_stops_every_torrent(core):
    other = InfoHash(b"\x01" * 20)
    start(core, (URL_A,))
    core.track(TrackTorrent(other, (TrackerTier((URL_B,)),), PEER_ID, 1, True, 0, 0, 0), 0.0)
    jobs, _ = core.due(0.0)
    assert [j.info_hash for j in jobs] == [other]
    stops = core.untrack_all()
    assert sorted(s.info_hash for s in stops) == sorted([IH, other])
    assert core.info_hashes == ()


def test_forget_all_drops_every_torrent_without_stopped_and_its_late_outcomes(core):
    (job,) = start(core, (URL_A,))
    core.track(track((URL_B,)), 0.0)  # already tracked: only the totals change
    assert core.forget_all() == 1
    assert core.info_hashes == () and core.untrack_all() == []  # nothing left to stop
    assert core.finish(job, response([PeerAddress("127.0.0.2", 1)]), 1.0) == []
    assert core.next_deadline(1.0) is None and core.due(1.0) == ([], [])
    (again,) = start(core, (URL_A,), now=2.0)  # tracked again: a fresh started announce
    assert again.event is AnnounceEvent.STARTED and again.attempt != job.attempt


def test_warning_keeps_the_tracker_working_and_shows_in_error(core):
    (job,) = start(core, (URL_A,))
    (state,) = roundtrip(core.finish(job, response([], warning="passkey expires soon"), 1.0))
    assert isinstance(state, TrackerStateChanged)
    assert (state.state, state.error) == (
        TrackerState.WORKING,
        "tracker warning: passkey expires soon",
    )
    (again,), (announcing,) = core.due(1801.0)
    assert isinstance(announcing, TrackerStateChanged)
    assert announcing.error == "tracker warning: passkey expires soon"  # until it answers again
    (clean,) = core.finish(again, response([]), 1802.0)
    assert isinstance(clean, TrackerStateChanged) and clean.error is None


def test_a_failure_code_names_its_cause(core):
    (job,) = start(core, (URL_A,))
    refusal = AnnounceFailure(reason="bad hash", code=150)
    (state,) = core.finish(job, refusal, 1.0)
    assert isinstance(state, TrackerStateChanged)
    assert state.error == "tracker refused the announce: invalid info_hash (code 150): bad hash"


def test_the_last_error_stays_while_announcing_again(core):
    (job,) = start(core, (URL_A,))
    core.finish(job, TrackerError("connection_refused", "connection refused"), 1.0)
    (_retry,), (announcing,) = core.due(16.0)
    assert isinstance(announcing, TrackerStateChanged)
    assert (announcing.state, announcing.error) == (TrackerState.ANNOUNCING, "connection refused")


def patient(**kwargs) -> TrackerAgentCore:
    return TrackerAgentCore(numwant=50, rng=random.Random(5), patience=15.0, **kwargs)


def test_a_udp_announce_past_its_patience_fails_and_the_next_tier_is_tried():
    core = patient()
    (job,) = start(core, (URL_B,), ("http://127.0.0.1:3/announce",))
    assert job.url == URL_B
    assert core.next_deadline(1.0) == 15.0  # the patience of the UDP announce
    jobs, reports = core.due(15.0)
    assert [j.url for j in jobs] == ["http://127.0.0.1:3/announce"]
    failed, announcing = roundtrip(reports)
    assert isinstance(failed, TrackerStateChanged)
    assert (failed.url, failed.state, failed.error, failed.next_announce_in) == (
        URL_B,
        TrackerState.FAILED,
        "no reply within 15 s, still retrying",
        None,
    )
    assert isinstance(announcing, TrackerStateChanged) and announcing.tier == 1
    # The lingering UDP announce answers late: it counts.
    late = roundtrip(core.finish(job, response([PeerAddress("127.0.0.2", 7)]), 40.0))
    assert isinstance(late[0], TrackerStateChanged)
    assert (late[0].state, late[0].error) == (TrackerState.WORKING, None)
    assert isinstance(late[1], PeersDiscovered)


def test_http_announces_have_no_patience_of_their_own():
    core = patient()
    start(core, ("http://127.0.0.1:3/announce",))
    assert core.next_deadline(100.0) is None  # the HTTP client's timeout ends it


def test_a_scrape_follows_a_successful_announce_at_most_every_interval():
    core = patient(scrape_interval=300.0)
    (job,) = start(core, (URL_B,))
    core.finish(job, response([], complete=1, incomplete=2), 1.0)
    assert core.next_deadline(1.0) == 1.0
    scrape = scrape_due(core, 1.0)
    assert (scrape.info_hash, scrape.url) == (IH, URL_B)
    (state,) = roundtrip(core.finish_scrape(scrape, ScrapeStats(5, 9, 4), 2.0))
    assert isinstance(state, TrackerStateChanged)
    assert (state.state, state.seeders, state.leechers, state.completed) == (
        TrackerState.WORKING, 5, 4, 9
    )  # fmt: skip
    assert core.finish_scrape(scrape, ScrapeStats(5, 9, 4), 2.0) == []  # stale
    # The next announce keeps the scraped completed count and is not scraped again so soon.
    core.complete(IH, 100.0)
    done = due_one(core, 100.0)
    (after,) = core.finish(done, response([], complete=6, incomplete=3), 101.0)
    assert isinstance(after, TrackerStateChanged)
    assert (after.seeders, after.leechers, after.completed) == (6, 3, 9)
    assert core.due(101.0) == ([], [])
    regular = due_one(core, 1901.0)
    core.finish(regular, response([]), 1902.0)
    scrape_due(core, 1902.0)


def test_failed_scrapes_change_no_state_and_wait():
    core = patient(scrape_interval=0.0)
    (job,) = start(core, ("http://127.0.0.1:3/announce",))
    core.finish(job, response([]), 1.0)
    scrape = scrape_due(core, 1.0)
    assert core.finish_scrape(scrape, TrackerError("http_status", "HTTP 404 Not Found"), 2.0) == []
    regular = due_one(core, 1801.0)
    core.finish(regular, response([]), 1802.0)
    again = scrape_due(core, 1802.0)  # a minute at least has passed
    core.finish_scrape(again, TrackerError("no_scrape", "none"), 1803.0)
    third = due_one(core, 3603.0)
    core.finish(third, response([]), 3604.0)
    assert core.due(3604.0) == ([], [])  # never again


def test_trackers_without_a_scrape_url_are_not_scraped():
    core = patient(scrape_interval=0.0)
    (job,) = start(core, ("http://127.0.0.1:3/tracker",))
    core.finish(job, response([]), 1.0)
    assert core.due(1.0) == ([], [])
