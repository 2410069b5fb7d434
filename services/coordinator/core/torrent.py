"""What the coordinator knows about one torrent: its state, its byte totals, its trackers.

Strategy: a ``Torrent`` is the lifecycle state (changed only through ``lifecycle.advance``),
what was verified, downloaded and uploaded, and who announces it; everything about its peers
(connections, candidates, bans, picker, choker) is its ``swarm`` (``swarm.py``). The
decisions that involve several torrents or agents are in ``coordinator.py``.

Rules: rates and totals come from the peer agents' ``TransferStats``; progress counts only
verified pieces; ``downloaded`` never reports less than the pieces verified since the start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torviz.shared.bus import TorrentState, TrackerStateChanged
from torviz.shared.metainfo import Metainfo

from .announcers import Announce

if TYPE_CHECKING:
    from .swarm import Swarm

__all__ = ["Torrent"]


@dataclass(slots=True)
class Torrent:
    metainfo: Metainfo
    metainfo_bytes: bytes
    """The .torrent exactly as added (persisted as is, never re-encoded)."""
    save_path: str
    added_at: float
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
        return len(self.swarm.picker) if self.swarm.picker is not None else self.verified_pieces

    @property
    def complete(self) -> bool:
        return self.swarm.picker is not None and self.swarm.picker.complete

    @property
    def left(self) -> int:
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
    def seeds(self) -> int:
        return sum(1 for peer in self.swarm.peers.values() if peer.bits.complete)
