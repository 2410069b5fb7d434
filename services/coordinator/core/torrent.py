"""What the coordinator knows about one torrent: its state, its byte totals, its trackers.

Strategy: a ``Torrent`` is the lifecycle state (changed only through ``lifecycle.advance``),
what was verified, downloaded and uploaded, and who announces it; everything about its peers
(connections, candidates, bans, picker, choker) is its ``swarm`` (``swarm.py``). The
decisions that involve several torrents or agents are in ``coordinator.py``.

A torrent added from a magnet link has no metainfo until its info dictionary is fetched
(``metainfo`` None, ``magnet`` set, state METADATA): ``name``, ``info_hash``, ``tiers`` and the
other properties work in both states, and ``meta`` is for the code that runs only once the
metainfo is known (an open torrent).

Rules: rates and totals come from the peer agents' ``TransferStats``; progress counts only
verified pieces; ``downloaded`` never reports less than the pieces verified since the start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import TorrentState, TrackerStateChanged
from torviz.shared.magnet import Magnet
from torviz.shared.metainfo import Metainfo
from torviz.shared.types import InfoHash

from .announcers import Announce
from .web_seeds import WebSeeds

if TYPE_CHECKING:
    from .metadata_phase import MetadataFetch
    from .pex_exchange import PexExchange
    from .piece_origins import PieceOrigins
    from .swarm import Swarm

__all__ = ["MAGNET_LEFT", "Torrent"]

MAGNET_LEFT = 16384
"""``left`` announced while the size is unknown (a magnet link's torrent fetching its info
dictionary): not 0, so trackers count us a leecher and hand out seeds."""


@dataclass(slots=True)
class Torrent:
    metainfo: Metainfo | None
    """None while a magnet link's info dictionary is being fetched."""
    metainfo_bytes: bytes
    """The .torrent exactly as added, or as built from a magnet link once its info dictionary
    arrived (persisted as is, never re-encoded); empty before."""
    save_path: str
    added_at: float
    magnet: Magnet | None = None
    """The magnet link it was added from (None for a .torrent)."""
    state: TorrentState = TorrentState.CHECKING
    error: str | None = None
    check_progress: float | None = None
    """While the storage agent hashes existing files: the fraction done."""
    verified_pieces: int = 0
    """Pieces verified, kept while the torrent is stopped (the picker is gone then)."""
    trackers: dict[str, tuple[TrackerStateChanged, float]] = field(default_factory=dict)
    """The latest report of each tracker URL, and when it arrived."""
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
    swarm: Swarm = field(init=False)
    """Its connections, candidates, bans, picker and choker (set right after creation:
    ``Swarm(torrent, context, choker)``)."""
    fetch: MetadataFetch | None = None
    """While in the METADATA state: the fetch of the info dictionary from peers."""
    metadata_kept: tuple[int, dict[int, bytes]] | None = None
    """Metadata pieces (by index) of the given size, kept from an earlier fetch (a restart, a
    pause): the next fetch takes them once a peer advertises that size."""
    pex: PexExchange | None = None
    """Peer exchange (BEP 11) while it runs; None for a private torrent or with PeX off."""
    origins: PieceOrigins | None = None
    """Which peer agent delivered each piece (``piece_origins.py``), once pieces arrive."""
    failing_trackers: set[str] = field(default_factory=set)
    """Tracker URLs whose latest answer was a failure (logged once, until one works)."""
    have_kept: Bitfield | None = None
    """The pieces verified when it last stopped (the picker is gone then), for its detail."""
    web_seeds: WebSeeds = field(default_factory=WebSeeds)
    """Its web seed URLs (BEP 19) and where each stands (``web_seeds.py``)."""

    @property
    def meta(self) -> Metainfo:
        """The metainfo, for code that runs only once it is known (an open torrent).

        Raises:
            RuntimeError: a magnet link's torrent still fetching it (a bug in the caller).
        """
        if self.metainfo is None:
            raise RuntimeError(f"{self.name}: the info dictionary is not known yet")
        return self.metainfo

    @property
    def info_hash(self) -> InfoHash:
        if self.metainfo is not None:
            return self.metainfo.info_hash
        assert self.magnet is not None
        return self.magnet.info_hash

    @property
    def info_hash_hex(self) -> str:
        return self.info_hash.hex

    @property
    def name(self) -> str:
        if self.metainfo is not None:
            return self.metainfo.info.name
        assert self.magnet is not None
        return self.magnet.display_name or self.magnet.info_hash.hex

    @property
    def private(self) -> bool:
        """BEP 27; a magnet link's torrent counts as public until its info dictionary says."""
        return self.metainfo is not None and self.metainfo.info.private

    @property
    def tiers(self) -> tuple[tuple[str, ...], ...]:
        """Tracker tiers: the metainfo's, or each ``tr`` of the magnet link a tier of its own."""
        if self.metainfo is not None:
            return self.metainfo.trackers
        assert self.magnet is not None
        return tuple((url,) for url in self.magnet.trackers)

    @property
    def num_pieces(self) -> int:
        return self.metainfo.info.num_pieces if self.metainfo is not None else 0

    @property
    def total_length(self) -> int:
        return self.metainfo.info.total_length if self.metainfo is not None else 0

    @property
    def pieces_verified(self) -> int:
        return len(self.swarm.picker) if self.swarm.picker is not None else self.verified_pieces

    @property
    def complete(self) -> bool:
        return self.swarm.picker is not None and self.swarm.picker.complete

    @property
    def left(self) -> int:
        if self.metainfo is None:
            return MAGNET_LEFT
        return self.total_length - self.verified_bytes

    @property
    def downloaded(self) -> int:
        counted = self.downloaded_closed + sum(
            peer.downloaded for peer in self.swarm.peers.values()
        )
        return max(counted, self.downloaded_floor)

    @property
    def uploaded(self) -> int:
        return self.uploaded_closed + sum(peer.uploaded for peer in self.swarm.peers.values())

    @property
    def download_rate(self) -> float:
        return sum(peer.download_rate for peer in self.swarm.peers.values())

    @property
    def upload_rate(self) -> float:
        return sum(peer.upload_rate for peer in self.swarm.peers.values())

    @property
    def peer_count(self) -> int:
        """Its peer connections; web seeds are not counted (``web_seeds`` rows show them)."""
        return sum(1 for peer in self.swarm.peers.values() if not peer.url)

    @property
    def seeds(self) -> int:
        return sum(1 for peer in self.swarm.peers.values() if peer.bits.complete and not peer.url)
