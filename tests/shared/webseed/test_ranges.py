"""Range planning of piece runs: fixed cases, padding, and a byte-by-byte reference."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.shared.geometry import PieceIndexError, TorrentGeometry
from torviz.shared.metainfo import FileEntry
from torviz.shared.webseed import RangeRequest, ZeroFill, parse_web_seed_url, plan_run

SEED = parse_web_seed_url("http://mirror.test/pub/")


def torrent(
    piece_length: int, *files: tuple[str, int] | tuple[str, int, bool], multi: bool = True
) -> tuple[TorrentGeometry, tuple[FileEntry, ...]]:
    """A geometry and its files: each ``(name, length)`` or ``(name, length, padding)``."""
    entries: list[FileEntry] = []
    offset = 0
    for spec in files:
        name, length = spec[0], spec[1]
        padding = len(spec) == 3 and bool(spec[2])
        path = ("t", name) if multi else (name,)
        entries.append(FileEntry(path, length, offset, padding, "p" if padding else ""))
        offset += length
    geometry = TorrentGeometry(piece_length, offset, tuple(e.length for e in entries))
    return geometry, tuple(entries)


def test_single_file_run_is_one_request() -> None:
    geometry, files = torrent(100, ("f.iso", 950), multi=False)
    plan = plan_run(geometry, files, 3, 4, parse_web_seed_url("http://m.test/f.iso"))
    assert plan.length == 400
    assert plan.requests == (RangeRequest(0, "http://m.test/f.iso", 300, 400, 0, 950),)
    assert plan.requests[0].range_header == "bytes=300-699"
    assert plan.zero_fills == ()


def test_run_with_the_short_last_piece() -> None:
    geometry, files = torrent(100, ("f.iso", 950), multi=False)
    plan = plan_run(geometry, files, 8, 2, SEED)
    assert plan.length == 150
    (request,) = plan.requests
    assert (request.url, request.range_header) == ("http://mirror.test/pub/f.iso", "bytes=800-949")


def test_run_across_files_is_one_request_per_file() -> None:
    geometry, files = torrent(100, ("a", 150), ("b", 30), ("c", 500))
    plan = plan_run(geometry, files, 1, 2, SEED)  # bytes 100..299
    assert plan.requests == (
        RangeRequest(0, "http://mirror.test/pub/t/a", 100, 50, 0, 150),
        RangeRequest(1, "http://mirror.test/pub/t/b", 0, 30, 50, 30),
        RangeRequest(2, "http://mirror.test/pub/t/c", 0, 120, 80, 500),
    )
    assert plan.file_indices == frozenset({0, 1, 2})


def test_padding_files_are_zero_filled_never_requested() -> None:
    geometry, files = torrent(
        64, ("a", 40), (".pad/24", 24, True), ("b", 64), (".pad/0", 0, True), ("c", 10)
    )
    plan = plan_run(geometry, files, 0, 3, SEED)
    assert plan.requests == (
        RangeRequest(0, "http://mirror.test/pub/t/a", 0, 40, 0, 40),
        RangeRequest(2, "http://mirror.test/pub/t/b", 0, 64, 64, 64),
        RangeRequest(4, "http://mirror.test/pub/t/c", 0, 10, 128, 10),
    )
    assert plan.zero_fills == (ZeroFill(1, 40, 24),)
    assert all("pad" not in r.url for r in plan.requests)


def test_a_piece_all_padding_needs_no_request() -> None:
    geometry, files = torrent(32, ("a", 32), (".pad/64", 64, True), ("b", 32))
    plan = plan_run(geometry, files, 1, 2, SEED)
    assert plan.requests == ()
    assert plan.zero_fills == (ZeroFill(1, 0, 64),)


def test_zero_length_files_are_skipped() -> None:
    geometry, files = torrent(100, ("a", 50), ("empty", 0), ("b", 50))
    plan = plan_run(geometry, files, 0, 1, SEED)
    assert [r.file_index for r in plan.requests] == [0, 2]


def test_names_are_encoded_in_request_urls() -> None:
    geometry, files = torrent(100, ("été 1.txt", 50), ("b#?", 50))
    plan = plan_run(geometry, files, 0, 1, SEED)
    assert [r.url for r in plan.requests] == [
        "http://mirror.test/pub/t/%C3%A9t%C3%A9%201.txt",
        "http://mirror.test/pub/t/b%23%3F",
    ]


@pytest.mark.parametrize(
    ("first", "count", "error"),
    [(0, 0, ValueError), (-1, 1, PieceIndexError), (9, 2, PieceIndexError), (10, 1, IndexError)],
)
def test_runs_outside_the_torrent_are_refused(
    first: int, count: int, error: type[Exception]
) -> None:
    geometry, files = torrent(100, ("f", 1000), multi=False)
    with pytest.raises(error):
        plan_run(geometry, files, first, count, SEED)


def test_files_must_match_the_geometry() -> None:
    geometry, files = torrent(100, ("a", 500), ("b", 500))
    with pytest.raises(ValueError, match="does not match"):
        plan_run(geometry, files[:1], 0, 1, SEED)


# --- against a byte-by-byte reference ----------------------------------------------------------


@st.composite
def runs(draw: st.DrawFn) -> tuple[TorrentGeometry, tuple[FileEntry, ...], int, int]:
    specs = draw(
        st.lists(st.tuples(st.integers(0, 300), st.booleans()), min_size=1, max_size=8).filter(
            lambda fs: sum(length for length, _ in fs) > 0
        )
    )
    files = [(f"f{i}", length, padding) for i, (length, padding) in enumerate(specs)]
    geometry, entries = torrent(draw(st.integers(1, 200)), *files, multi=len(files) > 1)
    first = draw(st.integers(0, geometry.num_pieces - 1))
    count = draw(st.integers(1, geometry.num_pieces - first))
    return geometry, entries, first, count


@settings(max_examples=400)
@given(runs())
def test_plan_covers_the_run_exactly_once(
    case: tuple[TorrentGeometry, tuple[FileEntry, ...], int, int],
) -> None:
    geometry, files, first, count = case
    # Each file's bytes: distinct per file and offset; padding files hold zeros.
    contents = [
        bytes(0 if f.padding else (i * 31 + k) % 251 + 1 for k in range(f.length))
        for i, f in enumerate(files)
    ]
    whole = b"".join(contents)
    start = first * geometry.piece_length
    end = min(geometry.total_length, (first + count) * geometry.piece_length)
    plan = plan_run(geometry, files, first, count, SEED)
    assert plan.length == end - start

    buffer = bytearray(plan.length)
    written = [0] * plan.length
    for request in plan.requests:
        entry = files[request.file_index]
        assert not entry.padding and request.length > 0
        assert request.file_offset >= 0 and request.last_byte < entry.length
        assert request.file_length == entry.length
        data = contents[request.file_index][request.file_offset : request.last_byte + 1]
        buffer[request.buffer_offset : request.buffer_offset + request.length] = data
        for k in range(request.buffer_offset, request.buffer_offset + request.length):
            written[k] += 1
    for fill in plan.zero_fills:
        assert files[fill.file_index].padding and fill.length > 0
        for k in range(fill.buffer_offset, fill.buffer_offset + fill.length):
            written[k] += 1
    assert written == [1] * plan.length
    assert bytes(buffer) == whole[start:end]
    # Requests come in buffer order and a file's contiguous bytes are one request.
    offsets = [r.buffer_offset for r in plan.requests]
    assert offsets == sorted(offsets)
    for a, b in zip(plan.requests, plan.requests[1:], strict=False):
        assert not (a.file_index == b.file_index and a.last_byte + 1 == b.file_offset)
    assert len({r.file_index for r in plan.requests}) == len(plan.requests)
