"""The control half of the storage agent: opening, rechecking, flushing and closing torrents.

Strategy: ``Control`` is a plain class owned by the actor and called only from the actor's
inbox, so it may change the ``TorrentTable`` freely. It turns the coordinator's requests into
jobs (``jobs``) and their results into bus events. Each request is answered exactly once:

    OpenTorrent    -> CheckProgress* TorrentOpened(have)   | StorageFailed
    RecheckTorrent -> CheckProgress+ TorrentOpened(have)   | StorageFailed
    CloseTorrent   -> [StorageFailed] TorrentClosed        (always; StorageFailed first if the
                                                            flush or the deletion failed)

``CheckProgress`` is sent only while pieces are hashed (none for a fast resume), at most about
four per second, always with the first (0 of n) and the last (n of n).

Rules:
- A torrent being opened, checked or closed is busy: later requests for it wait in its queue
  and run in order once the job ends. A ``CloseTorrent`` that arrives during a check cancels
  the check first; the cancelled open or recheck then gets no ``TorrentOpened`` (the close is
  its answer), and the pieces it had not checked are never recorded.
- A close waits until the torrent's pieces in flight are done (``Drained``) before it takes the
  verified set it records, so a piece that was written is never left out of the final record.
- Recheck: pieces in flight when it arrives are finished first (their ``PieceVerified`` is not
  sent: the recheck's ``TorrentOpened`` is the answer that counts); new ``StorePiece`` requests
  are refused (``torrent_checking``) until it ends, so nothing is counted twice. The coordinator
  detaches the torrent from its peer agents before asking, and takes ``have`` as the truth.
- Periodic flush (every ``flush_interval`` seconds, only with resume state): each open torrent
  with pieces verified since its last record gets a flush job. After a write error the torrent
  is flushed once at once, so the record keeps every piece that was verified before it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.pool

from torviz.shared.bus import (
    CloseTorrent,
    Message,
    OpenTorrent,
    RecheckTorrent,
    StorageFailed,
    TorrentClosed,
    TorrentOpened,
    clip_text,
)
from torviz.shared.runtime.logging import ContextAdapter, with_context
from torviz.shared.types import InfoHash

from . import jobs
from .core.errors import is_expected_failure, storage_failed
from .core.storage import Storage
from .core.torrents import Phase, Refusal, Torrent, TorrentTable
from .hashing import PieceVerifier
from .jobs import Closed, Flushed, Opened, OpenFailed, ProgressReporter, Rechecked, Records
from .settings import AgentSettings

__all__ = ["Control", "Drained"]

log = logging.getLogger(__name__)

_JOB_WAIT = 60.0  # seconds a close, recheck or reopen waits for the torrent's pieces in flight

ControlRequest = OpenTorrent | CloseTorrent | RecheckTorrent


@dataclass(frozen=True, slots=True)
class Drained:
    """Every piece of a closing torrent that was in flight is done and reported."""

    info_hash: InfoHash


def _torrent_log(info_hash: InfoHash) -> ContextAdapter:
    return with_context(log, info_hash=info_hash)


def progress_line(torrent: Torrent) -> str:
    """How much of a torrent is verified, for the log."""
    return f"{len(torrent.verified)} of {torrent.verified.size} pieces verified"


class Control:
    """Opens, rechecks, flushes and closes the agent's torrents.

    Args:
        settings: the agent's settings (preallocation, flush interval ...).
        torrents: the actor's table of torrents.
        verifier: hashes pieces on the agent's hash threads.
        records: the resume store (may keep nothing).
        send: sends a bus message to the coordinator.
        tell: puts a message in the actor's inbox (job results come back through it).
    """

    def __init__(
        self,
        settings: AgentSettings,
        torrents: TorrentTable,
        verifier: PieceVerifier,
        records: Records,
        send: Callable[[Message], None],
        tell: Callable[[object], None],
    ) -> None:
        self._settings = settings
        self._torrents = torrents
        self._verifier = verifier
        self.records = records
        self._send = send
        self._tell = tell
        self.jobs = gevent.pool.Group()
        """Open, recheck, drain and close jobs."""
        self.torrent_jobs: dict[InfoHash, gevent.pool.Group] = {}
        """Each torrent's piece, read and flush jobs (waited for before a close or a check)."""

    def jobs_of(self, info_hash: InfoHash) -> gevent.pool.Group:
        """The group of a torrent's piece, read and flush jobs."""
        group = self.torrent_jobs.get(info_hash)
        if group is None:
            group = self.torrent_jobs[info_hash] = gevent.pool.Group()
        return group

    # -- requests -------------------------------------------------------------------------------

    def request(self, request: ControlRequest) -> None:
        """A request from the coordinator: run it now, or queue it behind the torrent's job."""
        torrent = self._torrents.get(request.info_hash)
        if torrent is not None and torrent.busy:
            if isinstance(request, CloseTorrent) and torrent.phase is not Phase.CLOSING:
                torrent.cancel.requested = True  # a check in progress gives way to the close
            if not torrent.queue(request):
                self._send(
                    StorageFailed(
                        request.info_hash, "", "", "too many requests queued for this torrent"
                    )
                )
            return
        match request:
            case OpenTorrent():
                self._open(torrent, request)
            case CloseTorrent():
                self._close(torrent, request)
            case RecheckTorrent():
                self._recheck(torrent, request.info_hash)

    def _open(self, torrent: Torrent | None, request: OpenTorrent) -> None:
        info_hash = request.info_hash
        old: Storage | None = None
        if torrent is None:
            added = self._torrents.add(info_hash, request.save_path)
            if isinstance(added, Refusal):
                self._send(StorageFailed(info_hash, "", "", added.message))
                return
            torrent = added
        elif torrent.phase is Phase.OPEN:
            if torrent.save_path == request.save_path:
                self._send(TorrentOpened(info_hash, torrent.verified.to_bytes()))
            else:
                self._send(
                    StorageFailed(
                        info_hash,
                        "",
                        "",
                        clip_text(
                            f"already open in {torrent.save_path!r}: close it before opening "
                            f"it in {request.save_path!r}"
                        ),
                    )
                )
            return
        else:  # FAILED: reopening is how a stopped torrent resumes
            old = torrent.reopening(request.save_path)
        self.jobs.spawn(
            self._run,
            jobs.open_job,
            request,
            old,
            preallocate=self._settings.preallocate,
            verifier=self._verifier,
            records=self.records,
            progress=ProgressReporter(info_hash, self._tell),
            cancelled=torrent.cancel,
            before=functools.partial(self._wait_for_jobs, info_hash),
        )

    def _recheck(self, torrent: Torrent | None, info_hash: InfoHash) -> None:
        if torrent is None or torrent.storage is None:
            self._send(
                StorageFailed(info_hash, "", "", "cannot recheck a torrent that is not open")
            )
            return
        storage = torrent.checking()
        assert storage is not None
        _torrent_log(info_hash).info("recheck: hashing every piece again")
        self.jobs.spawn(
            self._run,
            jobs.recheck_job,
            info_hash,
            storage,
            verifier=self._verifier,
            records=self.records,
            progress=ProgressReporter(info_hash, self._tell),
            cancelled=torrent.cancel,
            before=functools.partial(self._wait_for_jobs, info_hash),
        )

    def _close(self, torrent: Torrent | None, request: CloseTorrent) -> None:
        info_hash = request.info_hash
        if torrent is None:
            if request.delete_files and self.records.enabled:
                # Not open: its files are known from its record (the job reads it).
                added = self._torrents.add(info_hash, "")
                if not isinstance(added, Refusal):
                    added.closing(delete_files=True)
                    added.close_started = True
                    self.jobs.spawn(
                        self._run,
                        jobs.close_job,
                        info_hash,
                        None,
                        records=self.records,
                        have=None,
                        delete_files=True,
                    )
                    return
            if request.delete_files:
                _torrent_log(info_hash).warning(
                    "not open and no resume record to name its files: nothing deleted"
                )
            self._send(TorrentClosed(info_hash))  # closing twice is not an error
            return
        torrent.closing(delete_files=request.delete_files)
        self.jobs.spawn(self._drain, info_hash)

    def _drain(self, info_hash: InfoHash) -> None:
        self._wait_for_jobs(info_hash)
        self._tell(Drained(info_hash))

    def _run(self, job: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """The body of a job's greenlet: run it, send the result to the inbox."""
        self._tell(job(*args, **kwargs))

    def _wait_for_jobs(self, info_hash: InfoHash) -> None:
        group = self.jobs_of(info_hash)
        if not group.join(timeout=_JOB_WAIT):
            _torrent_log(info_hash).warning("pieces still in flight after %ss", _JOB_WAIT)

    # -- results --------------------------------------------------------------------------------

    def result(self, done: object) -> bool:
        """A job's result from the inbox; False if it is not one of this class's."""
        match done:
            case Opened():
                self._opened(done)
            case OpenFailed():
                self._open_failed(done)
            case Rechecked():
                self._rechecked(done)
            case Drained():
                self._drained(done)
            case Closed():
                self._closed(done)
            case Flushed():
                self._flushed(done)
            case _:
                return False
        return True

    def _opened(self, done: Opened) -> None:
        torrent = self._torrents.get(done.info_hash)
        if torrent is None or torrent.phase is not Phase.OPENING:  # cannot happen: be safe
            gevent.get_hub().threadpool.spawn(jobs.close_quietly, done.storage)
            return
        torrent.opened(done.storage.info, done.storage, done.have, complete=done.complete)
        tlog = _torrent_log(done.info_hash)
        if done.complete:
            name, where = done.storage.info.name, torrent.save_path
            tlog.info("opened %r in %s: %s", name, where, progress_line(torrent))
            self._send(TorrentOpened(done.info_hash, done.have.to_bytes()))
        else:
            tlog.info("opening cancelled by a close")
        self._replay(torrent.take_waiting())

    def _open_failed(self, done: OpenFailed) -> None:
        torrent = self._torrents.remove(done.info_hash)
        self.torrent_jobs.pop(done.info_hash, None)
        event = storage_failed(done.info_hash, done.error)
        _torrent_log(done.info_hash).error(
            "cannot open: %s",
            event.message,
            exc_info=None if is_expected_failure(done.error) else done.error,
        )
        self._send(event)
        if torrent is not None:
            self._replay(torrent.take_waiting())

    def _rechecked(self, done: Rechecked) -> None:
        torrent = self._torrents.get(done.info_hash)
        if torrent is None or torrent.phase is not Phase.CHECKING:  # cannot happen: be safe
            return
        tlog = _torrent_log(done.info_hash)
        if done.error is not None:
            event = storage_failed(done.info_hash, done.error)
            torrent.check_failed(event.message)
            tlog.error(
                "recheck failed, torrent stopped: %s",
                event.message,
                exc_info=None if is_expected_failure(done.error) else done.error,
            )
            self._send(event)
        elif done.have is None:
            torrent.phase = Phase.OPEN  # only until the close that cancelled it; never recorded
            tlog.info("recheck cancelled by a close")
        else:
            torrent.checked(done.have)
            tlog.info("rechecked: %s", progress_line(torrent))
            self._send(TorrentOpened(done.info_hash, done.have.to_bytes()))
        self._replay(torrent.take_waiting())

    def _drained(self, done: Drained) -> None:
        torrent = self._torrents.get(done.info_hash)
        if torrent is None or torrent.phase is not Phase.CLOSING or torrent.close_started:
            return
        torrent.close_started = True
        self.jobs.spawn(self._run, self._close_job(torrent))

    def _close_job(self, torrent: Torrent) -> Callable[[], Closed]:
        """The close job of a torrent: its verified pieces are recorded unless they cannot be
        trusted (a cancelled check) or are being deleted."""
        recordable = not (torrent.delete_files or torrent.check_incomplete)
        return functools.partial(
            jobs.close_job,
            torrent.info_hash,
            torrent.storage,
            records=self.records,
            have=torrent.verified.copy() if recordable else None,
            delete_files=torrent.delete_files,
        )

    def _closed(self, done: Closed) -> None:
        torrent = self._torrents.remove(done.info_hash)
        self.torrent_jobs.pop(done.info_hash, None)
        tlog = _torrent_log(done.info_hash)
        if done.error is not None:
            event = storage_failed(done.info_hash, done.error)
            tlog.error("closing failed: %s", event.message)
            self._send(event)
        deleted = torrent is not None and torrent.delete_files
        summary = "files deleted" if deleted else progress_line(torrent) if torrent else ""
        tlog.info("closed: %s", summary)
        self._send(TorrentClosed(done.info_hash))
        if torrent is not None:
            self._replay(torrent.take_waiting())

    def _replay(self, waiting: deque[ControlRequest]) -> None:
        """Handle control requests that waited for a job to end, in their order."""
        while waiting:
            self.request(waiting.popleft())

    # -- flushing -------------------------------------------------------------------------------

    def flush_due(self) -> None:
        """The periodic flush: every open torrent with pieces not yet recorded."""
        for torrent in self._torrents:
            if torrent.phase is Phase.OPEN and torrent.unsaved:
                self.flush(torrent)

    def flush(self, torrent: Torrent) -> None:
        """Flush a torrent's files and record its verified pieces (one flush at a time)."""
        if (
            not self.records.enabled
            or torrent.storage is None
            or torrent.flushing
            or torrent.check_incomplete
        ):
            return
        torrent.flushing, torrent.unsaved = True, False
        self.jobs_of(torrent.info_hash).spawn(
            self._run,
            jobs.flush_job,
            torrent.info_hash,
            torrent.storage,
            torrent.verified.copy(),
            self.records,
        )

    def _flushed(self, done: Flushed) -> None:
        torrent = self._torrents.get(done.info_hash)
        if torrent is None:
            return
        torrent.flushing = False
        if done.error is None:
            return
        torrent.unsaved = True
        event = storage_failed(done.info_hash, done.error)
        if torrent.failed(event.message):
            _torrent_log(done.info_hash).error("flush failed, torrent stopped: %s", event.message)
            self._send(event)
        else:
            _torrent_log(done.info_hash).warning("flush failed: %s", event.message)

    # -- stopping -------------------------------------------------------------------------------

    def stop(self, deadline: float) -> None:
        """The agent stops (called by ``on_stop`` once every piece job has ended): checks are
        cancelled, closes already running finish and write their final record, then every
        other torrent is closed; all by ``deadline``.

        Results of jobs that end now are not handled (the inbox is not read any more): a
        cancelled open or recheck simply records nothing, so its next open checks again.
        """
        for torrent in self._torrents:
            torrent.cancel.requested = True  # a check running now stops at its next piece
        self.jobs.join(timeout=max(0.0, deadline - time.monotonic()))
        self.jobs.kill(block=True, timeout=0.1)
        self.close_all(deadline)

    def close_all(self, deadline: float) -> None:
        """Flush, record and close every torrent in parallel, waiting until ``deadline`` at most.

        Torrents whose close job already runs are left to it; a torrent being checked is left
        alone (its record, if the check had started, is already gone).
        """
        closing = []
        for torrent in self._torrents:
            if torrent.storage is None:
                continue
            waiting_close = torrent.phase is Phase.CLOSING and not torrent.close_started
            if torrent.phase in (Phase.OPEN, Phase.FAILED) or waiting_close:
                torrent.close_started = True
                closing.append((torrent, gevent.spawn(self._close_job(torrent))))
        gevent.joinall([job for _, job in closing], timeout=max(0.0, deadline - time.monotonic()))
        for torrent, job in closing:
            tlog = _torrent_log(torrent.info_hash)
            done: Closed | None = job.value if job.ready() else None
            if done is None:
                tlog.warning("not flushed within %ss of stopping", self._settings.stop_timeout)
            elif done.error is not None:
                tlog.error("flush failed while stopping: %s", done.error)
            else:
                tlog.info("closed (stopping): %s", progress_line(torrent))
