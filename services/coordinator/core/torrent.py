"""What the coordinator knows about one torrent: its pieces, its peers, its trackers.

Pure data with a few rules attached; the decisions that involve several torrents or agents are
in ``core.py``. Rates and totals come from the peer agents' ``TransferStats``; progress counts
only verified pieces.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from shared.bitfield import Bitfield
from shared.bus import TorrentState, TrackerStateChanged
from shared.metainfo import Metainfo
from shared.types import PeerAddress

from .announcers import Announce
from .choking import Choker
from .picking import PiecePicker
from .redial import RedialSchedule

__all__ = ["PeerRecord", "Torrent"]

MAX_CANDIDATES = 2000
"""Peer addresses remembered per torrent beyond those connected (a tracker cannot flood us)."""
MAX_CLOSING = 4096
"""Connections we asked to close whose final counters have not arrived yet (a peer agent that
never answers cannot make this grow without bound)."""


@dataclass(slots=True)
class PeerRecord:
    """One open connection, on one peer agent."""

    key: str
    agent: bytes
    address: PeerAddress
    client: str
    bits: Bitfield
    starved: bool = False
    """It asked for work and we had none; offer it pieces as they free up."""
    downloaded: int = 0
    uploaded: int = 0
    download_rate: float = 0.0
    upload_rate: float = 0.0
    peer_choking: bool = True
    peer_interested: bool = False
    am_choking: bool = True
    am_interested: bool = False
    snubbed: bool = False
    incoming: bool = False
    fast_extension: bool = False
    extension_protocol: bool = False
    connected_at: float = 0.0
    hash_failures: int = 0

    @property
    def flags(self) -> str:
        """The letters ``PeerStatus.flags`` documents, in a fixed order."""
        letters = []
        if self.am_interested:
            letters.append("d" if self.peer_choking else "D")
        if self.peer_interested:
            letters.append("u" if self.am_choking else "U")
        for flag, letter in (
            (self.snubbed, "S"),
            (self.incoming, "I"),
            (self.fast_extension, "F"),
            (self.extension_protocol, "E"),
        ):
            if flag:
                letters.append(letter)
        return "".join(letters)


@dataclass(slots=True)
class Torrent:
    metainfo: Metainfo
    metainfo_bytes: bytes
    """The .torrent exactly as added (persisted as is, never re-encoded)."""
    save_path: str
    added_at: float
    choker: Choker
    state: TorrentState = TorrentState.CHECKING
    error: str | None = None
    picker: PiecePicker | None = None
    """Exists while the torrent is open: from the storage agent's ``TorrentOpened`` until it
    stops (pause, error, recheck). ``None`` means nothing may be fetched or served."""
    check_progress: float | None = None
    """While the storage agent hashes existing files: the fraction done."""
    verified_pieces: int = 0
    """Pieces verified, kept while the torrent is stopped (the picker is gone then)."""
    peers: dict[str, PeerRecord] = field(default_factory=dict)
    candidates: OrderedDict[PeerAddress, None] = field(default_factory=OrderedDict)
    connecting: dict[PeerAddress, bytes] = field(default_factory=dict)
    tried: set[PeerAddress] = field(default_factory=set)
    redial: RedialSchedule = field(default_factory=RedialSchedule)
    """Addresses to dial again after a back-off, and those given up."""
    banned_hosts: set[str] = field(default_factory=set)
    trackers: dict[str, tuple[TrackerStateChanged, float]] = field(default_factory=dict)
    """The latest report of each tracker URL, and when it arrived."""
    departed: OrderedDict[str, PeerAddress] = field(default_factory=OrderedDict)
    """Addresses of recently closed connections by peer key: the smart ban may prove one of
    them a liar after it left."""
    closing: OrderedDict[str, PeerRecord] = field(default_factory=OrderedDict)
    """Connections we asked a peer agent to close (or detached): their final ``TransferStats``
    still count, until their ``PeerDisconnected`` arrives."""
    verified_bytes: int = 0
    downloaded_closed: int = 0
    """Bytes downloaded by connections that have closed, and in earlier runs."""
    uploaded_closed: int = 0
    downloaded_floor: int = 0
    """At least this much was downloaded: the earlier runs' total plus every piece verified
    since. Counters reach the coordinator once a second, so a fast download can finish before
    they tell; ``downloaded`` never reports less than this."""
    completed_at: float | None = None
    announces: dict[bytes, Announce] = field(default_factory=dict)
    """The tracker agents told to announce this torrent (``TrackTorrent``), by identity, and
    what each announces (``announcers.py``); empty while nobody does."""
    announce_results: dict[bytes, dict[str, tuple[TrackerStateChanged, float]]] = field(
        default_factory=dict
    )
    """Per announcing tracker agent: the latest report of each tracker URL, and when."""

    @property
    def info_hash_hex(self) -> str:
        return self.metainfo.info_hash.hex

    @property
    def name(self) -> str:
        return self.metainfo.info.name

    @property
    def num_pieces(self) -> int:
        return self.metainfo.info.num_pieces

    @property
    def total_length(self) -> int:
        return self.metainfo.info.total_length

    @property
    def pieces_verified(self) -> int:
        return len(self.picker) if self.picker is not None else self.verified_pieces

    @property
    def complete(self) -> bool:
        return self.picker is not None and self.picker.complete

    @property
    def left(self) -> int:
        return self.total_length - self.verified_bytes

    @property
    def downloaded(self) -> int:
        counted = self.downloaded_closed + sum(peer.downloaded for peer in self.peers.values())
        return max(counted, self.downloaded_floor)

    @property
    def uploaded(self) -> int:
        return self.uploaded_closed + sum(peer.uploaded for peer in self.peers.values())

    @property
    def download_rate(self) -> float:
        return sum(peer.download_rate for peer in self.peers.values())

    @property
    def upload_rate(self) -> float:
        return sum(peer.upload_rate for peer in self.peers.values())

    @property
    def seeds(self) -> int:
        return sum(1 for peer in self.peers.values() if peer.bits.complete)

    def add_candidates(self, addresses: tuple[PeerAddress, ...]) -> None:
        """Remember addresses to dial; known, banned and over-the-bound ones are skipped."""
        for address in addresses:
            if (
                address in self.candidates
                or address in self.connecting
                or address in self.tried
                or address.host in self.banned_hosts
                or self.redial.given_up(address)
                or len(self.candidates) >= MAX_CANDIDATES
            ):
                continue
            self.candidates[address] = None

    def due_retries(self, now: float) -> None:
        """Move addresses whose back-off has passed to the front of the candidates."""
        for address in self.redial.due(now):
            if self.connected_to(address) or address in self.connecting:
                continue
            if address.host in self.banned_hosts:
                continue
            self.tried.discard(address)
            self.candidates[address] = None
            self.candidates.move_to_end(address, last=False)

    def remember_departed(self, record: PeerRecord) -> None:
        """Keep a closed connection's address for a while (bounded like ``closing``)."""
        self.departed[record.key] = record.address
        while len(self.departed) > MAX_CLOSING:
            self.departed.popitem(last=False)

    def address_of(self, key: str) -> PeerAddress | None:
        """The address of a connection, open or recently closed."""
        record = self.peers.get(key)
        return record.address if record is not None else self.departed.get(key)

    def remember_closing(self, record: PeerRecord) -> None:
        """Keep a record whose connection we asked to close, to count its final counters."""
        self.closing[record.key] = record
        while len(self.closing) > MAX_CLOSING:
            self.closing.popitem(last=False)

    def count_final(self, record: PeerRecord, downloaded: int, uploaded: int) -> None:
        """Counters of a closing connection: what they grew by goes to the closed totals."""
        self.downloaded_closed += max(0, downloaded - record.downloaded)
        self.uploaded_closed += max(0, uploaded - record.uploaded)
        record.downloaded = max(record.downloaded, downloaded)
        record.uploaded = max(record.uploaded, uploaded)

    def connected_to(self, address: PeerAddress) -> bool:
        return any(peer.address == address for peer in self.peers.values())
