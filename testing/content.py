"""Deterministic torrent content and .torrent files for integration tests.

Strategy: a `Layout` names the files of one torrent (path and size); `make_content` fills
them with bytes from `random.Random(seed)`, so the same (layout, seed) always gives the same
bytes and the same info-hash. `make_torrent` builds a BitTorrent v1 .torrent with
libtorrent's own creator (no pad files: v1 only), so tests share the reference
implementation's view of file spans and piece hashes.

Rules:
- The multi-file layout puts every inner file boundary at an odd byte offset, so for any
  piece length (a power of two) pieces cross file boundaries; it has nested directories, a
  file smaller than one block and empty files (one in the middle, one at the end).
- libtorrent is imported only inside `make_torrent`: the package must import without it.
- Writing and comparing stream in 1 MiB chunks: no allocation grows with the content size.
"""

from __future__ import annotations

import hashlib
import random
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from torviz.shared.types import InfoHash

__all__ = [
    "ContentSpec",
    "FileSpec",
    "Layout",
    "TorrentFile",
    "compare_content",
    "files_identical",
    "make_content",
    "make_torrent",
    "multi_file_layout",
    "single_file_layout",
]

_CHUNK = 1 << 20
_MIN_MULTI_TOTAL = 64 * 1024
_CREATION_DATE = 1_700_000_000  # fixed, so the .torrent bytes are reproducible


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One file of a layout: `path` relative to the torrent's top directory, `size` bytes."""

    path: PurePosixPath
    size: int

    def __post_init__(self) -> None:
        if self.path.is_absolute() or ".." in self.path.parts or not self.path.parts:
            raise ValueError(f"file path must be relative and inside the torrent: {self.path}")
        if self.size < 0:
            raise ValueError(f"negative file size: {self.size}")


@dataclass(frozen=True, slots=True)
class Layout:
    """The files of one torrent. A single-file torrent has exactly one file named `name`."""

    name: str
    files: tuple[FileSpec, ...]
    single_file: bool = False

    def __post_init__(self) -> None:
        if not self.files:
            raise ValueError("a layout needs at least one file")
        if self.single_file and (len(self.files) != 1 or str(self.files[0].path) != self.name):
            raise ValueError("a single-file layout has one file named like the torrent")

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def single_file_layout(size: int, name: str = "single.bin") -> Layout:
    """A single-file torrent of `size` bytes."""
    return Layout(name=name, files=(FileSpec(PurePosixPath(name), size),), single_file=True)


def multi_file_layout(total_size: int = 3 * 1024 * 1024 + 12_345, name: str = "multi") -> Layout:
    """A multi-file torrent of `total_size` bytes whose pieces cross file boundaries.

    Files: a large top-level file, an empty file, nested files two and three directories
    deep, a 1000-byte file (smaller than a 16 KiB block) and an empty last file. The first file
    has an odd size and all others but the last an even one, so every inner boundary lies at
    an odd offset and never on a piece boundary.

    Raises:
        ValueError: `total_size` below 64 KiB.
    """
    if total_size < _MIN_MULTI_TOTAL:
        raise ValueError(f"a multi-file layout needs at least {_MIN_MULTI_TOTAL} bytes")
    first = (total_size * 3 // 10) | 1
    second = (total_size * 2 // 10) & ~1
    tiny = 1000
    fourth = (total_size * 3 // 10) & ~1
    last = total_size - first - second - tiny - fourth
    sizes = [
        ("a.bin", first),
        ("empty.txt", 0),
        ("dir1/b.bin", second),
        ("dir1/dir2/tiny.bin", tiny),
        ("dir1/dir2/c.bin", fourth),
        ("dir3/deep/er/d.bin", last),
        ("dir3/zz-empty-last", 0),
    ]
    return Layout(name=name, files=tuple(FileSpec(PurePosixPath(p), s) for p, s in sizes))


@dataclass(frozen=True, slots=True)
class ContentSpec:
    """Content written by `make_content`: `layout` under `root`.

    `root` is the torrent's save path (what a seeder is given as its data directory): the
    files are root/name/... for a multi-file layout and root/name for a single file.
    """

    root: Path
    layout: Layout
    seed: int
    sha1: tuple[str, ...]  # hex SHA-1 of each file, in layout order

    @property
    def save_path(self) -> Path:
        """The directory to give a seeder: the same as `root`."""
        return self.root

    @property
    def name(self) -> str:
        return self.layout.name

    @property
    def total_size(self) -> int:
        return self.layout.total_size

    def torrent_paths(self) -> list[str]:
        """Each file's path as the torrent names it (the torrent name first)."""
        if self.layout.single_file:
            return [self.name]
        return [f"{self.name}/{f.path}" for f in self.layout.files]

    def file_paths(self, root: Path | None = None) -> list[Path]:
        """Each file's path on disk under `root` (default: where it was written)."""
        base = self.root if root is None else Path(root)
        return [base.joinpath(*PurePosixPath(p).parts) for p in self.torrent_paths()]

    def pieces_spanning_files(self, piece_length: int) -> int:
        """How many pieces hold bytes of more than one non-empty file."""
        # A non-empty file starting inside a piece shares that piece with the file before it.
        starts, offset = [], 0
        for spec in self.layout.files:
            if spec.size:
                starts.append(offset)
            offset += spec.size
        spanning = {start // piece_length for start in starts if start % piece_length}
        return len(spanning)


def _random_chunks(rng: random.Random, size: int) -> Iterable[bytes]:
    remaining = size
    while remaining > 0:
        n = min(_CHUNK, remaining)
        remaining -= n
        yield rng.randbytes(n)


def make_content(root: Path, layout: Layout, seed: int) -> ContentSpec:
    """Write `layout` under `root` with deterministic random bytes.

    Args:
        root: the save path; a multi-file layout goes into root/name/, a single file is
            root/name.
        layout: which files, how big.
        seed: the same seed and layout always give the same bytes.

    Returns:
        What was written, with each file's SHA-1.
    """
    rng = random.Random(seed)
    spec = ContentSpec(root=Path(root), layout=layout, seed=seed, sha1=())
    digests = []
    for path, file in zip(spec.file_paths(), layout.files, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha1()
        with path.open("wb") as out:
            for chunk in _random_chunks(rng, file.size):
                digest.update(chunk)
                out.write(chunk)
        digests.append(digest.hexdigest())
    return ContentSpec(root=Path(root), layout=layout, seed=seed, sha1=tuple(digests))


@dataclass(frozen=True, slots=True)
class TorrentFile:
    """A .torrent written by `make_torrent`; usable wherever a path is expected."""

    path: Path
    info_hash: InfoHash
    piece_length: int
    num_pieces: int
    total_size: int

    @property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex

    def magnet(
        self,
        *,
        trackers: Sequence[str] = (),
        peers: Sequence[object] = (),
        name: str | None = None,
    ) -> str:
        """A magnet link to this torrent: hex ``xt``, then ``dn``, ``tr`` and ``x.pe``.

        Args:
            trackers: announce URLs, one ``tr`` each (percent-encoded).
            peers: ``host:port`` peers (anything whose str() is that), one ``x.pe`` each.
            name: the ``dn`` display name, left out when None.
        """
        params = [f"xt=urn:btih:{self.info_hash.hex}"]
        if name is not None:
            params.append(f"dn={urllib.parse.quote(name, safe='')}")
        params += [f"tr={urllib.parse.quote(url, safe='')}" for url in trackers]
        params += [f"x.pe={urllib.parse.quote(str(peer), safe=':[]')}" for peer in peers]
        return "magnet:?" + "&".join(params)

    def __fspath__(self) -> str:
        return str(self.path)


def make_torrent(
    content: ContentSpec,
    piece_length: int,
    trackers: Sequence[str | Sequence[str]],
    path: Path,
) -> TorrentFile:
    """Hash `content` with libtorrent and write a v1 .torrent to `path`.

    Args:
        content: what `make_content` wrote (read back from `content.root`).
        piece_length: a power of two, at least 16 KiB.
        trackers: one entry per tier; an entry is a URL or a list of URLs of that tier.
        path: where to write the .torrent.

    Returns:
        The written torrent with its info-hash.

    Raises:
        ValueError: a piece length that is not a power of two of at least 16 KiB.
    """
    # Imported here so that the fixtures load (and can report it missing) without libtorrent.
    import libtorrent as lt

    if piece_length < 16 * 1024 or piece_length & (piece_length - 1):
        raise ValueError(f"piece length must be a power of two >= 16 KiB, not {piece_length}")
    entries = [
        lt.create_file_entry(name, spec.size)
        for name, spec in zip(content.torrent_paths(), content.layout.files, strict=True)
    ]
    creator = lt.create_torrent(entries, piece_length, lt.create_torrent.v1_only)
    for tier, urls in enumerate(trackers):
        for url in [urls] if isinstance(urls, str) else urls:
            creator.add_tracker(url, tier)
    creator.set_creator("torviz test fixtures")
    creator.set_creation_date(_CREATION_DATE)
    lt.set_piece_hashes(creator, str(content.root))
    data = lt.bencode(creator.generate())
    path = Path(path)
    path.write_bytes(data)
    info = lt.torrent_info(data)
    return TorrentFile(
        path=path,
        info_hash=InfoHash.from_hex(str(info.info_hashes().v1)),
        piece_length=int(info.piece_length()),
        num_pieces=int(info.num_pieces()),
        total_size=int(info.total_size()),
    )


def _first_difference(a: Path, b: Path) -> int | None:
    offset = 0
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                for i, (x, y) in enumerate(zip(ca, cb, strict=False)):
                    if x != y:
                        return offset + i
                return offset + min(len(ca), len(cb))
            if not ca:
                return None
            offset += len(ca)


def compare_content(a_root: Path, b_root: Path, spec: ContentSpec) -> list[str]:
    """Compare the files of `spec` under two save paths; one line per difference.

    Sizes are checked first, then the bytes in 1 MiB chunks; each file under `b_root` is
    also checked against the SHA-1 recorded when it was made.
    """
    problems: list[str] = []
    for a, b, file, sha1 in zip(
        spec.file_paths(a_root), spec.file_paths(b_root), spec.layout.files, spec.sha1, strict=True
    ):
        missing = [p for p in (a, b) if not p.is_file()]
        if missing:
            problems.extend(f"{p}: missing" for p in missing)
            continue
        sizes = (a.stat().st_size, b.stat().st_size)
        if sizes != (file.size, file.size):
            problems.append(f"{file.path}: sizes {sizes[0]} and {sizes[1]}, want {file.size}")
            continue
        at = _first_difference(a, b)
        if at is not None:
            problems.append(f"{file.path}: first difference at byte {at}")
            continue
        digest = hashlib.sha1()
        with b.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != sha1:
            problems.append(f"{file.path}: SHA-1 differs from the one made")
    return problems


def files_identical(a_root: Path, b_root: Path, spec: ContentSpec) -> bool:
    """Whether both save paths hold exactly the bytes of `spec` (see `compare_content`)."""
    return not compare_content(Path(a_root), Path(b_root), spec)
