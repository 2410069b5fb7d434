"""The pure half of making a .torrent: piece size, file plan and the metainfo bytes.

Strategy: the ``create`` command walks the disk and hashes; everything it decides lives here, free
of I/O, so it can be tested against libtorrent and mktorrent with plain values.

Rules, each matching a reference tool so torviz torrents agree with theirs:
- Automatic piece size follows libtorrent 2.x ``create_torrent`` (piece size 0): aim for a piece
  list of about ``2 * sqrt(total_size)`` bytes, i.e. the smallest ``16 KiB * 2**i`` (i <= 10, so
  at most 16 MiB) with ``total_size <= round((2 * piece / 20) ** 2)``. mktorrent 1.1 has no
  automatic choice (it always uses 2**18 unless told ``-l``).
- Files are ordered by their "/"-joined path compared as UTF-8 bytes, which is what mktorrent
  does (``strcmp`` on the path), so ``a-b`` sorts before ``a/c``. libtorrent's v1 ``add_files``
  keeps directory order, which is not reproducible; with the same order, name and piece size
  the info hash equals mktorrent's.
- Every path component must be a name a downloader can create safely: whatever
  ``shared.paths.check_component`` accepts (so torviz can load what it makes), without control
  characters, and valid UTF-8. Unsafe names are refused, never rewritten, so the torrent
  describes exactly the files on disk.
- Zero-length files are kept (both reference tools keep them); a torrent of zero bytes is
  refused. Hidden files and symlinks are the caller's business: this module sees only names.
- v1 only: no ``meta version``, no padding files, no ``source`` (the info hash must match
  mktorrent's for the same options).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from torviz.shared import metainfo
from torviz.shared.bencode import encode
from torviz.shared.errors import MetainfoError, TorvizError
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.paths import check_component

__all__ = [
    "BLOCK_SIZE",
    "MAX_FILES",
    "MAX_PATH_DEPTH",
    "MAX_PIECE_LENGTH",
    "MIN_PIECE_LENGTH",
    "CreateError",
    "FilePlan",
    "PlannedFile",
    "build_metainfo",
    "check_piece_length",
    "check_urls",
    "choose_piece_length",
    "parse_piece_size",
    "piece_layout",
    "plan_files",
    "plan_single_file",
]

BLOCK_SIZE = 16 * 1024
MIN_PIECE_LENGTH = BLOCK_SIZE
"""Smallest piece length accepted: one block (libtorrent refuses less for v2 and hybrids)."""

MAX_PIECE_LENGTH = 64 * 1024 * 1024
"""Largest piece length accepted: bounds the memory one hashing task needs."""

MAX_FILES = metainfo.MAX_FILES
"""Most files one torrent may hold: as many as torviz's own parser accepts."""

MAX_PATH_DEPTH = 64
"""Most directory levels below the torrent root."""

_AUTO_STEPS = 10  # libtorrent stops at 16 KiB << 10 = 16 MiB
_SAFE_URL_SCHEMES = {"tracker": ("http", "https", "udp"), "web seed": ("http", "https")}
_SIZE = re.compile(r"([0-9]{1,12})\s*(k|ki|kib|m|mi|mib|b)?", re.IGNORECASE)


class CreateError(TorvizError):
    """A torrent that cannot be made from the given files or options."""


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of a plan: its path below the torrent root and its length in bytes.

    ``path`` is ``()`` for the one file of a single-file torrent.
    """

    path: tuple[str, ...]
    length: int


@dataclass(frozen=True, slots=True)
class FilePlan:
    """The files of a torrent-to-be, in torrent order.

    Invariants: ``files`` is non-empty and in torrent order, their total length is positive; a
    single-file plan has exactly one file, with ``path == ()``.
    """

    name: str
    files: tuple[PlannedFile, ...]
    multi_file: bool

    @property
    def total_size(self) -> int:
        return sum(entry.length for entry in self.files)

    def geometry(self, piece_length: int) -> TorrentGeometry:
        """The piece and file layout of this plan with pieces of ``piece_length`` bytes."""
        return TorrentGeometry(
            piece_length, self.total_size, tuple(entry.length for entry in self.files)
        )


def choose_piece_length(total_size: int) -> int:
    """The piece length libtorrent 2.x picks for ``total_size`` bytes (its piece size 0).

    Args:
        total_size: bytes in the torrent, at least 1.

    Returns:
        A power of two from 16 KiB to 16 MiB.
    """
    step = 0
    while step < _AUTO_STEPS and total_size > _auto_threshold(step):
        step += 1
    return BLOCK_SIZE << step


def _auto_threshold(step: int) -> int:
    # Largest total size for piece 16 KiB << step: (2 * piece / 20) ** 2, rounded to nearest.
    return ((268_435_456 << (2 * step)) + 50) // 100


def piece_layout(plan: FilePlan, piece_length: int) -> TorrentGeometry:
    """The piece layout of ``plan``, once the piece length and piece count are known to be fine.

    Raises:
        CreateError: ``bad_piece_size``, or ``too_many_pieces`` when torviz could not load the
            result (more than ``metainfo.MAX_PIECES`` pieces).
    """
    geometry = plan.geometry(check_piece_length(piece_length))
    if geometry.num_pieces > metainfo.MAX_PIECES:
        raise CreateError(
            "too_many_pieces",
            f"{geometry.num_pieces} pieces of {piece_length} bytes; at most "
            f"{metainfo.MAX_PIECES} are allowed, so choose a larger piece size",
        )
    return geometry


def check_piece_length(piece_length: int) -> int:
    """Return ``piece_length`` if it is a power of two in the accepted range.

    Raises:
        CreateError: reason ``bad_piece_size``.
    """
    if (
        piece_length < MIN_PIECE_LENGTH
        or piece_length > MAX_PIECE_LENGTH
        or piece_length & (piece_length - 1)
    ):
        raise CreateError(
            "bad_piece_size",
            f"piece size {piece_length} must be a power of two from {MIN_PIECE_LENGTH} "
            f"(16 KiB) to {MAX_PIECE_LENGTH} (64 MiB)",
        )
    return piece_length


def parse_piece_size(text: str) -> int | None:
    """Read a ``--piece-size`` value: ``auto`` (returns None) or bytes with an optional K/M unit.

    ``256K``, ``256KiB`` and ``262144`` all mean 262144 bytes (units are binary).

    Raises:
        CreateError: reason ``bad_piece_size``.
    """
    if text.strip().lower() == "auto":
        return None
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise CreateError(
            "bad_piece_size", f"piece size {text!r} is not 'auto' or a size like 262144 or 256K"
        )
    unit = (match.group(2) or "b").lower()
    multiplier = {"b": 1, "k": 1024, "m": 1024 * 1024}[unit[0]]
    return check_piece_length(int(match.group(1)) * multiplier)


def plan_single_file(name: str, length: int) -> FilePlan:
    """Plan a single-file torrent named ``name`` of ``length`` bytes.

    Raises:
        CreateError: ``unsafe_name`` or ``empty_torrent``.
    """
    _check_name(name, name)
    if length <= 0:
        raise CreateError("empty_torrent", f"{name!r} is empty; a torrent needs at least one byte")
    return FilePlan(name, (PlannedFile((), length),), multi_file=False)


def plan_files(root_name: str, entries: Sequence[tuple[Sequence[str], int]]) -> FilePlan:
    """Plan a multi-file torrent named ``root_name`` from files below that directory.

    Args:
        root_name: the torrent name (the directory's own name).
        entries: ``(path parts below the root, length in bytes)`` for each file, in any order.

    Returns:
        The plan, files in mktorrent order (by "/"-joined path, as UTF-8 bytes).

    Raises:
        CreateError: ``unsafe_name``, ``path_too_deep``, ``duplicate_path``, ``path_conflict``,
            ``too_many_files`` or ``empty_torrent``.
    """
    _check_name(root_name, root_name)
    if not entries:
        raise CreateError("empty_torrent", f"directory {root_name!r} holds no files")
    if len(entries) > MAX_FILES:
        raise CreateError(
            "too_many_files", f"{len(entries)} files; a torrent holds at most {MAX_FILES}"
        )
    keyed: list[tuple[bytes, PlannedFile]] = []
    for parts, length in entries:
        path = tuple(parts)
        shown = "/".join(path)
        if not path:
            raise CreateError("unsafe_name", "a file of a directory torrent has an empty path")
        if len(path) > MAX_PATH_DEPTH:
            raise CreateError(
                "path_too_deep", f"{shown!r} is more than {MAX_PATH_DEPTH} directories deep"
            )
        for part in path:
            _check_name(part, shown)
        if length < 0:
            raise ValueError(f"negative length for {shown!r}")
        keyed.append((shown.encode("utf-8"), PlannedFile(path, length)))
    keyed.sort(key=lambda item: item[0])
    _check_no_clashes([entry for _, entry in keyed])
    files = tuple(entry for _, entry in keyed)
    if sum(entry.length for entry in files) == 0:
        raise CreateError(
            "empty_torrent", f"the files in {root_name!r} are all empty; a torrent needs data"
        )
    return FilePlan(root_name, files, multi_file=True)


def _check_name(part: str, shown: str) -> None:
    # Refuse exactly what torviz's own metainfo parser would refuse, plus control characters
    # (legal on POSIX, but a trap in every terminal and file manager that shows the name).
    try:
        check_component(part)
    except MetainfoError as exc:
        raise CreateError("unsafe_name", f"{shown!r} cannot go in a torrent: {exc}") from None
    if any(ord(c) < 32 or ord(c) == 127 for c in part):
        raise CreateError(
            "unsafe_name", f"{shown!r} cannot go in a torrent: a name holds a control character"
        )
    try:
        part.encode("utf-8")
    except UnicodeEncodeError:
        raise CreateError(
            "unsafe_name", f"{shown!r} cannot go in a torrent: a name is not valid UTF-8"
        ) from None


def _check_no_clashes(files: list[PlannedFile]) -> None:
    seen: set[tuple[str, ...]] = set()
    directories: set[tuple[str, ...]] = set()
    for entry in files:
        if entry.path in seen:
            raise CreateError("duplicate_path", f"{'/'.join(entry.path)!r} is listed twice")
        seen.add(entry.path)
        directories.update(entry.path[:depth] for depth in range(1, len(entry.path)))
    clash = seen & directories
    if clash:
        shown = "/".join(min(clash))
        raise CreateError("path_conflict", f"{shown!r} is both a file and a directory")


def build_metainfo(
    plan: FilePlan,
    piece_length: int,
    piece_hashes: bytes,
    trackers: Sequence[str],
    web_seeds: Sequence[str] = (),
    *,
    private: bool = False,
    comment: str | None = None,
    created_by: str | None = None,
    creation_date: int | None = None,
) -> bytes:
    """Bencode a v1 .torrent for ``plan``.

    Args:
        plan: the files, from ``plan_files`` or ``plan_single_file``.
        piece_length: bytes per piece (see ``check_piece_length``).
        piece_hashes: the 20-byte SHA-1 of every piece, concatenated in order.
        trackers: announce URLs, each its own tier; the first is also ``announce``, and
            ``announce-list`` is written only when there is more than one.
        web_seeds: BEP 19 ``url-list`` entries.
        private: set ``private`` to 1 in the info dictionary (BEP 27).
        comment, created_by: free text, omitted when None or empty.
        creation_date: seconds since the epoch, omitted when None.

    Returns:
        The .torrent bytes.

    Raises:
        CreateError: ``bad_piece_size``, ``too_many_pieces``, ``bad_piece_hashes`` or
            ``bad_url``.
    """
    expected = piece_layout(plan, piece_length).num_pieces * 20
    if len(piece_hashes) != expected:
        raise CreateError(
            "bad_piece_hashes", f"{len(piece_hashes)} bytes of piece hashes; expected {expected}"
        )
    trackers, web_seeds = check_urls(trackers, web_seeds)

    info: dict[bytes, object] = {
        b"name": plan.name.encode("utf-8"),
        b"piece length": piece_length,
        b"pieces": bytes(piece_hashes),
    }
    if plan.multi_file:
        info[b"files"] = [
            {b"length": entry.length, b"path": [part.encode("utf-8") for part in entry.path]}
            for entry in plan.files
        ]
    else:
        info[b"length"] = plan.files[0].length
    if private:
        info[b"private"] = 1

    torrent: dict[bytes, object] = {b"info": info}
    if trackers:
        torrent[b"announce"] = trackers[0].encode("utf-8")
    if len(trackers) > 1:
        torrent[b"announce-list"] = [[url.encode("utf-8")] for url in trackers]
    if web_seeds:
        torrent[b"url-list"] = [url.encode("utf-8") for url in web_seeds]
    if comment:
        torrent[b"comment"] = comment.encode("utf-8")
    if created_by:
        torrent[b"created by"] = created_by.encode("utf-8")
    if creation_date is not None:
        torrent[b"creation date"] = creation_date
    return encode(torrent)


def check_urls(trackers: Sequence[str], web_seeds: Sequence[str]) -> tuple[list[str], list[str]]:
    """Check tracker (http, https, udp) and web seed (http, https) URLs; drop repeats.

    Raises:
        CreateError: ``bad_url``, naming the first URL that is not usable.
    """
    return (
        list(dict.fromkeys(_check_url(url, "tracker") for url in trackers)),
        list(dict.fromkeys(_check_url(url, "web seed") for url in web_seeds)),
    )


def _check_url(url: str, what: str) -> str:
    schemes = _SAFE_URL_SCHEMES[what]
    try:
        parts = urllib.parse.urlsplit(url)
        url.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        parts = None
    if (
        parts is None
        or parts.scheme.lower() not in schemes
        or not parts.hostname
        or any(c.isspace() or ord(c) < 32 for c in url)
    ):
        raise CreateError(
            "bad_url", f"{what} URL {url!r} is not a {'/'.join(schemes)} URL with a host"
        )
    return url
