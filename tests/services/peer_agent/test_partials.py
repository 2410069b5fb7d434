"""Half-fetched pieces: a connection that lets a piece go leaves its blocks to the next one, and
the finished piece names each block's sender (what the storage agent's smart ban reads)."""

from __future__ import annotations

from torviz.services.peer_agent.core.partials import PartialPiece, PartialPieces
from torviz.services.peer_agent.core.pipeline import QueueDepthPolicy
from torviz.services.peer_agent.core.session import (
    PeerSession,
    PieceCompleted,
    PiecesGivenBack,
    SessionConfig,
)
from torviz.shared.bitfield import Bitfield
from torviz.shared.wire import messages as wire

from .test_session import GEOMETRY, INFO_HASH, OURS, Remote, piece_bytes
from .test_session_pipeline import block, requests


def session(partials: PartialPieces, key: str) -> PeerSession:
    return PeerSession(
        info_hash=INFO_HASH,
        peer_id=OURS,
        geometry=GEOMETRY,
        have=Bitfield(GEOMETRY.num_pieces),
        now=0.0,
        config=SessionConfig(pipeline=QueueDepthPolicy(minimum=2, maximum=2)),
        partials=partials,
        sender=key,
    )


def test_the_store_is_bounded_and_forgets_verified_pieces() -> None:
    store = PartialPieces(max_bytes=100)
    store.deposit(1, PartialPiece(bytearray(60), ["a", None]))
    store.deposit(2, PartialPiece(bytearray(60), ["a", None]))  # over the bound: 1 goes
    assert 1 not in store and 2 in store and store.bytes == 60
    store.deposit(3, PartialPiece(bytearray(10), [None, None]))  # nothing arrived: not kept
    assert 3 not in store
    store.discard(2)
    assert len(store) == 0 and store.bytes == 0


def test_a_released_piece_is_finished_by_the_next_connection() -> None:
    """Piece 0 has four 16 KiB blocks: A gets two, then times out; B fetches only the other two,
    and the piece names A for the first two blocks and B for the last two."""
    store = PartialPieces()
    first = session(store, "pa1/a")
    remote_a = Remote(first)
    remote_a.greet(wire.HaveAll(), wire.Unchoke())
    first.assign([0], 0.0)
    asked = requests(remote_a)
    assert [r.offset for r in asked] == [0, 16384]
    for request in asked:
        remote_a.send(block(request))
    more = requests(remote_a)
    assert [r.offset for r in more] == [32768, 49152]
    first.tick(31.0)  # the rest never comes: the request timeout gives the piece back
    released = [e for e in first.take_events() if isinstance(e, PiecesGivenBack)]
    assert released and released[0].pieces == (0,)
    assert 0 in store

    second = session(store, "pa1/b")
    remote_b = Remote(second)
    remote_b.greet(wire.HaveAll(), wire.Unchoke())
    second.assign([0], 0.0)
    asked = requests(remote_b)
    assert [r.offset for r in asked] == [32768, 49152]  # only what A did not get
    for request in asked:
        remote_b.send(block(request))
    [done] = [e for e in second.take_events() if isinstance(e, PieceCompleted)]
    assert bytes(done.data) == piece_bytes(0)
    assert done.senders == ("pa1/a", "pa1/a", "pa1/b", "pa1/b")
    assert 0 not in store


def test_a_closing_connection_leaves_its_blocks_and_a_revoked_piece_leaves_none() -> None:
    store = PartialPieces()
    first = session(store, "pa1/a")
    remote = Remote(first)
    remote.greet(wire.HaveAll(), wire.Unchoke())
    first.assign([1, 2], 0.0)
    for request in requests(remote)[:1]:
        remote.send(block(request))
    first.close("peer_closed")
    assert 1 in store and 2 not in store  # 2 had no block yet

    other = session(store, "pa1/c")
    remote_c = Remote(other)
    remote_c.greet(wire.HaveAll(), wire.Unchoke())
    other.assign([3], 0.0)
    for request in requests(remote_c)[:1]:
        remote_c.send(block(request))
    other.revoke([3], 0.0)  # finished elsewhere: its blocks are worth nothing
    assert 3 not in store


def test_a_piece_from_one_connection_names_no_senders() -> None:
    store = PartialPieces()
    only = session(store, "pa1/a")
    remote = Remote(only)
    remote.greet(wire.HaveAll(), wire.Unchoke())
    only.assign([3], 0.0)
    for _ in range(4):
        for request in requests(remote):
            remote.send(block(request))
    [done] = [e for e in only.take_events() if isinstance(e, PieceCompleted)]
    assert done.senders is None and bytes(done.data) == piece_bytes(3)
