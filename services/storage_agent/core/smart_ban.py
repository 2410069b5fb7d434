"""Smart ban: when a piece built from several peers' blocks fails its hash, find who lied.

Strategy (libtorrent's smart ban): a failed piece whose blocks came from more than one
connection proves only that *someone* sent a bad block. The storage agent, which holds the
bytes, keeps the SHA-1 of each of its 16 KiB blocks and who sent it (``BlockLedger.failed``).
The coordinator fetches the piece again, preferably from one connection. When a copy of the
piece verifies, its blocks are hashed too and compared (``BlockLedger.verified``): a sender
whose block differs from the verified one is a liar, a sender whose blocks all match is
cleared. Only liars are blamed, so an honest peer that shared pieces with a liar is never
banned.

Rules:
- A failed piece with one sender needs no ledger: the sender is the culprit.
- The ledger is bounded (``max_pieces``, oldest dropped first): a peer that fails many pieces
  cannot make the agent keep their digests without end. A dropped record only means that
  piece's liar is not traced.
- A second failed copy of a piece adds its blocks to the same record: whichever copy verifies
  later judges all of them.
- Pure: the caller hashes (``block_digests``, on a worker thread) and sends the verdict.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from torviz.shared.types import InfoHash

__all__ = ["BlockLedger", "Verdict", "block_digests", "senders_of_blocks"]

MAX_PIECES = 64
"""Failed pieces remembered at once, over every torrent (each holds up to 4,096 digests)."""


def block_digests(data: memoryview | bytes, block_length: int) -> tuple[bytes, ...]:
    """The SHA-1 of each ``block_length`` slice of ``data`` (the last may be shorter)."""
    view = memoryview(data)
    return tuple(
        hashlib.sha1(view[start : start + block_length]).digest()
        for start in range(0, view.nbytes, block_length)
    )


def senders_of_blocks(
    contributors: Sequence[str], block_senders: Sequence[int], blocks: int
) -> tuple[str, ...] | None:
    """The sender of each block, from ``StorePiece``'s ``contributors`` and ``block_senders``.

    Returns:
        One key per block; None when the message does not fit the piece (more or fewer
        entries than blocks, an index past ``contributors``, or no contributor at all).
    """
    if not contributors:
        return None
    if not block_senders:
        return (contributors[0],) * blocks
    if len(block_senders) != blocks or max(block_senders) >= len(contributors):
        return None
    return tuple(contributors[index] for index in block_senders)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Who sent bad blocks of a piece, and who sent only good ones."""

    liars: tuple[str, ...]
    cleared: tuple[str, ...]


@dataclass(slots=True)
class _Failed:
    copies: list[tuple[tuple[bytes, ...], tuple[str, ...]]] = field(default_factory=list)
    """Each failed copy: its block digests and the sender of each block."""


class BlockLedger:
    """Failed multi-sender pieces waiting for a verified copy to judge them."""

    def __init__(self, max_pieces: int = MAX_PIECES) -> None:
        self._max = max_pieces
        self._failed: OrderedDict[tuple[InfoHash, int], _Failed] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failed)

    def wants(self, info_hash: InfoHash, piece: int) -> bool:
        """Whether a verified copy of this piece should be hashed block by block."""
        return (info_hash, piece) in self._failed

    def failed(
        self, info_hash: InfoHash, piece: int, digests: tuple[bytes, ...], senders: tuple[str, ...]
    ) -> None:
        """Remember a failed copy whose blocks came from more than one sender."""
        if len(digests) != len(senders):
            raise ValueError("one sender per block digest")
        key = (info_hash, piece)
        record = self._failed.pop(key, None) or _Failed()
        record.copies.append((digests, senders))
        self._failed[key] = record
        while len(self._failed) > self._max:
            self._failed.popitem(last=False)

    def verified(self, info_hash: InfoHash, piece: int, digests: tuple[bytes, ...]) -> Verdict:
        """A copy verified: judge every failed copy of the piece against it, and forget them.

        Returns:
            The liars and the cleared senders (both empty when nothing was remembered).
        """
        record = self._failed.pop((info_hash, piece), None)
        if record is None:
            return Verdict((), ())
        liars: dict[str, None] = {}
        senders: dict[str, None] = {}
        for failed_digests, failed_senders in record.copies:
            for index, sender in enumerate(failed_senders):
                senders[sender] = None
                good = digests[index] if index < len(digests) else None
                if failed_digests[index] != good:
                    liars[sender] = None
        cleared = tuple(sender for sender in senders if sender not in liars)
        return Verdict(tuple(liars), cleared)

    def forget_torrent(self, info_hash: InfoHash) -> None:
        """The torrent closed: its records can never be judged."""
        for key in [key for key in self._failed if key[0] == info_hash]:
            del self._failed[key]
