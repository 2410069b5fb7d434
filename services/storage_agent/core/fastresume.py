"""Fast resume: which pieces to take from a resume record, and which to hash again.

Strategy: a record lists the pieces that were verified and durable at the last flush, and each
file's size and mtime at that moment. At open, a file whose size and mtime are unchanged (and
whose mtime was *settled*, see below) still holds exactly what the record says: its pieces are
trusted without reading a byte. Every piece that touches a file that differs (written since, by
us after the last flush or by someone else; truncated; deleted; created) is hashed again.
Without a usable record every piece is hashed, except those touching a file that is not there.

Settled times: file systems stamp mtimes from a coarse clock (a few ms on Linux, 2 s on FAT),
so a write just after the record was taken may leave the mtime unchanged. A file whose mtime is
within ``SETTLE_NS`` of the moment of the record is therefore recorded as not settled, and
checked again after a crash; the record taken when a torrent is closed is final (no write can
follow it), so its files are always settled.

Piece sets are kept as sorted lists of ranges (one per file at most), never as lists of piece
numbers: a torrent has up to 2**21 pieces, and the sets are built from whole files anyway.

A ``ResumeRecord`` (with a ``FileRecord`` per file) is what the resume database
(``resume.ResumeStore``) keeps for a torrent; it is defined here, where it is decided upon.

Rules: pure. No I/O, no clock: the caller passes the file states and the time.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from torviz.shared.bitfield import Bitfield
from torviz.shared.metainfo import InfoDict
from torviz.shared.types import InfoHash

from .storage import FileState

__all__ = [
    "SETTLE_NS",
    "CheckPlan",
    "FileRecord",
    "ResumeRecord",
    "make_record",
    "plan_open",
    "union",
]

SETTLE_NS = 2_000_000_000
"""A file modified less than this before a (non-final) record is not trusted by its mtime."""

Ranges = tuple[range, ...]


@dataclass(frozen=True, slots=True)
class FileRecord:
    """One file of a record: its relative path and how it was on disk at the last flush."""

    path: tuple[str, ...]
    padding: bool
    size: int | None
    """Bytes in the file; None when it did not exist."""
    mtime_ns: int | None
    settled: bool
    """Whether ``mtime_ns`` can be trusted: False when the file was written so recently that a
    later write could have kept the same timestamp (coarse file system clocks)."""


@dataclass(frozen=True, slots=True)
class ResumeRecord:
    """What a torrent had at its last flush."""

    info_hash: InfoHash
    save_path: str
    have: Bitfield
    files: tuple[FileRecord, ...]


@dataclass(frozen=True, slots=True)
class CheckPlan:
    """What an open does with the pieces of a torrent."""

    trusted: Bitfield
    """Pieces taken from the record without hashing."""
    check: Ranges
    """Pieces to hash, as sorted disjoint ranges."""
    changed: tuple[int, ...]
    """Files that differ from the record (every file present, without a usable record)."""
    note: str
    """Why, in a few words, for the log."""

    @property
    def check_count(self) -> int:
        return sum(len(part) for part in self.check)

    def pieces(self) -> Iterator[int]:
        """The pieces to hash, in order."""
        return itertools.chain.from_iterable(self.check)

    def files_to_sync(self, info: InfoDict) -> list[int]:
        """The files holding any byte of a piece to hash (their data may not be durable yet)."""
        ends = [entry.offset + entry.length for entry in info.files]
        offsets = [entry.offset for entry in info.files]
        found: set[int] = set()
        for part in self.check:
            low = part.start * info.piece_length
            high = min(part.stop * info.piece_length, info.total_length)
            found.update(range(bisect.bisect_right(ends, low), bisect.bisect_left(offsets, high)))
        return sorted(i for i in found if info.files[i].length and not info.files[i].padding)


def plan_open(
    info: InfoDict,
    download_dir: str,
    record: ResumeRecord | None,
    states: Sequence[FileState | None],
) -> CheckPlan:
    """Decide which pieces to trust and which to hash when a torrent is opened.

    Args:
        info: the torrent.
        download_dir: the real path of its download directory.
        record: its resume record, if any.
        states: each file as found on disk now (``Storage.file_states``).

    Returns:
        The plan; ``note`` says whether the record was used, and why not.
    """
    if len(states) != len(info.files):
        raise ValueError(f"{len(states)} file states for {len(info.files)} files")
    geometry = info.geometry
    holding = [i for i, entry in enumerate(info.files) if entry.length and not entry.padding]
    absent = {i for i in holding if (state := states[i]) is None or state.size == 0}
    lacking = _merge(geometry.pieces_for_file(i) for i in absent)
    empty = Bitfield(info.num_pieces)
    problem = _unusable(info, download_dir, record)
    if problem is not None or record is None:
        present = tuple(i for i in holding if i not in absent)
        check = _subtract((range(info.num_pieces),), lacking) if present else ()
        return CheckPlan(empty, check, present, problem or "no resume record")
    changed = tuple(i for i in holding if not _same(record.files[i], states[i]))
    redo = _merge(geometry.pieces_for_file(i) for i in changed)
    distrust = _mask(_merge((*redo, *lacking)))
    trusted = Bitfield.from_int(record.have.to_int() & ~distrust, info.num_pieces)
    note = f"resume record, {len(changed)} of {len(holding)} files changed"
    return CheckPlan(trusted, _subtract(redo, lacking), changed, note)


def make_record(
    info_hash: InfoHash,
    info: InfoDict,
    download_dir: str,
    have: Bitfield,
    states: Sequence[FileState | None],
    *,
    now_ns: int,
    final: bool,
) -> ResumeRecord:
    """The record of a torrent whose pieces ``have`` are durable and whose files are ``states``.

    Args:
        now_ns: the wall clock when ``states`` were taken, to judge which mtimes are settled.
        final: no write can follow (the torrent is being closed): every mtime is settled.
    """
    files = tuple(
        FileRecord(
            entry.path,
            entry.padding,
            None if state is None else state.size,
            None if state is None else state.mtime_ns,
            final or state is None or state.mtime_ns <= now_ns - SETTLE_NS,
        )
        for entry, state in zip(info.files, states, strict=True)
    )
    return ResumeRecord(info_hash, download_dir, have.copy(), files)


def union(first: Bitfield, second: Bitfield) -> Bitfield:
    """The pieces in either set (of the same size)."""
    return Bitfield.from_int(first.to_int() | second.to_int(), first.size)


def _unusable(info: InfoDict, download_dir: str, record: ResumeRecord | None) -> str | None:
    if record is None:
        return None
    if record.save_path != download_dir:
        return f"resume record ignored: it was saved for {record.save_path}"
    if record.have.size != info.num_pieces:
        return f"resume record ignored: {record.have.size} pieces, not {info.num_pieces}"
    if len(record.files) != len(info.files):
        return f"resume record ignored: {len(record.files)} files, not {len(info.files)}"
    for kept, entry in zip(record.files, info.files, strict=True):
        if kept.path != entry.path or kept.padding != entry.padding:
            return "resume record ignored: its file paths differ"
    return None


def _same(kept: FileRecord, state: FileState | None) -> bool:
    if state is None or kept.size is None:
        return state is None and kept.size is None
    return kept.settled and kept.size == state.size and kept.mtime_ns == state.mtime_ns


def _merge(parts: Iterable[range]) -> Ranges:
    merged: list[range] = []
    for part in sorted((p for p in parts if len(p)), key=lambda p: p.start):
        if merged and part.start <= merged[-1].stop:
            last = merged[-1]
            merged[-1] = range(last.start, max(last.stop, part.stop))
        else:
            merged.append(part)
    return tuple(merged)


def _subtract(parts: Ranges, minus: Ranges) -> Ranges:
    """``parts`` without ``minus`` (both sorted and disjoint)."""
    result: list[range] = []
    for part in parts:
        start = part.start
        for cut in minus:
            if cut.stop <= start or cut.start >= part.stop:
                continue
            if cut.start > start:
                result.append(range(start, cut.start))
            start = max(start, cut.stop)
        if start < part.stop:
            result.append(range(start, part.stop))
    return tuple(result)


def _mask(parts: Ranges) -> int:
    mask = 0
    for part in parts:
        mask |= ((1 << len(part)) - 1) << part.start
    return mask
