"""Per-torrent state of the storage agent, and the checks every data-endpoint request passes.

Strategy: a ``Torrent`` is the agent's record of one torrent, keyed by info hash, from the first
``OpenTorrent`` until its ``CloseTorrent`` is done. Its ``phase`` says what may happen to it:

    (new) --open--> OPENING --ok--> OPEN --write error--> FAILED
                       |  failed: forgotten            |  OpenTorrent: OPENING again
    OPEN or FAILED --recheck--> CHECKING --done--> OPEN   (--disk error--> FAILED)
    OPEN or FAILED --close--> CLOSING --done--> (forgotten)

OPENING, CHECKING and CLOSING are *busy*: a job is running on the files, and further control
requests for the torrent wait in ``waiting`` (bounded) until it ends; a ``CloseTorrent`` that
arrives while the files are being hashed cancels the hashing first (``cancel``).
``TorrentTable`` holds the torrents and answers, without I/O, whether a ``StorePiece`` or
``ReadBlock`` may go ahead; the actor does the rest.

Rules:
- Pure: no sockets, no threads, no clock. The actor owns the table and is its only user.
- A piece counts only once verified (``verified``); only verified pieces are ever read out.
- ``StorePiece`` is accepted only while OPEN. After a write error (FAILED) pieces are refused
  until the torrent is reopened; reads of verified pieces still work (their bytes are intact).
  During a recheck (CHECKING) pieces and reads are refused: the recheck trusts nothing, and its
  ``TorrentOpened`` is the one answer that counts.
- Resume bookkeeping: ``unsaved`` says pieces were verified since the last record, ``flushing``
  that a flush is running; a torrent whose check was cancelled (``check_incomplete``) never has
  its verified set recorded, since that set was not checked.
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

from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    MAX_BLOCK_LENGTH,
    CloseTorrent,
    OpenTorrent,
    ReadBlock,
    RecheckTorrent,
    StorePiece,
    StoreRefusal,
)
from torviz.shared.geometry import PieceIndexError
from torviz.shared.metainfo import InfoDict
from torviz.shared.types import InfoHash

from .storage import Storage

__all__ = [
    "MAX_TORRENTS",
    "MAX_WAITING",
    "Cancel",
    "Phase",
    "Refusal",
    "Torrent",
    "TorrentTable",
]

MAX_TORRENTS = 10_000
"""Torrents open at once (the bus's status report carries at most this many)."""

MAX_WAITING = 16
"""Open/close requests queued behind a busy torrent; more means a confused coordinator."""

ControlRequest = OpenTorrent | CloseTorrent | RecheckTorrent


class Phase(StrEnum):
    """Where a torrent is in its life in the storage agent."""

    OPENING = "opening"
    OPEN = "open"
    FAILED = "failed"
    CHECKING = "checking"
    CLOSING = "closing"


@dataclass(slots=True)
class Cancel:
    """Set by the actor, read by a running check between two pieces (both on the event loop)."""

    requested: bool = False

    def __call__(self) -> bool:
        return self.requested


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
    cancel: Cancel = field(default_factory=Cancel)
    check_incomplete: bool = False
    unsaved: bool = False
    flushing: bool = False
    delete_files: bool = False
    """Set in CLOSING: the close deletes the files and the record."""
    close_started: bool = False
    """Set in CLOSING once the close job runs (the torrent's pieces in flight are done)."""

    @property
    def busy(self) -> bool:
        """A job owns the files (opening, checking or closing): control requests must wait."""
        return self.phase in (Phase.OPENING, Phase.CHECKING, Phase.CLOSING)

    def opened(
        self, info: InfoDict, storage: Storage, have: Bitfield, *, complete: bool = True
    ) -> None:
        """The files are open and ``have`` holds the pieces found correct on disk.

        ``complete`` is False when the check was cancelled: ``have`` then lacks pieces that
        were not checked, and must never be recorded.
        """
        if have.size != info.num_pieces:
            raise ValueError(f"a bitfield of {have.size} bits for {info.num_pieces} pieces")
        self.phase = Phase.OPEN
        self.info = info
        self.storage = storage
        self.verified = have
        self.failure = None
        self.check_incomplete = not complete
        self.unsaved = False

    def reopening(self, save_path: str) -> Storage | None:
        """Start opening again (from FAILED); returns the old store, which the job must close."""
        old, self.storage = self.storage, None
        self.phase = Phase.OPENING
        self.save_path = save_path
        self.failure = None
        self.cancel = Cancel()
        return old

    def checking(self) -> Storage | None:
        """Start a recheck (from OPEN or FAILED); returns the store the job must check."""
        self.phase = Phase.CHECKING
        self.cancel = Cancel()
        self.check_incomplete = True  # until the recheck ends well
        return self.storage

    def closing(self, *, delete_files: bool = False) -> Storage | None:
        """Start closing (from OPEN or FAILED); returns the store the job must close."""
        self.phase = Phase.CLOSING
        self.delete_files = delete_files
        return self.storage

    def failed(self, message: str) -> bool:
        """A write failed; returns False if the torrent had already failed (report it once)."""
        if self.phase is not Phase.OPEN:
            return False
        self.phase = Phase.FAILED
        self.failure = message
        return True

    def check_failed(self, message: str) -> None:
        """A recheck met a disk failure: the torrent stops (FAILED) until it is reopened."""
        self.phase = Phase.FAILED
        self.failure = message

    def piece_verified(self, piece: int) -> bool:
        """Record a verified piece; returns False if it was already recorded."""
        if self.info is None or piece in self.verified:
            return False
        self.verified.add(piece)
        self.unsaved = True
        return True

    def checked(self, have: Bitfield) -> None:
        """A recheck ended well: ``have`` replaces every earlier verdict (back to OPEN)."""
        if self.info is None or self.storage is None:
            raise ValueError("only an open torrent is rechecked")
        self.opened(self.info, self.storage, have)

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
            ``unknown_torrent``, ``torrent_not_open``, ``torrent_failed``, ``torrent_checking``,
            ``piece_out_of_range``, ``bad_piece_length`` or ``already_verified``.
        """
        torrent = self._torrents.get(message.info_hash)
        if torrent is None:
            return Refusal(StoreRefusal.UNKNOWN_TORRENT, "piece for a torrent that is not open")
        if torrent.phase is Phase.FAILED:
            return Refusal(
                StoreRefusal.TORRENT_FAILED,
                f"piece for a stopped torrent ({torrent.failure}): reopen it",
            )
        if torrent.phase is Phase.CHECKING:
            return Refusal(
                StoreRefusal.TORRENT_CHECKING, "piece while the torrent is being rechecked"
            )
        if torrent.phase is not Phase.OPEN or torrent.info is None:
            return Refusal(
                StoreRefusal.TORRENT_NOT_OPEN, f"piece while the torrent is {torrent.phase}"
            )
        geometry = torrent.info.geometry
        try:
            piece = geometry.piece_index(message.piece)
        except PieceIndexError as exc:
            return Refusal(StoreRefusal.PIECE_OUT_OF_RANGE, str(exc))
        size = geometry.piece_size(piece)
        if length != size:
            return Refusal(
                StoreRefusal.BAD_PIECE_LENGTH,
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
