"""``--save-torrent FILE`` and ``export``: a torrent's .torrent, as the daemon has it, on disk.

Strategy: the daemon answers ``ExportTorrent`` with the .torrent's bytes (for a magnet link,
built once its metadata is in; for an added .torrent, the file's own bytes); the command line
checks them and writes them, so the file appears whole or not at all.

Rules:
- The bytes must load as a torrent (``parse_metainfo``) whose info hash is the one asked for;
  anything else is refused (``bad_export``), never written.
- Written atomically: a temporary file in the same folder, synced, then linked into place (an
  existing FILE is never clobbered: ``output_exists``) or, with ``--force``, renamed over it.
  The file gets the ordinary mode of user data (0666 less the umask); the temporary file is
  removed whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from torviz.shared.errors import MetainfoError, TorvizError
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.types import InfoHash

__all__ = ["write_torrent"]


def _exists(shown: str) -> TorvizError:
    return TorvizError("output_exists", f"{shown} already exists; pass --force to overwrite it")


def write_torrent(path: str, data: bytes, info_hash: InfoHash, *, force: bool) -> None:
    """Write the .torrent ``data`` of the torrent ``info_hash`` to ``path``, atomically.

    Args:
        path: the file to write, as the user named it.
        data: the .torrent's bytes, as the daemon exported them.
        info_hash: the torrent they must describe.
        force: replace an existing file.

    Raises:
        TorvizError: ``bad_export`` (the bytes are not that torrent), ``output_exists``.
        OSError: the folder cannot be written.
    """
    try:
        exported = parse_metainfo(data).info_hash
    except MetainfoError as exc:
        raise TorvizError("bad_export", f"the daemon exported a broken torrent: {exc}") from None
    if exported != info_hash:
        raise TorvizError(
            "bad_export", f"the daemon exported {exported.hex} when {info_hash.hex} was asked for"
        )
    target = os.path.abspath(path)
    if os.path.lexists(target) and not force:
        raise _exists(path)
    fd, temp = tempfile.mkstemp(
        prefix=".torviz-", suffix=".torrent.tmp", dir=os.path.dirname(target)
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            umask = os.umask(0o022)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a .torrent is user data
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if force:
            os.replace(temp, target)
            return
        try:
            os.link(temp, target)  # fails if FILE appeared meanwhile: never clobber
        except FileExistsError:
            raise _exists(path) from None
        except OSError:
            # A filesystem without hard links: a checked rename.
            if os.path.lexists(target):
                raise _exists(path) from None
            os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
