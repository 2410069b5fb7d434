"""TorrentGeometry: piece, block and file-span arithmetic, edge cases and properties."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.geometry import DEFAULT_BLOCK_SIZE, FileSpan, TorrentGeometry
from torviz.shared.types import BlockRef

KIB = 1024


def geo(piece_length: int, *files: int, block_size: int = DEFAULT_BLOCK_SIZE) -> TorrentGeometry:
    return TorrentGeometry(piece_length, sum(files), tuple(files), block_size)


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 10, (10,)), "piece length"),
        ((-1, 10, (10,)), "piece length"),
        ((16, 10, (10,), 0), "block size"),
        ((16, 0, ()), "at least one file"),
        ((16, 0, (0,)), "nothing to download"),
        ((16, 0, (0, 0)), "nothing to download"),
        ((16, 10, (20, -10)), "negative"),
        ((16, 11, (10,)), "differs"),
    ],
)
def test_invalid_geometry_is_refused(args: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TorrentGeometry(*args)  # type: ignore[arg-type]


def test_geometry_is_frozen_and_compares_by_fields() -> None:
    a = geo(32 * KIB, 100, 200)
    assert a == geo(32 * KIB, 100, 200)
    with pytest.raises(AttributeError):
        a.piece_length = 1  # type: ignore[misc]


# --- pieces ---------------------------------------------------------------------------------


def test_last_piece_short() -> None:
    g = geo(32 * KIB, 100_000)
    assert g.num_pieces == 4
    assert [g.piece_size(i) for i in range(4)] == [32768, 32768, 32768, 100_000 - 3 * 32768]
    assert g.last_piece_size == 1696
    assert [g.piece_offset(i) for i in range(4)] == [0, 32768, 65536, 98304]


def test_exact_multiple_has_full_last_piece() -> None:
    g = geo(16 * KIB, 4 * 16 * KIB)
    assert g.num_pieces == 4
    assert g.last_piece_size == 16 * KIB


def test_single_byte_torrent() -> None:
    g = geo(256 * KIB, 1)
    assert (g.num_pieces, g.last_piece_size, g.num_blocks(0)) == (1, 1, 1)
    assert g.blocks(0) == [BlockRef(0, 0, 1)]


def test_odd_piece_length() -> None:
    g = geo(1_000_000, 2_500_000)
    assert g.num_pieces == 3
    assert g.piece_size(2) == 500_000
    assert g.num_blocks(0) == 62  # 61 full blocks of 16 KiB and one of 576 bytes
    assert g.block(0, 61) == BlockRef(0, 61 * 16384, 1_000_000 - 61 * 16384)


def test_piece_smaller_than_a_block() -> None:
    g = geo(4 * KIB, 10 * KIB)
    assert g.num_pieces == 3
    assert g.blocks(0) == [BlockRef(0, 0, 4096)]
    assert g.blocks(2) == [BlockRef(2, 0, 2048)]


@pytest.mark.parametrize("piece", [-1, 4, 100])
def test_piece_index_out_of_range(piece: int) -> None:
    g = geo(32 * KIB, 100_000)
    for call in (g.piece_size, g.piece_offset, g.num_blocks, g.blocks, g.spans):
        with pytest.raises(IndexError):
            call(piece)


# --- blocks ---------------------------------------------------------------------------------


def test_last_block_short() -> None:
    g = geo(32 * KIB, 100_000)
    assert g.num_blocks(0) == 2
    assert g.num_blocks(3) == 1
    assert g.blocks(3) == [BlockRef(3, 0, 1696)]
    g = geo(40_000, 100_000)
    assert g.blocks(0) == [
        BlockRef(0, 0, 16384),
        BlockRef(0, 16384, 16384),
        BlockRef(0, 32768, 7232),
    ]
    assert g.blocks(2) == [BlockRef(2, 0, 16384), BlockRef(2, 16384, 3616)]


def test_block_matches_blocks() -> None:
    g = geo(40_000, 100_000)
    for piece in range(g.num_pieces):
        assert [g.block(piece, j) for j in range(g.num_blocks(piece))] == g.blocks(piece)


@pytest.mark.parametrize(("piece", "index"), [(0, -1), (0, 3), (2, 2), (3, 0)])
def test_block_out_of_range(piece: int, index: int) -> None:
    with pytest.raises(IndexError):
        geo(40_000, 100_000).block(piece, index)


def test_block_index() -> None:
    g = geo(64 * KIB, 1_000_000)
    assert [g.block_index(o) for o in (0, 16384, 49152)] == [0, 1, 3]
    for bad in (-16384, 1, 16383, 16385):
        with pytest.raises(ValueError, match="block"):
            g.block_index(bad)


def test_custom_block_size() -> None:
    g = geo(32 * KIB, 50_000, block_size=8 * KIB)
    assert g.num_blocks(0) == 4
    assert g.blocks(1)[-1] == BlockRef(1, 16384, 50_000 - 32768 - 16384)


@pytest.mark.parametrize(
    ("piece", "offset", "length", "max_length", "valid"),
    [
        (0, 0, 16384, 16384, True),
        (0, 16384, 16384, 16384, True),
        (0, 16384, 16385, 16384, False),  # over max length
        (0, 16384, 16385, 32768, False),  # past the end of the piece
        (0, 0, 32768, 32768, True),
        (0, 0, 0, 16384, False),
        (0, -1, 10, 16384, False),
        (0, 0, -5, 16384, False),
        (-1, 0, 10, 16384, False),
        (3, 0, 1696, 16384, True),
        (3, 0, 1697, 16384, False),  # past the end of the short last piece
        (3, 1695, 1, 16384, True),
        (4, 0, 1, 16384, False),
        (0, 1, 100, 16384, True),  # unaligned requests are allowed by BEP 3
    ],
)
def test_is_valid_request(
    piece: int, offset: int, length: int, max_length: int, valid: bool
) -> None:
    g = geo(32 * KIB, 100_000)
    assert g.is_valid_request(piece, offset, length, max_length=max_length) is valid


def test_is_valid_request_default_max_is_16_kib() -> None:
    g = geo(64 * KIB, 1_000_000)
    assert g.is_valid_request(0, 0, 16384)
    assert not g.is_valid_request(0, 0, 16385)


# --- files ----------------------------------------------------------------------------------


def test_file_offsets() -> None:
    assert geo(16 * KIB, 10, 0, 20, 0, 5).file_offsets == (0, 10, 10, 30, 30)


def test_piece_spanning_three_files() -> None:
    # Files of 10k, 5k, 20k with 16 KiB pieces: piece 0 covers all of file 0 and 1, part of 2.
    g = geo(16 * KIB, 10_000, 5_000, 20_000)
    assert g.spans(0) == (
        FileSpan(0, 0, 10_000, 0),
        FileSpan(1, 0, 5_000, 10_000),
        FileSpan(2, 0, 16384 - 15_000, 15_000),
    )
    assert g.spans(1) == (FileSpan(2, 1384, 16384, 0),)
    assert g.spans(2) == (FileSpan(2, 1384 + 16384, 35_000 - 32768, 0),)


def test_spans_of_a_sub_range() -> None:
    g = geo(16 * KIB, 10_000, 5_000, 20_000)
    assert g.spans(0, 9_000, 2_000) == (FileSpan(0, 9_000, 1_000, 0), FileSpan(1, 0, 1_000, 1_000))
    assert g.spans(0, 15_000) == (FileSpan(2, 0, 1384, 0),)
    assert g.spans(0, 10_000, 5_000) == (FileSpan(1, 0, 5_000, 0),)
    assert g.spans(0, 5, 0) == ()


@pytest.mark.parametrize(("offset", "length"), [(-1, 10), (0, 16385), (16384, 1), (10, -1)])
def test_spans_outside_the_piece(offset: int, length: int) -> None:
    with pytest.raises(IndexError):
        geo(16 * KIB, 10_000, 5_000, 20_000).spans(0, offset, length)


def test_zero_length_files_at_start_middle_and_end() -> None:
    g = geo(16 * KIB, 0, 0, 10_000, 0, 10_000, 0)
    assert g.spans(0) == (FileSpan(2, 0, 10_000, 0), FileSpan(4, 0, 6384, 10_000))
    assert g.spans(1) == (FileSpan(4, 6384, 3616, 0),)
    assert [g.pieces_for_file(i) for i in range(6)] == [
        range(0),
        range(0),
        range(0, 1),
        range(0),
        range(0, 2),
        range(0),
    ]


def test_pieces_for_file() -> None:
    g = geo(16 * KIB, 16384, 1, 16383, 40_000)
    assert g.pieces_for_file(0) == range(0, 1)
    assert g.pieces_for_file(1) == range(1, 2)
    assert g.pieces_for_file(2) == range(1, 2)  # ends exactly on the piece boundary
    assert g.pieces_for_file(3) == range(2, 5)
    with pytest.raises(IndexError):
        g.pieces_for_file(4)
    with pytest.raises(IndexError):
        g.pieces_for_file(-1)


def test_many_files_span_lookup_is_fast() -> None:
    g = geo(16 * KIB, *([1000] * 100_000))
    start = time.perf_counter()
    spans = [g.spans(piece) for piece in range(g.num_pieces)]
    assert time.perf_counter() - start < 2.0  # bisect per piece, not a scan of 100k files
    assert spans[1][0] == FileSpan(16, 384, 616, 0)
    assert spans[-1][-1].file_index == 99_999
    assert sum(s.length for s in spans[-1]) == g.last_piece_size


# --- properties -----------------------------------------------------------------------------

geometries = st.builds(
    lambda piece_length, files, block_size: TorrentGeometry(
        piece_length, sum(files), tuple(files), block_size
    ),
    st.integers(min_value=1, max_value=5000),
    st.lists(st.integers(min_value=0, max_value=20_000), min_size=1, max_size=12).filter(
        lambda files: sum(files) > 0
    ),
    st.sampled_from([1, 7, 512, 16384]),
)


@given(geometries, st.data())
def test_spans_cover_the_range_in_order(g: TorrentGeometry, data: st.DataObject) -> None:
    piece = data.draw(st.integers(min_value=0, max_value=g.num_pieces - 1))
    size = g.piece_size(piece)
    offset = data.draw(st.integers(min_value=0, max_value=size))
    length = data.draw(st.integers(min_value=0, max_value=size - offset))
    spans = g.spans(piece, offset, length)
    assert sum(s.length for s in spans) == length
    position = g.piece_offset(piece) + offset
    buffer_offset = 0
    for span in spans:
        assert span.length > 0
        assert g.file_lengths[span.file_index] > 0
        assert span.buffer_offset == buffer_offset
        assert g.file_offsets[span.file_index] + span.file_offset == position
        assert span.file_offset + span.length <= g.file_lengths[span.file_index]
        position += span.length
        buffer_offset += span.length
    indices = [s.file_index for s in spans]
    assert indices == sorted(set(indices))


@given(geometries)
def test_pieces_and_blocks_tile_the_torrent(g: TorrentGeometry) -> None:
    assert sum(g.piece_size(i) for i in range(g.num_pieces)) == g.total_length
    for piece in range(min(g.num_pieces, 20)):
        blocks = g.blocks(piece)
        assert len(blocks) == g.num_blocks(piece)
        assert sum(b.length for b in blocks) == g.piece_size(piece)
        assert all(0 < b.length <= g.block_size for b in blocks)
        assert [b.offset for b in blocks] == [j * g.block_size for j in range(len(blocks))]
        for b in blocks:
            assert g.is_valid_request(piece, b.offset, b.length, max_length=g.block_size)


@given(geometries)
def test_pieces_for_file_agrees_with_spans(g: TorrentGeometry) -> None:
    touched: dict[int, set[int]] = {}
    for piece in range(g.num_pieces):
        for span in g.spans(piece):
            touched.setdefault(span.file_index, set()).add(piece)
    for index in range(len(g.file_lengths)):
        assert set(g.pieces_for_file(index)) == touched.get(index, set())
