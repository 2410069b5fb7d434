"""Web seeds (BEP 19) on the command line: the ``--web-seed URL`` option of ``add`` and
``download``, the check of a URL before any daemon is asked, and the texts ``status`` and the
terminal UI show for a web seed.

Strategy: a URL is checked here with the same parser the peer agent uses
(``shared.webseed.parse_web_seed_url``), so a typo is one line at once, never a round trip to
the daemon; the URL is sent as the user gave it (surrounding spaces dropped), and the daemon
checks it again. The texts are pure functions of the bus records (``WebSeedReport`` from the
peer agent running a web seed, ``WebSeedRow`` per URL of a torrent), shared by ``status`` and
the terminal UI so both say the same thing.

Rules:
- A bad URL is a ``WebSeedError`` naming the URL (escaped, clipped) and the parser's reason:
  exit code 1, as when the daemon refuses it.
- Repeats are dropped (compared after normalisation, the first spelling kept); more than
  ``MAX_WEB_SEEDS`` is refused, as the bus would refuse it.
- Every text a server or a URL may have written goes through ``safe_text``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from torviz.shared.bus import MAX_WEB_SEEDS, WebSeedReport, WebSeedRow, WebSeedState
from torviz.shared.errors import WebSeedError
from torviz.shared.units import human_size
from torviz.shared.webseed.urls import parse_web_seed_url

from .commands.info import safe_text

__all__ = [
    "SHOWN_URL",
    "add_web_seed_option",
    "check_web_seed",
    "check_web_seeds",
    "report_text",
    "row_text",
]

SHOWN_URL = 80
"""Characters of a refused URL repeated in its error line."""


def add_web_seed_option(parser: argparse.ArgumentParser) -> None:
    """``--web-seed URL``, repeatable, into ``args.web_seeds`` (``add`` and ``download``)."""
    parser.add_argument(
        "--web-seed",
        action="append",
        default=[],
        dest="web_seeds",
        metavar="URL",
        help="also fetch from this web seed (BEP 19: an http or https URL of the files); "
        "repeat for more",
    )


def check_web_seed(text: str) -> str:
    """Check one web seed URL as the peer agent will.

    Args:
        text: the URL from the command line.

    Returns:
        The URL to send: ``text`` without surrounding spaces.

    Raises:
        WebSeedError: the URL cannot be used; the message names it and why.
    """
    try:
        parse_web_seed_url(text)
    except WebSeedError as exc:
        shown = text.strip(" ")
        if len(shown) > SHOWN_URL:
            shown = shown[: SHOWN_URL - 3] + "..."
        raise WebSeedError(exc.reason, f"{safe_text(shown)}: {exc.message}") from None
    return text.strip(" ")


def check_web_seeds(texts: Sequence[str]) -> tuple[str, ...]:
    """Check ``--web-seed`` URLs and drop repeats.

    Returns:
        The URLs to send, in the order given.

    Raises:
        WebSeedError: a URL cannot be used (the first such), or more than ``MAX_WEB_SEEDS``.
    """
    kept: dict[str, str] = {}
    for text in texts:
        url = check_web_seed(text)
        kept.setdefault(parse_web_seed_url(url).url, url)
    if len(kept) > MAX_WEB_SEEDS:
        raise WebSeedError(
            "too_many_web_seeds", f"{len(kept)} web seeds given; a torrent keeps {MAX_WEB_SEEDS}"
        )
    return tuple(kept.values())


def _seconds(value: float) -> str:
    """Whole seconds, rounded up: a wait of 0.2 s is not over ("1 s", never "0 s")."""
    return f"{max(1, math.ceil(value))} s"


def report_text(report: WebSeedReport) -> str:
    """Where a running web seed stands, from its peer agent: ``fetching (2 requests)``,
    ``backing off, retry in 12 s: HTTP 503 Service Unavailable``, ``retrying (2 failed): timed
    out``, ``given up: redirect loop at http://...``; ``, 1 file missing`` when the server lacks
    files."""
    error = safe_text(report.last_error)
    if report.state is WebSeedState.GIVEN_UP:
        text = "given up" + (f": {error}" if error else "")
    elif report.state is WebSeedState.BACKING_OFF:
        wait = "" if report.retry_in is None else f", retry in {_seconds(report.retry_in)}"
        failed = f" ({report.failures} failed)" if report.failures > 1 else ""
        text = f"backing off{wait}{failed}" + (f": {error}" if error else "")
    elif report.failures:  # the back-off is over: one request probes the server again
        text = f"retrying ({report.failures} failed)" + (f": {error}" if error else "")
    else:
        plural = "" if report.in_flight == 1 else "s"
        text = f"fetching ({report.in_flight} request{plural})" if report.in_flight else "idle"
    if report.disabled_files:
        plural = "" if report.disabled_files == 1 else "s"
        text += f", {report.disabled_files} file{plural} missing"
    return text


def row_text(row: WebSeedRow) -> str:
    """A torrent's web seed URL, what it delivered and where it stands, without the URL:
    ``connected, 12.0 MiB``, ``banned, 1.0 MiB, 3 hash failures: <why>``."""
    state = row.state.value.replace("_", " ")
    failures = ""
    if row.hash_failures:
        plural = "" if row.hash_failures == 1 else "s"
        failures = f", {row.hash_failures} hash failure{plural}"
    message = f": {safe_text(row.message)}" if row.message else ""
    return f"{state}, {human_size(row.downloaded)}{failures}{message}"
