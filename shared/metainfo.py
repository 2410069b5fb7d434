"""Metainfo (.torrent, BEP 3) parsing into typed, validated, frozen values.

Strategy: decode the file leniently (it comes from disk and may be non-canonical), take the
info-hash over the exact bytes of the ``info`` value as they appear in the file (never a
re-encoding), then validate the info dict field by field and refuse anything unsafe or
inconsistent with a named ``MetainfoError`` reason. Everything outside ``info`` (trackers, web
seeds, comment...) is advisory: a malformed entry there is dropped, never fatal, because it
cannot corrupt data and real files carry all sorts of junk in it.

Rules:
- Reason codes are stable snake_case: ``bad_bencode`` (the BencodeError is the ``__cause__``),
  ``not_a_dict``, ``info_missing``, ``info_not_a_dict``, ``<field>_missing``,
  ``<field>_wrong_type`` for name, piece_length, pieces, length, files, file_entry, path,
  attr, private; ``piece_length_out_of_range``, ``pieces_not_multiple_of_20``,
  ``piece_count_mismatch``, ``too_many_pieces``, ``both_length_and_files`` (a ``length``
  of 0 beside ``files`` is ignored, as libtorrent does),
  ``no_length_or_files``, ``negative_length``, ``no_files``, ``too_many_files``,
  ``torrent_too_large``, ``empty_torrent``, ``duplicate_path``, ``v2_only``, and the path
  reasons of ``shared.paths`` (``path_traversal``, ``absolute_path``,
  ``path_component_too_long``, ``path_too_deep``...), which also apply to ``name``: it must be
  one safe component of at most 255 bytes.
- Bounds: piece length 1 KiB..256 MiB (libtorrent accepts any positive value, but below 1 KiB
  or above 256 MiB is not a torrent anyone made on purpose; odd, non power-of-two sizes are
  fine), at most 2**21 pieces (libtorrent's default), at most 2**18 files, at most 2**50 bytes,
  at most ``max_path_depth`` (64) components in a file's path, checked before the path is
  decoded, so a 2,000-deep path is refused in microseconds. The duplicate-path check walks a
  tree of folders, so its cost grows with the total number of components, never their square.
- Text: ``name.utf-8`` / ``path.utf-8`` win when present and valid UTF-8. Otherwise the plain
  field is decoded as UTF-8, then with the codec the file declares in ``encoding`` (old
  torrents: GBK, Shift_JIS...), and failing both as UTF-8 with U+FFFD replacements, so a name is
  always valid text (the bus cannot carry lone surrogates). If two files then collide, the
  torrent is refused with ``duplicate_path``.
- Padding files (BEP 47 ``attr`` containing ``p``, or BitComet's ``_____padding_file_`` names)
  keep their bytes in the layout, are still path-checked, and are left out of the duplicate
  check: many share the path ``.pad/<size>`` and none is ever written.
- A multi-file torrent (``files``) stays multi-file with a single entry: its file lives under
  the ``name`` directory.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from torviz.shared.bencode import (
    DEFAULT_LIMITS,
    BencodeLimits,
    Value,
    decode_prefix,
    decode_with_spans,
)
from torviz.shared.errors import BencodeError, MetainfoError
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.paths import DEFAULT_MAX_PATH_DEPTH, safe_relative_path
from torviz.shared.types import InfoHash

__all__ = [
    "MAX_FILES",
    "MAX_NODES",
    "MAX_PIECES",
    "MAX_PIECE_LENGTH",
    "MAX_TOTAL_LENGTH",
    "MIN_PIECE_LENGTH",
    "FileEntry",
    "InfoDict",
    "Metainfo",
    "parse_info_dict",
    "parse_metainfo",
]

MIN_PIECE_LENGTH = 1024
MAX_PIECE_LENGTH = 256 * 1024 * 1024
MAX_PIECES = 2**21
MAX_FILES = 2**18
MAX_TOTAL_LENGTH = 2**50
MAX_NODES = 64
"""DHT nodes kept from a .torrent's ``nodes`` (the rest are ignored)."""
_MAX_HOST = 253  # the longest DNS name

_BITCOMET_PADDING = "_____padding_file_"
_FILE = object()  # a file's leaf in ``_check_unique``'s tree of folders


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of a torrent.

    Attributes:
        path: sanitised components relative to the download dir; the torrent name comes first
            for multi-file torrents, and is the whole path of a single-file torrent.
        length: bytes in the file (>= 0).
        offset: where the file starts in the torrent's concatenated data.
        padding: a BEP 47 padding file: its bytes count in the layout but are never stored.
        attr: the BEP 47 ``attr`` string, '' when absent.
    """

    path: tuple[str, ...]
    length: int
    offset: int
    padding: bool
    attr: str


@dataclass(frozen=True, slots=True)
class InfoDict:
    """The validated ``info`` dictionary of a torrent (everything the info-hash covers).

    Attributes:
        name: the suggested file or directory name (one safe component).
        piece_length: bytes per piece.
        piece_hashes: concatenated 20-byte SHA-1 digests, one per piece.
        files: the files in torrent order, with offsets.
        multi_file: the torrent uses ``files`` (a directory named ``name``), even with one file.
        private: ``private`` is 1 (BEP 27): no DHT, PEX or LSD for this torrent.
        total_length: sum of the file lengths (> 0).
    """

    name: str
    piece_length: int
    piece_hashes: bytes
    files: tuple[FileEntry, ...]
    multi_file: bool
    private: bool
    total_length: int
    _geometry: TorrentGeometry = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built once, which also proves the lengths add up; the parser checked the rest.
        geometry = TorrentGeometry(
            self.piece_length, self.total_length, tuple(f.length for f in self.files)
        )
        if len(self.piece_hashes) != 20 * geometry.num_pieces:
            raise ValueError(
                f"{len(self.piece_hashes)} bytes of hashes for {geometry.num_pieces} pieces"
            )
        if tuple(f.offset for f in self.files) != geometry.file_offsets:
            raise ValueError("file offsets do not follow the file lengths")
        object.__setattr__(self, "_geometry", geometry)

    @property
    def num_pieces(self) -> int:
        """Number of pieces."""
        return len(self.piece_hashes) // 20

    def piece_hash(self, index: int) -> bytes:
        """The expected SHA-1 of piece ``index``. Raises IndexError if out of range."""
        if not 0 <= index < self.num_pieces:
            raise IndexError(f"piece {index} outside 0..{self.num_pieces - 1}")
        return self.piece_hashes[20 * index : 20 * index + 20]

    @property
    def geometry(self) -> TorrentGeometry:
        """Piece, block and file arithmetic for this torrent."""
        return self._geometry


@dataclass(frozen=True, slots=True)
class Metainfo:
    """A parsed .torrent file.

    Attributes:
        info_hash: SHA-1 of the exact raw bytes of the info dict as they appear in the file.
        info: the validated info dict.
        raw_info: those raw bytes (served to peers over ut_metadata).
        trackers: announce URLs in tiers (BEP 12): ``announce-list`` when it holds any usable
            URL, else ``((announce,),)``, else empty. Duplicates and empty entries are dropped.
        web_seeds: ``url-list`` (BEP 19), given as one string or a list.
        http_seeds: ``httpseeds`` (BEP 17).
        creation_date: ``creation date`` in seconds since the epoch, if an integer.
        comment: ``comment`` (``comment.utf-8`` preferred), if a string.
        created_by: ``created by``, if a string.
        nodes: ``nodes`` (BEP 5): DHT nodes as ``(host, port)``, a host name or an IP
            address; malformed entries are skipped, duplicates dropped, at most ``MAX_NODES``.
    """

    info_hash: InfoHash
    info: InfoDict
    raw_info: bytes
    trackers: tuple[tuple[str, ...], ...]
    web_seeds: tuple[str, ...]
    http_seeds: tuple[str, ...]
    creation_date: int | None
    comment: str | None
    created_by: str | None
    nodes: tuple[tuple[str, int], ...] = ()


def parse_metainfo(
    data: bytes,
    *,
    limits: BencodeLimits = DEFAULT_LIMITS,
    max_path_depth: int = DEFAULT_MAX_PATH_DEPTH,
) -> Metainfo:
    """Parse and validate a .torrent file read from disk.

    Args:
        data: the whole file.
        limits: bencode bounds (size, depth, string length, entries).
        max_path_depth: the most components a file's ``path`` may have (at least 1).

    Returns:
        The metainfo, its info-hash taken over the info dict's raw bytes.

    Raises:
        MetainfoError: the file is not a usable torrent; ``reason`` names the cause.
    """
    try:
        top, spans = decode_with_spans(data, strict=False, limits=limits)
    except BencodeError as exc:
        raise MetainfoError("bad_bencode", f"not a valid .torrent file: {exc}") from exc
    if not isinstance(top, dict):
        raise MetainfoError("not_a_dict", "a .torrent file must hold a dictionary")
    if b"info" not in top:
        raise MetainfoError("info_missing", "the torrent has no 'info' dictionary")
    info_value = top[b"info"]
    if not isinstance(info_value, dict):
        raise MetainfoError("info_not_a_dict", "the torrent's 'info' is not a dictionary")
    start, end = spans[b"info"]
    raw_info = data[start:end]
    encoding = _declared_encoding(top.get(b"encoding"))
    info = _parse_info(info_value, encoding, max_path_depth)
    return Metainfo(
        info_hash=InfoHash(hashlib.sha1(raw_info).digest()),
        info=info,
        raw_info=raw_info,
        trackers=_trackers(top),
        web_seeds=_url_list(top.get(b"url-list")),
        http_seeds=_url_list(top.get(b"httpseeds")),
        creation_date=_optional_int(top.get(b"creation date")),
        comment=_optional_text(top, b"comment", encoding),
        created_by=_optional_text(top, b"created by", encoding),
        nodes=_nodes(top.get(b"nodes")),
    )


def parse_info_dict(
    raw_info: bytes, *, strict: bool = True, max_path_depth: int = DEFAULT_MAX_PATH_DEPTH
) -> InfoDict:
    """Parse an info dict on its own (e.g. assembled from ut_metadata pieces).

    Args:
        raw_info: the bencoded info dict, nothing before or after it.
        strict: require canonical bencode. Pass False only after checking the bytes against
            the info-hash: a genuine torrent may have unsorted keys in its info dict.
        max_path_depth: as ``parse_metainfo``.

    Returns:
        The validated info dict. Without the file's top-level ``encoding`` field, names that
        are not UTF-8 are decoded with U+FFFD replacements.

    Raises:
        MetainfoError: as ``parse_metainfo``.
    """
    try:
        value, end = decode_prefix(raw_info, strict=strict, limits=DEFAULT_LIMITS)
        if end != len(raw_info):
            raise BencodeError("trailing_data", "bytes after the info dict", end)
    except BencodeError as exc:
        if exc.reason == "unsorted_keys":
            # Only strict parsing gets here; a .torrent from disk may have them in any order.
            raise MetainfoError(
                "bad_bencode",
                f"the info dictionary's keys are not in sorted order (byte {exc.offset}), "
                "so its bytes are not canonical bencode",
            ) from exc
        raise MetainfoError("bad_bencode", f"not a valid info dict: {exc}") from exc
    if not isinstance(value, dict):
        raise MetainfoError("info_not_a_dict", "the info dict is not a dictionary")
    return _parse_info(value, None, max_path_depth)


def _parse_info(info: dict[bytes, Value], encoding: str | None, max_path_depth: int) -> InfoDict:
    """Validate a decoded info dict; see the module comment for the rules."""
    if max_path_depth < 1:
        raise ValueError(f"max_path_depth must be at least 1, got {max_path_depth}")
    name = _text_field(info, b"name", "name", encoding)
    safe_relative_path(name, None)

    piece_length = _required(info, b"piece length", "piece_length")
    if not isinstance(piece_length, int):
        raise MetainfoError("piece_length_wrong_type", "'piece length' is not an integer")
    if not MIN_PIECE_LENGTH <= piece_length <= MAX_PIECE_LENGTH:
        raise MetainfoError(
            "piece_length_out_of_range",
            f"piece length {piece_length} is outside {MIN_PIECE_LENGTH}..{MAX_PIECE_LENGTH}",
        )

    if b"pieces" not in info and (b"file tree" in info or info.get(b"meta version") == 2):
        raise MetainfoError("v2_only", "BitTorrent v2-only torrents are not supported")
    pieces = _required(info, b"pieces", "pieces")
    if not isinstance(pieces, bytes):
        raise MetainfoError("pieces_wrong_type", "'pieces' is not a byte string")
    if len(pieces) % 20:
        raise MetainfoError(
            "pieces_not_multiple_of_20", f"'pieces' is {len(pieces)} bytes, not a multiple of 20"
        )
    if len(pieces) // 20 > MAX_PIECES:
        raise MetainfoError("too_many_pieces", f"more than {MAX_PIECES} pieces")

    private_value = info.get(b"private", 0)
    if not isinstance(private_value, int):
        raise MetainfoError("private_wrong_type", "'private' is not an integer")

    has_files = b"files" in info
    # Some old tools wrote ``length: 0`` beside ``files``; libtorrent loads such a torrent and so
    # do we. Any other length there makes the layout ambiguous.
    has_length = b"length" in info and not (has_files and _is_zero(info[b"length"]))
    if has_length and has_files:
        raise MetainfoError("both_length_and_files", "the info dict has both 'length' and 'files'")
    if has_length:
        length = _length(info[b"length"])
        files: tuple[FileEntry, ...] = (
            FileEntry((name,), length, 0, False, _attr(info.get(b"attr"))),
        )
    elif has_files:
        files = _files(info[b"files"], name, encoding, max_path_depth)
    else:
        raise MetainfoError("no_length_or_files", "the info dict has neither 'length' nor 'files'")

    total = sum(f.length for f in files)
    if total > MAX_TOTAL_LENGTH:
        raise MetainfoError(
            "torrent_too_large", f"torrent of {total} bytes exceeds {MAX_TOTAL_LENGTH}"
        )
    if total == 0:
        raise MetainfoError("empty_torrent", "the torrent holds no data")
    expected = -(-total // piece_length)
    if len(pieces) // 20 != expected:
        raise MetainfoError(
            "piece_count_mismatch",
            f"{len(pieces) // 20} piece hashes for {expected} pieces of {total} bytes",
        )
    return InfoDict(
        name=name,
        piece_length=piece_length,
        piece_hashes=pieces,
        files=files,
        multi_file=has_files,
        private=private_value == 1,
        total_length=total,
    )


def _files(value: Value, name: str, encoding: str | None, max_depth: int) -> tuple[FileEntry, ...]:
    if not isinstance(value, list):
        raise MetainfoError("files_wrong_type", "'files' is not a list")
    if not value:
        raise MetainfoError("no_files", "'files' is empty")
    if len(value) > MAX_FILES:
        raise MetainfoError("too_many_files", f"{len(value)} files, the limit is {MAX_FILES}")
    entries: list[FileEntry] = []
    offset = 0
    for entry in value:
        if not isinstance(entry, dict):
            raise MetainfoError("file_entry_wrong_type", "an entry of 'files' is not a dict")
        length = _length(_required(entry, b"length", "length"))
        components = _path(entry, encoding, max_depth)
        attr = _attr(entry.get(b"attr"))
        path = safe_relative_path(name, components, max_depth=max_depth)
        padding = "p" in attr or path[-1].startswith(_BITCOMET_PADDING)
        entries.append(FileEntry(path, length, offset, padding, attr))
        offset += length
        if offset > MAX_TOTAL_LENGTH:
            raise MetainfoError(
                "torrent_too_large", f"torrent of over {MAX_TOTAL_LENGTH} bytes is refused"
            )
    _check_unique(f.path for f in entries if not f.padding)
    return tuple(entries)


def _check_unique(paths: Iterable[tuple[str, ...]]) -> None:
    """Refuse two files at one path, or a file where another needs a directory.

    The paths are laid into a tree of folders (a dict per folder, ``_FILE`` for a file), so each
    path costs one step per component.
    """
    root: dict[str, object] = {}
    for path in paths:
        folder = root
        for depth, component in enumerate(path[:-1]):
            node = folder.setdefault(component, {})
            if not isinstance(node, dict):
                prefix = "/".join(path[: depth + 1])
                raise MetainfoError("duplicate_path", f"'{prefix}' is both a file and a directory")
            folder = node
        existing = folder.get(path[-1])
        if existing is _FILE:
            raise MetainfoError("duplicate_path", f"'{'/'.join(path)}' appears twice")
        if existing is not None:
            raise MetainfoError(
                "duplicate_path", f"'{'/'.join(path)}' is both a file and a directory"
            )
        folder[path[-1]] = _FILE


def _path(entry: dict[bytes, Value], encoding: str | None, max_depth: int) -> list[str]:
    """A file's path components, preferring a valid ``path.utf-8``.

    A list longer than ``max_depth`` is refused before anything in it is decoded.
    """
    alternative = entry.get(b"path.utf-8")
    for candidate in (alternative, entry.get(b"path")):
        if isinstance(candidate, list) and len(candidate) > max_depth:
            raise MetainfoError(
                "path_too_deep",
                f"a file's path has {len(candidate)} components, the limit is {max_depth}",
            )
    if isinstance(alternative, list) and all(isinstance(c, bytes) for c in alternative):
        try:
            return [c.decode("utf-8") for c in alternative if isinstance(c, bytes)]
        except UnicodeDecodeError:
            pass
    value = _required(entry, b"path", "path")
    if not isinstance(value, list):
        raise MetainfoError("path_wrong_type", "a file's 'path' is not a list")
    components: list[str] = []
    for component in value:
        if not isinstance(component, bytes):
            raise MetainfoError("path_wrong_type", "a file's path component is not a string")
        components.append(_text(component, encoding))
    return components


def _is_zero(value: Value) -> bool:
    return isinstance(value, int) and value == 0


def _length(value: Value) -> int:
    if not isinstance(value, int):
        raise MetainfoError("length_wrong_type", "a file length is not an integer")
    if value < 0:
        raise MetainfoError("negative_length", f"a file length is negative ({value})")
    return value


def _attr(value: Value | None) -> str:
    if value is None:
        return ""
    if not isinstance(value, bytes):
        raise MetainfoError("attr_wrong_type", "a file's 'attr' is not a string")
    return value.decode("ascii", errors="replace")


def _required(d: dict[bytes, Value], key: bytes, reason_field: str) -> Value:
    if key not in d:
        raise MetainfoError(f"{reason_field}_missing", f"'{key.decode()}' is missing")
    return d[key]


def _text_field(d: dict[bytes, Value], key: bytes, reason_field: str, encoding: str | None) -> str:
    """A required string field, preferring a valid ``<key>.utf-8`` variant."""
    alternative = d.get(key + b".utf-8")
    if isinstance(alternative, bytes):
        try:
            return alternative.decode("utf-8")
        except UnicodeDecodeError:
            pass
    value = _required(d, key, reason_field)
    if not isinstance(value, bytes):
        raise MetainfoError(f"{reason_field}_wrong_type", f"'{key.decode()}' is not a string")
    return _text(value, encoding)


def _text(raw: bytes, encoding: str | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if encoding is not None:
        try:
            text = raw.decode(encoding)
            text.encode("utf-8")  # refuse lone surrogates (e.g. from unicode_escape)
            return text
        # LookupError: a bytes-to-bytes codec such as hex or rot13.
        except (UnicodeError, LookupError, ValueError):
            pass
    return raw.decode("utf-8", errors="replace")


def _declared_encoding(value: Value | None) -> str | None:
    """The codec named by a top-level ``encoding`` field, if Python knows it."""
    if not isinstance(value, bytes):
        return None
    try:
        return codecs.lookup(value.decode("ascii")).name
    except (UnicodeError, LookupError, ValueError):  # ValueError: a NUL inside the name
        return None


def _optional_int(value: Value | None) -> int | None:
    return value if isinstance(value, int) else None


def _optional_text(d: dict[bytes, Value], key: bytes, encoding: str | None) -> str | None:
    try:
        return _text_field(d, key, "optional", encoding)
    except MetainfoError:
        return None


def _url(value: Value) -> str | None:
    if not isinstance(value, bytes):
        return None
    try:
        url = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    return url or None


def _trackers(top: dict[bytes, Value]) -> tuple[tuple[str, ...], ...]:
    seen: set[str] = set()
    tiers: list[tuple[str, ...]] = []
    announce_list = top.get(b"announce-list")
    if isinstance(announce_list, list):
        for tier in announce_list:
            if not isinstance(tier, list):
                continue
            urls: list[str] = []
            for item in tier:
                url = _url(item)
                if url is not None and url not in seen:
                    seen.add(url)
                    urls.append(url)
            if urls:
                tiers.append(tuple(urls))
    if not tiers:
        announce = _url(top.get(b"announce", b""))
        if announce is not None:
            tiers.append((announce,))
    return tuple(tiers)


def _nodes(value: Value | None) -> tuple[tuple[str, int], ...]:
    """``nodes``: a list of ``[host, port]`` pairs; anything else in it is skipped."""
    if not isinstance(value, list):
        return ()
    nodes: dict[tuple[str, int], None] = {}  # ordered and deduplicated
    for item in value:
        if len(nodes) >= MAX_NODES:
            break
        if not (isinstance(item, list) and len(item) == 2):
            continue
        raw_host, port = item
        if not isinstance(raw_host, bytes) or not isinstance(port, int):
            continue
        try:
            host = raw_host.decode("ascii")
        except UnicodeDecodeError:
            continue
        usable = 0 < len(host) <= _MAX_HOST and host.isprintable() and " " not in host
        if usable and 0 < port < 65536:
            nodes[(host, port)] = None
    return tuple(nodes)


def _url_list(value: Value | None) -> tuple[str, ...]:
    items = [value] if isinstance(value, bytes) else value if isinstance(value, list) else []
    urls: dict[str, None] = {}  # ordered and deduplicated
    for item in items:
        url = _url(item)
        if url is not None:
            urls[url] = None
    return tuple(urls)
