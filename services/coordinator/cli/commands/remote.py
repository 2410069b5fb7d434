"""Commands that talk to a running daemon over its control socket: add, list, status, pause,
resume, verify, remove, shutdown (and ``export``, in its own module).

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
.torrent (Ctrl-C stops the waiting, the torrent stays added). ``status`` shows a torrent in the
``metadata`` state with how far the fetch is, and for each peer where its address came from
and the client it names (its ``v``), escaped for the terminal like every text a peer sends.
"""

from __future__ import annotations

import argparse
import json
import os
import string
import sys
from typing import Any

from torviz.shared.bus import (
    AgentStatus,
    GetStatus,
    ListTorrents,
    Message,
    PauseTorrent,
    PeerStatus,
    RemoveTorrent,
    ResumeTorrent,
    ShutdownAccepted,
    ShutdownRequested,
    StatusReport,
    TorrentAdded,
    TorrentPaused,
    TorrentRemoved,
    TorrentResumed,
    TorrentState,
    TorrentStatus,
    TrackerState,
    TrackerStatus,
    VerifyStarted,
    VerifyTorrent,
)
from torviz.shared.errors import TorvizError

from ...core.announcers import host_port, unreachable_hint
from ..daemon_target import daemon_target, expect, request
from ..dht_status import (
    agent_dht_text,
    dht_json,
    dht_totals_json,
    torrent_dht_json,
    torrent_dht_text,
)
from ..progress import human_size
from ..sources import check_output, read_source
from .download import add_save_options
from .info import safe_text


def register(subparsers: Any) -> None:
    add = _parser(subparsers, "add", "add a .torrent file or a magnet link to the running daemon")
    add.add_argument("torrent", metavar="TORRENT", help="a .torrent file or a magnet link")
    add.add_argument("--dir", metavar="DIR", help="download directory (default: the daemon's)")
    add_save_options(add)
    add.set_defaults(handler=run_add)

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


def _parser(subparsers: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=text, description=text)
    parser.add_argument("--control", metavar="ADDR", help="the daemon's control endpoint")
    parser.add_argument("--state-dir", metavar="DIR", help="the daemon's state directory")
    parser.add_argument(
        "--keys",
        metavar="DIR",
        help="the daemon's CURVE keys folder, for a tcp control endpoint "
        "(default: the daemon's, or [security] keys_dir)",
    )
    parser.add_argument(
        "--key-name",
        metavar="NAME",
        help="the key pair to use in the keys folder (default: coordinator, the daemon's own)",
    )
    return parser


def _request(args: argparse.Namespace, message: Message) -> Message:
    return request(daemon_target(args), message)


_expect = expect


def run_add(args: argparse.Namespace) -> int:
    source = read_source(args.torrent)
    check_output(args.save_torrent, args.force)
    directory = os.path.abspath(args.dir) if args.dir else ""
    added: TorrentAdded = _expect(_request(args, source.request(directory)), TorrentAdded)
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
            f"{torrent.progress * 100:5.1f}%  {rate:>12}  {torrent.peers:>3} peers  {torrent.name}"
        )
    return 0


def _matching(args: argparse.Namespace, text: str | None) -> tuple[TorrentStatus, ...]:
    """The torrents whose info hash starts with ``text`` (all when ``text`` is empty); an ID
    that matches nothing, or several torrents, is an error."""
    return _report(args, text).torrents


def _report(args: argparse.Namespace, text: str | None) -> StatusReport:
    """The status of the torrents ``_matching`` names, and of the agents."""
    prefix = (text or "").lower()
    if prefix and (len(prefix) > 40 or any(c not in string.hexdigits for c in prefix)):
        raise TorvizError("bad_id", f"{text!r} is not an info hash or a prefix of one (hex)")
    report: StatusReport = _expect(_request(args, GetStatus(prefix)), StatusReport)
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


def run_remove(args: argparse.Namespace) -> int:
    [torrent] = _matching(args, args.id)
    _expect(_request(args, RemoveTorrent(torrent.info_hash, args.delete_data)), TorrentRemoved)
    what = "removed, its files deleted" if args.delete_data else "removed (files kept)"
    print(f"{what}: {torrent.name} ({torrent.info_hash.hex})")
    return 0


def run_status(args: argparse.Namespace) -> int:
    report = _report(args, args.id)
    if args.json:
        document = {
            "torrents": [_as_json(t) for t in report.torrents],
            "agents": [_agent_json(agent) for agent in report.agents],
            "dht": dht_totals_json(report.agents),
        }
        json.dump(document, sys.stdout, indent=2)
        print()
        return 0
    for torrent in report.torrents:
        print(_as_text(torrent))
    if not report.torrents:
        print("no torrents")
    if report.agents:
        print("agents")
    for agent in report.agents:
        print(
            f"  {agent.role.value:<13} {agent.agent_id:<24} {agent.host:<16} "
            f"{agent.connections:>4} conns ({agent.incoming} in)  "
            f"down {human_size(agent.download_rate)}/s "
            f"up {human_size(agent.upload_rate)}/s  heard {agent.last_heartbeat:.0f}s ago"
            + (f"  {agent.address}" if agent.address else "")
        )
        if agent.dht is not None:
            print(agent_dht_text(agent))
    return 0


def _agent_json(agent: AgentStatus) -> dict[str, Any]:
    return {
        "id": agent.agent_id,
        "role": agent.role.value,
        "host": agent.host,
        "pid": agent.pid,
        "connections": agent.connections,
        "capacity": agent.capacity,
        "download_rate": agent.download_rate,
        "upload_rate": agent.upload_rate,
        "last_heartbeat": agent.last_heartbeat,
        "address": agent.address,
        "incoming": agent.incoming,
        "dht": dht_json(agent.dht),
    }


def run_shutdown(args: argparse.Namespace) -> int:
    _expect(_request(args, ShutdownRequested()), ShutdownAccepted)
    print("daemon is shutting down")
    return 0


def _as_json(torrent: TorrentStatus) -> dict[str, Any]:
    return {
        "info_hash": torrent.info_hash.hex,
        "name": torrent.name,
        "state": torrent.state.value,
        "progress": torrent.progress,
        "total_size": torrent.total_length,
        "downloaded": torrent.downloaded,
        "uploaded": torrent.uploaded,
        "download_rate": torrent.download_rate,
        "upload_rate": torrent.upload_rate,
        "peers": torrent.peers,
        "seeds": torrent.seeds,
        "pieces_verified": torrent.pieces_verified,
        "num_pieces": torrent.num_pieces,
        "save_path": torrent.save_path,
        "error": torrent.error,
        "check_progress": torrent.check_progress,
        "metadata": None
        if torrent.metadata is None
        else {
            "peers_asked": torrent.metadata.peers_asked,
            "received": torrent.metadata.received,
            "size": torrent.metadata.size,
        },
        "trackers": [_tracker_json(tracker) for tracker in torrent.trackers],
        "announces": [
            {
                "tracker_agent": announce.tracker_agent,
                "address": host_port(announce.host, announce.port) if announce.host else "",
                "port": announce.port,
                "peer_agent": announce.peer_agent or None,
                "reports_totals": announce.totals,
                "trackers": [_tracker_json(tracker) for tracker in announce.trackers],
            }
            for announce in torrent.announces
        ],
        "reachable": torrent.reachable,
        "dht": torrent_dht_json(torrent.dht),
        "peer_list": [
            {
                "address": str(peer.address),
                "client": peer.client,
                "flags": peer.flags,
                "download_rate": peer.download_rate,
                "upload_rate": peer.upload_rate,
                "downloaded": peer.downloaded,
                "uploaded": peer.uploaded,
                "progress": peer.progress,
                "version": peer.version,
                "source": peer.source.value,
            }
            for peer in torrent.peer_list
        ],
    }


def _tracker_json(tracker: TrackerStatus) -> dict[str, Any]:
    return {
        "url": tracker.url,
        "tier": tracker.tier,
        "state": tracker.state.value,
        "last_error": tracker.error,
        "next_announce": tracker.next_announce_in,
        "seeders": tracker.seeders,
        "leechers": tracker.leechers,
        "completed": tracker.completed,
    }


def _announce_lines(torrent: TorrentStatus) -> list[str]:
    """One line per announce: the address trackers hand out, who announces it, for which
    peer agent, how many of its trackers answered; then the fix when nobody listens there."""
    lines = []
    for announce in torrent.announces:
        address = host_port(announce.host or "?", announce.port)
        behind = f"peer agent {announce.peer_agent}" if announce.peer_agent else "no peer agent"
        working = sum(1 for t in announce.trackers if t.state is TrackerState.WORKING)
        answered = f", {working}/{len(announce.trackers)} trackers working"
        lines.append(
            f"  announce   {address:<22} by {announce.tracker_agent}, {behind}"
            + (answered if announce.trackers else "")
        )
    if not torrent.reachable:
        for announce in torrent.announces:
            if not announce.peer_agent:
                lines.append(f"  hint       {unreachable_hint(announce.host, announce.port)}")
    return lines


def _metadata_text(torrent: TorrentStatus) -> str:
    """``: 2 peers asked, 16.0 of 48.2 KiB received`` for a torrent fetching its metadata."""
    progress = torrent.metadata
    if progress is None:
        return ""
    size = f"{progress.size / 1024:.1f}" if progress.size is not None else "?"
    return (
        f": {progress.peers_asked} peers asked, {progress.received / 1024:.1f} of {size} KiB "
        "received"
    )


def _peer_text(peer: PeerStatus) -> str:
    version = f" ({safe_text(peer.version)})" if peer.version else ""
    return (
        f"  peer       {peer.address!s:<22} {peer.flags:<7} {peer.progress * 100:5.1f}%  "
        f"down {human_size(peer.download_rate)}/s up {human_size(peer.upload_rate)}/s  "
        f"{peer.source.value:<8} {safe_text(peer.client)}{version}"
    )


def _as_text(torrent: TorrentStatus) -> str:
    down, up = human_size(torrent.downloaded), human_size(torrent.uploaded)
    size = (
        "size not known until the metadata is in"
        if torrent.state is TorrentState.METADATA
        else f"{torrent.progress * 100:.1f}% ({torrent.pieces_verified}/"
        f"{torrent.num_pieces} pieces of {human_size(torrent.total_length)})"
    )
    lines = [
        f"{torrent.name}",
        f"  info hash  {torrent.info_hash.hex}",
        f"  state      {torrent.state.value}"
        + (f": {torrent.error}" if torrent.error else "")
        + _metadata_text(torrent)
        + (
            f" ({torrent.check_progress * 100:.0f}% checked)"
            if torrent.check_progress is not None
            else ""
        ),
        f"  progress   {size}",
        f"  transfer   down {down} at {human_size(torrent.download_rate)}/s,"
        f" up {up} at {human_size(torrent.upload_rate)}/s",
        f"  peers      {torrent.peers} ({torrent.seeds} seeds)",
        f"  saved in   {torrent.save_path}",
    ]
    lines.extend(_peer_text(peer) for peer in torrent.peer_list)
    for tracker in torrent.trackers:
        counts = ""
        if tracker.seeders is not None or tracker.leechers is not None:
            counts = f", {tracker.seeders or 0} seeders, {tracker.leechers or 0} leechers"
        problem = f": {tracker.error}" if tracker.error else ""
        lines.append(
            f"  tracker    [{tracker.tier}] {tracker.url} {tracker.state.value}{problem}{counts}"
        )
    lines.extend(_announce_lines(torrent))
    if torrent.dht is not None:
        lines.append(torrent_dht_text(torrent.dht))
    return "\n".join(lines)
