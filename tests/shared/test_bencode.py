"""Bencode codec: BEP 3 vectors, malformed input table, limits, spans and round trips."""

from __future__ import annotations

import time

import bencodepy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.shared.bencode import (
    DEFAULT_LIMITS,
    NETWORK_LIMITS,
    BencodeLimits,
    Value,
    decode,
    decode_prefix,
    decode_with_spans,
    encode,
)
from torviz.shared.errors import BencodeError

# (encoded, value): the examples of BEP 3 plus the edges of each type.
VECTORS: list[tuple[bytes, Value]] = [
    (b"4:spam", b"spam"),
    (b"0:", b""),
    (b"i3e", 3),
    (b"i-3e", -3),
    (b"i0e", 0),
    (b"i9223372036854775808e", 2**63),
    (b"i-9223372036854775809e", -(2**63) - 1),
    (b"l4:spam4:eggse", [b"spam", b"eggs"]),
    (b"le", []),
    (b"d3:cow3:moo4:spam4:eggse", {b"cow": b"moo", b"spam": b"eggs"}),
    (b"d4:spaml1:a1:bee", {b"spam": [b"a", b"b"]}),
    (b"de", {}),
    (b"d0:i1ee", {b"": 1}),
    (b"lli1eeded0:leee", [[1], {}, {b"": []}]),
    (b"3:\x00\xff:", b"\x00\xff:"),
    (b"d1:A0:1:a0:2:aa0:1:bi0ee", {b"A": b"", b"a": b"", b"aa": b"", b"b": 0}),
]


@pytest.mark.parametrize(("encoded", "value"), VECTORS)
@pytest.mark.parametrize("strict", [True, False])
def test_vector_decodes_whole(encoded: bytes, value: Value, strict: bool) -> None:
    assert decode(encoded, strict=strict) == value


@pytest.mark.parametrize(("encoded", "value"), VECTORS)
def test_vector_encodes_exactly(encoded: bytes, value: Value) -> None:
    assert encode(value) == encoded


@pytest.mark.parametrize(("encoded", "value"), VECTORS)
@pytest.mark.parametrize("strict", [True, False])
def test_every_prefix_is_truncated(encoded: bytes, value: Value, strict: bool) -> None:
    # Fed byte by byte, the decoder never returns early or reads past what it was given.
    for cut in range(len(encoded)):
        with pytest.raises(BencodeError) as info:
            decode(encoded[:cut], strict=strict)
        assert info.value.reason == "truncated"
        assert info.value.offset == cut


@pytest.mark.parametrize(("encoded", "value"), VECTORS)
def test_trailing_bytes(encoded: bytes, value: Value) -> None:
    data = encoded + b"i1e"
    with pytest.raises(BencodeError) as info:
        decode(data, strict=True)
    assert (info.value.reason, info.value.offset) == ("trailing_data", len(encoded))
    assert decode(data, strict=False) == value
    assert decode_prefix(data, strict=True) == (value, len(encoded))


@pytest.mark.parametrize(("encoded", "value"), VECTORS)
def test_bencodepy_agrees_on_vectors(encoded: bytes, value: Value) -> None:
    assert bencodepy.decode(encoded) == value
    assert bencodepy.encode(value) == encoded


# (input, reason, offset) rejected in both modes.
MALFORMED: list[tuple[bytes, str, int]] = [
    (b"", "truncated", 0),
    (b"i+3e", "bad_integer", 1),
    (b"i 3e", "bad_integer", 1),
    (b"i3 e", "bad_integer", 2),
    (b"i1_000e", "bad_integer", 2),
    (b"i3.5e", "bad_integer", 2),
    (b"ie", "bad_integer", 1),
    (b"i-e", "bad_integer", 2),
    (b"i--3e", "bad_integer", 2),
    (b"i03e", "leading_zero", 1),
    (b"i00e", "leading_zero", 1),
    (b"i-03e", "leading_zero", 2),
    (b"i-0e", "negative_zero", 1),
    (b"i3", "truncated", 2),
    (b"i" + b"9" * 40 + b"e", "integer_too_large", 0),
    (b"03:abc", "leading_zero", 0),
    (b"00:", "leading_zero", 0),
    (b"1_0:abcdefghij", "bad_length", 1),
    (b"+3:abc", "bad_token", 0),
    (b"-3:abc", "bad_token", 0),
    (b"3 :abc", "bad_length", 1),
    (b"3", "truncated", 1),
    (b"5:abc", "truncated", 5),
    (b"9" * 25 + b":x", "string_too_long", 0),
    (b"4294967296:", "string_too_long", 0),
    (b"l", "truncated", 1),
    (b"li1e", "truncated", 4),
    (b"d", "truncated", 1),
    (b"d3:cow", "truncated", 6),
    (b"d3:cowe", "bad_token", 6),
    (b"d1:a0:1:a0:e", "duplicate_key", 6),
    (b"di1e0:e", "non_bytes_key", 1),
    (b"dle0:e", "non_bytes_key", 1),
    (b"dde0:e", "non_bytes_key", 1),
    (b"e", "bad_token", 0),
    (b"x", "bad_token", 0),
    (b"dxe", "bad_token", 1),
    (b"l4:spamxe", "bad_token", 7),
    (b"d4:spami1e", "truncated", 10),
]


@pytest.mark.parametrize(("data", "reason", "offset"), MALFORMED)
@pytest.mark.parametrize("strict", [True, False])
def test_malformed(data: bytes, reason: str, offset: int, strict: bool) -> None:
    with pytest.raises(BencodeError) as info:
        decode(data, strict=strict)
    assert (info.value.reason, info.value.offset) == (reason, offset)
    assert f"at byte {offset}" in str(info.value)


# Rejected in strict mode only: non-canonical but unambiguous.
STRICT_ONLY: list[tuple[bytes, str, int, Value]] = [
    (b"d1:b0:1:a0:e", "unsorted_keys", 6, {b"b": b"", b"a": b""}),
    (b"d2:aa0:1:a0:e", "unsorted_keys", 7, {b"aa": b"", b"a": b""}),
    (b"d1:b0:1:c0:1:a0:e", "unsorted_keys", 11, {b"b": b"", b"c": b"", b"a": b""}),
    (b"ld1:bi1e1:ai2eee", "unsorted_keys", 8, [{b"b": 1, b"a": 2}]),
    (b"i1ei2e", "trailing_data", 3, 1),
    (b"le\n", "trailing_data", 2, []),
]


@pytest.mark.parametrize(("data", "reason", "offset", "lenient"), STRICT_ONLY)
def test_strict_only(data: bytes, reason: str, offset: int, lenient: Value) -> None:
    with pytest.raises(BencodeError) as info:
        decode(data, strict=True)
    assert (info.value.reason, info.value.offset) == (reason, offset)
    assert decode(data, strict=False) == lenient


def test_lenient_rejects_duplicates_even_when_unsorted() -> None:
    with pytest.raises(BencodeError) as info:
        decode(b"d1:b0:1:a0:1:b0:e", strict=False)
    assert (info.value.reason, info.value.offset) == ("duplicate_key", 11)


def test_stack_notes_cases_bencodepy_accepts_and_we_reject() -> None:
    for data in (b"i+3e", b"i 3e", b"i1_000e", b"1_0:abcdefghij", b"d1:b0:1:a0:e"):
        bencodepy.decode(data)  # the reason this module has its own scanner
        with pytest.raises(BencodeError):
            decode(data, strict=True)


# --- limits ---------------------------------------------------------------------------------


def test_claimed_huge_string_fails_at_once() -> None:
    start = time.perf_counter()
    with pytest.raises(BencodeError) as info:
        decode(b"l4294967296:abc", strict=True)
    assert time.perf_counter() - start < 0.05
    assert (info.value.reason, info.value.offset) == ("string_too_long", 1)


def test_claimed_string_past_the_end_is_truncated_not_allocated() -> None:
    with pytest.raises(BencodeError) as info:
        decode(b"60000000:abc", strict=False)
    assert (info.value.reason, info.value.offset) == ("truncated", 12)


def test_deep_nesting_is_too_deep_not_recursion_error() -> None:
    data = b"l" * 100_000 + b"e" * 100_000
    with pytest.raises(BencodeError) as info:
        decode(data, strict=True)
    assert (info.value.reason, info.value.offset) == ("too_deep", DEFAULT_LIMITS.max_depth)
    with pytest.raises(BencodeError) as info:
        decode(b"d1:a" * 100_000, strict=False)
    assert info.value.reason == "too_deep"


def test_depth_limit_is_exact() -> None:
    limits = BencodeLimits(max_size=1000, max_depth=3, max_string_length=10, max_items=10)
    assert decode(b"llleee", strict=True, limits=limits) == [[[]]]
    with pytest.raises(BencodeError) as info:
        decode(b"lllleeee", strict=True, limits=limits)
    assert (info.value.reason, info.value.offset) == ("too_deep", 3)
    # A very deep nest is fine when the limit allows it (iterative, no recursion limit).
    deep = BencodeLimits(max_size=10**6, max_depth=50_000, max_string_length=10, max_items=10**6)
    value = decode(b"l" * 50_000 + b"e" * 50_000, strict=True, limits=deep)
    assert isinstance(value, list)


def test_size_limit() -> None:
    limits = BencodeLimits(max_size=10, max_depth=3, max_string_length=100, max_items=10)
    assert decode(b"8:abcdefgh", strict=True, limits=limits) == b"abcdefgh"
    with pytest.raises(BencodeError) as info:
        decode(b"9:abcdefghi", strict=True, limits=limits)
    assert (info.value.reason, info.value.offset) == ("too_large", 10)


def test_string_limit() -> None:
    limits = BencodeLimits(max_size=100, max_depth=3, max_string_length=4, max_items=10)
    assert decode(b"l4:spame", strict=True, limits=limits) == [b"spam"]
    with pytest.raises(BencodeError) as info:
        decode(b"l5:spamse", strict=True, limits=limits)
    assert (info.value.reason, info.value.offset) == ("string_too_long", 1)


def test_item_limit_counts_list_elements_and_dict_entries() -> None:
    limits = BencodeLimits(max_size=100, max_depth=3, max_string_length=4, max_items=3)
    assert decode(b"ld1:ai1eei2ee", strict=True, limits=limits) == [{b"a": 1}, 2]
    with pytest.raises(BencodeError) as info:
        decode(b"ld1:ai1eei2ei3ee", strict=True, limits=limits)
    assert (info.value.reason, info.value.offset) == ("too_many_items", 12)


def test_network_limits_are_tighter() -> None:
    assert NETWORK_LIMITS.max_size < DEFAULT_LIMITS.max_size
    assert NETWORK_LIMITS.max_depth < DEFAULT_LIMITS.max_depth
    with pytest.raises(BencodeError) as info:
        decode(b"l" + b"i1e" * 20_001 + b"e", strict=True, limits=NETWORK_LIMITS)
    assert info.value.reason == "too_many_items"


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        BencodeLimits(max_size=1, max_depth=0, max_string_length=1, max_items=1)


def test_input_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        decode(bytearray(b"i1e"), strict=True)  # type: ignore[arg-type]


def test_large_metainfo_decodes_fast() -> None:
    # A 2 MB metainfo with 100k pieces: the pieces string is one token, so this is ~1 ms.
    data = encode({b"info": {b"length": 100_000 * 16384, b"pieces": b"\x01" * 2_000_000}})
    start = time.perf_counter()
    for _ in range(10):
        decode(data, strict=True)
    assert (time.perf_counter() - start) / 10 < 0.02


# --- spans ----------------------------------------------------------------------------------


def test_spans_give_the_raw_bytes_of_top_level_values() -> None:
    data = b"d4:infod6:lengthi5e4:name1:xe1:zli1eee"
    value, spans = decode_with_spans(data, strict=True)
    assert isinstance(value, dict)
    assert data[slice(*spans[b"info"])] == b"d6:lengthi5e4:name1:xe"
    assert data[slice(*spans[b"z"])] == b"li1ee"
    assert set(spans) == {b"info", b"z"}


def test_spans_keep_non_canonical_bytes() -> None:
    # Unsorted keys inside info: re-encoding would reorder them; the span must not.
    data = b"d8:announce3:url4:infod4:name1:x6:lengthi5eee"
    value, spans = decode_with_spans(data, strict=False)
    raw = data[slice(*spans[b"info"])]
    assert raw == b"d4:name1:x6:lengthi5ee"
    assert isinstance(value, dict)
    assert encode(value[b"info"]) != raw


def test_spans_empty_for_non_dict() -> None:
    assert decode_with_spans(b"li1ee", strict=True) == ([1], {})


# --- encode ---------------------------------------------------------------------------------


def test_encode_sorts_keys_and_accepts_str_and_tuples() -> None:
    assert encode({"b": 1, b"a": ("x", bytearray(b"y"), memoryview(b"z"))}) == (
        b"d1:al1:x1:y1:ze1:bi1ee"
    )
    assert encode("caf\u00e9") == b"5:caf\xc3\xa9"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (1.5, "float"),
        (None, "NoneType"),
        (True, "bool"),
        ({b"a": [1, None]}, r"\[b'a'\]\[1\]"),
        ({1: b"x"}, "key of type int"),
        ({1, 2}, "set"),
    ],
)
def test_encode_rejects_unsupported_types(value: object, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        encode(value)


def test_encode_refuses_integers_decode_would_refuse() -> None:
    assert decode(encode(10**32 - 1), strict=True) == 10**32 - 1
    assert decode(encode(-(10**32) + 1), strict=True) == -(10**32) + 1
    for value in (10**32, -(10**32)):
        with pytest.raises(ValueError, match="digits"):
            encode(value)
        with pytest.raises(BencodeError) as info:
            decode(b"i%de" % value, strict=False)
        assert info.value.reason == "integer_too_large"


def test_encode_rejects_keys_equal_as_bytes() -> None:
    with pytest.raises(ValueError, match="twice"):
        encode({"a": 1, b"a": 2})


# --- properties -----------------------------------------------------------------------------

values: st.SearchStrategy[Value] = st.recursive(
    st.integers(min_value=-(10**32) + 1, max_value=10**32 - 1) | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.binary(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_round_trip(value: Value) -> None:
    data = encode(value)
    assert decode(data, strict=True) == value
    assert decode(data, strict=False) == value
    assert bencodepy.decode(data) == value


@given(values, st.binary(max_size=10))
def test_prefix_decoding_finds_the_end(value: Value, tail: bytes) -> None:
    data = encode(value)
    assert decode_prefix(data + tail, strict=True) == (value, len(data))


@settings(max_examples=300)
@given(st.binary(max_size=60))
def test_arbitrary_bytes_decode_or_raise_bencode_error(data: bytes) -> None:
    try:
        value = decode(data, strict=True)
    except BencodeError as exc:
        assert 0 <= exc.offset <= max(len(data), 1)
    else:
        # Strict acceptance means canonical: re-encoding gives the same bytes.
        assert encode(value) == data


@settings(max_examples=300)
@given(values.map(encode), st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_mutated_encodings_never_escape(data: bytes, where: int, byte: int) -> None:
    mutated = bytearray(data)
    mutated[where % len(mutated)] = byte
    for strict in (True, False):
        try:
            value = decode(bytes(mutated), strict=strict)
        except BencodeError:
            continue
        if strict:
            assert encode(value) == bytes(mutated)
