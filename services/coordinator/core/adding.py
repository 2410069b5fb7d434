"""Adding torrents to the session: from a .torrent or a magnet link (``AddTorrent``), and
bringing back those of an earlier run (``restore``).

Strategy: ``TorrentAdding`` is a mixin of ``Coordinator`` (``coordinator.py``), split out to
keep each module small. A torrent is parsed and checked once here (a bad .torrent or magnet
link is refused with ``ControlFailed`` naming why), gets its ``Swarm``, and is started, or left
paused, through the coordinator's ``_start``; its web seed URLs are taken in
(``_add_web_seeds``). Rules: as ``coordinator.py``'s (one clock,
``now`` passed in); a torrent added by the user is logged and told to the session store, one
restored is neither.
"""

from __future__ import annotations

import contextlib
import logging
import random

from torviz.shared.bus import MAX_WEB_SEEDS, AddTorrent, ControlFailed, TorrentAdded
from torviz.shared.config import CoordinatorConfig
from torviz.shared.errors import MagnetError, MetainfoError
from torviz.shared.magnet import parse_magnet
from torviz.shared.metainfo import Metainfo, parse_metainfo
from torviz.shared.types import InfoHash
from torviz.shared.units import human_size

from .choking import Choker
from .control_requests import SessionListener
from .lifecycle import Move, advance, initial_state
from .swarm import Swarm, SwarmContext
from .torrent import Torrent

__all__ = ["TorrentAdding"]

log = logging.getLogger(__name__)


class TorrentAdding:
    """Adding torrents, for ``Coordinator`` (see the module comment)."""

    config: CoordinatorConfig
    rng: random.Random
    torrents: dict[InfoHash, Torrent]
    session: SessionListener
    _swarm_context: SwarmContext

    def _clock(self, now: float) -> float:
        raise NotImplementedError

    def _start(self, torrent: Torrent) -> None:
        raise NotImplementedError

    def add_torrent(
        self, request: AddTorrent, now: float, *, paused: bool = False, persist: bool = True
    ) -> TorrentAdded | ControlFailed:
        """Add a torrent from a .torrent or a magnet link (started, or paused); refused when
        unusable or already added (a magnet link and a .torrent of one info hash alike)."""
        self._clock(now)
        save_path = request.download_dir or self.config.download_dir
        metainfo: Metainfo | None = None
        try:
            if request.magnet:
                magnet = parse_magnet(request.magnet)
                torrent = Torrent(
                    None, b"", save_path, now, magnet, initial_state(has_metainfo=False)
                )
            else:
                metainfo = parse_metainfo(
                    request.metainfo, max_path_depth=self.config.max_path_depth
                )
                torrent = Torrent(metainfo, request.metainfo, save_path, added_at=now)
        except MagnetError as exc:
            return ControlFailed("bad_magnet", f"not a usable magnet link: {exc}")
        except MetainfoError as exc:
            return ControlFailed(exc.reason, f"not a usable torrent: {exc}")
        if torrent.info_hash in self.torrents:
            return ControlFailed(
                "already_added", f"{torrent.name} is already added ({torrent.info_hash})"
            )
        torrent.swarm = Swarm(torrent, self._swarm_context, Choker(self.rng, now))
        _add_web_seeds(torrent, request.web_seeds)
        self.torrents[torrent.info_hash] = torrent
        if persist:
            self.session.torrent_added(torrent, paused=paused)
        if paused:
            advance(torrent, Move.PAUSE)
        else:
            self._start(torrent)
        if persist:
            origin = "a magnet link" if request.magnet else "a .torrent"
            size = f", {human_size(torrent.total_length)}" if torrent.metainfo is not None else ""
            log.info(
                "%s: added from %s%s%s, saved in %s",
                torrent.name,
                origin,
                size,
                " (paused)" if paused else "",
                save_path,
                extra={"info_hash": torrent.info_hash},
            )
        return TorrentAdded(torrent.info_hash, torrent.name)

    def restore(
        self,
        metainfo: bytes,
        save_path: str,
        *,
        paused: bool,
        totals: tuple[int, int],
        now: float,
        magnet: str = "",
        metadata: tuple[int, dict[int, bytes]] | None = None,
        web_seeds: tuple[str, ...] = (),
    ) -> TorrentAdded | ControlFailed:
        """Bring back a torrent of an earlier run: from its .torrent, or from its magnet link
        when its info dictionary never arrived (with the ``metadata`` pieces it had: size and
        pieces). A torrent added from a link keeps the link beside its .torrent (its ``so``
        and ``ws``). ``totals`` is ``(uploaded, downloaded)``; ``web_seeds`` the URLs the user
        added to it."""
        fetched = bool(metainfo)
        request = AddTorrent(
            metainfo, save_path, "" if fetched else magnet, web_seeds[:MAX_WEB_SEEDS]
        )
        reply = self.add_torrent(request, now, paused=paused, persist=False)
        if isinstance(reply, TorrentAdded):
            torrent = self.torrents[reply.info_hash]
            torrent.uploaded_closed, torrent.downloaded_closed = totals
            torrent.downloaded_floor = torrent.downloaded_closed
            torrent.metadata_kept = None if fetched else metadata
            if fetched and magnet:
                with contextlib.suppress(MagnetError):
                    torrent.magnet = parse_magnet(magnet)
        return reply


def _add_web_seeds(torrent: Torrent, added: tuple[str, ...]) -> None:
    """A new torrent's web seed URLs (``web_seeds.py``): its ``url-list``, its magnet link's
    ``ws=``, then those the user gave; a bad one becomes an INVALID row, never a refusal."""
    metainfo, magnet = torrent.metainfo, torrent.magnet
    for url in (*(metainfo.web_seeds if metainfo else ()), *(magnet.web_seeds if magnet else ())):
        torrent.web_seeds.add(url, user=False)
    for url in added:
        torrent.web_seeds.add(url, user=True)
