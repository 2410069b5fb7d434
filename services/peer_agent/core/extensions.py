"""The BEP 10 side of one peer connection, without I/O: our extension handshake, BEP 9
``ut_metadata`` (serving and fetching the info dictionary) and BEP 11 ``ut_pex``; and the
peer's have-state kept while the torrent's geometry is still unknown (metadata mode). Also the
DHT's ``PORT`` message (BEP 5), ``DhtPort``.

Strategy: ``Extensions`` is owned by the peer session (``session.py``), which hands it every
``Extended`` message and its public calls (``request_metadata``, ``send_pex``); it appends
frames to the session's output list and events to its event list, and raises ``WireError`` for
a peer that breaks the rules, which the session turns into ``Closed(reason)``. The ids in OUR
``m`` (``UT_METADATA_ID``, ``UT_PEX_ID``, as libtorrent numbers them) are what the peer sends
to us under; what we send goes under the ids of the PEER's ``m``. ``KeptHaves`` records what
the peer says it has before the piece count is known, bounded, and is replayed once by
``PeerSession.learn_geometry``.

Rules:
- An extended message other than the handshake from a peer that never sent its extension
  handshake (so cannot know our ids) ends the connection (``bad_metadata_message`` /
  ``bad_pex``), as does a payload over ``MAX_EXTENSION_PAYLOAD`` or a malformed one (the
  codecs' reasons). Unknown ids are ignored; so is ``ut_pex`` in a torrent without PeX (we
  did not advertise it, so id 1 is unknown).
- Serving: a request gets the exact bytes of the info dictionary, or a reject when we have no
  info dictionary (metadata mode), the piece does not exist, or the peer already got
  ``max(2 * pieces, 4)`` pieces on this connection (one peer cannot make us amplify traffic).
- Fetching: a data or reject message answers a piece we asked this connection for; an answer we
  never asked for is ignored, and past ``MAX_UNSOLICITED_METADATA`` of them the peer is closed
  (``bad_metadata_message``). The content is not judged here (the coordinator's assembler
  checks sizes and the hash).
- PeX: one message per ``PEX_INTERVAL`` seconds is decoded and reported; the excess is dropped
  undecoded, without an event (BEP 11 allows one a minute; bursts are tolerated, not worked
  on). Each reported list is capped at ``MAX_PEX_PEERS`` (IPv4 first).
- ``KeptHaves``: a have index at or past ``MAX_PIECES`` ends the connection
  (``bad_piece_index``); the haves are a bitmap grown to the highest index seen (at most
  ``MAX_PIECES / 8`` bytes); a bitfield, have-all or have-none replaces what came before, as
  it does in a session that knows its geometry.
- ``DhtPort``: with a DHT node (port not 0) our handshake sets the DHT bit and a peer that
  sets it gets ``PORT``; the peer's first ``PORT`` with a nonzero port is reported
  (``DhtPortArrived``), later ones are ignored, so a peer cannot make us ping a node per
  message.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from importlib import metadata as package_metadata

from torviz.shared.bitfield import Bitfield, BitfieldError
from torviz.shared.bus import MAX_METADATA_BYTES, MAX_PEX_PEERS, MAX_PIECES
from torviz.shared.errors import WireError
from torviz.shared.types import PeerAddress
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.extension import (
    ExtensionHandshake,
    decode_extension_handshake,
    encode_extension_handshake,
)
from torviz.shared.wire.handshake import Reserved
from torviz.shared.wire.metadata import (
    METADATA_EXTENSION,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    decode_metadata_message,
    encode_metadata_message,
    metadata_piece_count,
    serve_metadata_request,
)
from torviz.shared.wire.pex import (
    MAX_PEX_ENTRIES,
    PEX_EXTENSION_NAME,
    PexMessage,
    decode_pex,
    encode_pex,
)

from .events import (
    DhtPortArrived,
    Event,
    MetadataPieceArrived,
    MetadataRequestRejected,
    PeerInfo,
    PexArrived,
)

__all__ = [
    "MAX_EXTENSION_PAYLOAD",
    "MAX_UNSOLICITED_METADATA",
    "PEX_INTERVAL",
    "UT_METADATA_ID",
    "UT_PEX_ID",
    "DhtPort",
    "Extensions",
    "KeptHaves",
    "default_client_name",
    "encode_handshake_frame",
    "our_extension_handshake",
]

UT_METADATA_ID = 2
"""The id the peer sends ``ut_metadata`` to us under (libtorrent's number)."""
UT_PEX_ID = 1
"""The id the peer sends ``ut_pex`` to us under (libtorrent's number)."""
MAX_EXTENSION_PAYLOAD = 64 * 1024 + 1024
"""The largest ``ut_metadata`` or ``ut_pex`` payload accepted (a metadata piece is 16 KiB plus
a short dictionary; 100 IPv6 peers are under 4 KiB); the decoder allows 128 KiB frames."""
MAX_UNSOLICITED_METADATA = 4
"""Metadata answers (data or reject) for pieces we never asked tolerated from one peer."""
PEX_INTERVAL = 30.0
"""Seconds after a reported ``ut_pex`` message before the next one is looked at."""


def default_client_name() -> str:
    """``torviz <version>`` (the installed distribution's version), or ``torviz``."""
    try:
        return f"torviz {package_metadata.version('torviz')}"
    except package_metadata.PackageNotFoundError:
        return "torviz"


def our_extension_handshake(
    *,
    client_name: str,
    listen_port: int,
    reqq: int,
    address: PeerAddress | None,
    pex: bool,
    metadata_size: int,
    disable_pex: bool = False,
) -> ExtensionHandshake:
    """Our BEP 10 handshake.

    Args:
        client_name: our ``v``.
        listen_port: our ``p``; 0 leaves it out.
        reqq: our ``reqq``.
        address: the peer's address (``yourip``); None leaves it out.
        pex: whether ``ut_pex`` is offered.
        metadata_size: the size of the info dictionary we serve; 0 leaves it out.
        disable_pex: when ``pex`` is False, send ``ut_pex: 0`` (BEP 10's "disabled"), to
            withdraw an earlier offer.

    Returns:
        The handshake (encode it with ``encode_extension_handshake``).
    """
    m = {METADATA_EXTENSION: UT_METADATA_ID}
    if pex:
        m[PEX_EXTENSION_NAME] = UT_PEX_ID
    elif disable_pex:
        m[PEX_EXTENSION_NAME] = 0
    return ExtensionHandshake(
        m=m,
        v=client_name,
        p=listen_port or None,
        reqq=reqq,
        yourip=None if address is None else ipaddress.ip_address(address.host).packed,
        metadata_size=metadata_size or None,
    )


class KeptHaves:
    """What a peer said it has while the piece count is unknown, kept to be replayed."""

    __slots__ = ("_base", "_haves", "allowed_fast", "told")

    MAX_ALLOWED_FAST = 64
    """Allowed-fast pieces remembered (BEP 6 sets are about 10; more are dropped)."""

    def __init__(self) -> None:
        self._base: bytes | bool | None = None  # bitfield bytes, True all, False none
        self._haves = bytearray()  # bitmap of have indices, grown on demand
        self.allowed_fast: set[int] = set()
        self.told = False
        """Whether the peer sent any have-state at all."""

    def bitfield(self, bits: bytes) -> None:
        """A bitfield (its length was bounded by the decoder's frame limit)."""
        self._base = bytes(bits)
        self._haves = bytearray()
        self.told = True

    def have_all(self, value: bool) -> None:
        """Have-all (True) or have-none (False)."""
        self._base = value
        self._haves = bytearray()
        self.told = True

    def have(self, piece: int) -> None:
        """A have message.

        Raises:
            WireError: ``bad_piece_index``, the index is past any torrent's piece count.
        """
        if not 0 <= piece < MAX_PIECES:
            raise WireError("bad_piece_index", f"have of piece {piece}, past {MAX_PIECES}")
        byte = piece >> 3
        haves = self._haves
        if byte >= len(haves):
            haves.extend(bytes(byte + 1 - len(haves)))
        haves[byte] |= 0x80 >> (piece & 7)
        self.told = True

    def add_allowed_fast(self, piece: int) -> None:
        if len(self.allowed_fast) < self.MAX_ALLOWED_FAST:
            self.allowed_fast.add(piece)

    def replay(self, num_pieces: int) -> Bitfield:
        """The peer's pieces in a torrent of ``num_pieces`` pieces.

        Raises:
            WireError: what a bad bitfield or have gives today (``bad_bitfield_length``,
                ``bitfield_spare_bits``, ``bad_piece_index``).
        """
        base = self._base
        if isinstance(base, bytes):
            try:
                field = Bitfield.from_bytes(base, num_pieces)
            except BitfieldError as exc:
                raise WireError(exc.reason, str(exc)) from None
        elif base is True:
            field = Bitfield.full(num_pieces)
        else:
            field = Bitfield(num_pieces)
        haves = Bitfield.from_bytes(self._haves, len(self._haves) * 8).to_int()  # piece i: bit i
        if haves >> num_pieces:
            piece = haves.bit_length() - 1
            raise WireError(
                "bad_piece_index", f"have of piece {piece} in a torrent of {num_pieces} pieces"
            )
        return Bitfield.from_int(field.to_int() | haves, num_pieces)


class Extensions:
    """The extension state of one connection (see the module comment).

    Args:
        out: the session's output list.
        events: the session's event list.
        info: the raw info dictionary we serve (empty: none, every request is rejected).
        pex: whether PeX is allowed for the torrent.
        max_metadata_size: the largest ``total_size`` accepted from the peer.
    """

    __slots__ = (
        "_asked",
        "_events",
        "_max_metadata_size",
        "_out",
        "_pex_last",
        "_served",
        "_unsolicited",
        "info",
        "peer",
        "pex",
        "pex_dropped",
    )

    def __init__(
        self,
        out: list[bytes | bytearray | memoryview],
        events: list[Event],
        *,
        info: bytes,
        pex: bool,
        max_metadata_size: int = MAX_METADATA_BYTES,
    ) -> None:
        self._out = out
        self._events = events
        self._max_metadata_size = max_metadata_size
        self._asked: set[int] = set()
        self._served = 0
        self._unsolicited = 0
        self._pex_last: float | None = None
        self.info = info
        self.pex = pex
        self.peer: ExtensionHandshake | None = None
        """The peer's latest extension handshake."""
        self.pex_dropped = 0
        """``ut_pex`` messages dropped undecoded because they came too soon."""

    def supports(self, name: str) -> bool:
        """Whether the peer's handshake offers extension ``name``."""
        return self.peer is not None and self.peer.extension_id(name) is not None

    @property
    def serve_limit(self) -> int:
        """Metadata pieces served on this connection at most."""
        return max(2 * metadata_piece_count(len(self.info)), 4)

    def send_handshake(
        self,
        client_name: str,
        listen_port: int,
        reqq: int,
        address: PeerAddress | None,
        *,
        later: bool = False,
    ) -> None:
        """Our extension handshake (``our_extension_handshake``); a later one (``later``)
        withdraws an earlier PeX offer."""
        handshake = our_extension_handshake(
            client_name=client_name,
            listen_port=listen_port,
            reqq=reqq,
            address=address,
            pex=self.pex,
            metadata_size=len(self.info),
            disable_pex=later,
        )
        self._out.append(encode_handshake_frame(handshake))

    def on_handshake(self, payload: bytes) -> ExtensionHandshake:
        """The peer's extension handshake (first or later): decoded, kept, ``PeerInfo``.

        Raises:
            WireError: ``bad_extension_handshake``.
        """
        ext = decode_extension_handshake(payload)
        self.peer = ext
        self._events.append(PeerInfo(ext))
        return ext

    def on_message(self, ext_id: int, payload: bytes, now: float) -> None:
        """An extended message other than the handshake.

        Raises:
            WireError: the peer broke the rules (see the module comment).
        """
        if ext_id == UT_METADATA_ID:
            self._check(payload, "bad_metadata_message", METADATA_EXTENSION)
            self._on_metadata(payload)
        elif ext_id == UT_PEX_ID and self.pex:
            self._check(payload, "bad_pex", PEX_EXTENSION_NAME)
            if self._pex_last is not None and now - self._pex_last < PEX_INTERVAL:
                self.pex_dropped += 1
                return
            self._pex_last = now
            self._on_pex(payload)

    def request_metadata(self, pieces: Sequence[int]) -> None:
        """Ask the peer for these metadata pieces (if it offers ``ut_metadata``)."""
        ext_id = self.peer.extension_id(METADATA_EXTENSION) if self.peer is not None else None
        if ext_id is None:
            return
        limit = metadata_piece_count(self._max_metadata_size)
        for piece in pieces:
            if 0 <= piece < limit:
                self._asked.add(piece)
                self._send(ext_id, encode_metadata_message(MetadataRequest(piece)))

    def send_pex(
        self, added: Sequence[tuple[PeerAddress, int]], dropped: Sequence[PeerAddress]
    ) -> None:
        """One ``ut_pex`` message (if allowed and the peer offers it); lists past
        ``MAX_PEX_ENTRIES`` per family are cut."""
        ext_id = self.peer.extension_id(PEX_EXTENSION_NAME) if self.peer is not None else None
        if ext_id is None or not self.pex:
            return
        v4 = [(a, f & 0xFF) for a, f in added if not a.is_ipv6][:MAX_PEX_ENTRIES]
        v6 = [(a, f & 0xFF) for a, f in added if a.is_ipv6][:MAX_PEX_ENTRIES]
        message = PexMessage(
            added=tuple(a for a, _ in v4),
            added_flags=tuple(f for _, f in v4),
            dropped=tuple(a for a in dropped if not a.is_ipv6)[:MAX_PEX_ENTRIES],
            added6=tuple(a for a, _ in v6),
            added6_flags=tuple(f for _, f in v6),
            dropped6=tuple(a for a in dropped if a.is_ipv6)[:MAX_PEX_ENTRIES],
        )
        self._send(ext_id, encode_pex(message))

    # -- the peer's messages ------------------------------------------------------------------

    def _check(self, payload: bytes, reason: str, name: str) -> None:
        if self.peer is None:
            raise WireError(reason, f"{name} message before the extension handshake")
        if len(payload) > MAX_EXTENSION_PAYLOAD:
            raise WireError(
                reason, f"{name} message of {len(payload)} bytes (limit {MAX_EXTENSION_PAYLOAD})"
            )

    def _on_metadata(self, payload: bytes) -> None:
        message = decode_metadata_message(payload, max_total_size=self._max_metadata_size)
        match message:
            case MetadataRequest(piece=piece):
                answer: MetadataData | MetadataReject = MetadataReject(piece)
                if self._served < self.serve_limit:
                    answer = serve_metadata_request(self.info, piece)
                if isinstance(answer, MetadataData):
                    self._served += 1
                ext_id = self.peer.extension_id(METADATA_EXTENSION) if self.peer else None
                if ext_id is not None:  # else it cannot receive the answer
                    self._send(ext_id, encode_metadata_message(answer))
            case MetadataData(piece=piece, total_size=total_size, data=data):
                if self._answered(piece):
                    self._events.append(MetadataPieceArrived(piece, total_size, data))
            case MetadataReject(piece=piece):
                if self._answered(piece):
                    self._events.append(MetadataRequestRejected(piece))
            case _:
                pass  # an unknown msg_type: BEP 9 says to ignore it

    def _answered(self, piece: int) -> bool:
        if piece in self._asked:
            self._asked.discard(piece)
            return True
        self._unsolicited += 1
        if self._unsolicited > MAX_UNSOLICITED_METADATA:
            raise WireError(
                "bad_metadata_message",
                f"the peer sent {self._unsolicited} metadata answers nobody asked for",
            )
        return False

    def _on_pex(self, payload: bytes) -> None:
        message = decode_pex(payload, max_entries=MAX_PEX_ENTRIES).message
        added = list(zip(message.added, message.added_flags, strict=True))
        added += zip(message.added6, message.added6_flags, strict=True)
        dropped = message.dropped + message.dropped6
        if added or dropped:
            self._events.append(
                PexArrived(tuple(added[:MAX_PEX_PEERS]), tuple(dropped[:MAX_PEX_PEERS]))
            )

    def _send(self, ext_id: int, payload: bytes) -> None:
        self._out.append(codec.encode(wire.Extended(ext_id, payload)))


class DhtPort:
    """BEP 5 on one connection: our ``PORT`` and the peer's.

    Args:
        port: our DHT node's UDP port; 0: no DHT (no bit, no ``PORT``).
        out: the session's output list.
        events: the session's event list.
    """

    def __init__(self, port: int, out: list[bytes | bytearray | memoryview], events: list[Event]):
        self.port = port
        self._out = out
        self._events = events
        self._reported = False

    def reserved(self) -> Reserved:
        """Our handshake's reserved bytes: BEP 10, BEP 6, and the DHT bit with a node."""
        return Reserved.build(extension_protocol=True, fast=True, dht=self.port != 0)

    def on_handshake(self, reserved: Reserved) -> None:
        """The peer's handshake: tell a peer with the DHT bit where our node listens."""
        if self.port and reserved.dht:
            self._out.append(codec.encode(wire.Port(self.port)))

    def on_port(self, port: int) -> None:
        """The peer's ``PORT``: the first usable one is reported."""
        if not self._reported and 0 < port < 65536:
            self._reported = True
            self._events.append(DhtPortArrived(port))


def encode_handshake_frame(handshake: ExtensionHandshake) -> bytes:
    """``handshake`` as the frame to send."""
    return codec.encode(wire.Extended(0, encode_extension_handshake(handshake)))
