"""Per-torrent state of the storage agent, and the checks every data-endpoint request passes.

Strategy: a ``Torrent`` is the agent's record of one torrent, keyed by info hash, from the first
``OpenTorrent`` until its ``CloseTorrent`` is done. Its ``phase`` says what may happen to it:

    (new) --open--> OPENING --ok--> OPEN --write error--> FAILED
                       |  failed: forgotten            |  OpenTorrent: OPENING again
    OPEN or FAILED --close--> CLOSING --done--> (forgotten)

OPENING and CLOSING are *busy*: a job is running on the files, and further ``OpenTorrent`` /
``CloseTorrent`` for the torrent wait in ``waiting`` (bounded) until it ends. ``TorrentTable``
holds the torrents and answers, without I/O, whether a ``StorePiece`` or ``ReadBlock`` may go
ahead; the actor does the rest.

Rules:
- Pure: no sockets, no threads, no clock. The actor owns the table and is its only user.
- A piece counts only once verified (``verified``); only verified pieces are ever read out.
- ``StorePiece`` is accepted only while OPEN. After a write error (FAILED) pieces are refused
  until the torrent is reopened; reads of verified pieces still work (their bytes are intact).
- A ``StorePiece`` for a piece already verified is ignored (``already_verified``): its bytes on
  disk were verified once and are never rewritten, so a late duplicate from an endgame race
  costs neither a hash nor a write. A duplicate of a piece still in flight is let through: if
  the first copy is corrupt, the second may be the good one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from shared.bitfield import Bitfield
from shared.bus import MAX_BLOCK_LENGTH, CloseTorrent, OpenTorrent, ReadBlock, StorePiece
from shared.metainfo import InfoDict
from shared.types import InfoHash

from .store import Storage

__all__ = [
    "MAX_TORRENTS",
    "MAX_WAITING",
    "Phase",
    "Refusal",
    "Torrent",
    "TorrentTable",
]

MAX_TORRENTS = 10_000
"""Torrents open at once (the bus's status report carries at most this many)."""

MAX_WAITING = 16
"""Open/close requests queued behind a busy torrent; more means a confused coordinator."""

ControlRequest = OpenTorrent | CloseTorrent


class Phase(StrEnum):
    """Where a torrent is in its life in the storage agent."""

    OPENING = "opening"
    OPEN = "open"
    FAILED = "failed"
    CLOSING = "closing"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request from the data endpoint is not served: a snake_case code and one line."""

    reason: str
    message: str


@dataclass(slots=True)
class Torrent:
    """One torrent the agent knows.

    Invariants: ``info`` and ``storage`` are set in OPEN, FAILED and CLOSING; ``verified`` has
    ``info.num_pieces`` bits once opened (0 before); ``failure`` is set exactly in FAILED.
    """

    info_hash: InfoHash
    save_path: str
    phase: Phase = Phase.OPENING
    info: InfoDict | None = None
    storage: Storage | None = None
    verified: Bitfield = field(default_factory=lambda: Bitfield(0))
    failure: str | None = None
    waiting: deque[ControlRequest] = field(default_factory=deque)

    @property
    def busy(self) -> bool:
        """A job owns the files (opening or closing): control requests must wait."""
        return self.phase in (Phase.OPENING, Phase.CLOSING)

    def opened(self, info: InfoDict, storage: Storage, have: Bitfield) -> None:
        """The files are open and ``have`` holds the pieces found correct on disk."""
        if have.size != info.num_pieces:
            raise ValueError(f"a bitfield of {have.size} bits for {info.num_pieces} pieces")
        self.phase = Phase.OPEN
        self.info = info
        self.storage = storage
        self.verified = have
        self.failure = None

    def reopening(self, save_path: str) -> Storage | None:
        """Start opening again (from FAILED); returns the old store, which the job must close."""
        old, self.storage = self.storage, None
        self.phase = Phase.OPENING
        self.save_path = save_path
        self.failure = None
        return old

    def closing(self) -> Storage | None:
        """Start closing (from OPEN or FAILED); returns the store the job must close."""
        self.phase = Phase.CLOSING
        return self.storage

    def failed(self, message: str) -> bool:
        """A write failed; returns False if the torrent had already failed (report it once)."""
        if self.phase is not Phase.OPEN:
            return False
        self.phase = Phase.FAILED
        self.failure = message
        return True

    def piece_verified(self, piece: int) -> bool:
        """Record a verified piece; returns False if it was already recorded."""
        if self.info is None or piece in self.verified:
            return False
        self.verified.add(piece)
        return True

    def queue(self, request: ControlRequest) -> bool:
        """Keep a control request until the running job ends; False when the queue is full."""
        if len(self.waiting) >= MAX_WAITING:
            return False
        self.waiting.append(request)
        return True

    def take_waiting(self) -> deque[ControlRequest]:
        """Hand over the queued control requests (the torrent's queue starts empty again)."""
        waiting, self.waiting = self.waiting, deque()
        return waiting


class TorrentTable:
    """The torrents the agent knows, and the admission checks of the data endpoint.

    Args:
        max_torrents: most torrents at once; ``add`` refuses more.
    """

    def __init__(self, max_torrents: int = MAX_TORRENTS) -> None:
        self._max = max_torrents
        self._torrents: dict[InfoHash, Torrent] = {}

    def __len__(self) -> int:
        return len(self._torrents)

    def __iter__(self) -> Iterator[Torrent]:
        return iter(list(self._torrents.values()))

    def get(self, info_hash: InfoHash) -> Torrent | None:
        return self._torrents.get(info_hash)

    def add(self, info_hash: InfoHash, save_path: str) -> Torrent | Refusal:
        """Start tracking a torrent (in OPENING); a ``Refusal`` when the table is full."""
        if info_hash in self._torrents:
            raise ValueError(f"torrent {info_hash.hex} is already known")
        if len(self._torrents) >= self._max:
            return Refusal(
                "too_many_torrents",
                f"the storage agent already has {self._max} torrents open: close one first",
            )
        torrent = self._torrents[info_hash] = Torrent(info_hash, save_path)
        return torrent

    def remove(self, info_hash: InfoHash) -> Torrent | None:
        return self._torrents.pop(info_hash, None)

    def check_piece(self, message: StorePiece, length: int) -> Torrent | Refusal:
        """Whether a received piece may be hashed and written.

        Args:
            message: the request.
            length: bytes in its data frame.

        Returns:
            The torrent (OPEN, with ``info`` and ``storage``) or why the piece is dropped:
            ``unknown_torrent``, ``torrent_not_open``, ``torrent_failed``,
            ``piece_out_of_range``, ``bad_piece_length`` or ``already_verified``.
        """
        torrent = self._torrents.get(message.info_hash)
        if torrent is None:
            return Refusal("unknown_torrent", "piece for a torrent that is not open")
        if torrent.phase is Phase.FAILED:
            return Refusal(
                "torrent_failed", f"piece for a stopped torrent ({torrent.failure}): reopen it"
            )
        if torrent.phase is not Phase.OPEN or torrent.info is None:
            return Refusal("torrent_not_open", f"piece while the torrent is {torrent.phase}")
        geometry = torrent.info.geometry
        if not 0 <= message.piece < geometry.num_pieces:
            return Refusal(
                "piece_out_of_range",
                f"piece {message.piece} does not exist (the torrent has {geometry.num_pieces})",
            )
        size = geometry.piece_size(message.piece)
        if length != size:
            return Refusal(
                "bad_piece_length",
                f"piece {message.piece} came with {length} bytes, not {size}",
            )
        if message.piece in torrent.verified:
            return Refusal("already_verified", f"piece {message.piece} is already verified")
        return torrent

    def check_read(self, message: ReadBlock) -> Torrent | Refusal:
        """Whether a block may be read for a peer.

        Returns:
            The torrent (OPEN or FAILED, with ``storage``) or why not: ``unknown_torrent``,
            ``torrent_not_open``, ``invalid_range`` or ``piece_not_verified``.
        """
        torrent = self._torrents.get(message.info_hash)
        if torrent is None:
            return Refusal("unknown_torrent", "read from a torrent that is not open")
        if torrent.phase not in (Phase.OPEN, Phase.FAILED) or torrent.info is None:
            return Refusal("torrent_not_open", f"read while the torrent is {torrent.phase}")
        geometry = torrent.info.geometry
        if not geometry.is_valid_request(
            message.piece, message.offset, message.length, MAX_BLOCK_LENGTH
        ):
            return Refusal(
                "invalid_range",
                f"{message.length} bytes at {message.offset} are not inside piece {message.piece}",
            )
        if message.piece not in torrent.verified:
            return Refusal("piece_not_verified", f"piece {message.piece} is not verified")
        return torrent
