"""Session behaviour the connection relies on for speed: batched requests, readable closes."""

from __future__ import annotations

from torviz.services.peer_agent.core.pipeline import QueueDepthPolicy
from torviz.services.peer_agent.core.session import Closed, PieceCompleted
from torviz.shared.bitfield import Bitfield
from torviz.shared.wire import messages as wire

from .test_session import GEOMETRY, Remote, new_session, piece_bytes


def requests(remote: Remote) -> list[wire.Request]:
    return [m for m in remote.read() if isinstance(m, wire.Request)]


def block(request: wire.Request) -> wire.Piece:
    data = piece_bytes(request.piece)[request.offset : request.offset + request.length]
    return wire.Piece(request.piece, request.offset, data)


def test_requests_are_topped_up_in_batches_not_per_block() -> None:
    session = new_session(pipeline=QueueDepthPolicy(minimum=8, maximum=8))
    remote = Remote(session)
    remote.greet(wire.HaveAll(), wire.Unchoke())
    session.assign([0, 1, 2], remote.now)
    first = requests(remote)
    assert len(first) == 8  # the whole depth at once
    remote.send(block(first[0]))
    assert requests(remote) == []  # one block drained: below the batch, nothing sent
    assert session.has_output is False
    remote.send(block(first[1]))
    again = requests(remote)  # depth 8 refills in batches of 8 // 4 = 2
    assert len(again) == 2 and session.outstanding_requests == 8
    for request in first[2:] + again:
        remote.send(block(request))
    rest = requests(remote)
    for request in rest:
        remote.send(block(request))
    done = [e.piece for e in session.take_events() if isinstance(e, PieceCompleted)]
    assert sorted(done) == [0, 1, 2]


def test_every_block_still_arrives_when_the_last_requests_are_fewer_than_a_batch() -> None:
    session = new_session(pipeline=QueueDepthPolicy(minimum=64, maximum=64))
    remote = Remote(session)
    remote.greet(wire.HaveAll(), wire.Unchoke())
    session.assign([3], remote.now)  # two blocks: far below a batch
    for request in requests(remote):
        remote.send(block(request))
    assert [e.piece for e in session.take_events() if isinstance(e, PieceCompleted)] == [3]


def test_closed_carries_a_readable_message() -> None:
    session = new_session()
    remote = Remote(session)
    remote.greet(wire.Bitfield(b"\xf0\x00"))
    closed = [e for e in session.take_events() if isinstance(e, Closed)]
    assert closed == [Closed("bad_bitfield_length")]
    assert "bitfield of 2 bytes" in closed[0].message
    timed_out = new_session(handshake_timeout=1.0)
    timed_out.tick(1.0)
    assert [e.message for e in timed_out.take_events() if isinstance(e, Closed)] == [
        "the peer did not complete the handshake in time"
    ]


def test_has_output_tracks_queued_bytes() -> None:
    session = new_session(have=Bitfield(GEOMETRY.num_pieces))
    assert session.has_output  # our handshake
    session.take_output(0.0)
    assert not session.has_output
