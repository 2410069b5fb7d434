"""What the web seed session (``web_seed.py``) and its actor exchange: settings, the requests
to start, the answer to a response head, the events and the status. Plain frozen values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torviz.shared.webseed import RangeRequest, WebSeedSummary

from .events import Closed, PieceCompleted, PiecesGivenBack, WorkNeeded

__all__ = [
    "HttpFetch",
    "StopFetch",
    "WebSeedEvent",
    "WebSeedSettings",
    "WebSeedStatus",
]

WebSeedEvent = PieceCompleted | WorkNeeded | PiecesGivenBack | Closed
"""What a web seed session reports to its actor."""


@dataclass(frozen=True, slots=True)
class WebSeedSettings:
    """How a web seed session groups and holds its work.

    Attributes:
        max_request: bytes; the longest run (and so the longest request) (default 4 MiB).
        queued_runs: ask for work when fewer runs than this wait to start (default 2).
        max_attempts: failures of one request before its pieces are given back (default 5).
        idle_retry: seconds; after an empty ``assign``, wait this long before asking again
            (default 5).
        hold_limit: seconds; a back-off longer than this gives back the runs not started
            (default 30).
    """

    max_request: int = 4 * 1024 * 1024
    queued_runs: int = 2
    max_attempts: int = 5
    idle_retry: float = 5.0
    hold_limit: float = 30.0

    def __post_init__(self) -> None:
        if self.max_request < 1 or self.queued_runs < 1 or self.max_attempts < 1:
            raise ValueError("max_request, queued_runs and max_attempts must be at least 1")
        if not (self.idle_retry >= 0 and self.hold_limit >= 0):
            raise ValueError("idle_retry and hold_limit cannot be negative")


@dataclass(frozen=True, slots=True)
class HttpFetch:
    """A request the actor should start now.

    Attributes:
        fetch_id: names it in ``response_head``, ``body`` and ``failed``.
        url: the file's URL on the web seed.
        headers: ``Range`` and ``Accept-Encoding`` (the HTTP client adds its own).
        request: the bytes asked for and where they go in the run (``buffer_offset``).
        first_piece: the first piece of the run it fills.
    """

    fetch_id: int
    url: str
    headers: Mapping[str, str]
    request: RangeRequest
    first_piece: int


@dataclass(frozen=True, slots=True)
class StopFetch:
    """Read nothing more of this fetch: close its stream.

    Attributes:
        reason: snake_case: ``abandoned``, ``file_missing``, ``slow_down``, ``retry_later``,
            ``url_broken``, or the ``WebSeedError`` reason of a reply breaking its contract.
        message: one line for logs.
    """

    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class WebSeedStatus:
    """A web seed's state for per-peer status.

    Attributes:
        retry: the URL's retry state (``RetryPolicy.summary``).
        downloaded: body bytes received into runs, in total.
        rate: bytes per second lately.
        pieces_held: pieces assigned and not yet completed or given back.
        in_flight: requests being read.
    """

    retry: WebSeedSummary
    downloaded: int
    rate: float
    pieces_held: int
    in_flight: int
