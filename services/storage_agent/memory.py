"""An in-memory store with the behaviour of ``FileStorage``, for tests of code that uses a store.

Strategy: each file is a ``bytearray`` created on its first write (zero-length files from the
start), so "missing data" reads fail exactly as they do on disk. Nothing is ever durable or
synced: ``flush``, ``close`` and ``sync_files`` have nothing to do.
"""

from __future__ import annotations

from collections.abc import Iterable

from torviz.shared.metainfo import InfoDict

from .core.storage import FileState, Storage
from .store import native_lock

__all__ = ["MemoryStorage"]


class MemoryStorage(Storage):
    """The same behaviour in memory, for tests of the services that use a store.

    A file "exists" from its first write (zero-length files from the start); reading a file that
    does not exist raises ``file_missing`` just as ``FileStorage`` does.
    """

    def __init__(self, info: InfoDict) -> None:
        super().__init__(info)
        self._lock = native_lock()
        self._files: dict[int, bytearray] = {}
        self._create_empty_files()

    def file_data(self, file_index: int) -> bytes | None:
        """The content of a file, or None if it was never written."""
        with self._lock:
            data = self._files.get(file_index)
            return None if data is None else bytes(data)

    def _write_span(self, file_index: int, file_offset: int, data: memoryview) -> None:
        with self._lock:
            buffer = self._files.get(file_index)
            if buffer is None:
                buffer = self._files[file_index] = bytearray(self._info.files[file_index].length)
            buffer[file_offset : file_offset + data.nbytes] = data

    def _read_span_into(self, file_index: int, file_offset: int, view: memoryview) -> None:
        with self._lock:
            buffer = self._files.get(file_index)
            if buffer is None:
                raise self._missing(file_index, "reading")
            view[:] = memoryview(buffer)[file_offset : file_offset + view.nbytes]

    def flush(self) -> None:
        """Nothing to make durable."""

    def close(self) -> None:
        """Nothing to release; the content stays."""

    def delete_files(self) -> None:
        """Forget every file's content."""
        with self._lock:
            self._files.clear()

    def file_states(self) -> tuple[FileState | None, ...]:
        """Sizes of the files written so far; their "modification time" is always 0."""
        with self._lock:
            return tuple(
                None if (data := self._files.get(index)) is None else FileState(len(data), 0)
                for index in range(len(self._info.files))
            )

    def sync_files(self, indices: Iterable[int]) -> None:
        """Nothing to make durable."""

    def _create_empty_files(self) -> None:
        for index, entry in enumerate(self._info.files):
            if entry.length == 0 and not entry.padding:
                self._files[index] = bytearray()
