"""The file store: the only code that reads or writes a torrent's downloaded files.

Strategy: ``FileStorage`` is the ``core.storage.Storage`` interface on disk: the interface
walks a piece's file spans, this class moves the bytes of each span. It keeps one descriptor
per file in a bounded LRU and uses positional I/O (``os.pwrite``/``os.pread``), so the same
store is safe to use from several worker threads at once (the recheck does).
``open_storage`` makes one from the coordinator's ``OpenTorrent`` (hash checked first).
``memory.MemoryStorage`` keeps the same behaviour in ``bytearray``s for tests.

Rules:
- Every ``os`` call here blocks. Under gevent the service calls the store from a threadpool,
  never from a greenlet; the lock below is a native lock held only around dict updates, never
  around I/O.
- Paths: every file path is checked by ``shared.paths.resolve_inside``. Opening walks the parent
  directories one by one from the real download directory, creating them only for writes, and
  refuses any parent whose real path leaves the download directory (a symlinked folder pointing
  outside). The file itself is opened with ``O_NOFOLLOW`` and must be a regular file. This guards
  against hostile torrents and stray links, not against a local user racing the checks.
- Files are created on their first write, sparse: ``ftruncate`` to the final length (or
  ``posix_fallocate`` with ``preallocate=True``). Zero-length files are created when the store
  is opened so that they exist when the download ends. BEP 47 padding files never touch disk.
- An existing file is never shrunk. A file of the right size is kept as it is (a recheck may
  reuse its data); a shorter one is extended; a longer one keeps its tail, the torrent's bytes
  are its prefix, and a warning is logged. Truncating is the user's explicit decision, as in
  libtorrent, because a longer file may be someone's data in the wrong place.
- Durability: ``flush`` fdatasyncs every file written since the last flush and the directories
  in which files were created; ``sync_files`` does the same for data found on disk (written by
  an earlier run). A piece may be recorded as verified only after one of them returned.
- ``file_states`` gives each file's size and mtime: the resume record compares them later.
"""

from __future__ import annotations

import _thread
import errno
import hashlib
import logging
import os
import stat
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from torviz.shared.metainfo import InfoDict, parse_info_dict
from torviz.shared.paths import MAX_PATH_DEPTH_CEILING, resolve_inside
from torviz.shared.types import InfoHash

from .core.errors import StorageError, storage_error_from_os
from .core.storage import MISSING_DATA_REASONS, FileState, Storage
from .removal import real_child, remove_torrent_files

__all__ = [
    "DEFAULT_MAX_OPEN_FILES",
    "FileStorage",
    "native_lock",
    "open_storage",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_OPEN_FILES = 64
"""Descriptors a ``FileStorage`` keeps open; a torrent of 10,000 files must not use 10,000."""

_fdatasync = getattr(os, "fdatasync", os.fsync)


def native_lock() -> _thread.LockType:
    """A real OS lock even when gevent has patched ``threading``.

    The store is used from native worker threads; a gevent lock taken there would need a hub in
    each thread. The critical sections are a few dict operations, so blocking the hub on a
    native lock for that long is harmless.
    """
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        allocate = monkey.get_original("_thread", "allocate_lock")
        lock: _thread.LockType = allocate()
        return lock
    return threading.Lock()


@dataclass(slots=True)
class _Handle:
    """An open descriptor; ``retired`` ones are closed when their last user releases them."""

    fd: int
    writable: bool
    users: int = 0
    retired: bool = False


class FileStorage(Storage):
    """The torrent's files under ``download_dir``.

    Args:
        info: the torrent.
        download_dir: where the torrent's paths start; created if missing.
        preallocate: reserve each file's full size on creation (``posix_fallocate``) instead of
            creating it sparse.
        max_open_files: descriptors kept open at once (least recently used ones are closed).

    Raises:
        MetainfoError: a file path escapes the download directory.
        StorageError: the download directory or an empty file cannot be created.
    """

    def __init__(
        self,
        info: InfoDict,
        download_dir: str,
        *,
        preallocate: bool = False,
        max_open_files: int = DEFAULT_MAX_OPEN_FILES,
    ) -> None:
        super().__init__(info)
        if max_open_files < 1:
            raise ValueError("max_open_files must be at least 1")
        self._preallocate = preallocate
        self._max_open = max_open_files
        try:
            os.makedirs(download_dir, exist_ok=True)
        except OSError as exc:
            raise storage_error_from_os(exc, "creating", download_dir) from exc
        self._root = os.path.realpath(download_dir)
        # Validation only: the walk in _parent_dir does the opening, component by component.
        self._paths = tuple(resolve_inside(self._root, entry.path) for entry in info.files)
        self._lock = native_lock()
        self._handles: OrderedDict[int, _Handle] = OrderedDict()
        self._dirty: set[int] = set()
        self._new_entries_in: set[str] = set()
        self._warned_long: set[int] = set()
        self._create_empty_files()

    @property
    def download_dir(self) -> str:
        """The real path of the download directory."""
        return self._root

    def file_path(self, file_index: int) -> str:
        """The absolute path of a file (it may not exist yet)."""
        return self._paths[file_index]

    # -- the span operations --------------------------------------------------------------------

    def _write_span(self, file_index: int, file_offset: int, data: memoryview) -> None:
        handle = self._acquire(file_index, writable=True)
        with self._lock:
            # Marked before writing: a write that fails halfway still needs a flush.
            self._dirty.add(file_index)
        try:
            done = 0
            while done < data.nbytes:
                written = os.pwrite(handle.fd, data[done:], file_offset + done)
                if written <= 0:  # never for a regular file; guards the loop all the same
                    raise OSError(errno.EIO, "the write made no progress")
                done += written
        except OSError as exc:
            raise storage_error_from_os(exc, "writing", self._names[file_index]) from exc
        finally:
            self._release(handle)

    def _read_span_into(self, file_index: int, file_offset: int, view: memoryview) -> None:
        handle = self._acquire(file_index, writable=False)
        try:
            done = 0
            while done < view.nbytes:
                got = os.preadv(handle.fd, [view[done:]], file_offset + done)
                if not got:
                    raise self._short(file_index, file_offset + view.nbytes)
                done += got
        except OSError as exc:
            raise storage_error_from_os(exc, "reading", self._names[file_index]) from exc
        finally:
            self._release(handle)

    def _short(self, file_index: int, end: int) -> StorageError:
        name = self._names[file_index]
        return StorageError(
            "file_short",
            f"file too short reading '{name}': it ends before byte {end} "
            "(was it truncated or replaced?): recheck the torrent",
            path=name,
        )

    # -- durability and lifetime ----------------------------------------------------------------

    def flush(self) -> None:
        """fdatasync every file written since the last flush, then the directories that got new
        entries, so that a crash after this returns cannot lose the data or the names.

        Raises:
            StorageError: the mapped cause (``io_error``, ``disk_full`` ...); the files not yet
                synced stay marked dirty so that a later flush retries them.
        """
        with self._lock:
            dirty, self._dirty = sorted(self._dirty), set()
            directories, self._new_entries_in = sorted(self._new_entries_in), set()
        for position, index in enumerate(dirty):
            try:
                handle = self._acquire(index, writable=False)
                try:
                    _fdatasync(handle.fd)
                finally:
                    self._release(handle)
            except (OSError, StorageError) as exc:
                with self._lock:
                    self._dirty.update(dirty[position:])
                    self._new_entries_in.update(directories)
                if isinstance(exc, StorageError):
                    raise
                raise storage_error_from_os(exc, "flushing", self._names[index]) from exc
        for directory in directories:
            try:
                fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                relative = os.path.relpath(directory, self._root)
                raise storage_error_from_os(exc, "flushing the folder", relative) from exc

    def close(self) -> None:
        """Flush, then close every descriptor (even if the flush failed)."""
        try:
            self.flush()
        finally:
            self._release_all()

    def delete_files(self) -> None:
        """Close everything, remove the torrent's files, then its folders that are now empty
        (see ``removal``: nothing but the torrent's own regular files is ever removed).

        Raises:
            StorageError: a file could not be removed (permission, read-only file system ...).
        """
        self._release_all()
        with self._lock:
            self._dirty.clear()
            self._new_entries_in.clear()
        remove_torrent_files(
            self._root, [(entry.path, entry.padding) for entry in self._info.files]
        )

    def file_states(self) -> tuple[FileState | None, ...]:
        """Each file's size and mtime (``lstat``); None when missing or not a regular file.
        Raises ``StorageError`` when a file cannot be examined (permission, I/O error)."""
        states: list[FileState | None] = []
        for index, entry in enumerate(self._info.files):
            if entry.padding:
                states.append(None)
                continue
            try:
                found = os.lstat(self._paths[index])
            except (FileNotFoundError, NotADirectoryError):
                states.append(None)
                continue
            except OSError as exc:
                raise storage_error_from_os(exc, "examining", self._names[index]) from exc
            regular = stat.S_ISREG(found.st_mode)
            states.append(FileState(found.st_size, found.st_mtime_ns) if regular else None)
        return tuple(states)

    def sync_files(self, indices: Iterable[int]) -> None:
        """fdatasync the given files: they may hold data an earlier run of the agent wrote and
        the system has not put on disk yet. Raises ``StorageError`` if one cannot be synced."""
        for index in sorted(set(indices)):
            if self._info.files[index].padding:
                continue
            try:
                handle = self._acquire(index, writable=False)
            except StorageError as exc:
                if exc.reason in MISSING_DATA_REASONS:
                    continue
                raise
            try:
                _fdatasync(handle.fd)
            except OSError as exc:
                raise storage_error_from_os(exc, "flushing", self._names[index]) from exc
            finally:
                self._release(handle)

    # -- descriptors ----------------------------------------------------------------------------

    def _acquire(self, index: int, *, writable: bool) -> _Handle:
        with self._lock:
            handle = self._handles.get(index)
            if handle is not None and (handle.writable or not writable):
                self._handles.move_to_end(index)
                handle.users += 1
                return handle
        # Opened outside the lock: another thread may open the same file meanwhile; the loser
        # closes its descriptor below.
        fd = self._open_fd(index, writable)
        to_close: list[int] = []
        with self._lock:
            current = self._handles.get(index)
            if current is not None and (current.writable or not writable):
                to_close.append(fd)
                handle = current
                self._handles.move_to_end(index)
            else:
                if current is not None:
                    to_close.extend(self._retire(self._handles.pop(index)))
                handle = _Handle(fd, writable)
                self._handles[index] = handle
                while len(self._handles) > self._max_open:
                    _, oldest = self._handles.popitem(last=False)
                    to_close.extend(self._retire(oldest))
            handle.users += 1
        _close_all(to_close)
        return handle

    def _release(self, handle: _Handle) -> None:
        with self._lock:
            handle.users -= 1
            close = handle.retired and handle.users == 0
        if close:
            _close_all([handle.fd])

    @staticmethod
    def _retire(handle: _Handle) -> list[int]:
        """Mark a handle evicted; returns its fd if nobody is using it (close it outside)."""
        handle.retired = True
        return [handle.fd] if handle.users == 0 else []

    def _release_all(self) -> None:
        to_close: list[int] = []
        with self._lock:
            for handle in self._handles.values():
                to_close.extend(self._retire(handle))
            self._handles.clear()
        _close_all(to_close)

    def _open_fd(self, index: int, writable: bool) -> int:
        """Open file ``index`` safely; for writing, create and size it. Returns a descriptor.

        This is the one place a path becomes a descriptor (tests override it to inject one).
        """
        entry = self._info.files[index]
        name = self._names[index]
        action = "creating" if writable else "opening"
        # O_NONBLOCK: opening a FIFO planted where a file belongs must not hang the agent.
        flags = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        flags |= (os.O_RDWR | os.O_CREAT) if writable else os.O_RDONLY
        fd = -1
        try:
            parent = self._parent_dir(index, create=writable)
            fd = os.open(os.path.join(parent, entry.path[-1]), flags, 0o666)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise StorageError(
                    "not_a_regular_file",
                    f"'{name}' is not a regular file: move it away, then resume the torrent",
                    path=name,
                )
            if writable:
                # The file may have just been created: its name is durable only once the
                # folder is synced too. One fsync per folder per flush, after an open: cheap.
                with self._lock:
                    self._new_entries_in.add(parent)
            if writable and info.st_size < entry.length:
                if self._preallocate:
                    os.posix_fallocate(fd, 0, entry.length)
                else:
                    os.ftruncate(fd, entry.length)
            elif info.st_size > entry.length and index not in self._warned_long:
                self._warned_long.add(index)
                log.warning(
                    "'%s' is %d bytes, longer than the torrent's %d: keeping its tail",
                    name,
                    info.st_size,
                    entry.length,
                )
        except (OSError, StorageError) as exc:
            if fd >= 0:
                os.close(fd)
            if isinstance(exc, StorageError):
                raise
            raise storage_error_from_os(exc, action, name) from exc
        return fd

    def _parent_dir(self, index: int, *, create: bool) -> str:
        """The real path of file ``index``'s folder, walked one component at a time.

        Each step costs a ``mkdir`` (writing) and an ``lstat``; only a link is resolved and
        checked, so the walk is linear in the depth (see ``real_child``).

        Raises:
            StorageError: ``path_escapes_download_dir`` when a component resolves outside the
                download directory (nothing is created past it).
            OSError: from ``mkdir``; the caller maps it.
        """
        current = self._root
        components = self._info.files[index].path[:-1]
        for depth, component in enumerate(components):
            candidate = os.path.join(current, component)
            if create:
                try:
                    os.mkdir(candidate, 0o777)
                    with self._lock:
                        self._new_entries_in.add(current)
                except FileExistsError:
                    pass
            real, linked = real_child(current, component)
            if linked and not self._inside(real):
                folder = "/".join(components[: depth + 1])
                raise StorageError(
                    "path_escapes_download_dir",
                    f"refusing '{self._names[index]}': the folder '{folder}' is a link that "
                    "leads outside the download directory: remove the link, then resume",
                    path=self._names[index],
                )
            current = real
        return current

    def _inside(self, real: str) -> bool:
        return os.path.commonpath([real, self._root]) == self._root

    def _create_empty_files(self) -> None:
        for index, entry in enumerate(self._info.files):
            if entry.length == 0 and not entry.padding:
                handle = self._acquire(index, writable=True)
                self._release(handle)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError as exc:  # the data was flushed or dropped already; nothing to retry
            log.warning("closing a file descriptor failed: %s", exc)


def open_storage(
    info_hash: InfoHash, raw_info: bytes, save_path: str, *, preallocate: bool
) -> FileStorage:
    """Check an info dict against its hash, parse it and open its files under ``save_path``.

    Args:
        info_hash: what the coordinator says ``raw_info`` hashes to.
        raw_info: the exact bencoded info dict.
        save_path: the download directory (created if missing).
        preallocate: reserve each file's full size when it is created.

    Returns:
        The store; its folders and zero-length files exist, other files appear on first write.

    Raises:
        StorageError: ``info_hash_mismatch``, or the directory or an empty file cannot be made.
        MetainfoError: the info dict is not a usable torrent (bad bencode, unsafe path ...).
    """
    actual = hashlib.sha1(raw_info, usedforsecurity=False).digest()
    if actual != info_hash.raw:
        raise StorageError(
            "info_hash_mismatch",
            f"the info dictionary hashes to {actual.hex()}, not {info_hash.hex}: "
            "the coordinator sent the wrong torrent data",
        )
    # Lenient: the bytes are proven genuine by the hash, and real torrents are not always
    # canonical bencode. The coordinator applied the user's path depth limit; here only the
    # ceiling any setting may reach (walking a deep path costs one lstat per folder).
    info = parse_info_dict(raw_info, strict=False, max_path_depth=MAX_PATH_DEPTH_CEILING)
    return FileStorage(info, save_path, preallocate=preallocate)
