"""``torviz-coordinator export ID FILE``, and ``add --save-torrent``: a torrent's .torrent.

Strategy: the daemon holds every torrent's .torrent (added as a file, or built from a magnet
link once its metadata is fetched) and answers ``ExportTorrent`` with its bytes; this module
asks for them and writes them (``saving``: checked, atomic, never clobbering without
``--force``).

Rules:
- ``export`` names the torrent as every command does (an info hash or an unambiguous prefix);
  one whose metadata is not in yet is one line, "the metadata of NAME is not fetched yet",
  exit 1.
- ``add --save-torrent`` waits for the metadata, a few status requests a second, showing the
  phase (``phases``) in place on a terminal, else one line on stdout per phase change. Ctrl-C
  stops the waiting only: the torrent stays added (exit 130, and a line saying how to export it
  later). A torrent that fails meanwhile is its error, exit 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from torviz.shared.bus import (
    ExportTorrent,
    GetStatus,
    StatusReport,
    TorrentAdded,
    TorrentExported,
    TorrentState,
    TorrentStatus,
)
from torviz.shared.errors import TorvizError
from torviz.shared.types import InfoHash

from ..phases import Phase, metadata_line, phase_of
from ..progress import Progress
from ..saving import write_torrent
from ..sources import check_output
from .info import safe_text
from .remote import _expect, _matching, _parser, _request

__all__ = ["register", "run_export", "save_when_fetched"]

POLL_INTERVAL = 0.5
"""Seconds between two status requests while ``add --save-torrent`` waits for the metadata."""

EXIT_INTERRUPTED = 130


def register(subparsers: Any) -> None:
    parser = _parser(subparsers, "export", "write a torrent of the daemon as a .torrent file")
    parser.add_argument("id", metavar="ID", help="info hash or an unambiguous prefix")
    parser.add_argument("file", metavar="FILE", help="the .torrent file to write")
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    parser.set_defaults(handler=run_export)


def export(args: argparse.Namespace, info_hash: InfoHash, name: str, path: str) -> None:
    """Ask the daemon for the torrent's .torrent and write it to ``path``.

    Raises:
        TorvizError: ``no_metadata`` (one line naming the torrent), the daemon's refusal, or
            what ``saving.write_torrent`` raises.
    """
    try:
        reply = _request(args, ExportTorrent(info_hash))
    except TorvizError as exc:
        if exc.reason == "no_metadata":
            raise TorvizError(
                "no_metadata", f"the metadata of {safe_text(name)} is not fetched yet"
            ) from None
        raise
    exported: TorrentExported = _expect(reply, TorrentExported)
    write_torrent(path, exported.metainfo, info_hash, force=args.force)


def run_export(args: argparse.Namespace) -> int:
    check_output(args.file, args.force)
    [torrent] = _matching(args, args.id)
    export(args, torrent.info_hash, torrent.name, args.file)
    print(f"exported {safe_text(torrent.name)} ({torrent.info_hash.hex}) to {args.file}")
    return 0


def _status(args: argparse.Namespace, info_hash: InfoHash) -> TorrentStatus:
    report: StatusReport = _expect(_request(args, GetStatus(info_hash.hex)), StatusReport)
    for torrent in report.torrents:
        if torrent.info_hash == info_hash:
            return torrent
    raise TorvizError("unknown_torrent", f"{info_hash.hex} is no longer in the daemon")


def save_when_fetched(args: argparse.Namespace, added: TorrentAdded, path: str) -> int:
    """``add --save-torrent``: wait until the torrent has its metadata, then export it.

    Returns:
        0 once the file is written, 130 on Ctrl-C (the torrent stays added).

    Raises:
        TorvizError: the torrent failed or left the daemon, or the file cannot be written.
    """
    info_hash = added.info_hash
    try:
        _wait_for_metadata(args, info_hash, added.name)
    except KeyboardInterrupt:
        print(
            f"torviz: interrupted: {safe_text(added.name)} stays added; "
            f"`torviz-coordinator export {info_hash.hex} FILE` writes its .torrent later",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    export(args, info_hash, added.name, path)
    print(f"saved the .torrent to {path}")
    return 0


def _wait_for_metadata(args: argparse.Namespace, info_hash: InfoHash, name: str) -> None:
    """Poll the torrent's status until it is past the ``metadata`` state, showing the phase."""
    status = _status(args, info_hash)
    phase: Phase | None = None
    with Progress(0, safe_text(name), text=metadata_line(status)) as progress:
        while True:
            if status.state is TorrentState.ERROR:
                raise TorvizError(
                    "torrent_failed", f"{safe_text(status.name)}: {status.error or 'failed'}"
                )
            now_phase = phase_of(status)
            if now_phase is Phase.DOWNLOADING:
                return
            if now_phase is not phase and not progress.enabled:
                print(f"{safe_text(status.name)}: {metadata_line(status)}", flush=True)
            phase = now_phase
            progress.relabel(safe_text(status.name))
            progress.show(metadata_line(status))
            time.sleep(POLL_INTERVAL)
            status = _status(args, info_hash)
