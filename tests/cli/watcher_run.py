"""The one-shot download's watcher in a process of its own (gevent patched first, as in the
daemon), beside a stand-in coordinator actor that reports a scripted magnet download.

Run as ``python -m tests.cli.watcher_run SCENARIO SAVE_TO``; exits with the watcher's code.
Scenarios: ``complete`` (finding peers, fetching metadata, downloading, done), ``stall``
(never finds a peer) and ``web_seed`` (downloading with no peer and no progress, a web seed
connected for the first ``WEB_SEED_POLLS`` polls, then given up).
"""

from gevent import monkey

monkey.patch_all()

import dataclasses  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import pykka  # noqa: E402

from tests.cli.test_magnet_input import TORRENT, TORRENT_HASH, status  # noqa: E402
from torviz.services.coordinator.cli.oneshot import DownloadJob, DownloadWatcher  # noqa: E402
from torviz.shared.bus import (  # noqa: E402
    AddTorrent,
    ExportTorrent,
    MetadataProgress,
    StatusReport,
    TorrentAdded,
    TorrentExported,
    TorrentState,
    WebSeedRow,
    WebSeedUrlState,
)
from torviz.shared.types import InfoHash  # noqa: E402

WEB_SEED_POLLS = 12
"""About 3 s of polls (0.25 s apart): three times the scenario's stall timeout."""
WEB_SEED = "http://127.0.0.1:9/pub/"


class FakeCoordinator(pykka.ThreadingActor):
    def __init__(self, scenario: str) -> None:
        super().__init__()
        self.scenario = scenario
        self.polls = 0
        self.exported = 0

    def add(self, request: AddTorrent) -> TorrentAdded:
        assert request.metainfo == b"" and request.magnet.startswith("magnet:?"), request
        return TorrentAdded(TORRENT_HASH, "Example")

    def session_failure(self) -> None:
        return None

    def diagnosis(self, info_hash: InfoHash) -> str:
        return "the magnet link names no tracker and no peer"

    def export(self, request: ExportTorrent) -> TorrentExported:
        self.exported += 1
        return TorrentExported(request.info_hash, TORRENT)

    def status(self) -> StatusReport:
        self.polls += 1
        if self.scenario == "web_seed":
            connected = self.polls <= WEB_SEED_POLLS
            row = WebSeedRow(
                WEB_SEED,
                WebSeedUrlState.CONNECTED if connected else WebSeedUrlState.GIVEN_UP,
                "" if connected else "redirect loop at http://127.0.0.1:9/pub/Example",
                0,
                0,
            )
            torrent = status(TORRENT_HASH, TorrentState.DOWNLOADING)
            return StatusReport((dataclasses.replace(torrent, web_seeds=(row,)),), ())
        if self.scenario == "stall" or self.polls <= 3:
            torrent = status(TORRENT_HASH, TorrentState.METADATA)
        elif self.polls <= 6:
            progress = MetadataProgress(peers_asked=2, received=16384, size=32768)
            torrent = status(TORRENT_HASH, TorrentState.METADATA, peers=2, metadata=progress)
        else:
            torrent = status(TORRENT_HASH, TorrentState.DOWNLOADING, peers=2)
            if self.polls > 8:
                seeding = status(TORRENT_HASH, TorrentState.SEEDING, peers=2)
                torrent = dataclasses.replace(seeding, progress=1.0, pieces_verified=1)
        return StatusReport((torrent,), ())


class Runner:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.code = -1

    def request_stop(self, code: int, reason: str) -> None:
        self.code = code
        self.done.set()


def main() -> int:
    scenario, save_to = sys.argv[1], sys.argv[2]
    job = DownloadJob(
        metainfo=b"",
        name="Example",
        total_length=0,
        download_dir="/tmp/x",
        seed_time=None,
        seed_ratio=None,
        stall_timeout=1.0,
        magnet=f"magnet:?xt=urn:btih:{TORRENT_HASH.hex}&dn=Example",
        save_torrent=save_to,
    )
    coordinator = FakeCoordinator.start(scenario)
    runner = Runner()
    watcher = DownloadWatcher.start(coordinator.proxy(), runner, job)
    try:
        runner.done.wait(timeout=30)
    finally:
        watcher.stop()
        coordinator.stop()
    return runner.code


if __name__ == "__main__":
    sys.exit(main())
