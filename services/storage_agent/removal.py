"""Deleting a torrent's files on request: exactly its files, then the folders they leave empty.

Strategy: deletion works from the torrent's relative paths and its download directory alone, so
it serves both an open torrent (``FileStorage.delete_files``) and a closed one whose paths come
from its resume record. Each path is walked one folder at a time from the real download
directory, as the store opens files, so a symlinked folder leading elsewhere is never entered;
each folder is walked once however many files it holds, so the work grows with the number of
folders and files, never with the square of a path's depth.

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

from torviz.shared.errors import MetainfoError
from torviz.shared.paths import check_component

from .core.errors import StorageError, storage_error_from_os

__all__ = ["TorrentPath", "real_child", "remove_torrent_files"]

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
    # Every folder is walked once, whatever number of files it holds: (real parent, name) ->
    # its real path (None: missing, not a folder, or a link leading outside), and its depth.
    folders: dict[tuple[str, str], tuple[str | None, int]] = {}
    for components, padding in files:
        _check(components)
        parent: str | None = root
        for depth, component in enumerate(components[:-1]):
            assert parent is not None
            key = (parent, component)
            if key not in folders:
                folders[key] = (_step(root, parent, component), depth)
            parent = folders[key][0]
            if parent is None:
                break
        if padding or parent is None:
            continue
        name = "/".join(components)
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
    deepest_first = sorted(folders.items(), key=lambda item: item[1][1], reverse=True)
    for (parent, component), (real, _) in deepest_first:
        if real is None:
            continue
        try:
            os.rmdir(os.path.join(parent, component))
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


def real_child(folder: str, component: str) -> tuple[str, bool]:
    """The real path of ``folder/component``, and whether a link had to be resolved for it.

    ``folder`` must be a real path and ``component`` a plain name (``shared.paths``), so the
    joined path is real already unless it is a link itself: only then is it resolved. One
    ``lstat`` a step keeps a walk linear in its depth; ``os.path.realpath`` at every step
    resolved every folder above again, which made a 2,000-deep path cost the agent 90 s.
    """
    path = os.path.join(folder, component)
    try:
        if not stat.S_ISLNK(os.lstat(path).st_mode):
            return path, False
    except OSError:
        return path, False  # missing or unreachable: opening it names the cause
    return os.path.realpath(path), True


def _step(root: str, folder: str, component: str) -> str | None:
    """The real path of the folder ``component`` in the real folder ``folder``, or None when it
    is missing, not a folder, or a link leading outside ``root``."""
    real, linked = real_child(folder, component)
    if (linked and os.path.commonpath([real, root]) != root) or not os.path.isdir(real):
        return None
    return real
