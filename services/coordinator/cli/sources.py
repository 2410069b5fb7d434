"""What ``download`` and ``add`` are given: a .torrent file or a magnet link, read once.

Strategy: the command line reads its input itself, before it contacts a daemon or becomes one,
so a bad input is one line at once. A .torrent file is read (bounded, see
``commands.info.read_torrent_file``) and sent as its exact bytes; a magnet link is parsed here
(``shared.magnet.parse_magnet``) only to refuse a bad one early, and sent as the link itself: the
coordinator fetches the metadata.

Rules:
- An argument starting with ``magnet:`` (any case) is a magnet link, never a file name: a bad
  one is ``UsageError`` ("not a usable magnet link: <why>", exit status 2), never a
  file-not-found.
- ``--save-torrent FILE`` is checked here too (``check_output``): an existing FILE is refused
  unless ``--force``, a folder always, before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torviz.shared.bus import AddTorrent
from torviz.shared.bus.vocabulary import MAX_MAGNET
from torviz.shared.errors import MagnetError, TorvizError
from torviz.shared.magnet import Magnet, parse_magnet

from .commands.info import read_torrent_file

__all__ = ["TorrentSource", "UsageError", "check_output", "is_magnet", "read_source"]


class UsageError(TorvizError):
    """A command line that cannot be run as given (exit status 2, like argparse's errors)."""


@dataclass(frozen=True, slots=True)
class TorrentSource:
    """A .torrent's exact bytes, or a parsed magnet link and its text."""

    metainfo: bytes = b""
    magnet: Magnet | None = None
    uri: str = ""

    def request(self, download_dir: str, web_seeds: tuple[str, ...] = ()) -> AddTorrent:
        """The ``AddTorrent`` that adds this torrent into ``download_dir`` ("": the daemon's),
        with ``web_seeds`` (checked URLs, ``web_seeds.check_web_seeds``) besides its own."""
        return AddTorrent(
            metainfo=self.metainfo,
            download_dir=download_dir,
            magnet=self.uri,
            web_seeds=web_seeds,
        )

    @property
    def shown_name(self) -> str:
        """The name to show before the daemon names the torrent: a magnet's ``dn`` or hash."""
        if self.magnet is None:
            return ""
        return self.magnet.display_name or self.magnet.info_hash.hex


def is_magnet(text: str) -> bool:
    """Whether a command-line argument is a magnet link rather than a file name."""
    return text.lstrip()[:7].lower() == "magnet:"


def read_source(text: str) -> TorrentSource:
    """Read a .torrent file or parse a magnet link.

    Args:
        text: the command-line argument.

    Returns:
        The source to add.

    Raises:
        UsageError: a magnet link that cannot be used (``bad_magnet``), with what is wrong.
        MetainfoError: a file that is not a regular file or is too big.
        OSError: the file cannot be read.
    """
    if not is_magnet(text):
        return TorrentSource(metainfo=read_torrent_file(text))
    try:
        magnet = parse_magnet(text)
    except MagnetError as exc:
        raise UsageError("bad_magnet", f"not a usable magnet link: {exc.message}") from None
    uri = text.strip()
    if len(uri.encode("utf-8")) > MAX_MAGNET:
        raise UsageError("bad_magnet", f"not a usable magnet link: longer than {MAX_MAGNET} bytes")
    return TorrentSource(magnet=magnet, uri=uri)


def check_output(path: str | None, force: bool) -> None:
    """Refuse a ``--save-torrent`` target that would be clobbered or cannot be a file.

    Raises:
        TorvizError: ``output_is_directory``, or ``output_exists`` without ``force``.
    """
    if path is None:
        return
    if os.path.isdir(path):
        raise TorvizError("output_is_directory", f"{path} is a directory")
    if os.path.lexists(path) and not force:
        raise TorvizError("output_exists", f"{path} already exists; pass --force to overwrite it")
