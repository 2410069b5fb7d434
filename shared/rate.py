"""Transfer rates over a sliding window, with the clock passed in.

A ``RateMeter`` keeps byte counts in one-second buckets for the last ``window`` seconds. The rate
is the bytes in complete buckets plus the current one, divided by the time they cover, so a
transfer that just started is not diluted by a window it has not lived through yet.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RateMeter"]


class RateMeter:
    """Bytes per second over the last ``window`` seconds, and the total ever counted."""

    __slots__ = ("_buckets", "_started", "_window", "total")

    def __init__(self, now: float, window: int = 5) -> None:
        if window < 1:
            raise ValueError("the window is at least one second")
        self._window = window
        self._started = now
        self._buckets: deque[list[float]] = deque()  # [second, bytes]
        self.total = 0

    def add(self, amount: int, now: float) -> None:
        self.total += amount
        second = float(int(now))
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += amount
        else:
            self._buckets.append([second, float(amount)])
        self._expire(now)

    def rate(self, now: float) -> float:
        """Bytes per second."""
        self._expire(now)
        if not self._buckets:
            return 0.0
        span = min(float(self._window), now - max(self._started, int(now) - self._window + 1))
        return sum(amount for _, amount in self._buckets) / max(span, 1.0)

    def _expire(self, now: float) -> None:
        oldest = int(now) - self._window + 1
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()
