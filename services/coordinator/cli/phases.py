"""What a download is doing, in the words the command line shows: the phase of a torrent.

Strategy: pure functions of one ``TorrentStatus`` (no clock, no I/O), shared by the one-shot
``download`` and by ``add --save-torrent``, so both name a phase the same way and tests need no
daemon.

Rules:
- A torrent added from a magnet link has no size until its metadata is in. While the
  coordinator reports it in the ``metadata`` state it is "finding peers" as long as no peer is
  connected, then "fetching metadata: P peers, R of S KiB" (``P`` the peers asked so far, ``S``
  "?" until a peer has named the size); any other state is "downloading" (the progress bar).
- Numbers for the metadata are KiB with one decimal: metadata is a few KiB to a few MiB.
"""

from __future__ import annotations

from enum import StrEnum

from torviz.shared.bus import TorrentState, TorrentStatus

__all__ = ["Phase", "metadata_line", "phase_of"]


class Phase(StrEnum):
    FINDING_PEERS = "finding peers"
    FETCHING_METADATA = "fetching metadata"
    DOWNLOADING = "downloading"


def phase_of(status: TorrentStatus) -> Phase:
    """The phase a torrent is in: only a torrent in the ``metadata`` state is not downloading."""
    if status.state is not TorrentState.METADATA:
        return Phase.DOWNLOADING
    if status.peers == 0:
        return Phase.FINDING_PEERS
    return Phase.FETCHING_METADATA


def _kib(size: int) -> str:
    return f"{size / 1024:.1f}"


def metadata_line(status: TorrentStatus) -> str:
    """The phase in words, with the metadata's progress while it is fetched.

    Returns:
        ``"finding peers"``, ``"fetching metadata: 3 peers, 16.0 of 48.2 KiB"`` or
        ``"downloading"``.
    """
    phase = phase_of(status)
    if phase is not Phase.FETCHING_METADATA:
        return phase.value
    progress = status.metadata
    asked = progress.peers_asked if progress is not None else 0
    received = progress.received if progress is not None else 0
    size = progress.size if progress is not None else None
    total = _kib(size) if size is not None else "?"
    plural = "" if asked == 1 else "s"
    return f"{phase.value}: {asked} peer{plural}, {_kib(received)} of {total} KiB"
