"""BEP 9 ut_metadata codec: the BEP's example bytes, round trips, every hostile payload."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.errors import WireError
from torviz.shared.wire.metadata import (
    DEFAULT_MAX_METADATA_SIZE,
    METADATA_PIECE_SIZE,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    MetadataUnknown,
    decode_metadata_message,
    encode_metadata_message,
    metadata_piece_count,
    serve_metadata_request,
)

# The examples of BEP 9 (its data example: total_size 34256, piece 0 -> a full 16 KiB block).
# BEP 9 prints its reject example as {'msg_type': 2, 'piece': 0} over the bytes
# d8:msg_typei1e5:piecei0ee, a well-known slip (those bytes are a data header): the dict is
# the definition, and libtorrent's reject (tests/vectors/wire/lt_metadata_reject_7.bin) agrees.
BEP9_REQUEST = b"d8:msg_typei0e5:piecei0ee"
BEP9_DATA_HEAD = b"d8:msg_typei1e5:piecei0e10:total_sizei34256ee"
BEP9_REJECT = b"d8:msg_typei2e5:piecei0ee"


def test_bep9_request_example() -> None:
    assert decode_metadata_message(BEP9_REQUEST) == MetadataRequest(0)
    assert encode_metadata_message(MetadataRequest(0)) == BEP9_REQUEST


def test_bep9_reject_example() -> None:
    assert decode_metadata_message(BEP9_REJECT) == MetadataReject(0)
    assert encode_metadata_message(MetadataReject(0)) == BEP9_REJECT


def test_bep9_data_example() -> None:
    block = b"x" * METADATA_PIECE_SIZE
    message = decode_metadata_message(BEP9_DATA_HEAD + block)
    assert message == MetadataData(0, 34256, block)
    assert encode_metadata_message(MetadataData(0, 34256, block)) == BEP9_DATA_HEAD + block


def test_last_piece_is_the_remainder() -> None:
    # 34256 = 2 * 16384 + 1488: piece 2 holds 1488 bytes.
    head = b"d8:msg_typei1e5:piecei2e10:total_sizei34256ee"
    assert decode_metadata_message(head + b"y" * 1488) == MetadataData(2, 34256, b"y" * 1488)


def test_unsorted_keys_are_accepted() -> None:
    assert decode_metadata_message(b"d5:piecei3e8:msg_typei0ee") == MetadataRequest(3)


@pytest.mark.parametrize("msg_type", [3, 7, 2**31 - 1])
def test_unknown_msg_type_is_reported_for_the_caller_to_ignore(msg_type: int) -> None:
    payload = b"d8:msg_typei%de5:piecei0ee" % msg_type
    assert decode_metadata_message(payload) == MetadataUnknown(msg_type)


def _data(piece: int, total: int, data: bytes) -> bytes:
    return b"d8:msg_typei1e5:piecei%de10:total_sizei%dee" % (piece, total) + data


HOSTILE = [
    (b"", "not valid bencode"),
    (b"d8:msg_typei0e5:piecei0e", "not valid bencode"),  # truncated
    (b"li0ee", "not a dictionary"),
    (b"i0e", "not a dictionary"),
    (b"d5:piecei0ee", "msg_type missing"),
    (b"d8:msg_type1:05:piecei0ee", "msg_type missing"),
    (b"d8:msg_typei-1e5:piecei0ee", "msg_type missing"),
    (b"d8:msg_typei0ee", "piece missing"),
    (b"d8:msg_typei0e5:piece1:0e", "piece missing"),
    (b"d8:msg_typei0e5:piecei-1ee", "piece -1 out of range"),
    (b"d8:msg_typei0e5:piecei512ee", "piece 512 out of range 0..511"),
    (b"d8:msg_typei2e5:piecei2147483648ee", "out of range"),
    (b"d8:msg_typei0e5:piecei0eeX", "1 bytes after the dictionary"),
    (b"d8:msg_typei2e5:piecei0eed1:ai1ee", "bytes after the dictionary"),
    (b"d8:msg_typei0e8:msg_typei0e5:piecei0ee", "not valid bencode"),  # duplicate key
    (b"d8:msg_typei1e5:piecei0ee" + b"x" * 10, "without an integer total_size"),
    (_data(0, 0, b""), "total_size 0 outside"),
    (_data(0, 2**31, b"x" * METADATA_PIECE_SIZE), "total_size 2147483648 outside"),
    (_data(0, DEFAULT_MAX_METADATA_SIZE + 1, b"x"), "outside 1..8388608"),
    (_data(3, 34256, b"x"), "piece 3 out of range 0..2 for total_size 34256"),
    (_data(-1, 34256, b"x"), "piece -1 out of range"),
    (_data(0, 34256, b"x" * (METADATA_PIECE_SIZE - 1)), "carries 16383 bytes, expected 16384"),
    (_data(0, 34256, b"x" * (METADATA_PIECE_SIZE + 1)), "carries 16385 bytes, expected 16384"),
    (_data(2, 34256, b"x" * 1489), "carries 1489 bytes, expected 1488"),
    (_data(2, 34256, b"x" * METADATA_PIECE_SIZE), "expected 1488"),
    (_data(0, 100, b""), "carries 0 bytes, expected 100"),
]


@pytest.mark.parametrize(("payload", "cause"), HOSTILE)
def test_hostile_payloads_are_refused_naming_the_cause(payload: bytes, cause: str) -> None:
    with pytest.raises(WireError) as info:
        decode_metadata_message(payload)
    assert info.value.reason == "bad_metadata_message"
    assert cause in str(info.value)
    assert "\n" not in str(info.value)


def test_cap_passed_in_bounds_total_size_and_request_piece() -> None:
    with pytest.raises(WireError, match=r"outside 1\.\.1000"):
        decode_metadata_message(_data(0, 1001, b"x" * 1001), max_total_size=1000)
    assert decode_metadata_message(_data(0, 1000, b"x" * 1000), max_total_size=1000) == (
        MetadataData(0, 1000, b"x" * 1000)
    )
    with pytest.raises(WireError, match=r"piece 1 out of range 0\.\.0"):
        decode_metadata_message(b"d8:msg_typei0e5:piecei1ee", max_total_size=1000)


def test_encode_refuses_inconsistent_messages() -> None:
    with pytest.raises(ValueError, match="cannot be"):
        encode_metadata_message(MetadataData(0, 34256, b"short"))
    with pytest.raises(ValueError, match=">= 0"):
        encode_metadata_message(MetadataRequest(-1))
    with pytest.raises(ValueError, match="not a piece"):
        encode_metadata_message(MetadataData(5, 100, b"x"))


def test_serve_answers_with_the_exact_bytes_and_rejects_out_of_range() -> None:
    info = bytes(range(256)) * 130  # 33280 bytes: pieces of 16384, 16384, 512
    assert metadata_piece_count(len(info)) == 3
    got = b""
    for piece in range(3):
        answer = serve_metadata_request(info, piece)
        assert isinstance(answer, MetadataData)
        assert answer.total_size == len(info)
        payload = encode_metadata_message(answer)
        assert decode_metadata_message(payload) == answer
        got += answer.data
    assert got == info
    assert serve_metadata_request(info, 3) == MetadataReject(3)
    assert serve_metadata_request(info, 2**31) == MetadataReject(2**31)
    assert serve_metadata_request(b"", 0) == MetadataReject(0)


@given(piece=st.integers(0, 511), reject=st.booleans())
def test_request_and_reject_round_trip(piece: int, reject: bool) -> None:
    message = MetadataReject(piece) if reject else MetadataRequest(piece)
    assert decode_metadata_message(encode_metadata_message(message)) == message


@given(total=st.integers(1, 5 * METADATA_PIECE_SIZE), data=st.data())
def test_data_round_trip(total: int, data: st.DataObject) -> None:
    info = bytes(i % 251 for i in range(total))
    piece = data.draw(st.integers(0, metadata_piece_count(total) - 1))
    answer = serve_metadata_request(info, piece)
    assert isinstance(answer, MetadataData)
    assert decode_metadata_message(encode_metadata_message(answer)) == answer


# --- bytes captured from libtorrent 2.1 (tests/vectors/wire/capture_libtorrent_metadata.py) ---

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "wire"


def test_libtorrent_data_decodes_hashes_to_the_info_hash_and_we_encode_it_identically() -> None:
    meta = json.loads((VECTORS / "libtorrent_metadata.json").read_text())
    raw = (VECTORS / "lt_metadata_data_0.bin").read_bytes()
    message = decode_metadata_message(raw)
    assert isinstance(message, MetadataData)
    assert message.piece == 0
    assert message.total_size == meta["metadata_size"] == len(message.data)
    assert hashlib.sha1(message.data).hexdigest() == meta["info_hash"]
    assert encode_metadata_message(serve_metadata_request(message.data, 0)) == raw


def test_libtorrent_reject_carries_total_size_and_still_decodes() -> None:
    raw = (VECTORS / "lt_metadata_reject_7.bin").read_bytes()
    assert b"total_size" in raw  # libtorrent adds it to a reject; BEP 9 does not
    assert decode_metadata_message(raw) == MetadataReject(7)
