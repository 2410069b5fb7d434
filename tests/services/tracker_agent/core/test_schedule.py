"""The announce schedule with a fake clock: intervals, back-off, BEP 12 tiers, events.

Time is a plain number passed in; nothing sleeps. Tiers are shuffled by injected RNGs: one that
keeps the order (so a test reads the order it wrote) and one that reverses it.
"""

from __future__ import annotations

import random
from collections.abc import MutableSequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.services.tracker_agent.core.schedule import AnnounceSchedule, DueAnnounce, RetryPolicy
from torviz.shared.bus import TrackerState
from torviz.shared.tracker import AnnounceEvent

STARTED = AnnounceEvent.STARTED
NONE = AnnounceEvent.NONE
COMPLETED = AnnounceEvent.COMPLETED
STOPPED = AnnounceEvent.STOPPED


class KeepOrder:
    def shuffle(self, x: MutableSequence[Any], /) -> None:
        pass


class Reverse:
    def shuffle(self, x: MutableSequence[Any], /) -> None:
        x.reverse()


def make(tiers, now=0.0, rng=None, **kwargs) -> AnnounceSchedule:
    return AnnounceSchedule(tiers, now=now, rng=rng or KeepOrder(), **kwargs)


def urls(due: list[DueAnnounce]) -> list[str]:
    return [d.url for d in due]


def test_first_announce_is_due_at_once_with_started():
    s = make([["http://a"]], now=100.0)
    assert s.next_deadline(100.0) == 100.0
    assert s.due(100.0) == [DueAnnounce("http://a", 0, STARTED)]
    assert s.view("http://a", 100.0).state is TrackerState.ANNOUNCING
    # In flight: nothing more to hand out, no deadline until the outcome arrives.
    assert s.due(100.0) == []
    assert s.next_deadline(100.0) is None


def test_reannounce_on_interval_without_event():
    s = make([["http://a"]])
    s.due(0.0)
    assert s.succeeded("http://a", 2.0, interval=1800)
    assert s.view("http://a", 2.0).state is TrackerState.WORKING
    assert s.view("http://a", 2.0).next_announce_in == 1800
    assert s.next_deadline(2.0) == 1802.0
    assert s.due(1801.9) == []
    assert s.due(1802.0) == [DueAnnounce("http://a", 0, NONE)]


def test_min_interval_longer_than_interval_wins():
    s = make([["http://a"]])
    s.due(0.0)
    s.succeeded("http://a", 0.0, interval=60, min_interval=300)
    assert s.next_deadline(0.0) == 300.0
    assert s.due(299.0) == []
    assert urls(s.due(300.0)) == ["http://a"]


def test_stale_outcomes_are_ignored():
    s = make([["http://a"]])
    assert not s.succeeded("http://a", 0.0, interval=1800)  # nothing in flight yet
    assert not s.failed("http://unknown", 0.0)
    s.due(0.0)
    assert s.failed("http://a", 1.0)
    assert not s.failed("http://a", 1.0)  # the same outcome twice
    assert s.view("http://a", 1.0).failures == 1


def test_backoff_doubles_from_15_s_and_is_capped():
    s = make([["udp://a:1"]])
    now = 0.0
    gaps = []
    for _ in range(12):
        assert urls(s.due(now)) == ["udp://a:1"]
        s.failed("udp://a:1", now)
        deadline = s.next_deadline(now)
        assert deadline is not None
        gaps.append(deadline - now)
        assert s.due(deadline - 0.001) == []
        now = deadline
    assert gaps == [15, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]
    assert s.view("udp://a:1", now).state is TrackerState.FAILED
    assert s.view("udp://a:1", now).failures == 12


def test_backoff_resets_after_success_and_started_is_repeated_until_accepted():
    s = make([["http://a"]])
    assert s.due(0.0)[0].event is STARTED
    s.failed("http://a", 0.0)
    assert s.view("http://a", 0.0).next_announce_in == 15
    assert s.due(15.0)[0].event is STARTED
    s.failed("http://a", 15.0)
    assert s.next_deadline(15.0) == 45.0
    assert s.due(45.0)[0].event is STARTED
    s.succeeded("http://a", 45.0, interval=1800)
    assert s.due(1845.0)[0].event is NONE
    s.failed("http://a", 1845.0)
    assert s.next_deadline(1845.0) == 1860.0  # back to the first delay


def test_retry_in_from_the_tracker_is_a_floor_and_never_disables():
    s = make([["http://a"]])
    s.due(0.0)
    s.failed("http://a", 0.0, retry_after=600.0)
    assert s.next_deadline(0.0) == 600.0
    s.due(600.0)
    s.failed("http://a", 600.0, disable=True)
    assert s.view("http://a", 600.0).state is TrackerState.DISABLED
    assert s.next_deadline(600.0) is None
    assert s.due(10_000.0) == []


def test_retry_policy_validates_and_can_be_tuned():
    assert [RetryPolicy(1.0, 3.0, 20.0).delay(n) for n in range(1, 5)] == [1, 3, 9, 20]
    assert RetryPolicy().delay(10_000) == 3600
    with pytest.raises(ValueError):
        RetryPolicy(first_delay=0)
    with pytest.raises(ValueError):
        RetryPolicy(first_delay=10, max_delay=5)


def test_tiers_are_shuffled_once_with_the_injected_rng():
    s = make([["http://a", "http://b", "http://c"], ["http://d", "http://e"]], rng=Reverse())
    assert s.tier_order() == [["http://c", "http://b", "http://a"], ["http://e", "http://d"]]
    seeded = [make([["a", "b", "c", "d"]], rng=random.Random(7)).tier_order() for _ in range(2)]
    assert seeded[0] == seeded[1]  # same seed, same order
    assert sorted(seeded[0][0]) == ["a", "b", "c", "d"]


def test_fall_through_within_a_tier_then_to_the_next_tier():
    s = make([["http://a", "http://b"], ["http://c"]])
    assert urls(s.due(0.0)) == ["http://a"]
    s.failed("http://a", 1.0)
    assert s.next_deadline(1.0) == 1.0  # the round goes on at once
    assert urls(s.due(1.0)) == ["http://b"]
    s.failed("http://b", 2.0)
    assert urls(s.due(2.0)) == ["http://c"]
    s.succeeded("http://c", 3.0, interval=1800)
    assert s.view("http://a", 3.0).state is TrackerState.FAILED
    assert s.view("http://c", 3.0).state is TrackerState.WORKING
    # Only one announce per round: a, b were not asked again while c answered.
    assert s.next_deadline(3.0) == 1803.0


def test_a_tracker_that_answers_moves_to_the_front_of_its_tier():
    s = make([["http://a", "http://b", "http://c"]])
    s.due(0.0)
    s.failed("http://a", 0.0)
    s.due(0.0)
    s.failed("http://b", 0.0)
    assert urls(s.due(0.0)) == ["http://c"]
    s.succeeded("http://c", 0.0, interval=1800)
    assert s.tier_order() == [["http://c", "http://a", "http://b"]]
    # The next round starts with the tracker that answered.
    assert s.due(1800.0) == [DueAnnounce("http://c", 0, NONE)]


def test_next_round_retries_the_better_tier_first():
    s = make([["http://a"], ["http://b"]])
    s.due(0.0)
    s.failed("http://a", 0.0)
    assert s.view("http://a", 0.0).next_announce_in == 15.0
    assert urls(s.due(0.0)) == ["http://b"]
    s.succeeded("http://b", 0.0, interval=1800)
    assert s.view("http://a", 0.0).next_announce_in == 1800.0  # with the next round
    # a's back-off (15 s) has long expired at the next round: BEP 12 tries tier 0 first.
    assert s.due(1800.0) == [DueAnnounce("http://a", 0, STARTED)]
    s.succeeded("http://a", 1801.0, interval=900)
    assert s.next_deadline(1801.0) == 2701.0
    assert s.view("http://b", 1801.0).next_announce_in is None  # b is no longer used


def test_trackers_in_back_off_are_skipped_and_the_round_ends_when_nobody_is_left():
    s = make([["http://a"], ["http://b"]])
    s.due(0.0)
    s.failed("http://a", 0.0)  # a: retry at 15
    s.due(0.0)
    s.failed("http://b", 0.0)  # b: retry at 15
    assert s.due(0.0) == []
    assert s.next_deadline(0.0) == 15.0
    assert urls(s.due(15.0)) == ["http://a"]
    s.failed("http://a", 15.0)  # a: retry at 45
    assert urls(s.due(15.0)) == ["http://b"]
    s.failed("http://b", 16.0)  # b: retry at 46
    assert s.due(16.0) == []
    assert s.next_deadline(16.0) == 45.0
    s.due(45.0)
    s.failed("http://a", 45.0)  # a: retry at 105; b is not ready until 46
    assert s.due(45.0) == []
    assert s.next_deadline(45.0) == 46.0
    assert urls(s.due(46.0)) == ["http://b"]


def test_announce_to_all_tiers_runs_the_tiers_side_by_side():
    s = make([["http://a1", "http://a2"], ["http://b1"]], announce_to_all_tiers=True)
    assert urls(s.due(0.0)) == ["http://a1", "http://b1"]
    s.failed("http://a1", 1.0)
    assert urls(s.due(1.0)) == ["http://a2"]  # tier 0 falls through; tier 1 still in flight
    s.succeeded("http://b1", 2.0, interval=100)
    s.succeeded("http://a2", 3.0, interval=200)
    assert s.tier_order() == [["http://a2", "http://a1"], ["http://b1"]]
    assert s.next_deadline(3.0) == 102.0
    assert urls(s.due(102.0)) == ["http://b1"]
    assert urls(s.due(203.0)) == ["http://a2"]


def test_completed_is_announced_once_at_once():
    s = make([["http://a"]])
    s.due(0.0)
    s.succeeded("http://a", 0.0, interval=1800, min_interval=600)
    s.complete(100.0)
    # An event is not held back by min interval (only eventless announces are).
    assert s.next_deadline(100.0) == 100.0
    assert s.due(100.0) == [DueAnnounce("http://a", 0, COMPLETED)]
    s.complete(150.0)  # a second call changes nothing
    s.succeeded("http://a", 101.0, interval=1800, min_interval=600)
    assert s.next_deadline(101.0) == 1901.0
    assert s.due(1901.0)[0].event is NONE
    s.complete(2000.0)
    assert s.next_deadline(2000.0) is None  # in flight; nothing else is owed


def test_completed_is_retried_until_a_tracker_accepts_it():
    s = make([["http://a"]])
    s.due(0.0)
    s.succeeded("http://a", 0.0, interval=1800)
    s.complete(10.0)
    assert s.due(10.0) == [DueAnnounce("http://a", 0, COMPLETED)]
    s.failed("http://a", 11.0)
    assert s.due(26.0)[0].event is COMPLETED
    s.succeeded("http://a", 27.0, interval=1800)
    assert s.due(1827.0)[0].event is NONE


def test_completed_during_an_announce_follows_right_after_it():
    s = make([["http://a"]])
    s.due(0.0)
    s.succeeded("http://a", 0.0, interval=1800)
    assert s.due(1800.0)[0].event is NONE
    s.complete(1801.0)  # the regular announce in flight still said left > 0
    s.succeeded("http://a", 1802.0, interval=1800)
    assert s.next_deadline(1802.0) == 1802.0
    assert s.due(1802.0)[0].event is COMPLETED


def test_completed_before_started_was_accepted_is_not_sent():
    s = make([["http://a"]])
    s.complete(0.0)  # a seed from the start: the first announce already says left=0
    assert s.due(0.0)[0].event is STARTED
    s.succeeded("http://a", 0.0, interval=1800)
    assert s.due(1800.0)[0].event is NONE


def test_stop_announces_stopped_to_trackers_that_have_us():
    s = make([["http://a", "http://b"], ["http://c"]], announce_to_all_tiers=True)
    s.due(0.0)  # a and c
    s.succeeded("http://a", 0.0, interval=1800)
    s.failed("http://c", 0.0, retry_after=5000.0)  # c never accepted started
    assert urls(s.due(1800.0)) == ["http://a"]  # a again, in flight while we stop
    stops = s.stop()
    assert stops == [DueAnnounce("http://a", 0, STOPPED)]
    assert s.stop() == []
    assert s.due(1e9) == [] and s.next_deadline(0.0) is None
    assert not s.succeeded("http://a", 1801.0, interval=1800)


def test_stop_includes_a_started_announce_in_flight():
    s = make([["http://a"]])
    s.due(0.0)
    assert s.stop() == [DueAnnounce("http://a", 0, STOPPED)]


def test_stop_before_any_announce_sends_nothing():
    assert make([["http://a"]]).stop() == []


def test_duplicate_urls_and_empty_tiers():
    s = make([["http://a"], [], ["http://a", "http://b"]])
    assert s.urls == ("http://a", "http://b")
    assert s.view("http://b", 0.0).tier == 2
    assert make([]).next_deadline(0.0) is None
    assert make([[]]).due(0.0) == []


@given(
    st.lists(st.sampled_from(["ok", "fail"]), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=4),
)
def test_never_more_than_one_announce_in_flight_per_round(outcomes, trackers):
    s = make([[f"http://t{i}" for i in range(trackers)]], rng=random.Random(1))
    now = 0.0
    for outcome in outcomes:
        deadline = s.next_deadline(now)
        assert deadline is not None and deadline >= now
        now = deadline
        due = s.due(now)
        assert len(due) == 1
        assert s.due(now) == []
        if outcome == "ok":
            s.succeeded(due[0].url, now, interval=60)
        else:
            s.failed(due[0].url, now)


def test_an_overdue_announce_falls_through_and_lingers_until_it_ends():
    s = make([["http://a"], ["http://b"]])
    assert urls(s.due(0.0)) == ["http://a"]
    assert s.overdue("http://a", 15.0)
    assert not s.overdue("http://a", 16.0)  # reported once
    view = s.view("http://a", 15.0)
    assert (view.state, view.next_announce_in) == (TrackerState.FAILED, None)
    assert s.next_deadline(15.0) == 15.0
    assert s.due(15.0) == [DueAnnounce("http://b", 1, STARTED)]
    # The lingering announce answers after all: it ends the round, b now lingers in turn.
    assert s.succeeded("http://a", 20.0, interval=1800)
    assert s.view("http://a", 20.0).state is TrackerState.WORKING
    assert s.view("http://a", 20.0).next_announce_in == 1800
    assert s.due(20.0) == [] and s.next_deadline(20.0) == 1820.0
    assert s.failed("http://b", 25.0)
    assert s.view("http://b", 25.0).state is TrackerState.FAILED
    assert s.next_deadline(25.0) == 1820.0  # a answered: no reason to hurry
    assert urls(s.due(1820.0)) == ["http://a"]


def test_a_lingering_tracker_is_never_announced_to_twice():
    s = make([["http://a"]])
    s.due(0.0)
    assert s.overdue("http://a", 15.0)
    assert s.next_deadline(15.0) is None  # nobody else to try: wait for the outcome
    assert s.due(100.0) == []
    assert s.failed("http://a", 200.0)  # e.g. BEP 15 retransmits exhausted
    assert s.view("http://a", 200.0).failures == 1
    assert s.next_deadline(200.0) == 215.0
    assert urls(s.due(215.0)) == ["http://a"]


def test_a_new_round_skips_a_lingering_tracker():
    s = make([["http://a"], ["http://b"]])
    s.due(0.0)
    s.overdue("http://a", 15.0)
    s.due(15.0)
    s.failed("http://b", 16.0)
    assert s.next_deadline(16.0) == 31.0  # b's back-off; a still lingers
    assert s.due(31.0) == [DueAnnounce("http://b", 1, STARTED)]


def test_overdue_while_not_waited_on_only_changes_the_state():
    s = make([["http://a"], ["http://b"]])
    s.due(0.0)
    s.overdue("http://a", 15.0)
    s.due(15.0)
    s.succeeded("http://a", 16.0, interval=1800)  # b lingers, its patience runs on
    assert s.overdue("http://b", 30.0)
    assert s.view("http://b", 30.0).state is TrackerState.FAILED
    assert s.next_deadline(30.0) == 1816.0


def test_a_lingering_started_is_withdrawn_at_stop():
    s = make([["http://a"], ["http://b"]])
    s.due(0.0)
    s.overdue("http://a", 15.0)
    s.due(15.0)
    assert sorted(urls(s.stop())) == ["http://a", "http://b"]
    assert not s.succeeded("http://a", 16.0, interval=60)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["ok", "fail", "overdue", "wait"]), st.integers(0, 3)),
        min_size=1,
        max_size=60,
    ),
    st.integers(min_value=1, max_value=4),
    st.booleans(),
)
def test_no_tracker_is_announced_to_twice_and_nothing_stalls(steps, trackers, all_tiers):
    tiers = [[f"http://t{i}"] for i in range(trackers)]
    s = make(tiers, rng=random.Random(1), announce_to_all_tiers=all_tiers)
    now = 0.0
    flying: list[str] = []
    for action, pick in steps:
        for due in s.due(now):
            assert due.url not in flying
            flying.append(due.url)
        deadline = s.next_deadline(now)
        assert deadline is None or deadline >= now
        if not flying:
            assert deadline is not None  # something is always planned
        if action == "wait" or not flying:
            now = deadline if deadline is not None else now + 1.0
            continue
        url = flying[pick % len(flying)]
        now += 1.0
        if action == "overdue":
            s.overdue(url, now)
            continue
        flying.remove(url)
        if action == "ok":
            assert s.succeeded(url, now, interval=60)
        else:
            assert s.failed(url, now)
