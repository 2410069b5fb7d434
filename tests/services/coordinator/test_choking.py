"""The choker with a fake clock: reciprocation, seeding order, optimistic rotation."""

from __future__ import annotations

import random
from collections import Counter

from torviz.services.coordinator.core.choking import Candidate, Choker, ChokerConfig


def peer(
    key: str,
    down: float = 0.0,
    up: float = 0.0,
    *,
    interested: bool = True,
    age: float = 1000.0,
    snubbed: bool = False,
    now: float = 0.0,
) -> Candidate:
    return Candidate(key, interested, down, up, connected_at=now - age, snubbed=snubbed)


def test_regular_slots_go_to_the_best_uploaders_to_us() -> None:
    choker = Choker(random.Random(1), now=0.0, config=ChokerConfig(upload_slots=2))
    peers = [peer("slow", 10), peer("fast", 1000), peer("mid", 500), peer("idle", 0)]
    unchoked = choker.rechoke(peers, seeding=False, now=0.0)
    assert {"fast", "mid"} <= unchoked
    assert len(unchoked) == 3  # plus one optimistic among the rest
    assert choker.optimistic in {"slow", "idle"}


def test_seeding_ranks_by_our_upload_rate() -> None:
    choker = Choker(random.Random(1), now=0.0, config=ChokerConfig(upload_slots=1))
    peers = [peer("a", down=900, up=10), peer("b", down=0, up=800)]
    unchoked = choker.rechoke(peers, seeding=True, now=0.0)
    assert "b" in unchoked and choker.optimistic == "a"


def test_uninterested_peers_stay_choked() -> None:
    choker = Choker(random.Random(1), now=0.0)
    assert (
        choker.rechoke([peer("x", 1000, interested=False)], seeding=False, now=0.0) == frozenset()
    )


def test_snubbed_peers_lose_their_regular_slot() -> None:
    choker = Choker(random.Random(1), now=0.0, config=ChokerConfig(upload_slots=1))
    peers = [peer("snub", 1000, snubbed=True), peer("ok", 5)]
    choker.rechoke(peers, seeding=False, now=0.0)
    assert choker.optimistic == "snub"  # it can still win the draw, not the slot


def test_rounds_every_ten_seconds_and_optimistic_every_thirty() -> None:
    choker = Choker(random.Random(5), now=0.0, config=ChokerConfig(upload_slots=1))
    peers = [peer("best", 1000)] + [peer(f"p{i}", 1) for i in range(8)]
    assert choker.due(0.0)
    choker.rechoke(peers, seeding=False, now=0.0)
    first = choker.optimistic
    assert not choker.due(9.9) and choker.due(10.0) and choker.next_deadline() == 10.0
    choker.rechoke(peers, seeding=False, now=10.0)
    choker.rechoke(peers, seeding=False, now=20.0)
    assert choker.optimistic == first  # still within its 30 s
    seen = {first}
    for t in range(30, 400, 10):
        choker.rechoke(peers, seeding=False, now=float(t))
        seen.add(choker.optimistic)
    assert len(seen) > 3  # it rotates


def test_new_peers_are_favoured_for_the_optimistic_unchoke() -> None:
    wins: Counter[str] = Counter()
    for seed in range(600):
        choker = Choker(random.Random(seed), now=100.0, config=ChokerConfig(upload_slots=0))
        peers = [peer("new", age=5, now=100.0), peer("old1", now=100.0), peer("old2", now=100.0)]
        choker.rechoke(peers, seeding=False, now=100.0)
        wins[str(choker.optimistic)] += 1
    # Weights 3:1:1 -> about 60% for the new peer.
    assert 0.5 < wins["new"] / 600 < 0.7


def test_a_departed_optimistic_peer_is_replaced_at_the_next_round() -> None:
    choker = Choker(random.Random(1), now=0.0, config=ChokerConfig(upload_slots=0))
    choker.rechoke([peer("a")], seeding=False, now=0.0)
    assert choker.optimistic == "a"
    choker.forget("a")
    assert choker.unchoked == frozenset()
    assert choker.rechoke([peer("b")], seeding=False, now=10.0) == {"b"}


def test_grant_fills_free_slots_between_rounds() -> None:
    choker = Choker(random.Random(1), now=0.0, config=ChokerConfig(upload_slots=1))
    choker.rechoke([], seeding=True, now=0.0)
    assert choker.grant("first") and choker.grant("second")
    assert not choker.grant("third")  # 1 regular + 1 optimistic
    assert choker.unchoked == {"first", "second"}
