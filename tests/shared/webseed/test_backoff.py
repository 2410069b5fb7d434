"""The retry policy of a web seed URL, on a fake clock with a fixed random source."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable

import pytest

from torviz.shared.webseed import (
    MAX_ERROR_TEXT,
    BackoffSettings,
    FileMissing,
    ReadBody,
    RetryLater,
    RetryPolicy,
    SlowDown,
    UrlBroken,
    WebSeedState,
    WebSeedSummary,
)


def fixed(values: Iterable[float]) -> Callable[[], float]:
    it = iter(values)
    return lambda: next(it)


def policy(
    values: Iterable[float] = itertools.repeat(0.5),
    settings: BackoffSettings | None = None,
    files: int = 3,
) -> RetryPolicy:
    return RetryPolicy(settings or BackoffSettings(), fixed(values), files)


def test_schedule_doubles_with_full_jitter_up_to_giving_up() -> None:
    """Default settings (2 s, cap 600 s, 8 failures): random 0.5 halves each window."""
    p = policy()
    now = 0.0
    delays = []
    for n in range(7):
        delay = p.record_failure(now, f"timed out {n}")
        assert delay is not None
        delays.append(delay)
        assert p.summary(now) == WebSeedSummary(
            WebSeedState.BACKING_OFF, n + 1, delay, f"timed out {n}", 0, 4
        )
        assert p.slots(now) == 0
        now += delay
        assert p.state(now) is WebSeedState.ACTIVE
        assert p.slots(now) == 1  # a probe
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert p.record_failure(now, "timed out 7") is None
    summary = p.summary(now)
    assert summary.state is WebSeedState.GIVEN_UP and summary.next_try_in is None
    assert summary.failures == 8
    assert summary.last_error == "8 failures in a row, last: timed out 7"
    assert p.slots(now + 10_000) == 0


def test_schedule_with_a_seeded_random_source() -> None:
    settings = BackoffSettings(base=2.0, cap=600.0, max_failures=20)
    draws = random.Random(17)
    expected_draws = random.Random(17)
    p = RetryPolicy(settings, draws.random, 1)
    now = 0.0
    for n in range(1, 15):
        delay = p.record_failure(now, "503")
        assert delay is not None
        assert delay == expected_draws.random() * min(600.0, 2.0 * 2 ** (n - 1))
        now += delay
    assert p.summary(now).failures == 14


def test_window_is_capped() -> None:
    p = policy(itertools.repeat(0.999), BackoffSettings(base=2.0, cap=600.0, max_failures=50))
    now = 0.0
    windows = []
    for _ in range(12):
        delay = p.record_failure(now, "x")
        assert delay is not None
        windows.append(round(delay / 0.999, 6))
        now += delay
    assert windows == [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600]


def test_jitter_may_draw_zero() -> None:
    p = policy([0.0])
    assert p.record_failure(5.0, "refused") == 0.0
    assert p.state(5.0) is WebSeedState.ACTIVE and p.slots(5.0) == 1


def test_retry_after_is_a_floor() -> None:
    p = policy([0.1, 0.9])
    assert p.record_failure(0.0, "503", retry_after=30.0) == 30.0
    assert p.next_try_at == 30.0
    # A window larger than Retry-After wins: second failure draws 0.9 * 4 = 3.6 > 1.
    assert p.record_failure(30.0, "503", retry_after=1.0) == pytest.approx(3.6)


@pytest.mark.parametrize("bad", [float("nan"), -5.0, float("inf")])
def test_unusable_retry_after_is_no_floor(bad: float) -> None:
    assert policy([0.5]).record_failure(0.0, "x", retry_after=bad) == 1.0


def test_failures_in_flight_when_back_off_began_count_once() -> None:
    p = policy([0.5, 0.5])
    assert p.record_failure(10.0, "a") == 1.0
    assert p.record_failure(10.2, "b") == pytest.approx(0.8)  # the same back-off
    assert p.record_failure(10.5, "c", retry_after=20.0) == 20.0  # may only grow
    summary = p.summary(10.5)
    assert (summary.failures, summary.last_error, summary.next_try_in) == (1, "c", 20.0)
    assert p.record_failure(30.5, "d") == 2.0  # after it: counted, second window


def test_success_resets_failures_and_restores_full_concurrency_after_a_plain_failure() -> None:
    p = policy([0.5, 0.5])
    p.record_failure(0.0, "reset")
    assert p.slots(1.0) == 1
    p.record_success(1.5)
    assert p.summary(1.5) == WebSeedSummary(WebSeedState.ACTIVE, 0, None, "reset", 0, 4)
    assert p.slots(1.5) == 4
    assert p.record_failure(2.0, "again") == 1.0  # the first window again


def test_slow_down_halves_concurrency_to_one_and_successes_restore_it_slowly() -> None:
    settings = BackoffSettings(max_concurrency=8, restore_after=3, max_failures=10)
    p = policy(itertools.repeat(0.0), settings)
    now = 0.0
    for expected in (4, 2, 1, 1):
        p.record_slow_down(now, "HTTP 503 Service Unavailable")
        assert p.summary(now).concurrency == expected
        now += 1
    p.record_slow_down(now, "429", retry_after=5.0)
    assert p.slots(now + 4.9) == 0  # in flight: no second halving
    assert p.record_slow_down(now + 1, "429") == pytest.approx(4.0)
    assert p.summary(now).concurrency == 1
    now += 5
    assert p.slots(now) == 1
    seen = []
    for _ in range(12):
        p.record_success(now)
        seen.append(p.slots(now))
    assert seen == [1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5]


def test_slow_downs_count_towards_giving_up() -> None:
    p = policy(itertools.repeat(0.0), BackoffSettings(max_failures=3))
    assert p.record_slow_down(0.0, "503") == 0.0
    assert p.record_slow_down(0.0, "503") == 0.0
    assert p.record_slow_down(0.0, "503") is None
    assert p.given_up


def test_file_missing_disables_that_file_only() -> None:
    p = policy(files=3)
    p.record_file_missing(1, "HTTP 404 Not Found: the file is not on this server")
    assert not p.file_enabled(1) and p.file_enabled(0) and p.file_enabled(2)
    summary = p.summary(0.0)
    assert (summary.state, summary.disabled_files, summary.failures) == (WebSeedState.ACTIVE, 1, 0)
    assert p.slots(0.0) == 4
    p.record_file_missing(1, "again")  # the same file twice is one file
    p.record_file_missing(0, "HTTP 410 Gone")
    assert p.state(0.0) is WebSeedState.ACTIVE
    p.record_file_missing(2, "HTTP 404 Not Found")
    summary = p.summary(0.0)
    assert summary.state is WebSeedState.GIVEN_UP and summary.disabled_files == 3
    assert (
        summary.last_error == "no file of the torrent is on this server, last: HTTP 404 Not Found"
    )


def test_broken_gives_up_at_once_and_for_good() -> None:
    p = policy()
    p.record_broken("HTTP 403 Forbidden")
    assert p.given_up and p.slots(0.0) == 0 and p.next_try_at is None
    p.record_success(1.0)
    assert p.record_failure(2.0, "later") is None
    assert p.record_slow_down(2.0, "later") is None
    p.record_file_missing(0, "later")
    assert p.summary(3.0) == WebSeedSummary(
        WebSeedState.GIVEN_UP, 0, None, "HTTP 403 Forbidden", 0, 4
    )


def test_error_text_is_one_bounded_line() -> None:
    p = policy()
    p.record_failure(0.0, "line one\nline two\r\n\tand " + "x" * 500)
    text = p.summary(0.0).last_error
    assert "\n" not in text and "\t" not in text and len(text) == MAX_ERROR_TEXT
    assert text.startswith("line one line two and x") and text.endswith("...")


def test_random_outside_the_unit_interval_is_clamped() -> None:
    assert policy([7.0]).record_failure(0.0, "x") == 2.0
    assert policy([-1.0]).record_failure(0.0, "x") == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"base": 0.0},
        {"base": 10.0, "cap": 5.0},
        {"cap": float("inf")},
        {"max_failures": 0},
        {"max_concurrency": 0},
        {"restore_after": 0},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffSettings(**kwargs)  # type: ignore[arg-type]


def test_a_seed_serves_at_least_one_file() -> None:
    with pytest.raises(ValueError, match="at least one file"):
        RetryPolicy(BackoffSettings(), random.Random(0).random, 0)


def test_verdicts_map_to_the_policy() -> None:
    p = policy(itertools.repeat(0.5), files=2)
    p.record_verdict(0.0, 1, ReadBody(0, 10, whole_file=False))
    assert p.summary(0.0) == WebSeedSummary(WebSeedState.ACTIVE, 0, None, "", 0, 4)
    p.record_verdict(0.0, 1, FileMissing(404, "HTTP 404 Not Found"))
    assert not p.file_enabled(1) and p.file_enabled(0)
    p.record_verdict(0.0, 0, SlowDown(503, "HTTP 503 Service Unavailable", 30.0))
    assert p.summary(0.0) == WebSeedSummary(
        WebSeedState.BACKING_OFF, 1, 30.0, "HTTP 503 Service Unavailable", 1, 2
    )
    p.record_verdict(30.0, 0, RetryLater(500, "HTTP 500 Internal Server Error", None))
    assert p.summary(30.0).failures == 2 and p.summary(30.0).next_try_in == 2.0
    assert p.summary(30.0).concurrency == 2
    p.record_verdict(32.0, 0, UrlBroken(403, "HTTP 403 Forbidden"))
    assert p.summary(32.0).state is WebSeedState.GIVEN_UP
    assert p.summary(32.0).last_error == "HTTP 403 Forbidden"
