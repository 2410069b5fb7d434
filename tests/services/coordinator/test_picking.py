"""Piece picker tests, with swarms described as strings.

``"1110"`` as a peer's bitfield means it has pieces 0-2; a have-state string marks our verified
pieces the same way.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.services.coordinator.core.picking import PickerConfig, PiecePicker
from torviz.shared.bitfield import Bitfield


def bits(text: str) -> Bitfield:
    return Bitfield(len(text), [i for i, c in enumerate(text) if c == "1"])


def picker(have: str, *peers: str, random_first: int = 0, seed: int = 1) -> PiecePicker:
    p = PiecePicker(
        len(have), bits(have), random.Random(seed), PickerConfig(random_first=random_first)
    )
    for peer in peers:
        p.peer_joined(bits(peer))
    return p


def test_availability_counts_bitfields_and_haves() -> None:
    p = picker("0000", "1100", "1110", "1000")
    assert [p.availability(i) for i in range(4)] == [3, 2, 1, 0]
    p.peer_has(3)
    p.peer_left(bits("1100"))
    assert [p.availability(i) for i in range(4)] == [2, 1, 1, 1]


def test_rarest_first() -> None:
    # availability 7 1 1 0 0 0 0 (libtorrent's test notation "7110000")
    p = picker("0000000", *(["1000000"] * 5), "1100000", "1010000")
    assert sorted(p.pick("a", bits("1110000"), 2)) == [1, 2]
    assert p.pick("a", bits("1110000"), 5) == [0]


def test_random_first_until_enough_pieces_are_verified() -> None:
    chosen = set()
    for seed in range(30):
        p = picker("00000000", "11111111", "10000000", random_first=4, seed=seed)
        chosen.update(p.pick("a", bits("11111111"), 1))
    assert len(chosen) > 4  # rarest first would always have skipped piece 0 only


def test_never_hands_out_what_we_have_or_what_is_busy() -> None:
    p = picker("1010", "1111")
    first = p.pick("a", bits("1111"), 1)
    second = p.pick("b", bits("1111"), 5)
    assert sorted(first + second) == [1, 3]
    # Endgame: other connections may take second copies, one per call, never a piece we have.
    third = p.pick("c", bits("1111"), 5)
    fourth = p.pick("d", bits("1111"), 5)
    assert sorted(third + fourth) == [1, 3]
    assert p.pick("e", bits("1111"), 5) == []  # each piece already has endgame_copies owners


def test_partial_pieces_go_first() -> None:
    p = picker("0000", "1111", "1111")
    taken = p.pick("a", bits("1111"), 4)
    assert len(taken) == 4
    p.release("a", 0)
    p.release("a", 2, partial=True)
    p.release("a", 3)
    assert p.pick("b", bits("1111"), 1) == [2]


def test_endgame_duplicates_the_last_pieces_and_reports_whom_to_cancel() -> None:
    p2 = picker("1110", "1111", "1111")
    assert not p2.in_endgame
    assert p2.pick("slow", bits("1111"), 1) == [3]
    assert p2.in_endgame
    assert p2.pick("lacks-it", bits("1110"), 1) == []
    assert p2.pick("fast", bits("1111"), 1) == [3]
    assert p2.pick("third", bits("1111"), 1) == []  # endgame_copies = 2
    assert p2.piece_downloaded(3, now=0.0) == frozenset({"slow", "fast"})
    p2.piece_verified(3)
    assert p2.complete


def test_failed_piece_is_fetched_again() -> None:
    p = picker("0", "1")
    assert p.pick("a", bits("1"), 1) == [0]
    p.piece_downloaded(0, now=0.0)
    assert p.pick("b", bits("1"), 1) == []  # pending hash check: not handed out again
    p.piece_failed(0)
    assert p.pick("b", bits("1"), 1) == [0]


def test_release_peer_returns_its_pieces_to_the_pool() -> None:
    p = picker("000", "111")
    taken = p.pick("a", bits("111"), 3)
    assert sorted(p.release_peer("a")) == sorted(taken)
    assert sorted(p.pick("b", bits("111"), 3)) == [0, 1, 2]


def test_interesting() -> None:
    p = picker("110", "111")
    assert p.interesting(bits("001")) and not p.interesting(bits("110"))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=1, max_size=5),
            st.integers(0, 2**32),
        )
    )
)
def test_a_swarm_always_completes(case: tuple[list[list[bool]], int]) -> None:
    """Hand out, download and verify until done: every piece some peer has gets verified once."""
    peer_bits, seed = case
    n = len(peer_bits[0])
    peers = {
        f"p{i}": Bitfield(n, [j for j, b in enumerate(row) if b]) for i, row in enumerate(peer_bits)
    }
    p = PiecePicker(n, Bitfield(n), random.Random(seed), PickerConfig(random_first=2))
    for field in peers.values():
        p.peer_joined(field)
    available = set().union(*(set(f) for f in peers.values()))
    rng = random.Random(seed)
    for _ in range(100 * n + 100):  # bounded; a piece only one peer has may take a while
        name = rng.choice(sorted(peers))
        for piece in p.pick(name, peers[name], rng.randint(1, 3)):
            assert piece in peers[name] and piece not in p.have
            if rng.random() < 0.2:
                p.release(name, piece)
            elif rng.random() < 0.1:
                p.piece_downloaded(piece, now=0.0)
                p.piece_failed(piece)
            else:
                p.piece_downloaded(piece, now=0.0)
                p.piece_verified(piece)
        if set(p.have) == available:
            break
    assert set(p.have) == available


def test_a_rejected_piece_goes_to_another_peer_when_one_has_it() -> None:
    p = picker("00", "11", "11")
    assert p.pick("liar", bits("10"), 1) == [0]
    p.piece_downloaded(0, now=0.0)
    p.piece_failed(0, contributors=["liar"])
    assert p.pick("liar", bits("11"), 2) == [1]
    assert p.pick("honest", bits("11"), 2) == [0]


def test_a_rejected_piece_returns_to_its_only_source() -> None:
    p = picker("00", "11")
    (first,) = p.pick("only", bits("11"), 1)
    p.piece_downloaded(first, now=0.0)
    p.piece_failed(first, contributors=["only"])
    assert first in p.pick("only", bits("11"), 2)


def test_a_piece_whose_check_never_answers_is_fetched_again() -> None:
    p = picker("00", "11")
    taken = p.pick("a", bits("11"), 2)
    for piece in taken:
        p.piece_downloaded(piece, now=10.0)
    p.piece_verified(taken[0])
    assert p.expire_pending(now=69.0, timeout=60.0) == []
    assert p.expire_pending(now=70.0, timeout=60.0) == [taken[1]]
    assert p.pick("b", bits("11"), 2) == [taken[1]]
