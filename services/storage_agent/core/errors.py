"""The one error type of the storage agent, and the table that turns ``OSError`` into it.

Strategy: every ``os`` call that touches a downloaded file is wrapped so that an ``OSError``
becomes a ``StorageError`` naming the torrent-relative file, what the agent was doing, the errno
name, and what the user can do about it. The ``reason`` code is what callers match on (the
service turns it into a "torrent stopped: <message>" event); the text is for the user.

``storage_failed`` turns a ``StorageError`` (or a ``MetainfoError`` for a torrent that cannot be
used, or a bug) into the one-line ``StorageFailed`` event the coordinator gets.

Rules:
- The file is always named by its path inside the download directory ("name/dir/file.bin"),
  never by an absolute path: that is the name the user sees in the torrent.
- Errno values without an entry in the table keep their errno name in the message and get the
  generic reason ``os_error``; nothing an ``os`` call raises escapes as a raw ``OSError``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from torviz.shared.bus import StorageFailed, clip_name, clip_text
from torviz.shared.errors import MetainfoError, TorvizError
from torviz.shared.types import InfoHash

__all__ = ["StorageError", "is_expected_failure", "storage_error_from_os", "storage_failed"]


class StorageError(TorvizError):
    """A downloaded file that could not be created, written, read, flushed or removed.

    Args:
        reason: a stable snake_case code (``disk_full``, ``permission_denied``, ``file_missing``,
            ``path_escapes_download_dir``, ``invalid_range`` ...).
        message: one line naming the file, what happened, and what to do.
        path: the torrent-relative path of the file, when one file is concerned.
        errno_name: the symbolic errno (``"ENOSPC"``) when the cause was an ``OSError``.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        path: str | None = None,
        errno_name: str | None = None,
    ) -> None:
        super().__init__(reason, message)
        self.path = path
        self.errno_name = errno_name


@dataclass(frozen=True, slots=True)
class _Cause:
    reason: str
    what: str
    advice: str


_CAUSES: dict[int, _Cause] = {
    errno.ENOSPC: _Cause("disk_full", "disk full", "free some space, then resume the torrent"),
    errno.EDQUOT: _Cause(
        "quota_exceeded",
        "disk quota exceeded",
        "free some space or raise the quota, then resume the torrent",
    ),
    errno.EACCES: _Cause(
        "permission_denied",
        "permission denied",
        "give the user running torviz write access to the download directory, "
        "then resume the torrent",
    ),
    errno.EPERM: _Cause(
        "permission_denied",
        "operation not permitted",
        "check the file's owner and attributes, then resume the torrent",
    ),
    errno.EROFS: _Cause(
        "read_only_filesystem",
        "read-only file system",
        "choose a writable download directory or remount it read-write, then resume the torrent",
    ),
    errno.EIO: _Cause(
        "io_error",
        "input/output error",
        "the disk may be failing: check the system log, then recheck the torrent",
    ),
    errno.EFBIG: _Cause(
        "file_too_large",
        "file too large",
        "the file system or a resource limit refuses files this big: "
        "choose another download directory",
    ),
    errno.ENOENT: _Cause(
        "file_missing",
        "file missing",
        "the file was moved or deleted: put it back or recheck the torrent",
    ),
    errno.ENOTDIR: _Cause(
        "not_a_directory",
        "a path component is not a directory",
        "a file stands where the torrent needs a folder: move it away, then resume",
    ),
    errno.EISDIR: _Cause(
        "is_a_directory",
        "a folder stands where the torrent needs a file",
        "move the folder away, then resume the torrent",
    ),
    errno.ELOOP: _Cause(
        "symlink_refused",
        "the file is a symbolic link",
        "torviz never writes through a symbolic link: replace it with the real file",
    ),
    errno.EMFILE: _Cause(
        "too_many_open_files",
        "too many open files",
        "raise the open-file limit (ulimit -n) or lower the number of active torrents",
    ),
    errno.ENFILE: _Cause(
        "too_many_open_files",
        "the system ran out of file handles",
        "close other programs or raise the system file limit, then resume the torrent",
    ),
}


def storage_error_from_os(exc: OSError, action: str, path: str) -> StorageError:
    """Turn an ``OSError`` from a file operation into a ``StorageError``.

    Args:
        exc: the error raised by an ``os`` call.
        action: what was being done, as a gerund phrase ("writing", "opening", "flushing").
        path: the torrent-relative path of the file concerned.

    Returns:
        A ``StorageError`` whose message reads like
        ``disk full writing 'name/a.bin' (ENOSPC): free some space, then resume the torrent``.
    """
    code = exc.errno if exc.errno is not None else 0
    name = errno.errorcode.get(code, f"errno {code}")
    cause = _CAUSES.get(code)
    if cause is None:
        detail = exc.strerror or "operating system error"
        return StorageError(
            "os_error",
            f"{detail} {action} '{path}' ({name}): check the disk and the download directory, "
            "then resume the torrent",
            path=path,
            errno_name=name,
        )
    return StorageError(
        cause.reason,
        f"{cause.what} {action} '{path}' ({name}): {cause.advice}",
        path=path,
        errno_name=name,
    )


def storage_failed(info_hash: InfoHash, error: BaseException) -> StorageFailed:
    """The ``StorageFailed`` event for an error raised while handling a torrent.

    ``StorageError`` and ``MetainfoError`` keep their one-line message; anything else is a bug
    on our side and is reported as such, without a traceback.

    Args:
        info_hash: the torrent concerned.
        error: what was raised.

    Returns:
        The event, every text clipped to the bus's bounds.
    """
    file = ""
    errno_name = ""
    if isinstance(error, StorageError):
        file = error.path or ""
        errno_name = error.errno_name or ""
    if isinstance(error, TorvizError):
        message = error.message
    else:
        message = f"internal error in the storage agent: {type(error).__name__}: {error}"
    return StorageFailed(info_hash, clip_text(file), clip_name(errno_name), clip_text(message))


def is_expected_failure(error: BaseException) -> bool:
    """Whether ``error`` is one torviz raises on purpose (logged as one line, no traceback)."""
    return isinstance(error, StorageError | MetainfoError)
