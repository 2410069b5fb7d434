"""``torviz-coordinator info``: show what a .torrent file or a magnet link describes.

Strategy: one report (a plain dict, the ``--json`` document) is built from either source, and
the text view is rendered from that same dict plus a few human-only extras, so the two views
cannot disagree.

Rules:
- An argument starting with ``magnet:`` is a magnet link; anything else is a file path. A file
  is read with a hard bound (``MAX_TORRENT_FILE``, 64 MiB): a bigger one is refused before it is
  read, and the read itself stops one byte past the bound in case the file grows.
- JSON keys are exactly ``info_hash``, ``name``, ``total_size``, ``piece_length``,
  ``num_pieces``, ``files``, ``trackers``, ``web_seeds``, ``private`` and ``magnet`` (a link for
  the torrent, also for a .torrent). ``files`` holds ``{"path", "length"}`` with the path
  "/"-joined from the download directory (a multi-file torrent's name comes first).
- BEP 47 padding files are not in the JSON ``files`` list (they are never written to disk);
  the text view lists them marked ``[padding]`` because they explain the piece layout.
  ``total_size`` counts every byte the pieces cover, padding included.
- For a magnet link everything the metadata would tell is unknown until it is fetched:
  ``total_size``, ``piece_length``, ``num_pieces``, ``files`` and ``private`` are null (``files``
  is null rather than ``[]``: "no files" would be a lie); ``name`` is the ``dn`` or null; each
  ``tr`` is its own tier, as libtorrent treats them.
- Text printed to the terminal never carries control characters from the torrent: names and
  URLs are escaped (``\\x1b``), so a hostile torrent cannot drive the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from datetime import UTC, datetime
from typing import Any

from torviz.shared.errors import MetainfoError
from torviz.shared.magnet import Magnet, format_magnet, parse_magnet
from torviz.shared.metainfo import Metainfo, parse_metainfo

from ..progress import human_size

__all__ = [
    "MAX_TORRENT_FILE",
    "magnet_report",
    "read_torrent_file",
    "register",
    "run",
    "safe_text",
    "torrent_report",
]

MAX_TORRENT_FILE = 64 * 1024 * 1024
"""Largest .torrent file read, in bytes."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``info`` subcommand."""
    parser = subparsers.add_parser(
        "info",
        help="show what a .torrent file or magnet link describes",
        description="Show the name, info hash, size, pieces, files, trackers and web seeds of "
        "a .torrent file or a magnet link.",
    )
    parser.add_argument("source", metavar="FILE|MAGNET", help="a .torrent file or a magnet link")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the report for ``args.source``; returns the exit code."""
    source: str = args.source
    listing: list[tuple[str, int, bool]] | None = None
    extras: dict[str, str] = {}
    if source[:7].lower() == "magnet:":
        report = magnet_report(parse_magnet(source))
    else:
        data = read_torrent_file(source)
        try:
            meta = parse_metainfo(data)
        except MetainfoError as exc:
            # Name the file: the parser's message only says what is wrong inside it.
            raise MetainfoError(exc.reason, f"{source}: {exc.message}") from exc
        report = torrent_report(meta)
        listing = [("/".join(f.path), f.length, f.padding) for f in meta.info.files]
        if meta.comment:
            extras["comment"] = meta.comment
        if meta.created_by:
            extras["created by"] = meta.created_by
        if meta.creation_date is not None:
            extras["creation date"] = _date(meta.creation_date)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_render_text(report, listing, extras))
    return 0


def read_torrent_file(path: str, limit: int = MAX_TORRENT_FILE) -> bytes:
    """Read a .torrent file of at most ``limit`` bytes.

    Raises:
        MetainfoError: ``not_a_regular_file`` or ``file_too_large``.
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise MetainfoError("not_a_regular_file", f"{path} is not a regular file")
        if st.st_size > limit:
            raise MetainfoError(
                "file_too_large",
                f"{path} is {human_size(st.st_size)}, too big for a .torrent (the limit is "
                f"{human_size(limit)})",
            )
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise MetainfoError(
            "file_too_large", f"{path} grew past {human_size(limit)} while it was read"
        )
    return data


def torrent_report(meta: Metainfo) -> dict[str, Any]:
    """The ``--json`` document for a parsed .torrent."""
    info = meta.info
    trackers = tuple(url for tier in meta.trackers for url in tier)
    magnet = Magnet(meta.info_hash, info.name, trackers, meta.web_seeds)
    return {
        "info_hash": meta.info_hash.hex,
        "name": info.name,
        "total_size": info.total_length,
        "piece_length": info.piece_length,
        "num_pieces": info.num_pieces,
        "files": [
            {"path": "/".join(f.path), "length": f.length} for f in info.files if not f.padding
        ],
        "trackers": [list(tier) for tier in meta.trackers],
        "web_seeds": list(meta.web_seeds),
        "private": info.private,
        "magnet": format_magnet(magnet),
    }


def magnet_report(magnet: Magnet) -> dict[str, Any]:
    """The ``--json`` document for a magnet link (metadata fields null)."""
    return {
        "info_hash": magnet.info_hash.hex,
        "name": magnet.display_name,
        "total_size": None,
        "piece_length": None,
        "num_pieces": None,
        "files": None,
        "trackers": [[url] for url in magnet.trackers],
        "web_seeds": list(magnet.web_seeds),
        "private": None,
        "magnet": format_magnet(magnet),
    }


def _render_text(
    report: dict[str, Any], listing: list[tuple[str, int, bool]] | None, extras: dict[str, str]
) -> str:
    unknown = "unknown until the metadata is fetched"
    lines = [
        _field("name", safe_text(report["name"]) if report["name"] is not None else "(none)"),
        _field("info hash", report["info_hash"]),
    ]
    if report["total_size"] is None:
        lines += [
            _field("total size", unknown),
            _field("piece length", unknown),
            _field("pieces", unknown),
            _field("private", unknown),
        ]
    else:
        lines += [
            _field("total size", _size(report["total_size"])),
            _field("piece length", _size(report["piece_length"])),
            _field("pieces", str(report["num_pieces"])),
            _field("private", "yes" if report["private"] else "no"),
        ]
    lines += [_field(key, safe_text(value)) for key, value in extras.items()]

    tiers = report["trackers"]
    lines.append(_field("trackers", "" if tiers else "(none)").rstrip())
    for number, tier in enumerate(tiers, start=1):
        lines.extend(f"  tier {number}: {safe_text(url)}" for url in tier)
    seeds = report["web_seeds"]
    lines.append(_field("web seeds", "" if seeds else "(none)").rstrip())
    lines.extend(f"  {safe_text(url)}" for url in seeds)

    if listing is None:
        lines.append(_field("files", unknown))
    else:
        pads = sum(1 for _, _, padding in listing if padding)
        count = f"{len(listing) - pads}" + (f" (+{pads} padding)" if pads else "")
        lines.append(_field("files", count))
        lines.extend(
            f"  {human_size(length):>10}  {safe_text(path)}{'  [padding]' if padding else ''}"
            for path, length, padding in listing
        )
    lines.append(_field("magnet", report["magnet"]))
    return "\n".join(lines)


def _field(label: str, value: str) -> str:
    return f"{label + ':':<15}{value}"


def _date(seconds: int) -> str:
    try:
        when = datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return str(seconds)  # a nonsense date is shown as the number it is
    return f"{when:%Y-%m-%d %H:%M:%S} UTC ({seconds})"


def _size(size: int) -> str:
    return f"{human_size(size)} ({size} bytes)"


def safe_text(text: str) -> str:
    """Escape control characters (C0, DEL, C1) and undecodable surrogates for a terminal."""
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
