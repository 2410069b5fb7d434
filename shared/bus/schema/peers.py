"""Bus messages of the peer agent: coordinator <-> peer agent (30-59), data endpoint (60-79).

Strategy: the coordinator attaches torrents, dials and drops peers, assigns and cancels pieces
and sets chokes; the peer agent reports peers, their pieces and interest, and its transfer
counters. On the data endpoint the peer agent stores pieces and reads blocks at the storage
agent; a message with ``has_data`` carries its bytes in a frame of its own. Rules: see
``shared.bus.schema``.
"""

from __future__ import annotations

from typing import Annotated

from torviz.shared.types import InfoHash, PeerAddress, PeerId

from ..vocabulary import (
    MAX_BATCH,
    MAX_BLOCK_LENGTH,
    MAX_DATA_BYTES,
    MAX_HOSTS,
    MAX_METADATA_BYTES,
    MAX_METADATA_PIECE,
    MAX_PEX_PEERS,
    MAX_PIECES,
    Bitfield,
    BlockSenders,
    DisconnectReason,
    Name,
    PeerKey,
    PeerKeys,
    PieceList,
    PieceNo,
    Port,
    Range,
    Size,
    StoreRefusal,
    Text,
)
from .records import PeerStats, PexPeer
from .registry import Message, bus_message

# --- coordinator <-> peer agent (30-59) --------------------------------------------------------


@bus_message(tag=30)
class AttachTorrent(Message):
    """Let the peer agent serve a torrent: its geometry, our peer id and what we already have."""

    info_hash: InfoHash
    piece_length: Annotated[int, Range(1, MAX_DATA_BYTES)]
    total_length: int
    num_pieces: Annotated[int, Range(1, MAX_PIECES)]
    peer_id: PeerId
    have: Bitfield
    private: bool
    storage_endpoint: Text
    """Where the agent sends this torrent's pieces (``StorePiece``) and reads blocks."""
    storage_public_key: Annotated[str, Size(0, 40)]
    """The storage endpoint's Z85 CURVE public key; empty when it uses no CURVE."""
    info: Annotated[bytes, Size(0, MAX_METADATA_BYTES)] = b""
    """The info dictionary's exact bytes, served to peers that ask for it (BEP 9); empty
    leaves ``ut_metadata`` serving off. A torrent attached with ``AttachMagnet`` before keeps
    its connections: they learn the geometry now."""
    pex: bool = True
    """Whether ``ut_pex`` is offered (off for a private torrent, BEP 27)."""
    dht_port: Port = 0
    """The UDP port of the DHT node at the agent's address, told to peers that set the DHT
    bit (the ``PORT`` message, BEP 5); 0: no DHT here, or a private torrent."""


@bus_message(tag=39)
class AttachMagnet(Message):
    """Let the peer agent connect peers of a torrent whose info dictionary is not known yet.

    Its connections exchange handshakes, extension handshakes, ``ut_metadata`` and ``ut_pex``
    only; the peer's have-state is kept until ``AttachTorrent`` for the same info hash gives
    the geometry, which upgrades every connection in place.
    """

    info_hash: InfoHash
    peer_id: PeerId
    dht_port: Port = 0
    """As ``AttachTorrent.dht_port``."""


@bus_message(tag=31)
class DetachTorrent(Message):
    """Close every connection of a torrent and forget it."""

    info_hash: InfoHash


@bus_message(tag=32)
class ConnectPeer(Message):
    """Dial a peer; answered by ``PeerConnected`` or ``PeerConnectFailed``."""

    info_hash: InfoHash
    address: PeerAddress


@bus_message(tag=33)
class DisconnectPeer(Message):
    """Close one connection; answered by ``PeerDisconnected``."""

    info_hash: InfoHash
    peer: PeerKey
    reason: DisconnectReason


@bus_message(tag=34)
class AssignPieces(Message):
    """Download these pieces from this peer (the peer has them)."""

    info_hash: InfoHash
    peer: PeerKey
    pieces: PieceList


@bus_message(tag=35)
class CancelPieces(Message):
    """Stop fetching these pieces from this peer (another peer finished them)."""

    info_hash: InfoHash
    peer: PeerKey
    pieces: PieceList


@bus_message(tag=36)
class BroadcastHave(Message):
    """A piece was verified: send HAVE to every peer of the torrent."""

    info_hash: InfoHash
    piece: PieceNo


@bus_message(tag=37)
class SetChoke(Message):
    """Choke or unchoke one connection (the coordinator's choker decides, BEP 3)."""

    info_hash: InfoHash
    peer: PeerKey
    choked: bool


@bus_message(tag=38)
class BanPeers(Message):
    """Refuse connections from these hosts for this torrent (they sent corrupt data)."""

    info_hash: InfoHash
    hosts: Annotated[tuple[Name, ...], Size(1, MAX_HOSTS)]


@bus_message(tag=58)
class ConnectWebSeed(Message):
    """Fetch pieces of a torrent from a web seed (BEP 19).

    The peer agent always answers ``WebSeedConnected``, naming the session's peer key; from
    then on it is a connection like any other (``WorkWanted``, ``PieceDownloaded``,
    ``PiecesReleased``, ``TransferStats``) until its ``PeerDisconnected``, which comes at once
    when the session cannot start (``unknown_torrent``, ``web_seed_refused``).
    """

    info_hash: InfoHash
    url: Text


@bus_message(tag=59)
class WebSeedConnected(Message):
    """A ``ConnectWebSeed`` got its session; ``peer`` names it from now on."""

    info_hash: InfoHash
    peer: PeerKey
    url: Text


@bus_message(tag=40)
class PeerConnected(Message):
    """A handshake completed (dialled or incoming)."""

    info_hash: InfoHash
    peer: PeerKey
    address: PeerAddress
    peer_id: PeerId
    client: Name
    incoming: bool
    fast_extension: bool
    extension_protocol: bool


@bus_message(tag=41)
class PeerBitfield(Message):
    """The peer's full bitfield (BITFIELD, or HAVE_ALL/HAVE_NONE expanded)."""

    info_hash: InfoHash
    peer: PeerKey
    bitfield: Bitfield


@bus_message(tag=42)
class PeerHave(Message):
    """The peer announced one more piece."""

    info_hash: InfoHash
    peer: PeerKey
    piece: PieceNo


@bus_message(tag=43)
class PeerDisconnected(Message):
    """A connection closed; its assigned pieces are free again."""

    info_hash: InfoHash
    peer: PeerKey
    reason: DisconnectReason
    message: Text


@bus_message(tag=44)
class PeerConnectFailed(Message):
    """A ``ConnectPeer`` never reached a handshake."""

    info_hash: InfoHash
    address: PeerAddress
    reason: DisconnectReason
    message: Text


@bus_message(tag=45)
class WorkWanted(Message):
    """The peer can take ``count`` more pieces (it unchoked us and has spare pipeline)."""

    info_hash: InfoHash
    peer: PeerKey
    count: Annotated[int, Range(1, MAX_BATCH)]


@bus_message(tag=46)
class PiecesReleased(Message):
    """Assigned pieces this peer will not fetch (choked, rejected, or lacks them)."""

    info_hash: InfoHash
    peer: PeerKey
    pieces: PieceList


@bus_message(tag=47)
class TransferStats(Message):
    """Periodic counters and rates of the sender's connections."""

    peers: Annotated[tuple[PeerStats, ...], Size(0, MAX_BATCH)]


@bus_message(tag=48)
class PieceDownloaded(Message):
    """Notice only: a piece was sent to storage; ``PieceVerified`` is what counts."""

    info_hash: InfoHash
    piece: PieceNo
    peer: PeerKey


@bus_message(tag=49)
class PeerInterest(Message):
    """The peer became interested or not interested in our pieces (the choker's input)."""

    info_hash: InfoHash
    peer: PeerKey
    interested: bool


@bus_message(tag=51)
class RequestMetadata(Message):
    """Ask one connection's peer for these 16 KiB pieces of the info dictionary (BEP 9)."""

    info_hash: InfoHash
    peer: PeerKey
    pieces: Annotated[tuple[Annotated[int, Range(0, 1023)], ...], Size(1, 1024)]


@bus_message(tag=52)
class MetadataPieceReceived(Message):
    """A peer sent a piece of the info dictionary; ``total_size`` is as it said."""

    info_hash: InfoHash
    peer: PeerKey
    piece: Annotated[int, Range(0, 1023)]
    total_size: Annotated[int, Range(1, 2**31 - 1)]
    data: Annotated[bytes, Size(1, MAX_METADATA_PIECE)]


@bus_message(tag=53)
class MetadataRejected(Message):
    """A peer answered a metadata request with ``reject`` (it has no metadata, or will not)."""

    info_hash: InfoHash
    peer: PeerKey
    piece: Annotated[int, Range(0, 1023)]


@bus_message(tag=54)
class PeerExtensions(Message):
    """A peer's extension handshake (BEP 10) arrived: what it speaks and says of itself."""

    info_hash: InfoHash
    peer: PeerKey
    version: Name
    """Its ``v``: client name and version, for display; empty when absent."""
    listen_port: Port
    """Its ``p``: the port it accepts connections on; 0 when absent."""
    ut_metadata: bool
    ut_pex: bool
    metadata_size: Annotated[int, Range(0, 2**31 - 1)]
    """Its ``metadata_size``; 0 when absent (it has no metadata to give)."""


@bus_message(tag=55)
class PexReceived(Message):
    """A peer's ``ut_pex`` message, decoded and bounded; the coordinator's policy weighs it."""

    info_hash: InfoHash
    peer: PeerKey
    added: Annotated[tuple[PexPeer, ...], Size(0, MAX_PEX_PEERS)]
    dropped: Annotated[tuple[PeerAddress, ...], Size(0, MAX_PEX_PEERS)]


@bus_message(tag=56)
class SendPex(Message):
    """Send one connection's peer a ``ut_pex`` message (the coordinator decides what and when)."""

    info_hash: InfoHash
    peer: PeerKey
    added: Annotated[tuple[PexPeer, ...], Size(0, MAX_PEX_PEERS)]
    dropped: Annotated[tuple[PeerAddress, ...], Size(0, MAX_PEX_PEERS)]


@bus_message(tag=57)
class PeerDhtPort(Message):
    """A peer sent ``PORT`` (BEP 5): its DHT node listens on ``port`` at its address."""

    info_hash: InfoHash
    peer: PeerKey
    port: Annotated[int, Range(1, 65535)]


# --- peer agent <-> storage agent, data endpoint (60-79) ----------------------------------------


@bus_message(tag=60, has_data=True)
class StorePiece(Message):
    """A whole downloaded piece (data frame) to verify and write; ``contributors`` are peer keys."""

    info_hash: InfoHash
    piece: PieceNo
    contributors: PeerKeys
    block_senders: BlockSenders = ()
    """Who sent each 16 KiB block, as an index into ``contributors``; empty when one
    connection sent every block (``contributors[0]``)."""


@bus_message(tag=61)
class ReadBlock(Message):
    """Read a block to upload; answered by ``BlockRead`` or ``ReadFailed``."""

    request_id: int
    info_hash: InfoHash
    piece: PieceNo
    offset: Annotated[int, Range(0, MAX_DATA_BYTES - 1)]
    length: Annotated[int, Range(1, MAX_BLOCK_LENGTH)]


@bus_message(tag=62, has_data=True)
class BlockRead(Message):
    """The bytes of a ``ReadBlock`` (data frame)."""

    request_id: int
    info_hash: InfoHash
    piece: PieceNo
    offset: Annotated[int, Range(0, MAX_DATA_BYTES - 1)]


@bus_message(tag=63)
class ReadFailed(Message):
    """A ``ReadBlock`` that cannot be served (unknown torrent, piece not verified, I/O error)."""

    request_id: int
    reason: Name
    message: Text


@bus_message(tag=64)
class PieceStored(Message):
    """Storage to the peer agent that sent a ``StorePiece``: the piece is dealt with.

    ``reason`` is ``StoreRefusal.NONE`` (empty) when the piece was hashed (and written if it
    matched: the coordinator hears ``PieceVerified`` or ``PieceRejected``) or was already
    verified; otherwise it names why it was refused (``TORRENT_CHECKING``, ``UNKNOWN_TORRENT``,
    ``AGENT_STOPPING``, ...) and the sender may send it again later. Until this arrives the
    sender keeps the piece.
    """

    info_hash: InfoHash
    piece: PieceNo
    reason: StoreRefusal
