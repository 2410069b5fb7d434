"""The read-only state of a peer session, for the connection, the stats and tests.

Strategy: ``PeerSession`` (``session.py``) inherits these properties; they only read the
session's parts (``Downloads``, ``Uploads``, ``Extensions``) and never change anything, so they
live apart from the protocol logic.
"""

from __future__ import annotations

from torviz.shared.geometry import TorrentGeometry

from .download import Downloads
from .extensions import Extensions
from .upload import Uploads

__all__ = ["SessionView"]


class SessionView:
    """Read-only properties over a peer session's parts (see ``PeerSession``)."""

    geometry: TorrentGeometry | None
    _downloads: Downloads
    _uploads: Uploads | None
    _ext: Extensions

    @property
    def metadata_mode(self) -> bool:
        """The torrent's info dictionary is not known yet (see ``learn_geometry``)."""
        return self.geometry is None

    @property
    def peer_version(self) -> str | None:
        """The peer's ``v`` (client name and version) from its extension handshake."""
        return self._ext.peer.v if self._ext.peer is not None else None

    @property
    def peer_listen_port(self) -> int | None:
        """The peer's ``p`` (the port it accepts connections on)."""
        return self._ext.peer.p if self._ext.peer is not None else None

    def peer_supports(self, name: str) -> bool:
        """Whether the peer's extension handshake offers extension ``name`` (``ut_pex``...)."""
        return self._ext.supports(name)

    @property
    def peer_choking(self) -> bool:
        return self._downloads.peer_choking

    @property
    def am_interested(self) -> bool:
        return self._downloads.am_interested

    @property
    def snubbed(self) -> bool:
        """The peer unchokes us but sent no block for ``snub_timeout`` seconds of waiting."""
        return self._downloads.snubbed

    @property
    def peer_reqq(self) -> int | None:
        return self._downloads.peer_reqq

    @property
    def allowed_fast(self) -> frozenset[int]:
        """Pieces the peer lets us fetch while it chokes us."""
        return frozenset(self._downloads.allowed_fast)

    @property
    def wasted_bytes(self) -> int:
        return self._downloads.wasted_bytes

    @property
    def assigned(self) -> tuple[int, ...]:
        return self._downloads.assigned

    @property
    def outstanding_requests(self) -> int:
        return self._downloads.outstanding

    @property
    def wants_upload(self) -> bool:
        """Whether the peer has requests queued with us."""
        uploads = self._uploads
        return uploads is not None and len(uploads) > 0

    @property
    def queued_requests(self) -> int:
        """Requests of the peer waiting to be served."""
        return len(self._uploads) if self._uploads is not None else 0

    @property
    def queued_upload_bytes(self) -> int:
        """Block bytes ``serve`` queued that ``take_output`` has not handed out yet."""
        return self._uploads.queued_bytes if self._uploads is not None else 0

    @property
    def granted_fast(self) -> frozenset[int]:
        """The allowed-fast pieces we told the peer about."""
        return frozenset(self._uploads.granted) if self._uploads is not None else frozenset()
