"""A torrent's web seed URLs (BEP 19) and where each stands: a pure policy, the clock passed in.

Strategy: ``WebSeeds`` (``torrent.web_seeds``) holds one ``WebSeedEntry`` per URL, whatever
its source: the torrent's ``url-list``, a magnet link's ``ws=`` (the .torrent built once its
info dictionary arrives lists them as ``url-list`` too), ``AddTorrent.web_seeds`` and
``AddWebSeed``. The last two are the user's (``user``): the session store keeps them, the
others come from the metainfo or the link each time. ``httpseeds`` (BEP 17, Hoffman style) is
another protocol (a script answering ``?info_hash=&piece=``) and is ignored. The swarm asks
which URLs to start (``due``), and tells what happened to each session (``started``,
``connected``, ``ended``, ``stopped``...); each move is a line of the table in ``ended``.

Rules:
- A URL is checked with ``parse_web_seed_url`` when it arrives and kept normalised; one that
  fails is kept as a row in state INVALID with the error's message (it never fails an add);
  duplicates (after normalising) are dropped; at most ``MAX_WEB_SEEDS`` rows per torrent.
- A session is CONNECTED from its ``ConnectWebSeed`` until its ``PeerDisconnected`` or until
  we close it ourselves; its key is known once ``WebSeedConnected`` arrives. Events naming a
  key or an agent that is not the entry's current one are stale and change nothing.
- How a session ended decides what comes next (``ended``): given up by its peer agent ->
  GIVEN_UP; sent corrupt data -> BANNED; stopped by the agent or the torrent -> WAITING (started
  again when due, on any agent); anything else (an error, refused, the torrent unknown) ->
  RETRYING after a delay doubling from ``RETRY_FIRST`` to ``RETRY_MAX``, GIVEN_UP after
  ``MAX_SESSION_FAILURES`` such ends in a row (a session that delivered bytes starts the
  count again).
- GIVEN_UP and RETRYING last until the torrent opens again (``restart``); BANNED and INVALID
  last as long as the torrent is in the session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from torviz.shared.bus import (
    MAX_WEB_SEEDS,
    DisconnectReason,
    WebSeedRow,
    WebSeedUrlState,
    clip_text,
)
from torviz.shared.errors import WebSeedError
from torviz.shared.webseed import parse_web_seed_url

__all__ = [
    "MAX_SESSION_FAILURES",
    "MAX_WEB_SEEDS",
    "RETRY_FIRST",
    "RETRY_MAX",
    "TooManyWebSeedsError",
    "WebSeedEntry",
    "WebSeeds",
]

RETRY_FIRST = 10.0
"""Seconds before a URL whose session failed is placed again; doubled at each failure."""
RETRY_MAX = 600.0
"""The longest wait between two sessions of a failing URL."""
MAX_SESSION_FAILURES = 5
"""Sessions in a row that failed (error, refused) after which a URL is given up."""

_WAIT = frozenset(
    {
        DisconnectReason.WEB_SEED_STOPPED,
        DisconnectReason.TORRENT_DETACHED,
        DisconnectReason.SHUTDOWN,
        DisconnectReason.AGENT_STOPPING,
        DisconnectReason.STOPPED,
    }
)
"""Ends that say nothing against the URL: it waits to be started again."""
_STARTABLE = (WebSeedUrlState.WAITING, WebSeedUrlState.RETRYING)


class TooManyWebSeedsError(Exception):
    """A torrent has ``MAX_WEB_SEEDS`` web seed URLs already."""


@dataclass(slots=True)
class WebSeedEntry:
    """One web seed URL of a torrent and where it stands."""

    url: str
    """Normalised (``WebSeedUrl.url``); as given, clipped, for an INVALID one."""
    user: bool
    """Added by the user (kept by the session store), not from the metainfo or the link."""
    url_state: WebSeedUrlState = WebSeedUrlState.WAITING
    message: str = ""
    """Why it is in that state ('' when nothing to say)."""
    agent: bytes | None = None
    """While CONNECTED: the peer agent asked to run it."""
    key: str | None = None
    """While CONNECTED: its session's peer key, once ``WebSeedConnected`` named it."""
    failures: int = 0
    """Sessions in a row that ended in failure."""
    retry_at: float = 0.0
    """While RETRYING: when it may be started again."""
    downloaded: int = 0
    """Bytes its closed sessions delivered (a live session's count is its peer record's)."""
    hash_failures: int = 0
    """Pieces from it that failed their hash check."""

    def _clear(self, state: WebSeedUrlState, message: str = "") -> None:
        self.url_state, self.message = state, clip_text(message)
        self.agent = self.key = None


class WebSeeds:
    """The web seed URLs of one torrent (see the module comment)."""

    def __init__(self) -> None:
        self._entries: dict[str, WebSeedEntry] = {}

    def __iter__(self) -> Iterator[WebSeedEntry]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, url: str) -> WebSeedEntry | None:
        return self._entries.get(url)

    def add(self, text: str, *, user: bool, strict: bool = False) -> tuple[str, bool]:
        """Add a URL (a row in state INVALID when it cannot be used, unless ``strict``).

        Args:
            text: the URL as given.
            user: the user added it (``AddTorrent.web_seeds``, ``AddWebSeed``).
            strict: refuse a bad URL or one past the cap by raising, instead of keeping it as
                an INVALID row or dropping it.

        Returns:
            The URL as kept (normalised), and whether it was added (False: already there, or
            dropped past the cap).

        Raises:
            WebSeedError: ``strict`` and the URL cannot be used.
            TooManyWebSeedsError: ``strict`` and the torrent has ``MAX_WEB_SEEDS`` URLs already.
        """
        state, message = WebSeedUrlState.WAITING, ""
        try:
            url = parse_web_seed_url(text).url
        except WebSeedError as exc:
            if strict:
                raise
            url, state, message = clip_text(text.strip(" ")), WebSeedUrlState.INVALID, str(exc)
        known = self._entries.get(url)
        if known is not None:
            known.user = known.user or user
            return url, False
        if len(self._entries) >= MAX_WEB_SEEDS:
            if strict:
                raise TooManyWebSeedsError(url)
            return url, False
        self._entries[url] = WebSeedEntry(url, user, state, clip_text(message))
        return url, True

    def user_urls(self) -> tuple[str, ...]:
        """The URLs the user added, to keep across a restart."""
        return tuple(entry.url for entry in self._entries.values() if entry.user)

    # -- placing sessions --

    @property
    def running(self) -> int:
        """Sessions asked for or live (CONNECTED)."""
        return sum(1 for e in self._entries.values() if e.url_state is WebSeedUrlState.CONNECTED)

    def due(self, now: float, room: int) -> list[WebSeedEntry]:
        """Up to ``room`` URLs that may be started now (WAITING, or RETRYING past its delay),
        in the order they were added."""
        due = [
            entry
            for entry in self._entries.values()
            if entry.url_state is WebSeedUrlState.WAITING
            or (entry.url_state is WebSeedUrlState.RETRYING and entry.retry_at <= now)
        ]
        return due[: max(0, room)]

    def started(self, entry: WebSeedEntry, agent: bytes) -> None:
        """``ConnectWebSeed`` for ``entry`` went to ``agent``."""
        entry.url_state, entry.agent, entry.key = WebSeedUrlState.CONNECTED, agent, None

    def connected(self, agent: bytes, url: str, key: str) -> WebSeedEntry | None:
        """``WebSeedConnected`` from ``agent``: the entry it runs for us, or None when that URL
        is no longer wanted there (the caller closes the session)."""
        entry = self._entries.get(url)
        if (
            entry is None
            or entry.url_state is not WebSeedUrlState.CONNECTED
            or entry.agent != agent
            or entry.key is not None
        ):
            return None
        entry.key = key
        return entry

    def by_key(self, key: str) -> WebSeedEntry | None:
        for entry in self._entries.values():
            if entry.key == key and entry.url_state is WebSeedUrlState.CONNECTED:
                return entry
        return None

    # -- sessions ending --

    def ended(
        self, key: str, reason: DisconnectReason, message: str, now: float, *, delivered: int
    ) -> WebSeedEntry | None:
        """A session's ``PeerDisconnected``: the URL's next state (the module comment's table).

        Args:
            key: the session's peer key.
            reason: why it ended.
            message: the peer agent's one line about it.
            now: the time.
            delivered: bytes the session delivered (a productive session resets the failures).

        Returns:
            The entry moved, or None when the key is not a session of ours (closed already).
        """
        entry = self.by_key(key)
        if entry is None:
            return None
        if delivered:
            entry.failures = 0
        if reason is DisconnectReason.WEB_SEED_GIVEN_UP:
            entry._clear(WebSeedUrlState.GIVEN_UP, message)
        elif reason is DisconnectReason.SENT_CORRUPT_DATA:
            entry._clear(WebSeedUrlState.BANNED, message)
        elif reason in _WAIT:
            entry._clear(WebSeedUrlState.WAITING)
        else:
            entry.failures += 1
            text = message or reason.value.replace("_", " ")
            if entry.failures >= MAX_SESSION_FAILURES:
                entry._clear(
                    WebSeedUrlState.GIVEN_UP, f"gave up after {entry.failures} failures: {text}"
                )
            else:
                entry._clear(WebSeedUrlState.RETRYING, text)
                entry.retry_at = now + min(RETRY_MAX, RETRY_FIRST * 2 ** (entry.failures - 1))
        return entry

    def closed(self, entry: WebSeedEntry, state: WebSeedUrlState, message: str = "") -> None:
        """We closed ``entry``'s session (``DisconnectPeer``): its ``PeerDisconnected`` will
        change nothing more."""
        entry._clear(state, message)

    def agent_lost(self, agent: bytes) -> None:
        """A peer agent is gone with its sessions: they wait to start on another."""
        for entry in self._entries.values():
            if entry.url_state is WebSeedUrlState.CONNECTED and entry.agent == agent:
                entry._clear(WebSeedUrlState.WAITING)

    def stopped(self) -> None:
        """The torrent stopped or completed: every session is gone (or being closed)."""
        for entry in self._entries.values():
            if entry.url_state is WebSeedUrlState.CONNECTED:
                entry._clear(WebSeedUrlState.WAITING)

    def restart(self) -> None:
        """The torrent opens again: URLs given up or retrying get a fresh start."""
        for entry in self._entries.values():
            if entry.url_state in (WebSeedUrlState.GIVEN_UP, WebSeedUrlState.RETRYING):
                entry._clear(WebSeedUrlState.WAITING)
                entry.failures = 0

    def blamed(self, url: str) -> int:
        """A piece from ``url`` failed its hash check; returns its failures so far."""
        entry = self._entries.get(url)
        if entry is None:
            return 0
        entry.hash_failures += 1
        return entry.hash_failures

    def credit(self, url: str, received: int) -> None:
        """Bytes a session of ``url`` delivered, counted once it closed."""
        entry = self._entries.get(url)
        if entry is not None and received > 0:
            entry.downloaded += received

    # -- status --

    def rows(self, live: Callable[[str], int], *, enabled: bool) -> tuple[WebSeedRow, ...]:
        """One row per URL.

        Args:
            live: bytes the live session of a key delivered so far (0 when unknown).
            enabled: the ``web_seeds`` switch: off, URLs not given up, banned or invalid show
                DISABLED.
        """
        return tuple(_row(entry, live, enabled) for entry in self._entries.values())


def _row(entry: WebSeedEntry, live: Callable[[str], int], enabled: bool) -> WebSeedRow:
    state = entry.url_state
    if not enabled and state in _STARTABLE:
        state = WebSeedUrlState.DISABLED
    current = live(entry.key) if entry.key is not None else 0
    return WebSeedRow(
        url=entry.url,
        state=state,
        message=entry.message,
        downloaded=entry.downloaded + current,
        hash_failures=entry.hash_failures,
    )
