"""The one-shot download: ``download``'s service half, and its watcher.

``run`` runs in the daemon's process (the CLI hands ``download`` over to it, see ``serve``): it
reads the torrent, makes a private state directory, and runs the daemon with one more actor,
the watcher, which adds the torrent, shows progress, and decides when to exit.

The watcher runs as one more actor beside the coordinator in the ``download`` process, asking the
coordinator (always with a timeout) for the torrent's status a few times a second. It stops the
whole process with exit code 0 once every piece is verified and the seed time has passed, or
with 1 and one line saying why when the download cannot go on: a disk error, an agent that
keeps crashing, or no peer and no progress for ``stall_timeout`` seconds. A connected web seed
counts as a peer there (its retries are bounded: it ends given up, or delivers); the stall
line then says what the torrent's web seeds last reported.

A magnet link has no size until its metadata is in: the watcher shows its phase instead of the
bar (``phases``: finding peers, fetching metadata), in place on a terminal; elsewhere one line
on stdout per phase change and, while the metadata is fetched, one every
``PLAIN_LINE_INTERVAL`` seconds. Metadata bytes received count as progress for the stall
timeout. ``--save-torrent`` asks the coordinator for the .torrent once the torrent is past the
metadata state (at once for a .torrent) and writes it (``saving``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import gevent
import pykka

from torviz.shared.bus import (
    AddTorrent,
    ControlFailed,
    ExportTorrent,
    TorrentExported,
    TorrentState,
    TorrentStatus,
    WebSeedUrlState,
)
from torviz.shared.errors import TorvizError
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.runtime.service import ServiceRunner
from torviz.shared.types import InfoHash

from ..actor import CoordinatorActor
from ..daemon.locations import load_config_file
from ..daemon.run import DaemonOptions, run_daemon
from .commands.info import safe_text
from .phases import Phase, metadata_line, phase_of
from .progress import Progress, format_duration, human_size
from .saving import write_torrent
from .sources import check_output, read_source
from .web_seeds import check_web_seeds, row_text

__all__ = ["DownloadJob", "DownloadWatcher", "run"]

log = logging.getLogger(__name__)

ASK_TIMEOUT = 10.0
POLL_INTERVAL = 0.25
PLAIN_LINE_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class DownloadJob:
    metainfo: bytes
    name: str
    total_length: int
    download_dir: str
    seed_time: float | None
    """Seconds to seed after the download; None: not limited by time."""
    seed_ratio: float | None
    """Seed until uploaded / size reaches this; None: not limited by ratio."""
    stall_timeout: float
    magnet: str = ""
    """The magnet link, when there is no .torrent (``metainfo`` is then empty)."""
    save_torrent: str | None = None
    """Where to write the .torrent once the metadata is in (``--save-torrent``)."""
    force: bool = False
    """``save_torrent`` may replace an existing file."""
    web_seeds: tuple[str, ...] = ()
    """Web seed URLs besides the torrent's own (``--web-seed``, checked)."""

    def request(self) -> AddTorrent:
        return AddTorrent(
            metainfo=self.metainfo,
            download_dir=self.download_dir,
            magnet=self.magnet,
            web_seeds=self.web_seeds,
        )

    def done_seeding(self, seeded_for: float, uploaded: int, total_length: int = -1) -> bool:
        """Whether seeding is over (with neither limit, there is no seeding at all).

        Args:
            total_length: the torrent's size, when the job could not know it (a magnet link).
        """
        if self.seed_time is None and self.seed_ratio is None:
            return True
        if self.seed_time is not None and seeded_for >= self.seed_time:
            return True
        size = total_length if total_length >= 0 else self.total_length
        return self.seed_ratio is not None and uploaded >= self.seed_ratio * size


def run(args: argparse.Namespace) -> int:
    """``torviz-coordinator download``: fetch the torrent, maybe seed it, and exit.

    Args:
        args: the ``download`` command line (see ``commands.download``).

    Returns:
        0 once every piece is verified and seeding is over, 1 when it cannot go on.
    """
    source = read_source(args.torrent)
    web_seeds = check_web_seeds(args.web_seeds)
    config = load_config_file(args.config)
    name, total_length = source.shown_name, 0
    if source.magnet is None:
        metainfo = parse_metainfo(source.metainfo, max_path_depth=config.coordinator.max_path_depth)
        name, total_length = metainfo.info.name, metainfo.info.total_length
    check_output(args.save_torrent, args.force)
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    job = DownloadJob(
        metainfo=source.metainfo,
        name=name,
        total_length=total_length,
        download_dir=str(output),
        seed_time=None if args.seed_time is None else max(0.0, args.seed_time),
        seed_ratio=None if args.seed_ratio is None else max(0.0, args.seed_ratio),
        stall_timeout=max(1.0, args.stall_timeout),
        magnet=source.uri,
        save_torrent=args.save_torrent,
        force=args.force,
        web_seeds=web_seeds,
    )
    state_dir = Path(tempfile.mkdtemp(prefix="torviz-"))
    try:
        options = DaemonOptions(
            config=config,
            config_file=args.config,
            state_dir=state_dir,
            download_dir=str(output),
            log_level=args.log_level or ("INFO" if args.log_file else "OFF"),
            log_file=str(Path(args.log_file).resolve()) if args.log_file else None,
            persistent=False,
        )
        return run_daemon(
            options,
            watcher=lambda coordinator, runner: DownloadWatcher.start(coordinator, runner, job),
        )
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


class DownloadWatcher(pykka.ThreadingActor):
    def __init__(
        self,
        coordinator: pykka.ActorProxy[CoordinatorActor],
        runner: ServiceRunner,
        job: DownloadJob,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        super().__init__()
        self.coordinator = coordinator
        self.runner = runner
        self.job = job
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self._greenlet: gevent.Greenlet[Any, Any] | None = None

    def on_start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def on_stop(self) -> None:
        if self._greenlet is not None and self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=False)

    def _run(self) -> None:
        try:
            code, message = self._watch()
        except pykka.Timeout:
            code, message = 1, "torviz: error: the coordinator stopped answering"
        except TorvizError as exc:  # --save-torrent could not be written
            code, message = 1, f"torviz: error: {exc}"
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            code, message = 1, f"torviz: error: {where}{exc.strerror or exc}"
        except gevent.GreenletExit:
            return
        except Exception as exc:
            # Whatever went wrong, the process must end with one line, not hang.
            log.exception("the download watcher failed")
            code, message = 1, f"torviz: error: internal error ({type(exc).__name__}): {exc}"
        if message:
            print(message, file=self.out if code == 0 else self.err, flush=True)
        self.runner.request_stop(code, "download finished" if code == 0 else "download failed")

    def _watch(self) -> tuple[int, str | None]:
        job = self.job
        added = self.coordinator.add(job.request()).get(timeout=ASK_TIMEOUT)
        if isinstance(added, ControlFailed):
            return 1, f"torviz: error: {added.message}"
        started = last_progress = last_plain_line = time.monotonic()
        last_verified = last_received = -1
        seeding_since: float | None = None
        phase: Phase | None = None
        saved = job.save_torrent is None
        first_text = Phase.FINDING_PEERS.value if job.magnet else None
        with Progress(
            job.total_length, job.name, stream=self.err, min_interval=0.25, text=first_text
        ) as progress:
            while True:
                gevent.sleep(POLL_INTERVAL)
                now = time.monotonic()
                failure = self.coordinator.session_failure().get(timeout=ASK_TIMEOUT)
                if failure:
                    return 1, f"torviz: error: {failure}"
                report = self.coordinator.status().get(timeout=ASK_TIMEOUT)
                status = next((t for t in report.torrents if t.info_hash == added.info_hash), None)
                if status is None:
                    return 1, "torviz: error: the torrent disappeared from the session"
                if status.state is TorrentState.ERROR:
                    return 1, f"torviz: error: {status.error or 'the torrent failed'}"
                now_phase = phase_of(status)
                changed, phase = now_phase is not phase, now_phase
                if phase is Phase.DOWNLOADING:
                    progress.relabel(f"{status.name} [{_sources_text(status)}]")
                    progress.set_total(status.total_length)
                    progress.update(int(status.progress * status.total_length))
                else:
                    progress.relabel(status.name)
                    progress.show(metadata_line(status))
                    received = status.metadata.received if status.metadata is not None else 0
                    if received != last_received:
                        last_received, last_progress = received, now
                due = now - last_plain_line >= PLAIN_LINE_INTERVAL
                if not progress.enabled and ((changed and job.magnet) or due):
                    last_plain_line = now
                    # Not a terminal: progress is a line on stdout now and then (and at each
                    # phase of a magnet link); stderr keeps only the one line that says why
                    # a download could not go on.
                    print(_plain_line(status, changed), file=self.out, flush=True)
                if phase is Phase.DOWNLOADING and not saved:
                    saved = True
                    self._save(added.info_hash, progress)
                if status.pieces_verified != last_verified:
                    last_verified, last_progress = status.pieces_verified, now
                if phase is Phase.DOWNLOADING and status.pieces_verified == status.num_pieces:
                    if seeding_since is None:
                        progress.close()
                        print(_done_line(status, now - started), file=self.out, flush=True)
                        seeding_since = now
                    if job.done_seeding(now - seeding_since, status.uploaded, status.total_length):
                        seeded = job.seed_time is not None or job.seed_ratio is not None
                        return 0, _seed_line(status) if seeded else None
                elif (
                    status.peers == 0
                    and not connected_web_seeds(status)
                    and now - last_progress >= job.stall_timeout
                ):
                    why = self.coordinator.diagnosis(added.info_hash).get(timeout=ASK_TIMEOUT)
                    what = "no peers and no progress"
                    if phase is not Phase.DOWNLOADING:
                        what = "no peers to fetch the metadata from"
                    return 1, (
                        f"torviz: error: {what} for {int(job.stall_timeout)} s ({why})"
                        + web_seeds_hint(status)
                    )

    def _save(self, info_hash: InfoHash, progress: Progress) -> None:
        """Write the torrent's .torrent to ``--save-torrent`` FILE (``saving``).

        Raises:
            TorvizError: the coordinator could not export it, or FILE cannot be written.
            OSError: FILE's folder cannot be written.
        """
        assert self.job.save_torrent is not None
        exported = self.coordinator.export(ExportTorrent(info_hash)).get(timeout=ASK_TIMEOUT)
        if isinstance(exported, ControlFailed):
            raise TorvizError(exported.reason, exported.message)
        if not isinstance(exported, TorrentExported):
            raise TorvizError("unexpected_reply", f"{type(exported).__name__} to ExportTorrent")
        write_torrent(self.job.save_torrent, exported.metainfo, info_hash, force=self.job.force)
        progress.print_above(f"saved the .torrent to {self.job.save_torrent}", self.out)


def connected_web_seeds(status: TorrentStatus) -> int:
    """How many web seeds fetch for the torrent now: while one does (even backing off, which
    is bounded), the download is not stalled."""
    return sum(1 for row in status.web_seeds if row.state is WebSeedUrlState.CONNECTED)


def _sources_text(status: TorrentStatus) -> str:
    """``3 peers``, or ``0 peers, 1 web seed`` while web seeds fetch."""
    seeds = connected_web_seeds(status)
    if not seeds:
        return f"{status.peers} peers"
    return f"{status.peers} peers, {seeds} web seed{'' if seeds == 1 else 's'}"


def web_seeds_hint(status: TorrentStatus) -> str:
    """Why the torrent's web seeds did not help, for the stall line: ``; web seed URL: given up,
    0 B: redirect loop at URL`` for the first one with something to say ('' when none)."""
    for row in status.web_seeds:
        if row.message:
            return f"; web seed {safe_text(row.url)}: {row_text(row)}"
    return ""


def _plain_line(status: TorrentStatus, changed: bool = False) -> str:
    if status.state is TorrentState.METADATA:
        return f"{status.name}: {metadata_line(status)}"
    if changed:
        return f"{status.name}: downloading {human_size(status.total_length)}"
    return (
        f"{status.name}: {status.progress * 100:5.1f}% "
        f"{human_size(status.progress * status.total_length)}/{human_size(status.total_length)} "
        f"{human_size(status.download_rate)}/s, {status.peers} peers"
    )


def _done_line(status: TorrentStatus, elapsed: float) -> str:
    rate = status.total_length / elapsed if elapsed > 0 else 0.0
    return (
        f"downloaded {status.name} ({human_size(status.total_length)}) into {status.save_path} "
        f"in {format_duration(elapsed)} ({human_size(rate)}/s), every piece verified"
    )


def _seed_line(status: TorrentStatus) -> str:
    return f"seeded {status.name}: uploaded {human_size(status.uploaded)} ({status.uploaded} bytes)"
