"""Bus messages of the control channel: CLI <-> coordinator (100-129), one reply per request.

Strategy: each request (``AddTorrent``, ``GetStatus``, ``PauseTorrent`` ...) gets exactly one
reply naming what happened, or ``ControlFailed``; ``StatusReport`` carries the status records.
Rules: see ``shared.bus.schema``.
"""

from __future__ import annotations

from typing import Annotated

from torviz.shared.types import InfoHash

from ..vocabulary import (
    MAX_AGENTS,
    MAX_EVENTS,
    MAX_MAGNET,
    MAX_METAINFO_BYTES,
    MAX_TORRENTS,
    MAX_WEB_SEEDS,
    Name,
    Size,
    Text,
)
from .records import AgentStatus, SessionEvent, SessionTotals, TorrentRow, TorrentStatus
from .registry import Message, bus_message

# --- control: CLI <-> coordinator (100-129), one reply per request ------------------------------


@bus_message(tag=100)
class AddTorrent(Message):
    """Add a .torrent (its exact bytes) or a magnet link to download into ``download_dir``.

    Exactly one of ``metainfo`` and ``magnet`` is given; the other is empty.
    """

    metainfo: Annotated[bytes, Size(0, MAX_METAINFO_BYTES)]
    download_dir: Text
    magnet: Annotated[str, Size(0, MAX_MAGNET)] = ""
    web_seeds: Annotated[tuple[Text, ...], Size(0, MAX_WEB_SEEDS)] = ()
    """Web seed URLs to use besides the torrent's own (``add --web-seed``)."""


@bus_message(tag=101)
class TorrentAdded(Message):
    """Reply to ``AddTorrent``."""

    info_hash: InfoHash
    name: Text


@bus_message(tag=102)
class ListTorrents(Message):
    """Ask for the status of every torrent; answered by ``StatusReport``."""


@bus_message(tag=103)
class GetStatus(Message):
    """Ask for the torrents whose hex info-hash starts with ``prefix``; ``detail`` adds each
    one's files and piece map (``TorrentStatus.detail``)."""

    prefix: Annotated[str, Size(0, 40)]
    detail: bool = False


@bus_message(tag=104)
class StatusReport(Message):
    """Reply to ``ListTorrents`` and ``GetStatus``."""

    torrents: Annotated[tuple[TorrentStatus, ...], Size(0, MAX_TORRENTS)]
    agents: Annotated[tuple[AgentStatus, ...], Size(0, MAX_AGENTS)]
    events: Annotated[tuple[SessionEvent, ...], Size(0, MAX_EVENTS)] = ()
    """The daemon's recent log, oldest first."""
    totals: SessionTotals | None = None


@bus_message(tag=105)
class ShutdownRequested(Message):
    """The user asks the daemon to stop; answered by ``ShutdownAccepted``."""


@bus_message(tag=106)
class ShutdownAccepted(Message):
    """Reply to ``ShutdownRequested``: the daemon is stopping."""


@bus_message(tag=107)
class ControlFailed(Message):
    """Reply to any request that failed; ``reason`` is a snake_case code."""

    reason: Name
    message: Text


@bus_message(tag=108)
class RemoveTorrent(Message):
    """Stop and forget a torrent, deleting its files if asked."""

    info_hash: InfoHash
    delete_files: bool


@bus_message(tag=109)
class TorrentRemoved(Message):
    """Reply to ``RemoveTorrent``."""

    info_hash: InfoHash


@bus_message(tag=110)
class PauseTorrent(Message):
    """Stop transferring a torrent (trackers get ``stopped``); answered by ``TorrentPaused``."""

    info_hash: InfoHash


@bus_message(tag=111)
class TorrentPaused(Message):
    """Reply to ``PauseTorrent``."""

    info_hash: InfoHash


@bus_message(tag=112)
class ResumeTorrent(Message):
    """Resume a paused torrent, or retry one in error; answered by ``TorrentResumed``."""

    info_hash: InfoHash


@bus_message(tag=113)
class TorrentResumed(Message):
    """Reply to ``ResumeTorrent``."""

    info_hash: InfoHash


@bus_message(tag=114)
class VerifyTorrent(Message):
    """Recheck every piece of a torrent on disk; answered by ``VerifyStarted``."""

    info_hash: InfoHash


@bus_message(tag=115)
class VerifyStarted(Message):
    """Reply to ``VerifyTorrent``; ``status`` shows the check's progress."""

    info_hash: InfoHash


@bus_message(tag=116)
class ExportTorrent(Message):
    """Ask for a torrent as a .torrent file (one added from a magnet link once its metadata is
    in); answered by ``TorrentExported`` or ``ControlFailed("no_metadata")``."""

    info_hash: InfoHash


@bus_message(tag=117)
class TorrentExported(Message):
    """Reply to ``ExportTorrent``: the .torrent's bytes (the info dictionary exactly as
    fetched or added)."""

    info_hash: InfoHash
    metainfo: Annotated[bytes, Size(1, MAX_METAINFO_BYTES)]


@bus_message(tag=118)
class WatchSession(Message):
    """Ask what changed since a ``SessionChanges`` (a watcher such as the terminal UI polls
    with this); answered by ``SessionChanges``.

    ``since``: the ``revision`` of the last reply (0: everything); ``events_after``: the
    ``seq`` of the last event seen (0: the whole kept log)."""

    since: int
    events_after: int


@bus_message(tag=119)
class SessionChanges(Message):
    """Reply to ``WatchSession``: the torrent rows changed since ``since``, the torrents
    removed since then, the events after ``events_after``, the totals and every agent.

    ``complete``: ``rows`` lists every torrent (``since`` was 0, or too old to answer with
    changes); the watcher drops the rows it has that are not in it."""

    revision: int
    complete: bool
    rows: Annotated[tuple[TorrentRow, ...], Size(0, MAX_TORRENTS)]
    removed: Annotated[tuple[InfoHash, ...], Size(0, MAX_TORRENTS)]
    events: Annotated[tuple[SessionEvent, ...], Size(0, MAX_EVENTS)]
    totals: SessionTotals
    agents: Annotated[tuple[AgentStatus, ...], Size(0, MAX_AGENTS)]


@bus_message(tag=120)
class AddWebSeed(Message):
    """Add a web seed URL to a torrent (kept across restarts); answered by ``WebSeedAdded``,
    or ``ControlFailed`` (``invalid_web_seed``, ``too_many_web_seeds``, ``unknown_torrent``)."""

    info_hash: InfoHash
    url: Text


@bus_message(tag=121)
class WebSeedAdded(Message):
    """Reply to ``AddWebSeed``; ``added`` is False when the torrent had that URL already."""

    info_hash: InfoHash
    url: Text
    added: bool
