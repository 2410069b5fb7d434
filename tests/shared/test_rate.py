"""RateMeter: the rate over its window, decay when idle, young transfers not diluted."""

from __future__ import annotations

import pytest

from torviz.shared.rate import RateMeter


def test_steady_rate_over_the_window() -> None:
    meter = RateMeter(now=100.0, window=5)
    for second in range(10):
        meter.add(1000, now=100.0 + second + 0.5)
    assert meter.rate(now=109.9) == pytest.approx(1000, rel=0.25)
    assert meter.total == 10_000


def test_rate_decays_to_zero_when_idle() -> None:
    meter = RateMeter(now=0.0, window=5)
    meter.add(5000, now=0.5)
    assert meter.rate(now=0.9) > 0
    assert meter.rate(now=10.0) == 0.0
    assert meter.total == 5000


def test_a_young_transfer_is_not_diluted() -> None:
    meter = RateMeter(now=0.0, window=5)
    meter.add(2000, now=1.5)
    meter.add(2000, now=1.9)
    # Two seconds old, 4000 bytes: 2000 B/s, not 4000 / 5.
    assert meter.rate(now=2.0) == pytest.approx(2000, rel=0.01)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateMeter(now=0.0, window=0)
