"""Commands that talk to a running daemon over its control socket: add, add-web-seed, list,
status, pause, resume, verify, remove, shutdown (and ``export``, in its own module).

They find a daemon started with default settings without any flag (through ``daemon.json`` in
the default state directory) and take ``--control ADDR`` or ``--state-dir DIR`` to reach another
one. ``ID`` is an info hash in hex or an unambiguous prefix of one.

Who may: an ipc control socket only its owner can reach (0600, in a private folder); a tcp one
only a client holding the daemon's own key pair (CURVE, checked by the daemon's ZAP handler).
The keys come from ``--keys DIR`` and ``--key-name NAME``, else from the ``daemon.json`` of the
daemon found, else from ``[security]`` of the default config file; the server's public key is
``DIR/coordinator.key``. A refusal is one line, "permission denied: ...", exit 1.

``add`` takes a .torrent file or a magnet link (a bad link: one line, exit 2, no daemon asked);
with ``--save-torrent FILE`` it waits for the metadata, showing the phase, and writes the
.torrent (Ctrl-C stops the waiting, the torrent stays added). ``add --web-seed URL`` and
``add-web-seed ID URL`` give a torrent web seeds besides its own: each URL is checked here
first (``web_seeds``: a typo is one line, exit 1, no daemon asked). ``status`` shows a torrent
in the ``metadata`` state with how far the fetch is, and for each peer where its address came
from and the client it names (its ``v``), escaped for the terminal like every text a peer
sends.

``status ID`` and ``status --json`` ask the daemon for detail (``GetStatus.detail``: files and
piece map), so they show everything the terminal UI shows, with the daemon's events and
totals; ``status`` alone and ``list`` never ask for it. The formats live in ``status_text``
and ``status_json``.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from typing import Any

from torviz.shared.bus import (
    AddWebSeed,
    GetStatus,
    ListTorrents,
    Message,
    PauseTorrent,
    RemoveTorrent,
    ResumeTorrent,
    ShutdownAccepted,
    ShutdownRequested,
    StatusReport,
    TorrentAdded,
    TorrentPaused,
    TorrentRemoved,
    TorrentResumed,
    TorrentStatus,
    VerifyStarted,
    VerifyTorrent,
    WebSeedAdded,
)
from torviz.shared.errors import TorvizError

from ..daemon_target import add_daemon_options, daemon_target, expect, request
from ..progress import human_size
from ..sources import check_output, read_source
from ..status_json import report_json
from ..status_text import report_lines
from ..web_seeds import add_web_seed_option, check_web_seed, check_web_seeds
from .download import add_save_options
from .info import safe_text


def register(subparsers: Any) -> None:
    add = _parser(subparsers, "add", "add a .torrent file or a magnet link to the running daemon")
    add.add_argument("torrent", metavar="TORRENT", help="a .torrent file or a magnet link")
    add.add_argument("--dir", metavar="DIR", help="download directory (default: the daemon's)")
    add_web_seed_option(add)
    add_save_options(add)
    add.set_defaults(handler=run_add)

    web_seed = _parser(
        subparsers,
        "add-web-seed",
        "give a torrent of the daemon a web seed (BEP 19), kept across restarts",
        aliases=["web-seed"],
    )
    web_seed.add_argument("id", metavar="ID", help="info hash or an unambiguous prefix")
    web_seed.add_argument("url", metavar="URL", help="http or https URL of the torrent's files")
    web_seed.set_defaults(handler=run_add_web_seed)

    listing = _parser(subparsers, "list", "list the daemon's torrents")
    listing.set_defaults(handler=run_list)

    status = _parser(subparsers, "status", "show torrents in detail")
    status.add_argument("id", metavar="ID", nargs="?", help="info hash or an unambiguous prefix")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=run_status)

    for name, text in (
        ("pause", "stop transferring a torrent (trackers are told; files are closed)"),
        ("resume", "start a paused torrent again, or retry one in error"),
        ("verify", "hash every piece on disk again (progress in status)"),
    ):
        command = _parser(subparsers, name, text)
        command.add_argument("id", metavar="ID", help="info hash or an unambiguous prefix")
        command.set_defaults(handler=run_torrent_command, command_name=name)

    remove = _parser(subparsers, "remove", "remove a torrent from the daemon")
    remove.add_argument("id", metavar="ID", help="info hash or an unambiguous prefix")
    remove.add_argument(
        "--delete-data", action="store_true", help="also delete its downloaded files"
    )
    remove.set_defaults(handler=run_remove)

    shutdown = _parser(subparsers, "shutdown", "stop the running daemon and its agents")
    shutdown.set_defaults(handler=run_shutdown)


def _parser(
    subparsers: Any, name: str, text: str, aliases: list[str] | None = None
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=text, description=text, aliases=aliases or []
    )
    add_daemon_options(parser)
    return parser


def _request(args: argparse.Namespace, message: Message) -> Message:
    return request(daemon_target(args), message)


_expect = expect


def run_add(args: argparse.Namespace) -> int:
    source = read_source(args.torrent)
    web_seeds = check_web_seeds(args.web_seeds)
    check_output(args.save_torrent, args.force)
    directory = os.path.abspath(args.dir) if args.dir else ""
    request = source.request(directory, web_seeds)
    added: TorrentAdded = _expect(_request(args, request), TorrentAdded)
    print(f"added {safe_text(added.name)} ({added.info_hash.hex})", flush=True)
    if args.save_torrent is None:
        return 0
    from .export import save_when_fetched  # it imports this module

    return save_when_fetched(args, added, args.save_torrent)


def run_list(args: argparse.Namespace) -> int:
    report: StatusReport = _expect(_request(args, ListTorrents()), StatusReport)
    if not report.torrents:
        print("no torrents")
        return 0
    for torrent in report.torrents:
        rate = human_size(torrent.download_rate) + "/s"
        print(
            f"{torrent.info_hash.hex[:12]}  {torrent.state.value:<11} "
            f"{torrent.progress * 100:5.1f}%  {rate:>12}  {torrent.peers:>3} peers  "
            f"{safe_text(torrent.name)}"
        )
    return 0


def _matching(args: argparse.Namespace, text: str | None) -> tuple[TorrentStatus, ...]:
    """The torrents whose info hash starts with ``text`` (all when ``text`` is empty); an ID
    that matches nothing, or several torrents, is an error."""
    return _report(args, text).torrents


def _report(args: argparse.Namespace, text: str | None, *, detail: bool = False) -> StatusReport:
    """The status of the torrents ``_matching`` names, and of the agents; ``detail``: with
    each torrent's files and piece map."""
    prefix = (text or "").lower()
    if prefix and (len(prefix) > 40 or any(c not in string.hexdigits for c in prefix)):
        raise TorvizError("bad_id", f"{text!r} is not an info hash or a prefix of one (hex)")
    report: StatusReport = _expect(_request(args, GetStatus(prefix, detail)), StatusReport)
    torrents = report.torrents
    if prefix and not torrents:
        raise TorvizError("unknown_torrent", f"no torrent matches {text}")
    if prefix and len(torrents) > 1:
        raise TorvizError(
            "ambiguous_id", f"{text} matches {len(torrents)} torrents: give more digits"
        )
    return report


def run_torrent_command(args: argparse.Namespace) -> int:
    [torrent] = _matching(args, args.id)
    request, reply_type, done = {
        "pause": (PauseTorrent, TorrentPaused, "paused"),
        "resume": (ResumeTorrent, TorrentResumed, "resumed"),
        "verify": (VerifyTorrent, VerifyStarted, "verifying"),
    }[args.command_name]
    _expect(_request(args, request(torrent.info_hash)), reply_type)
    print(f"{done} {torrent.name} ({torrent.info_hash.hex})")
    return 0


def run_add_web_seed(args: argparse.Namespace) -> int:
    url = check_web_seed(args.url)  # before any daemon is asked
    [torrent] = _matching(args, args.id)
    reply: WebSeedAdded = _expect(_request(args, AddWebSeed(torrent.info_hash, url)), WebSeedAdded)
    name = safe_text(torrent.name)
    if reply.added:
        print(f"added web seed {safe_text(reply.url)} to {name}")
    else:
        print(f"{name} already has that web seed")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    [torrent] = _matching(args, args.id)
    _expect(_request(args, RemoveTorrent(torrent.info_hash, args.delete_data)), TorrentRemoved)
    what = "removed, its files deleted" if args.delete_data else "removed (files kept)"
    print(f"{what}: {torrent.name} ({torrent.info_hash.hex})")
    return 0


def run_status(args: argparse.Namespace) -> int:
    # One torrent, or a script (--json): everything the terminal UI shows, files and pieces too.
    report = _report(args, args.id, detail=bool(args.id) or args.json)
    if args.json:
        json.dump(report_json(report), sys.stdout, indent=2)
        print()
        return 0
    focus = report.torrents[0].info_hash if args.id else None
    for line in report_lines(report, focus):
        print(line)
    return 0


def run_shutdown(args: argparse.Namespace) -> int:
    _expect(_request(args, ShutdownRequested()), ShutdownAccepted)
    print("daemon is shutting down")
    return 0
