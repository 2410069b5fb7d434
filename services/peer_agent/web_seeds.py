"""The peer agent's web seeds (BEP 19): one fetcher per session, its events as bus messages.

Strategy: ``WebSeeds`` holds every web seed session of the agent, each under a peer key taken
from the ``Registry``'s counter (so it never collides with a connection's) and kept here,
beside the registry: a web seed counts against no connection limit (the coordinator caps them).
A ``ConnectWebSeed`` is always answered with ``WebSeedConnected``; when the session cannot run
(the torrent is not attached, has no geometry or no file list yet, the URL is refused) a
``PeerDisconnected`` follows at once, so every web seed key ends with exactly one
``PeerDisconnected``. A running session is a ``WebSeedSession`` driven by a
``WebSeedFetcher`` (its I/O) over the agent's one ``HttpClient`` (CA file, pool, User-Agent),
with ``WebSeedSettings`` and the ``BackoffSettings`` of ``[peer_agent]`` and one
``random.Random`` for the jitter. The fetcher's events come on its driver (a greenlet under
gevent) and go out as a peer connection's do (``core/translate.py``): ``PieceCompleted`` as
``StorePiece`` plus the piece's own data frame on the torrent's ``StorageLink``, then
``PieceDownloaded``; ``WorkNeeded`` as ``WorkWanted``; ``PiecesGivenBack`` as
``PiecesReleased`` (for a file missing on the server, after a ``PeerBitfield`` of the pieces
the session can still serve); ``Closed`` as a last ``TransferStats`` row and ``PeerDisconnected``.
Both links only queue, and one driver delivers a session's events, so a key's messages stay
in order.

Rules:
- Commands for a web seed key (``AssignPieces``, ``CancelPieces``, ``DisconnectPeer``) reach
  its fetcher; ``SetChoke``, ``RequestMetadata``, ``SendPex`` mean nothing to it; a key that is
  unknown, ended, or of another torrent gets nothing (its ``PeerDisconnected`` is on the way).
- Back-pressure: while the torrent's storage link is busy, a session's ``WorkWanted`` is held
  back (the latest count) and sent by ``resume`` once the link is not busy, so the coordinator
  assigns nothing new to a web seed the storage agent cannot keep up with; what is in flight
  is the session's own bound.
- Closing never blocks the caller's inbox: each fetcher's ``close`` (which joins its threads)
  runs on a thread of its own, once per session; ``stop_all`` starts them all, ``close_all``
  also waits for them, bounded, and reports ``PeerDisconnected`` itself for any session whose
  driver did not within the bound.
- A session reports once: the first ``Closed`` (or the forced report) wins, later ones are
  dropped, and the key is forgotten then.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from torviz.shared import bus
from torviz.shared.bus import DisconnectReason
from torviz.shared.config import PeerAgentConfig
from torviz.shared.errors import MetainfoError, WebSeedError
from torviz.shared.metainfo import InfoDict, parse_info_dict
from torviz.shared.runtime.http import DEFAULT_MAX_PER_HOST, HttpClient, HttpError
from torviz.shared.types import InfoHash
from torviz.shared.webseed import BackoffSettings, RetryPolicy, parse_web_seed_url

from .core.commands import PeerMessage
from .core.events import Closed, PieceCompleted, PiecesGivenBack, WorkNeeded
from .core.torrents import Torrent
from .core.translate import store_piece
from .core.web_seed import WebSeedEvent, WebSeedSession, WebSeedSettings
from .web_seed_fetcher import WebSeedFetcher

__all__ = ["CLOSE_TIMEOUT", "PieceSink", "WebSeeds"]

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0
"""Seconds ``close_all`` waits for the sessions to end and report."""
_POOL_PER_SEED = 4  # torrents of one mirror at once that the pool serves without waiting
_MAX_U32 = 2**32 - 1


class PieceSink(Protocol):
    """Where a torrent's finished pieces go: its ``StorageLink`` (only queues)."""

    def store(self, message: bus.StorePiece, data: bytearray) -> None:
        """Send a finished piece; ``data`` is handed over for good."""

    def busy(self) -> bool:
        """Whether so many pieces wait for the storage agent that no more should be asked."""


class _RefusedError(Exception):
    """A ``ConnectWebSeed`` that cannot run: ``code`` goes into its ``PeerDisconnected``."""

    def __init__(
        self, code: DisconnectReason = DisconnectReason.WEB_SEED_REFUSED, message: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False, slots=True)
class _WebSeed:
    """One web seed session: its key, torrent, URL as the coordinator gave it, and I/O."""

    key: str
    info_hash: InfoHash
    url: str
    num_pieces: int
    storage: PieceSink
    fetcher: WebSeedFetcher | None = None
    wanted: int | None = None
    """A ``WorkWanted`` count held back while the storage link is busy."""
    closing: bool = False
    """Its fetcher is being closed (on a thread of its own)."""
    reported: bool = False
    """Its ``PeerDisconnected`` went out (nothing more does)."""


class WebSeeds:
    """The web seed sessions of one peer agent.

    Args:
        config: the agent's ``[peer_agent]`` section (CA file, timeout, connections, failures).
        new_key: gives a fresh peer key (``Registry.new_key``).
        send: queues a message to the coordinator (the agent's ``CoordinatorLink``).
        clock: monotonic seconds (the sessions' clock).
        settings: how sessions group and hold their work.
        http: the HTTP client to use; None: one is made on the first session from ``config``.
        rng: the jitter's random source; None: a fresh ``random.Random``.
        fetch_grace: seconds past the request timeout before a fetcher's watchdog ends a fetch.
    """

    def __init__(
        self,
        config: PeerAgentConfig,
        *,
        new_key: Callable[[], str],
        send: Callable[[bus.Message], None],
        clock: Callable[[], float] = time.monotonic,
        settings: WebSeedSettings | None = None,
        http: HttpClient | None = None,
        rng: random.Random | None = None,
        fetch_grace: float = 1.0,
    ) -> None:
        self._config = config
        self._new_key = new_key
        self._send = send
        self._clock = clock
        self._settings = settings or WebSeedSettings()
        self._backoff = BackoffSettings(
            max_failures=config.web_seed_max_failures,
            max_concurrency=config.web_seed_connections,
        )
        self._http = http
        self._random = rng or random.Random()
        self._grace = fetch_grace
        self._lock = threading.Lock()
        self._seeds: dict[str, _WebSeed] = {}
        self._infos: dict[InfoHash, tuple[bytes, InfoDict]] = {}
        self._closers: list[threading.Thread] = []

    # -- the coordinator's commands ---------------------------------------------------------------

    def connect(
        self, message: bus.ConnectWebSeed, torrent: Torrent | None, storage: PieceSink | None
    ) -> str:
        """Start a session for ``message.url`` (``WebSeedConnected``, and ``PeerDisconnected``
        at once when it cannot run).

        Args:
            message: the coordinator's command.
            torrent: the torrent as attached here, None when it is not.
            storage: the torrent's storage link, None when there is none.

        Returns:
            The session's peer key.
        """
        key = self._new_key()
        info_hash, url = message.info_hash, message.url
        self._send(bus.WebSeedConnected(info_hash, key, url))
        try:
            info, storage = self._check(torrent, storage, info_hash)
            seed_url = parse_web_seed_url(url)
            http = self._client()
        except (_RefusedError, WebSeedError, HttpError) as exc:
            code = exc.code if isinstance(exc, _RefusedError) else DisconnectReason.WEB_SEED_REFUSED
            log.info("web seed %s for %s refused: %s", url, info_hash, exc.message)
            self._send(bus.PeerDisconnected(info_hash, key, code, bus.clip_text(exc.message)))
            return key
        now = self._clock()
        served = sum(1 for f in info.files if f.length and not f.padding)
        policy = RetryPolicy(self._backoff, self._random.random, max(1, served))
        session = WebSeedSession(info.geometry, info.files, seed_url, policy, self._settings, now)
        seed = _WebSeed(key, info_hash, url, info.geometry.num_pieces, storage)
        with self._lock:
            self._seeds[key] = seed
        seed.fetcher = WebSeedFetcher(
            session,
            http,
            lambda event: self._on_event(seed, event),
            clock=self._clock,
            fetch_timeout=self._config.web_seed_timeout,
            grace=self._grace,
            name=f"web-seed-{key}",
        )
        log.info("web seed %s for %s: %s", key, info_hash, url)
        return key

    def command(self, message: PeerMessage) -> bool:
        """Hand a per-peer message to the web seed it names.

        Returns:
            Whether ``message.peer`` is a web seed key (then the message was dealt with here,
            or ignored as meaningless to a web seed); False: it is for a connection.
        """
        with self._lock:
            seed = self._seeds.get(message.peer)
        if seed is None:
            return False
        fetcher = seed.fetcher
        if seed.info_hash != message.info_hash or seed.reported or fetcher is None:
            return True
        match message:
            case bus.AssignPieces(_, _, pieces):
                fetcher.assign(pieces)
            case bus.CancelPieces(_, _, pieces):
                fetcher.revoke(pieces)
            case bus.DisconnectPeer(_, _, reason):
                self._close(seed, reason, "the coordinator closed it")
            case _:
                pass  # SetChoke, RequestMetadata, SendPex: nothing to a web seed
        return True

    def is_web_seed(self, key: str) -> bool:
        """Whether ``key`` names a live web seed session."""
        with self._lock:
            return key in self._seeds

    def detach(self, info_hash: InfoHash) -> None:
        """Close the web seeds of a torrent being detached (each reports)."""
        self._infos.pop(info_hash, None)
        for seed in self._live():
            if seed.info_hash == info_hash:
                self._close(seed, DisconnectReason.TORRENT_DETACHED, "the torrent was detached")

    def stop_all(self, reason: str, message: str) -> None:
        """Start closing every session, without waiting (``close_all`` waits)."""
        for seed in self._live():
            self._close(seed, reason, message)
        self._infos.clear()

    def close_all(self, reason: str, message: str, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close every session and wait, at most ``timeout`` seconds, until each reported;
        one that did not is reported here."""
        self.stop_all(reason, message)
        deadline = time.monotonic() + timeout  # real time: the clock may be a test's
        with self._lock:
            closers, self._closers = self._closers, []
        for closer in closers:
            closer.join(max(0.0, deadline - time.monotonic()))
        for seed in self._live():
            log.warning(
                "web seed %s did not end within %s s: reported as closed", seed.key, timeout
            )
            self._report(seed, reason, message)

    def close(self) -> None:
        """Close every session (``agent_stopping``), then the HTTP client."""
        self.close_all(DisconnectReason.AGENT_STOPPING, "the peer agent is stopping")
        if self._http is not None:
            self._http.close()

    # -- periodic ---------------------------------------------------------------------------------

    def rows(self, now: float) -> list[bus.PeerStats]:
        """The ``PeerStats`` rows of the live sessions."""
        return [self._row(seed) for seed in self._live() if seed.fetcher is not None]

    def resume(self) -> None:
        """Send the ``WorkWanted`` held back for sessions whose storage link is no longer busy."""
        with self._lock:
            ready = [
                s for s in self._seeds.values() if s.wanted is not None and not s.storage.busy()
            ]
            for seed in ready:
                count, seed.wanted = seed.wanted, None
                assert count is not None
                self._send(bus.WorkWanted(seed.info_hash, seed.key, count))

    def __len__(self) -> int:
        with self._lock:
            return len(self._seeds)

    # -- inside -----------------------------------------------------------------------------------

    def _check(
        self, torrent: Torrent | None, storage: PieceSink | None, info_hash: InfoHash
    ) -> tuple[InfoDict, PieceSink]:
        """The torrent's parsed info dictionary and storage link, or why a session cannot run.

        Raises:
            _RefusedError: ``unknown_torrent``, or ``web_seed_refused`` (no geometry, no info
                dictionary or one that does not match, no storage link).
        """
        if torrent is None:
            raise _RefusedError(
                DisconnectReason.UNKNOWN_TORRENT, f"torrent {info_hash} is not attached here"
            )
        geometry = torrent.geometry
        if geometry is None:
            raise _RefusedError(message="the torrent's metadata is not known yet")
        if not torrent.info:
            raise _RefusedError(message="the torrent's file list is not known here")
        if storage is None:
            raise _RefusedError(message="the torrent has no storage link here")
        cached = self._infos.get(info_hash)
        if cached is not None and cached[0] is torrent.info:
            return cached[1], storage
        try:
            info = parse_info_dict(torrent.info, strict=False)
        except MetainfoError as exc:
            raise _RefusedError(message=f"the torrent's info dictionary: {exc.message}") from None
        if (info.piece_length, info.total_length, info.num_pieces) != (
            geometry.piece_length,
            geometry.total_length,
            geometry.num_pieces,
        ):
            raise _RefusedError(message="the info dictionary does not match the torrent's geometry")
        self._infos[info_hash] = (torrent.info, info)
        return info, storage

    def _client(self) -> HttpClient:
        if self._http is None:
            config = self._config
            self._http = HttpClient(
                ca_file=config.web_seed_ca_file,
                max_per_host=max(
                    DEFAULT_MAX_PER_HOST, config.web_seed_connections * _POOL_PER_SEED
                ),
                peer_name="the web seed",
            )
        return self._http

    def _live(self) -> list[_WebSeed]:
        with self._lock:
            return [s for s in self._seeds.values() if not s.reported]

    def _close(self, seed: _WebSeed, reason: str, message: str) -> None:
        """End a session on a thread of its own (``WebSeedFetcher.close`` joins threads)."""
        fetcher = seed.fetcher
        with self._lock:
            if fetcher is None or seed.closing:
                return
            seed.closing = True
        closer = threading.Thread(
            target=fetcher.close, args=(reason, message), name=f"close-{seed.key}", daemon=True
        )
        with self._lock:
            self._closers = [c for c in self._closers if c.is_alive()]
            self._closers.append(closer)
        closer.start()

    def _on_event(self, seed: _WebSeed, event: WebSeedEvent) -> None:
        """A session's event, from its fetcher's driver, as bus messages."""
        info_hash, key, send = seed.info_hash, seed.key, self._send
        match event:
            case PieceCompleted(piece, data):
                if seed.reported:
                    return
                seed.storage.store(store_piece(info_hash, piece, key, None), data)
                send(bus.PieceDownloaded(info_hash, piece, key))
            case WorkNeeded(count):
                count = min(count, bus.MAX_BATCH)
                with self._lock:
                    if seed.reported:
                        return
                    if seed.storage.busy():
                        seed.wanted = count
                        return
                    seed.wanted = None
                send(bus.WorkWanted(info_hash, key, count))
            case PiecesGivenBack(pieces, why):
                if seed.reported:
                    return
                log.debug("web seed %s gave back %d pieces: %s", key, len(pieces), why)
                if why == "web_seed_file_missing" and seed.fetcher is not None:
                    # For good: its bitfield first, so those pieces are not handed back to it.
                    servable = seed.fetcher.servable().to_bytes()
                    send(bus.PeerBitfield(info_hash, key, servable))
                for batch in bus.batches(pieces):
                    send(bus.PiecesReleased(info_hash, key, batch))
            case Closed(reason, message):
                self._report(seed, reason, message)

    def _report(self, seed: _WebSeed, reason: str, message: str) -> None:
        """The session's end: its last stats row and ``PeerDisconnected`` (once), key forgotten."""
        with self._lock:
            if seed.reported:
                return
            seed.reported = True
            seed.wanted = None
            self._seeds.pop(seed.key, None)
        log.info("web seed %s ended: %s (%s)", seed.key, reason, message)
        if seed.fetcher is not None:
            self._send(bus.TransferStats((self._row(seed),)))
        code = DisconnectReason.parse(reason)
        self._send(bus.PeerDisconnected(seed.info_hash, seed.key, code, bus.clip_text(message)))

    def _row(self, seed: _WebSeed) -> bus.PeerStats:
        assert seed.fetcher is not None
        status = seed.fetcher.summary()
        retry = status.retry
        return bus.PeerStats(
            info_hash=seed.info_hash,
            peer=seed.key,
            downloaded=status.downloaded,
            uploaded=0,
            download_rate=status.rate,
            upload_rate=0.0,
            peer_choking=False,
            peer_interested=False,
            am_choking=True,
            am_interested=True,
            snubbed=False,
            pieces=seed.num_pieces,
            web_seed=bus.WebSeedReport(
                state=retry.state,
                failures=min(retry.failures, _MAX_U32),
                retry_in=retry.next_try_in,
                last_error=bus.clip_text(retry.last_error),
                disabled_files=min(retry.disabled_files, _MAX_U32),
                in_flight=min(status.in_flight, _MAX_U32),
            ),
        )
