"""HTTP scrape (BEP 48): where the scrape endpoint is, how to ask it, what it answers.

Strategy: string surgery on the announce URL rather than a parse/unparse round trip, so the
rest of the URL (passkeys, odd escapes, an empty query) is kept byte for byte. UDP trackers
scrape over the announce socket instead (``udp.py``).

Rules:
- The scrape URL exists only for http(s) URLs whose last path component starts with
  ``announce``: that prefix becomes ``scrape`` and the rest is kept
  (``/x/announce.php?k=1`` -> ``/x/scrape.php?k=1``). Anything else has no scrape URL. Only the
  path counts (BEP 48), so a ``/`` inside the query does not matter.
- Replies are decoded like announce replies (lenient keys, TRACKER_LIMITS). ``failure reason``
  (BEP 3) or ``failure_reason`` (BEP 48) raises ``tracker_failure``. Entries whose key is not
  20 bytes or whose value is not a dictionary of integers are skipped; a missing or negative
  count reads as 0; at most MAX_SCRAPE_ENTRIES entries are read (a full scrape of a big
  tracker would otherwise be unbounded work).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import islice

from torviz.shared.bencode import Value
from torviz.shared.errors import TrackerError
from torviz.shared.tracker.http import append_query, decode_reply, percent_encode
from torviz.shared.tracker.model import ScrapeStats, tracker_text
from torviz.shared.types import InfoHash

__all__ = [
    "MAX_HTTP_SCRAPE_HASHES",
    "MAX_SCRAPE_ENTRIES",
    "build_scrape_url",
    "parse_scrape_response",
    "scrape_url",
]

MAX_HTTP_SCRAPE_HASHES = 64
"""Info-hashes per HTTP scrape request: 64 x 71 characters keeps the URL under ~4.6 KB, below
the 8 KB request-line limit of common HTTP servers."""

MAX_SCRAPE_ENTRIES = 1_000
"""Entries of a scrape reply's ``files`` dictionary that are read; the rest are ignored."""


def scrape_url(announce_url: str) -> str | None:
    """The BEP 48 scrape URL of an HTTP announce URL, or None when it has none.

    Examples:
        ``http://t.example/announce`` -> ``http://t.example/scrape``;
        ``https://t.example/p/announce.php?k=1`` -> ``https://t.example/p/scrape.php?k=1``;
        ``http://t.example/a`` and ``udp://t.example:80/announce`` -> None.
    """
    scheme_end = announce_url.find("://")
    if scheme_end < 0 or announce_url[:scheme_end].lower() not in ("http", "https"):
        return None
    cut = len(announce_url)
    for mark in ("?", "#"):
        found = announce_url.find(mark, scheme_end + 3)
        if 0 <= found < cut:
            cut = found
    head, tail = announce_url[:cut], announce_url[cut:]
    if head.find("/", scheme_end + 3) < 0:
        return None  # no path at all
    slash = head.rfind("/")
    last = head[slash + 1 :]
    if not last.startswith("announce"):
        return None
    return f"{head[: slash + 1]}scrape{last[len('announce') :]}{tail}"


def build_scrape_url(scrape_url: str, info_hashes: Sequence[InfoHash]) -> str:
    """The GET URL scraping ``info_hashes`` (one ``info_hash`` parameter each, in order).

    Raises:
        ValueError: no hashes, or more than MAX_HTTP_SCRAPE_HASHES.
    """
    if not info_hashes:
        raise ValueError("a scrape needs at least one info hash")
    if len(info_hashes) > MAX_HTTP_SCRAPE_HASHES:
        raise ValueError(
            f"{len(info_hashes)} info hashes in one scrape; the limit is {MAX_HTTP_SCRAPE_HASHES}"
        )
    query = "&".join(f"info_hash={percent_encode(h.raw)}" for h in info_hashes)
    return append_query(scrape_url, query)


def parse_scrape_response(body: bytes) -> dict[InfoHash, ScrapeStats]:
    """Parse an HTTP scrape reply.

    Args:
        body: the whole reply body (capped by the caller at MAX_RESPONSE_SIZE).

    Returns:
        The counts per info-hash the tracker reported; empty when it knows none of them.

    Raises:
        TrackerError: ``bad_bencode``, ``not_a_dict``, ``tracker_failure`` (with the tracker's
            text), ``bad_field`` (``files`` missing or not a dictionary).
    """
    reply = decode_reply(body)
    for key in (b"failure reason", b"failure_reason"):
        reason = reply.get(key)
        if reason is not None:
            text = tracker_text(reason) if isinstance(reason, bytes) else ""
            raise TrackerError(
                "tracker_failure", f"tracker refused the scrape: {text or 'no reason given'}"
            )
    files = reply.get(b"files")
    if not isinstance(files, dict):
        raise TrackerError("bad_field", "scrape reply has no 'files' dictionary")
    stats: dict[InfoHash, ScrapeStats] = {}
    for raw_hash, entry in islice(files.items(), MAX_SCRAPE_ENTRIES):
        if len(raw_hash) != 20 or not isinstance(entry, dict):
            continue
        counts = [_count(entry, field) for field in (b"complete", b"downloaded", b"incomplete")]
        if None in counts:
            continue
        complete, downloaded, incomplete = (c or 0 for c in counts)
        stats[InfoHash(raw_hash)] = ScrapeStats(complete, downloaded, incomplete)
    return stats


def _count(entry: dict[bytes, Value], field: bytes) -> int | None:
    """The count (0 when missing or negative); None when it is not an integer."""
    value = entry.get(field, 0)
    if not isinstance(value, int):
        return None
    return max(value, 0)
