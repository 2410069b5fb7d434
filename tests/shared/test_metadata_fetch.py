"""The BEP 9 metadata assembler on a fake clock: sizes, cap, several peers, timeouts, rejects,
wrong hashes, and peers that lie about the size."""

from __future__ import annotations

import hashlib

import pytest

from torviz.shared.metadata_fetch import MetadataAssembler, MetadataComplete, PeerDropped
from torviz.shared.wire.metadata import (
    METADATA_PIECE_SIZE,
    MetadataData,
    serve_metadata_request,
)

INFO = bytes(i % 253 for i in range(3 * METADATA_PIECE_SIZE + 100))  # 4 pieces
HASH = hashlib.sha1(INFO).digest()
SIZE = len(INFO)


def block(piece: int, info: bytes = INFO) -> MetadataData:
    answer = serve_metadata_request(info, piece)
    assert isinstance(answer, MetadataData)
    return answer


def feed_all(asm: MetadataAssembler[str], peer: str, now: float, info: bytes = INFO) -> object:
    result: object = None
    for _ in range(10):
        pieces = asm.next_requests(peer, now)
        if not pieces:
            break
        for piece in pieces:
            result = asm.on_data(peer, block(piece, info))
    return result


def test_one_peer_fetches_everything_and_the_hash_matches() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, per_peer=4)
    assert asm.add_peer("a", SIZE) is None
    assert asm.size == SIZE
    assert asm.next_requests("a", 0.0) == [0, 1, 2, 3]
    assert asm.next_requests("a", 0.0) == []  # all in flight
    results = [asm.on_data("a", block(p)) for p in (3, 1, 0, 2)]
    assert results[:3] == [None, None, None]
    assert results[3] == MetadataComplete(INFO)
    assert asm.received_bytes == SIZE


def test_several_peers_get_different_pieces() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, per_peer=2)
    asm.add_peer("a", SIZE)
    asm.add_peer("b", SIZE)
    asm.add_peer("c", SIZE)
    assert asm.next_requests("a", 0.0) == [0, 1]
    assert asm.next_requests("b", 0.0) == [2, 3]
    assert asm.next_requests("c", 0.0) == []
    for p in (0, 1):
        assert asm.on_data("a", block(p)) is None
    assert asm.on_data("b", block(2)) is None
    assert asm.on_data("b", block(3)) == MetadataComplete(INFO)


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        (0, "metadata_size_zero"),
        (-5, "metadata_size_zero"),
        (8 * 1024 * 1024 + 1, "metadata_too_large"),
        (2**31, "metadata_too_large"),
        (2**63, "metadata_too_large"),
    ],
)
def test_refused_sizes_name_the_peer_and_keep_nothing(size: int, reason: str) -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH)
    assert asm.add_peer("liar", size) == PeerDropped(frozenset({"liar"}), reason)
    assert asm.size is None
    assert asm.peers == frozenset()
    assert asm.next_requests("liar", 0.0) == []


def test_the_cap_is_configurable_and_inclusive() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, max_size=SIZE)
    assert asm.add_peer("a", SIZE) is None
    small: MetadataAssembler[str] = MetadataAssembler(HASH, max_size=SIZE - 1)
    assert small.add_peer("a", SIZE) == PeerDropped(frozenset({"a"}), "metadata_too_large")


def test_a_disagreeing_size_drops_the_later_peer() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH)
    asm.add_peer("a", SIZE)
    assert asm.add_peer("b", SIZE + 1) == PeerDropped(frozenset({"b"}), "metadata_size_mismatch")
    assert asm.size == SIZE
    assert asm.peers == frozenset({"a"})


def test_a_data_block_with_another_total_size_drops_its_sender() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH)
    asm.add_peer("a", SIZE)
    asm.next_requests("a", 0.0)
    other = bytes(SIZE + 1)
    assert asm.on_data("a", MetadataData(0, SIZE + 1, other[:METADATA_PIECE_SIZE])) == (
        PeerDropped(frozenset({"a"}), "metadata_size_mismatch")
    )
    assert asm.peers == frozenset()


def test_a_block_of_the_wrong_length_drops_its_sender() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH)
    asm.add_peer("a", SIZE)
    assert asm.on_data("a", MetadataData(3, SIZE, b"x" * 99)) == (
        PeerDropped(frozenset({"a"}), "bad_metadata_piece")
    )


def test_a_wrong_hash_drops_every_contributor_and_starts_over() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, per_peer=2)
    bad = bytes(SIZE)  # same size, wrong bytes
    asm.add_peer("evil", SIZE)
    asm.add_peer("honest", SIZE)
    asm.add_peer("idle", SIZE)
    assert asm.next_requests("evil", 0.0) == [0, 1]
    assert asm.next_requests("honest", 0.0) == [2, 3]
    asm.on_data("evil", block(0, bad))
    asm.on_data("evil", block(1, bad))
    asm.on_data("honest", block(2))
    result = asm.on_data("honest", block(3))
    assert result == PeerDropped(frozenset({"evil", "honest"}), "metadata_hash_mismatch")
    assert asm.received_bytes == 0
    assert asm.peers == frozenset({"idle"})
    assert asm.size == SIZE
    assert feed_all(asm, "idle", 1.0) == MetadataComplete(INFO)


def test_after_a_wrong_hash_with_no_peer_left_a_new_size_is_taken() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, per_peer=4)
    bad = bytes(SIZE + 5)
    asm.add_peer("evil", SIZE + 5)
    result = feed_all(asm, "evil", 0.0, bad)
    assert result == PeerDropped(frozenset({"evil"}), "metadata_hash_mismatch")
    assert asm.size is None
    assert asm.add_peer("honest", SIZE) is None
    assert feed_all(asm, "honest", 1.0) == MetadataComplete(INFO)


def test_a_timed_out_piece_goes_to_another_peer() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, timeout=10.0, per_peer=4)
    asm.add_peer("silent", SIZE)
    asm.add_peer("b", SIZE)
    assert asm.next_requests("silent", 0.0) == [0, 1, 2, 3]
    assert asm.next_deadline() == 10.0
    assert asm.next_requests("b", 9.9) == []
    assert asm.next_requests("b", 10.0) == [0, 1, 2, 3]
    assert asm.next_deadline() == 20.0
    # The silent peer is not asked for what it let time out while "b" has them.
    assert asm.next_requests("silent", 10.0) == []
    for p in range(3):
        asm.on_data("b", block(p))
    assert asm.on_data("b", block(3)) == MetadataComplete(INFO)


def test_expire_reports_what_timed_out() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, timeout=5.0, per_peer=1)
    asm.add_peer("a", SIZE)
    assert asm.next_deadline() is None
    asm.next_requests("a", 1.0)
    assert asm.expire(5.9) == []
    assert asm.expire(6.0) == [("a", 0)]
    assert asm.next_deadline() is None


def test_a_lone_peer_is_asked_again_after_a_timeout() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, timeout=5.0, per_peer=1)
    asm.add_peer("a", SIZE)
    assert asm.next_requests("a", 0.0) == [0]
    assert asm.next_requests("a", 5.0) == [1]  # 0 timed out: try the others first
    asm.on_data("a", block(1))
    assert asm.next_requests("a", 5.0) == [2]
    assert asm.next_requests("a", 10.0) == [3]
    assert asm.next_requests("a", 15.0) == [0]  # nothing else left: retried
    asm.on_data("a", block(0))
    assert asm.next_requests("a", 15.0) == [2]


def test_a_late_block_for_a_missing_piece_is_kept() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, timeout=5.0, per_peer=4)
    asm.add_peer("slow", SIZE)
    asm.add_peer("b", SIZE)
    asm.next_requests("slow", 0.0)
    asm.next_requests("b", 6.0)
    assert asm.on_data("slow", block(0)) is None
    assert asm.received_bytes == METADATA_PIECE_SIZE
    assert asm.on_data("b", block(0)) is None  # duplicate, ignored
    assert asm.received_bytes == METADATA_PIECE_SIZE


def test_a_rejected_piece_is_asked_elsewhere() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, per_peer=1)
    asm.add_peer("a", SIZE)
    asm.add_peer("b", SIZE)
    assert asm.next_requests("a", 0.0) == [0]
    asm.on_reject("a", 0)
    assert asm.next_requests("a", 0.0) == [1]
    assert asm.next_requests("b", 0.0) == [0]


def test_a_removed_peer_frees_its_requests() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, per_peer=4)
    asm.add_peer("a", SIZE)
    asm.add_peer("b", SIZE)
    assert asm.next_requests("a", 0.0) == [0, 1, 2, 3]
    asm.remove_peer("a")
    assert asm.next_requests("b", 0.0) == [0, 1, 2, 3]
    assert asm.on_data("a", block(0)) is None  # from a peer no longer there: ignored
    assert asm.received_bytes == 0


def test_a_peer_without_an_advertised_size_gets_nothing() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH)
    assert asm.next_requests("nobody", 0.0) == []
    assert asm.on_data("nobody", block(0)) is None


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="20 bytes"):
        MetadataAssembler(b"short")
    with pytest.raises(ValueError, match="positive"):
        MetadataAssembler(HASH, max_size=0)


def test_a_piece_delivered_by_another_peer_frees_the_first_peers_slot() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, timeout=5.0, per_peer=1)
    asm.add_peer("a", SIZE)
    asm.add_peer("b", SIZE)
    assert asm.next_requests("a", 0.0) == [0]
    assert asm.on_data("b", block(0)) is None  # unasked, but piece 0 was missing: kept
    assert asm.next_requests("a", 1.0) == [1]  # "a" need not wait for its timeout
    assert asm.next_deadline() == 6.0


def test_after_a_wrong_hash_the_remaining_peers_are_asked_for_everything_again() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, per_peer=4)
    asm.add_peer("evil", SIZE)
    asm.add_peer("picky", SIZE)
    assert asm.next_requests("picky", 0.0) == [0, 1, 2, 3]
    for piece in range(4):
        asm.on_reject("picky", piece)
    assert feed_all(asm, "evil", 0.0, bytes(SIZE)) == PeerDropped(
        frozenset({"evil"}), "metadata_hash_mismatch"
    )
    assert asm.next_requests("picky", 1.0) == [0, 1, 2, 3]


def test_a_block_for_a_piece_out_of_range_drops_its_sender() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH)
    asm.add_peer("a", SIZE)
    assert asm.on_data("a", MetadataData(4, SIZE, b"")) == (
        PeerDropped(frozenset({"a"}), "bad_metadata_piece")
    )


def test_pieces_kept_from_an_earlier_run_are_not_asked_for_again() -> None:
    asm: MetadataAssembler[str] = MetadataAssembler(HASH, per_peer=4)
    kept = {0: block(0).data, 2: block(2).data, 7: b"x", 3: b"too short"}
    assert asm.restore(SIZE, kept, "kept") is None  # no size fixed yet: nothing taken
    assert asm.received_bytes == 0
    assert asm.add_peer("a", SIZE) is None
    assert asm.restore(SIZE + 1, kept, "kept") is None  # pieces of another size: not taken
    assert asm.restore(SIZE, kept, "kept") is None
    assert asm.held() == {0: block(0).data, 2: block(2).data}
    assert asm.next_requests("a", 0.0) == [1, 3]
    assert asm.on_data("a", block(1)) is None
    assert asm.on_data("a", block(3)) == MetadataComplete(INFO)


def test_kept_pieces_that_are_the_whole_complete_at_once_or_are_dropped() -> None:
    whole = {piece: block(piece).data for piece in range(4)}
    asm: MetadataAssembler[str] = MetadataAssembler(HASH)
    asm.add_peer("a", SIZE)
    assert asm.restore(SIZE, whole, "kept") == MetadataComplete(INFO)
    liar: MetadataAssembler[str] = MetadataAssembler(HASH)
    liar.add_peer("a", SIZE)
    assert liar.restore(SIZE, {**whole, 1: bytes(METADATA_PIECE_SIZE)}, "kept") is None
    assert liar.held() == {}
    assert liar.next_requests("a", 0.0) == [0, 1]
