"""The seeding side of one peer connection, without I/O: the peer's requests and the rules for them.

Strategy: ``Uploads`` holds the requests a peer made of us, in arrival order, decides on each
one as it arrives, and appends what that causes (rejects, choke, allowed fast) to the session's
output. The session asks it what to serve next (``head``) and, once the piece's bytes are at
hand, has it send a run of queued requests of that piece (``serve``): a piece header and a
memoryview slice per block, never a copy. ``allowed_fast_set`` computes the pieces a peer may
fetch from us while we choke it (BEP 6).

Rules:
- A request is served only if the block lies inside one piece, is at most 16 KiB, is of a
  piece we have, and we unchoke the peer or granted it that piece as allowed fast. A request
  we will not serve is refused: the session rejects it when the peer speaks the fast extension
  and ignores it otherwise.
- Without the fast extension a peer cannot be told "no", so a malformed request (outside the
  torrent, empty or longer than 16 KiB) ends the connection (``bad_request``). With it, such
  requests and those of pieces we lack are rejected and counted; past ``max_bad`` of them the
  connection ends (``too_many_bad_requests``).
- A request beyond the ``limit`` queued is refused (rejected for a fast peer, silently
  ignored otherwise, as libtorrent does): the peer asks again when it times out. It ends the
  connection only when the peer knew our limit (``knows_limit``: it sent its extension
  handshake, so it got ours with ``reqq``) and sent more than ``max_bad`` such requests
  (``request_flood``). A peer that cannot know the limit (no BEP 10, ctorrent with 16 MiB
  pieces asking for a whole piece at once) is served, never dropped for it.
- A request that arrives while we choke the peer is refused but not counted: it may have
  crossed our CHOKE on the wire.
- Rejects of the peer's requests wait in the output at most ``MAX_PENDING_REJECTS`` at a time
  (until the caller takes the output); past that a request is refused silently, so a peer that
  sends requests and never reads costs bounded memory.
- Choking drops every queued request except those of allowed-fast pieces (BEP 6: they may
  be served while choked); the caller rejects the dropped ones for a fast peer.
- The queue never holds more than ``limit`` requests (our ``reqq``), so its memory is bounded
  whatever the peer sends; the same request twice is queued once.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import OrderedDict

from torviz.shared.bitfield import Bitfield
from torviz.shared.errors import WireError
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.types import InfoHash
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire

__all__ = [
    "MAX_PENDING_REJECTS",
    "MAX_REQUEST_LENGTH",
    "BlockRequest",
    "Uploads",
    "allowed_fast_set",
]

MAX_REQUEST_LENGTH = 16 * 1024
"""The longest block we serve (BEP 3 clients request 16 KiB; libtorrent refuses more too)."""
MAX_PENDING_REJECTS = 2048
"""Rejects of requests waiting in the output at once (17 bytes each: 34 KiB at most per peer)."""

BlockRequest = tuple[int, int, int]
"""(piece, offset, length) exactly as the peer sent it."""

_V4_MASK = b"\xff\xff\xff\x00"  # BEP 6: the /24 the peer's address belongs to
# BEP 6 defines the set for IPv4 only; for IPv6 torviz keeps the /48 (what one site usually
# gets, as a /24 is for IPv4) and zeroes the rest.
_V6_MASK = b"\xff" * 6 + b"\x00" * 10


def allowed_fast_set(host: str, info_hash: InfoHash, num_pieces: int, count: int) -> list[int]:
    """The allowed-fast pieces of a peer, in the order BEP 6's algorithm generates them.

    Args:
        host: the peer's IP address as we see it.
        info_hash: the torrent.
        num_pieces: pieces in the torrent.
        count: how many pieces to generate (``k``); capped at ``num_pieces``.

    Returns:
        ``min(count, num_pieces)`` distinct piece indices.

    Raises:
        ValueError: ``host`` is not an IP address.
    """
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    mask = _V4_MASK if address.version == 4 else _V6_MASK
    x = bytes(a & b for a, b in zip(address.packed, mask, strict=True)) + info_hash.raw
    wanted = min(count, num_pieces)
    pieces: list[int] = []
    while len(pieces) < wanted:
        x = hashlib.sha1(x).digest()
        for start in range(0, 20, 4):
            if len(pieces) >= wanted:
                break
            index = int.from_bytes(x[start : start + 4], "big") % num_pieces
            if index not in pieces:
                pieces.append(index)
    return pieces


class Uploads:
    """The requests one peer made of us, the rules for serving them, and the messages they cause.

    Created when the handshake completes. Messages go to ``out``, the session's output list
    (encoded frames, and memoryviews of pieces for blocks).

    Args:
        geometry: the torrent's geometry.
        have: our pieces; the session's own bitfield, read (never changed) here.
        out: where to append what is sent to the peer.
        fast: whether the peer speaks the fast extension.
        choking: whether we choke the peer now.
        limit: requests queued at most (our ``reqq``).
        max_bad: malformed requests tolerated from a fast peer, and requests past ``limit``
            from a peer that knew it.
    """

    __slots__ = (
        "_fast",
        "_geometry",
        "_have",
        "_offer",
        "_out",
        "_queue",
        "bad",
        "choking",
        "excess",
        "granted",
        "knows_limit",
        "limit",
        "max_bad",
        "pending_rejects",
        "queued_bytes",
    )

    def __init__(
        self,
        geometry: TorrentGeometry,
        have: Bitfield,
        out: list[bytes | bytearray | memoryview],
        *,
        fast: bool,
        choking: bool,
        limit: int,
        max_bad: int,
    ) -> None:
        if limit < 1:
            raise ValueError("a request queue holds at least one request")
        self._geometry = geometry
        self._have = have
        self._out = out
        self._fast = fast
        self._queue: OrderedDict[BlockRequest, None] = OrderedDict()
        self._offer: tuple[int, ...] = ()
        self.limit = limit
        self.max_bad = max_bad
        self.choking = choking
        """Whether we choke the peer (the coordinator's choker decides)."""
        self.granted: set[int] = set()
        """Allowed-fast pieces we told the peer about: served even while choking."""
        self.bad = 0
        """Requests refused as malformed or for a piece we lack."""
        self.excess = 0
        """Requests refused because ``limit`` were queued."""
        self.knows_limit = False
        """Whether the peer got our ``reqq`` (it speaks BEP 10: it sent its extension
        handshake, and we sent ours); set by the session."""
        self.queued_bytes = 0
        """Block bytes ``serve`` appended to ``out`` since the caller last reset it."""
        self.pending_rejects = 0
        """Rejects of requests appended to ``out`` since the caller last reset it."""

    def __len__(self) -> int:
        return len(self._queue)

    # -- the peer's messages ----------------------------------------------------------------------

    def request(self, piece: int, offset: int, length: int) -> None:
        """A request arrived: queue it, or refuse it (rejected when the peer speaks fast).

        Raises:
            WireError: ``bad_request`` from a peer without the fast extension,
                ``too_many_bad_requests`` from one with it, ``request_flood`` from one that
                knew our limit.
        """
        if (
            not self._accept(piece, offset, length)
            and self._fast
            and self.pending_rejects < MAX_PENDING_REJECTS
        ):
            self.pending_rejects += 1
            self._out.append(codec.encode(wire.RejectRequest(piece, offset, length)))

    def cancel(self, piece: int, offset: int, length: int) -> None:
        """The peer withdrew a request; BEP 6 answers a fast peer's cancel of a queued request
        with a reject."""
        key = (piece, offset, length)
        if key in self._queue:
            del self._queue[key]
            if self._fast:
                self._out.append(codec.encode(wire.RejectRequest(piece, offset, length)))

    # -- our decisions ----------------------------------------------------------------------------

    def choke(self) -> None:
        """Choke the peer: drop what it may no longer get (rejected for a fast peer)."""
        self.choking = True
        self._out.append(codec.encode(wire.Choke()))
        self._reject([key for key in self._queue if key[0] not in self.granted])

    def unchoke(self) -> None:
        self.choking = False
        self._out.append(codec.encode(wire.Unchoke()))

    def offer_allowed_fast(self, host: str, info_hash: InfoHash, count: int) -> None:
        """Compute the peer's allowed-fast set and grant the pieces of it we have (once)."""
        if self._offer or not self._fast or count <= 0:
            return
        self._offer = tuple(allowed_fast_set(host, info_hash, self._geometry.num_pieces, count))
        for piece in self._offer:
            if piece in self._have:
                self._grant(piece)

    def piece_acquired(self, piece: int) -> None:
        """We have ``piece`` now: grant it if it is in the peer's allowed-fast set."""
        if piece in self._offer:
            self._grant(piece)

    # -- serving ----------------------------------------------------------------------------------

    def head(self) -> int | None:
        """The piece of the oldest queued request (the next to serve), if any."""
        if not self._queue:
            return None
        return next(iter(self._queue))[0]

    def pieces_ahead(self, count: int) -> list[int]:
        """The first ``count`` distinct pieces of the queue, oldest first."""
        pieces: list[int] = []
        for piece, _, _ in self._queue:
            if piece not in pieces:
                pieces.append(piece)
                if len(pieces) >= count:
                    break
        return pieces

    def serve(self, piece: int, data: memoryview, budget: int) -> int:
        """Send the run of oldest requests of ``piece``: at least one when the oldest is of
        ``piece``, then more while they fit in ``budget`` bytes. Each block is a header and a
        slice of ``data`` (the whole piece). Returns the block bytes sent."""
        queue = self._queue
        out = self._out
        sent = 0
        while queue:
            key = next(iter(queue))
            if key[0] != piece or (sent and sent + key[2] > budget):
                break
            del queue[key]
            _, offset, length = key
            out.append(codec.encode_piece_header(piece, offset, length))
            out.append(data[offset : offset + length])
            sent += length
        self.queued_bytes += sent
        return sent

    def drop_piece(self, piece: int) -> None:
        """``piece`` cannot be read: forget its queued requests (rejected for a fast peer)."""
        self._reject([key for key in self._queue if key[0] == piece])

    def clear(self) -> None:
        self._queue.clear()

    # -- rules ------------------------------------------------------------------------------------

    def _accept(self, piece: int, offset: int, length: int) -> bool:
        if not self._geometry.is_valid_request(piece, offset, length, MAX_REQUEST_LENGTH):
            return self._refuse_bad(
                "bad_request", f"request {piece}/{offset}/{length} is not a block of the torrent"
            )
        if piece not in self._have:
            self._count_bad()
            return False
        if self.choking and piece not in self.granted:
            return False  # it may have crossed our CHOKE on the wire
        key = (piece, offset, length)
        if key in self._queue:
            return True
        if len(self._queue) >= self.limit:
            self._count_excess()
            return False
        self._queue[key] = None
        return True

    def _grant(self, piece: int) -> None:
        if piece not in self.granted:
            self.granted.add(piece)
            self._out.append(codec.encode(wire.AllowedFast(piece)))

    def _reject(self, keys: list[BlockRequest]) -> None:
        for key in keys:
            del self._queue[key]
            if self._fast:
                self._out.append(codec.encode(wire.RejectRequest(*key)))

    def _refuse_bad(self, reason: str, message: str) -> bool:
        if not self._fast:
            raise WireError(reason, message)
        self._count_bad()
        return False

    def _count_excess(self) -> None:
        self.excess += 1
        if self.knows_limit and self.excess > self.max_bad:
            raise WireError(
                "request_flood",
                f"the peer sent more than {self.max_bad} requests past our limit of "
                f"{self.limit}, which it was told",
            )

    def _count_bad(self) -> None:
        self.bad += 1
        if self.bad > self.max_bad:
            raise WireError(
                "too_many_bad_requests",
                f"the peer sent more than {self.max_bad} requests we could not serve",
            )
