"""The agent's piece cache without I/O: the test plays the storage agent's replies."""

from __future__ import annotations

import hashlib
import random

import pytest

from torviz.services.peer_agent.core.piece_cache import Outcome, PieceCache, Read, ReadError
from torviz.shared.bus import BlockRead, ReadFailed
from torviz.shared.types import InfoHash

IH = InfoHash(hashlib.sha1(b"cache").digest())
OTHER = InfoHash(hashlib.sha1(b"other").digest())
ENDPOINT = "ipc:///tmp/data"
KIB = 1024
PIECE = 100 * KIB  # not a multiple of the chunk: the last read of a piece is short
CHUNK = 32 * KIB


def content(info_hash: InfoHash, piece: int, size: int = PIECE) -> bytes:
    return random.Random(info_hash.raw + piece.to_bytes(4, "big")).randbytes(size)


def answer(cache: PieceCache[str], reads: list[Read], now: float = 0.0) -> Outcome[str]:
    """Play the storage agent: answer ``reads`` (and the reads they lead to) with the bytes."""
    outcome: Outcome[str] = Outcome()
    pending = list(reads)
    for _ in range(10_000):
        if not pending:
            return outcome
        read = pending.pop(0)
        message = read.message
        data = content(message.info_hash, message.piece)[
            message.offset : message.offset + message.length
        ]
        reply = BlockRead(message.request_id, message.info_hash, message.piece, message.offset)
        step = cache.on_block_read(reply, memoryview(data), now)
        outcome.resolved.extend(step.resolved)
        pending.extend(step.reads)
    raise AssertionError("reads never ended")


def test_a_miss_reads_the_piece_in_chunks_once_for_every_waiter_then_hits() -> None:
    cache: PieceCache[str] = PieceCache(1024 * KIB, chunk=CHUNK, max_reads=2)
    data, reads = cache.get(IH, 3, PIECE, ENDPOINT, "first", 0.0)
    assert data is None
    assert [(r.endpoint, r.message.offset, r.message.length) for r in reads] == [
        (ENDPOINT, 0, CHUNK),
        (ENDPOINT, CHUNK, CHUNK),
    ]  # at most max_reads outstanding
    assert cache.get(IH, 3, PIECE, ENDPOINT, "second", 0.0) == (None, [])  # joins the load
    outcome = answer(cache, reads)
    assert sorted(waiter for waiter, _ in outcome.resolved) == ["first", "second"]
    assert all(bytes(value) == content(IH, 3) for _, value in outcome.resolved)  # type: ignore[arg-type]
    hit, reads = cache.get(IH, 3, PIECE, ENDPOINT, "third", 1.0)
    assert hit is not None and bytes(hit) == content(IH, 3) and reads == []
    assert (cache.hits, cache.misses, len(cache), cache.cached_bytes) == (1, 2, 1, PIECE)


def test_memory_stays_within_capacity_least_recently_used_first_out() -> None:
    cache: PieceCache[str] = PieceCache(3 * PIECE, chunk=CHUNK)
    for piece in (0, 1, 2):
        answer(cache, cache.get(IH, piece, PIECE, ENDPOINT, "w", 0.0)[1])
    assert cache.get(IH, 0, PIECE, ENDPOINT, "w", 0.0)[0] is not None  # 0 is now the newest
    answer(cache, cache.get(IH, 3, PIECE, ENDPOINT, "w", 0.0)[1])
    assert cache.cached_bytes == 3 * PIECE and len(cache) == 3
    assert cache.get(IH, 1, PIECE, ENDPOINT, "w", 0.0)[0] is None  # 1 was evicted
    assert cache.cached_bytes + cache.loading_bytes <= 3 * PIECE


def test_loads_that_do_not_fit_wait_and_a_piece_bigger_than_the_cache_is_not_kept() -> None:
    cache: PieceCache[str] = PieceCache(PIECE + PIECE // 2, chunk=CHUNK, max_reads=64)
    _, first = cache.get(IH, 0, PIECE, ENDPOINT, "a", 0.0)
    _, second = cache.get(IH, 1, PIECE, ENDPOINT, "b", 0.0)
    assert first and not second  # no room for two loads: piece 1 waits
    outcome = answer(cache, first)
    assert [w for w, _ in outcome.resolved] == ["a", "b"]  # piece 1 was read once 0 was done
    huge = 2 * PIECE
    _, reads = cache.get(OTHER, 9, huge, ENDPOINT, "huge", 0.0)
    assert sum(r.message.length for r in reads) == huge  # alone, it proceeds
    outcome = Outcome[str]()
    for read in reads:
        message = read.message
        reply = BlockRead(message.request_id, message.info_hash, message.piece, message.offset)
        step = cache.on_block_read(reply, memoryview(bytes(message.length)), 0.0)
        outcome.resolved.extend(step.resolved)
    assert [w for w, _ in outcome.resolved] == ["huge"]
    assert cache.get(OTHER, 9, huge, ENDPOINT, "again", 0.0)[0] is None  # never cached


def test_a_failed_read_fails_every_waiter_and_late_replies_are_ignored() -> None:
    cache: PieceCache[str] = PieceCache(1024 * KIB, chunk=CHUNK)
    _, reads = cache.get(IH, 2, PIECE, ENDPOINT, "a", 0.0)
    cache.get(IH, 2, PIECE, ENDPOINT, "b", 0.0)
    failed = cache.on_read_failed(
        ReadFailed(reads[1].message.request_id, "piece_not_verified", "piece 2 is not verified"),
        0.0,
    )
    assert failed.resolved == [
        ("a", ReadError("piece_not_verified", "piece 2 is not verified")),
        ("b", ReadError("piece_not_verified", "piece 2 is not verified")),
    ]
    late = answer(cache, reads[:1])
    assert late.resolved == [] and cache.loading_bytes == 0
    assert cache.get(IH, 2, PIECE, ENDPOINT, "c", 0.0)[1]  # asked again: read again


@pytest.mark.parametrize(
    ("change", "data"),
    [
        ({"piece": 7}, None),
        ({"offset": 5}, None),
        ({}, b"short"),
        ({"info_hash": OTHER}, None),
    ],
    ids=["other piece", "other offset", "wrong length", "other torrent"],
)
def test_a_reply_that_does_not_match_the_read_fails_the_load(
    change: dict[str, object], data: bytes | None
) -> None:
    cache: PieceCache[str] = PieceCache(1024 * KIB, chunk=CHUNK)
    _, reads = cache.get(IH, 2, PIECE, ENDPOINT, "a", 0.0)
    message = reads[0].message
    fields: dict[str, object] = {
        "request_id": message.request_id,
        "info_hash": message.info_hash,
        "piece": message.piece,
        "offset": message.offset,
        **change,
    }
    reply = BlockRead(**fields)  # type: ignore[arg-type]
    outcome = cache.on_block_read(reply, memoryview(data or bytes(message.length)), 0.0)
    assert [(w, e.reason) for w, e in outcome.resolved] == [("a", "bad_reply")]  # type: ignore[union-attr]


def test_a_load_that_takes_too_long_fails_and_the_next_one_starts() -> None:
    cache: PieceCache[str] = PieceCache(PIECE, chunk=CHUNK, read_timeout=30.0)
    _, reads = cache.get(IH, 0, PIECE, ENDPOINT, "slow", 0.0)
    assert cache.get(IH, 1, PIECE, ENDPOINT, "next", 1.0) == (None, [])  # waits for room
    assert cache.expire(29.0).resolved == []
    expired = cache.expire(30.0)
    assert expired.resolved == [("slow", ReadError("read_timeout", expired.resolved[0][1].message))]  # type: ignore[union-attr]
    assert {r.message.piece for r in expired.reads} == {1}
    assert answer(cache, reads).resolved == []  # the slow replies come too late


def test_forgetting_a_torrent_drops_its_pieces_and_fails_its_loads() -> None:
    cache: PieceCache[str] = PieceCache(1024 * KIB, chunk=CHUNK)
    answer(cache, cache.get(IH, 0, PIECE, ENDPOINT, "w", 0.0)[1])
    answer(cache, cache.get(OTHER, 0, PIECE, ENDPOINT, "w", 0.0)[1])
    cache.get(IH, 1, PIECE, ENDPOINT, "loading", 0.0)
    outcome = cache.forget(IH, 0.0)
    assert [(w, e.reason) for w, e in outcome.resolved] == [("loading", "torrent_detached")]  # type: ignore[union-attr]
    assert cache.get(IH, 0, PIECE, ENDPOINT, "w", 0.0)[0] is None
    assert cache.get(OTHER, 0, PIECE, ENDPOINT, "w", 0.0)[0] is not None


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        PieceCache(0)
    with pytest.raises(ValueError):
        PieceCache(1024, chunk=256 * KIB)  # above the bus's ReadBlock bound
