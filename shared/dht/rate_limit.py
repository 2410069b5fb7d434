"""Token buckets for incoming DHT datagrams: one per source IP and one for all, clock passed in.

Strategy: a bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a datagram
takes one token or is dropped. ``RateLimiter`` charges the source's bucket and the total one, and
keeps per-source buckets in an LRU map of at most ``max_sources`` entries, so a flood from many
addresses costs bounded memory (an evicted source comes back with a full bucket, which is no worse
than a new source).

Rules:
- The total bucket is charged only when the source's bucket had a token: one noisy source cannot
  use up everyone's share.
- A clock that goes backwards refills nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["RateLimiter", "RateLimits", "TokenBucket"]


class TokenBucket:
    """Up to ``burst`` tokens, refilled at ``rate`` a second."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        """A full bucket.

        Args:
            rate: Tokens added per second (positive).
            burst: Most tokens held (at least 1).
            now: The clock, in seconds.

        Raises:
            ValueError: ``rate`` not positive or ``burst`` below 1.
        """
        if not rate > 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._at = now

    def take(self, now: float) -> bool:
        """Take one token if there is one.

        Args:
            now: The clock.

        Returns:
            Whether a token was taken (False: over the limit).
        """
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Rates (datagrams a second) and bursts of the per-source and total buckets."""

    per_source_rate: float = 20.0
    per_source_burst: float = 60.0
    total_rate: float = 500.0
    total_burst: float = 1_000.0
    max_sources: int = 4_096


class RateLimiter:
    """The per-source and total buckets of incoming datagrams."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        """Full buckets.

        Args:
            limits: The rates and bursts.
            now: The clock.
        """
        self.limits = limits
        self._total = TokenBucket(limits.total_rate, limits.total_burst, now)
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, source: str, now: float) -> bool:
        """Charge one datagram from ``source`` (an IP address).

        Args:
            source: The sender's IP, as text.
            now: The clock.

        Returns:
            Whether it is within both limits (False: drop it).
        """
        bucket = self._sources.get(source)
        if bucket is None:
            if len(self._sources) >= self.limits.max_sources:
                self._sources.popitem(last=False)
            bucket = TokenBucket(self.limits.per_source_rate, self.limits.per_source_burst, now)
            self._sources[source] = bucket
        else:
            self._sources.move_to_end(source)
        return bucket.take(now) and self._total.take(now)

    @property
    def sources(self) -> int:
        """Sources with a bucket now (at most ``max_sources``)."""
        return len(self._sources)
