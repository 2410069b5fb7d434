"""Deleting a torrent's files on request: exactly its files, then the folders they leave empty.

Strategy: deletion works from the torrent's relative paths and its download directory alone, so
it serves both an open torrent (``FileStorage.delete_files``) and a closed one whose paths come
from its resume record. Each path is walked one folder at a time from the real download
directory, as the store opens files, so a symlinked folder leading elsewhere is never entered.

Rules:
- Only regular files at the torrent's own paths are removed; a symlink, a folder or anything
  else standing there is left alone (it is not data torviz wrote). Files already gone are fine.
- BEP 47 padding files were never written, so nothing at their paths is touched.
- Folders are removed deepest first, and only when empty (``rmdir``): a folder that still holds
  anything (another torrent's files, the user's own) stays, and so does the download directory.
- Every path is checked by ``shared.paths`` again: a tampered record cannot name ``..``.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence

from shared.errors import MetainfoError
from shared.paths import check_component

from .errors import StorageError, storage_error_from_os

__all__ = ["TorrentPath", "remove_torrent_files"]

log = logging.getLogger(__name__)

TorrentPath = tuple[tuple[str, ...], bool]
"""A file's path components under the download directory, and whether it is a padding file."""


def remove_torrent_files(root: str, files: Sequence[TorrentPath]) -> int:
    """Remove a torrent's files under ``root``, then its folders that are left empty.

    Args:
        root: the download directory (its real path, as the store uses it).
        files: every file of the torrent, in torrent order.

    Returns:
        How many files were removed.

    Raises:
        StorageError: a file could not be removed (permission, read-only file system ...);
            ``bad_path`` for a path that is not a safe relative path.
    """
    root = os.path.realpath(root)
    removed = 0
    folders: set[tuple[str, ...]] = set()
    for components, padding in files:
        _check(components)
        folders.update(components[:depth] for depth in range(1, len(components)))
        if padding:
            continue
        name = "/".join(components)
        parent = _walk(root, components[:-1])
        if parent is None:
            continue
        path = os.path.join(parent, components[-1])
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                log.warning("not deleting '%s': it is not a regular file", name)
                continue
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise storage_error_from_os(exc, "deleting", name) from exc
    for folder in sorted(folders, key=len, reverse=True):
        parent = _walk(root, folder[:-1])
        if parent is None:
            continue
        try:
            os.rmdir(os.path.join(parent, folder[-1]))
        except OSError:
            continue  # not empty, not there, or a link: none of these is ours to remove
    return removed


def _check(components: tuple[str, ...]) -> None:
    try:
        if not components:
            raise MetainfoError("empty_path", "a file has an empty path")
        for component in components:
            check_component(component)
    except MetainfoError as exc:
        raise StorageError("bad_path", f"refusing to delete {components!r}: {exc}") from exc


def _walk(root: str, components: tuple[str, ...]) -> str | None:
    """The real path of the folder ``components`` under ``root``, or None when it is missing or
    leads outside ``root`` (through a link)."""
    current = root
    for component in components:
        real = os.path.realpath(os.path.join(current, component))
        if os.path.commonpath([real, root]) != root or not os.path.isdir(real):
            return None
        current = real
    return current
