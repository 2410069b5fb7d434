"""Where each piece of a torrent came from: the peer agent (and its host) whose connection
delivered its blocks, for the piece map of ``status`` and the terminal UI.

Strategy: one byte per piece (a ``bytearray``): 0 is unknown, else 1 + an index into the list
of origins seen, each an ``(agent_id, host)`` pair. The origin is recorded when a connection
delivers the whole piece (``PieceDownloaded``), kept when it verifies and dropped when it is
rejected. A piece is credited to the connection that delivered its last block.

Rules: pure; at most ``MAX_PIECE_ORIGINS`` origins are told apart (later ones stay unknown);
not persisted: pieces on disk before a restart have no known origin.
"""

from __future__ import annotations

from torviz.shared.bus import MAX_PIECE_ORIGINS, PieceOrigin

__all__ = ["MAX_PIECE_ORIGINS", "PieceOrigins"]


class PieceOrigins:
    """The origin of each piece of one torrent.

    Args:
        num_pieces: the torrent's pieces.
    """

    def __init__(self, num_pieces: int) -> None:
        self._cells = bytearray(num_pieces)
        self._origins: list[PieceOrigin] = []
        self._index: dict[PieceOrigin, int] = {}

    def __len__(self) -> int:
        return len(self._cells)

    @property
    def origins(self) -> tuple[PieceOrigin, ...]:
        """Every origin seen, in the order first seen."""
        return tuple(self._origins)

    def record(self, piece: int, agent_id: str, host: str) -> None:
        """``piece`` was delivered through the peer agent ``agent_id`` on ``host``.

        A piece out of range is ignored; past ``MAX_PIECE_ORIGINS`` origins it stays unknown.
        """
        if not 0 <= piece < len(self._cells):
            return
        origin = PieceOrigin(agent_id, host)
        index = self._index.get(origin)
        if index is None:
            if len(self._origins) >= MAX_PIECE_ORIGINS:
                self._cells[piece] = 0
                return
            index = self._index[origin] = len(self._origins)
            self._origins.append(origin)
        self._cells[piece] = index + 1

    def forget(self, piece: int) -> None:
        """``piece`` was rejected: whoever sent it, it is not theirs any more."""
        if 0 <= piece < len(self._cells):
            self._cells[piece] = 0

    def origin_of(self, piece: int) -> int | None:
        """The index into ``origins`` of ``piece``'s origin (None: unknown)."""
        if not 0 <= piece < len(self._cells):
            return None
        cell = self._cells[piece]
        return cell - 1 if cell else None

    @property
    def cells(self) -> bytes:
        """One byte per piece: 0 unknown, else 1 + the index into ``origins``."""
        return bytes(self._cells)
