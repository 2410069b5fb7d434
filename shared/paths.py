r"""Making the file paths of a torrent safe to create under a download directory.

Strategy: a path from a .torrent is hostile input. Each component is checked on its own with
string logic only (posixpath and ntpath rules, so a torrent made on either system is judged the
same way on this one); nothing touches the filesystem. A bad component is refused with a named
reason rather than repaired, because a repaired path could collide with another file of the
torrent or surprise the user. ``resolve_inside`` is a second, independent guard at the moment
a path is joined to the download directory. Symlinks on disk are storage's concern.

Rules (the reason codes are stable):
- ``nul_in_path``: a NUL byte anywhere.
- ``empty_path_component``: an empty component; ``empty_path``: a file with no components.
- ``dot_component``: ``.``; ``path_traversal``: ``..``, alone or between separators.
- ``absolute_path``: a component starting with ``/`` or ``\`` or carrying a Windows drive
  (``C:``, ``C:x``, ``\\server\share``).
- ``separator_in_component``: ``/`` or ``\`` inside a component.
- ``path_component_too_long``: a component over 255 bytes in UTF-8 (``MAX_COMPONENT_BYTES``:
  NAME_MAX on Linux and the BSDs, and the limit of ext4, XFS, btrfs, APFS and NTFS alike);
  no file system could create it.
- ``path_too_deep``: a file path of more than ``max_depth`` components (64 by default,
  ``DEFAULT_MAX_PATH_DEPTH``). Refused before any component is looked at, so a 2,000-deep path
  costs nothing: every later step (duplicate check, storage's directory walk) grows with the
  depth, and no real torrent nests 64 folders deep.
- ``path_escapes_download_dir``: a joined path that does not stay strictly inside the directory.
Windows reserved names (``CON``, ``NUL``...) are allowed: torviz writes on POSIX systems.
"""

from __future__ import annotations

import ntpath
import os
from collections.abc import Sequence

from torviz.shared.errors import MetainfoError

__all__ = [
    "DEFAULT_MAX_PATH_DEPTH",
    "MAX_COMPONENT_BYTES",
    "MAX_PATH_DEPTH_CEILING",
    "check_component",
    "resolve_inside",
    "safe_relative_path",
]

MAX_COMPONENT_BYTES = 255
"""Bytes (UTF-8) in one file or folder name."""

DEFAULT_MAX_PATH_DEPTH = 64
"""Components in one file's path inside a multi-file torrent (the torrent name not counted)."""
MAX_PATH_DEPTH_CEILING = 1024
"""The deepest path any setting may allow (``[coordinator] max_path_depth``); the storage agent
opens torrents up to this depth, since the coordinator applied the user's limit already."""


def check_component(component: str) -> str:
    """Check one path component (a file or directory name) and return it unchanged.

    Raises:
        MetainfoError: the component is not a plain name; the reason says why.
    """
    if "\x00" in component:
        raise MetainfoError("nul_in_path", f"path component {component!r} contains a NUL byte")
    if component == "":
        raise MetainfoError("empty_path_component", "a path component is empty")
    if component == ".":
        raise MetainfoError("dot_component", "a path component is '.'")
    if component == "..":
        raise MetainfoError("path_traversal", "a path component is '..'")
    if component[0] in "/\\" or ntpath.splitdrive(component)[0]:
        raise MetainfoError("absolute_path", f"path component {component!r} is absolute")
    if "/" in component or "\\" in component:
        parts = component.replace("\\", "/").split("/")
        if ".." in parts:
            raise MetainfoError("path_traversal", f"path component {component!r} contains '..'")
        raise MetainfoError(
            "separator_in_component", f"path component {component!r} contains a separator"
        )
    size = len(component.encode("utf-8", errors="surrogatepass"))
    if size > MAX_COMPONENT_BYTES:
        raise MetainfoError(
            "path_component_too_long",
            f"path component '{component[:40]}...' is {size} bytes, "
            f"the limit is {MAX_COMPONENT_BYTES}",
        )
    return component


def safe_relative_path(
    name: str, components: Sequence[str] | None, *, max_depth: int = DEFAULT_MAX_PATH_DEPTH
) -> tuple[str, ...]:
    """The path of a file relative to the download directory.

    Args:
        name: the torrent's ``name``; it must itself be one safe component.
        components: the file's ``path`` list in a multi-file torrent, or None for a
            single-file torrent (whose file is ``name``).
        max_depth: the most components ``components`` may have.

    Returns:
        ``(name,)`` for a single-file torrent, ``(name, *components)`` otherwise.

    Raises:
        MetainfoError: with one of the reasons listed at the top of this module.
    """
    check_component(name)
    if components is None:
        return (name,)
    if not components:
        raise MetainfoError("empty_path", "a file of the torrent has an empty path")
    if len(components) > max_depth:
        raise MetainfoError(
            "path_too_deep",
            f"a file's path has {len(components)} components, the limit is {max_depth}",
        )
    for component in components:
        check_component(component)
    return (name, *components)


def resolve_inside(download_dir: str, components: Sequence[str]) -> str:
    """Join ``components`` under ``download_dir`` and prove the result stays inside it.

    String logic only (``os.path.normpath``); links on disk are not followed.

    Args:
        download_dir: the directory files are written under.
        components: a relative path, normally from ``safe_relative_path``.

    Returns:
        The normalised joined path, strictly below ``download_dir``.

    Raises:
        MetainfoError: ``path_escapes_download_dir`` if the path is absolute, climbs out of the
            directory, names the directory itself or contains a NUL byte.
    """
    base = os.path.normpath(download_dir)
    joined = os.path.normpath(os.path.join(base, *components))
    if base == os.curdir:
        # normpath drops a leading "./": inside means relative and not climbing out.
        inside = not os.path.isabs(joined) and joined.split(os.sep)[0] not in (os.curdir, os.pardir)
    else:
        prefix = base if base.endswith(os.sep) else base + os.sep
        inside = joined.startswith(prefix) and joined != base
    if "\x00" in joined or not inside:
        raise MetainfoError(
            "path_escapes_download_dir",
            f"path {'/'.join(components)!r} would leave the download directory",
        )
    return joined
