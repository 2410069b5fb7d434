"""One open connection of a torrent's swarm, as the coordinator knows it.

A ``PeerRecord`` lives from the peer agent's ``PeerConnected`` until the connection is gone
(``Swarm.forget_peer``); its counters and rates come from the peer agents' ``TransferStats``,
its pieces from ``PeerBitfield`` / ``PeerHave``. Pure data, no rules beyond the status flags.
"""

from __future__ import annotations

from dataclasses import dataclass

from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import PeerSource, WebSeedReport
from torviz.shared.types import PeerAddress

__all__ = ["PeerRecord"]


@dataclass(slots=True)
class PeerRecord:
    """One open connection, on one peer agent: a peer, or a web seed's session (``url``)."""

    key: str
    agent: bytes
    address: PeerAddress | None
    """Where the peer is; None for a web seed."""
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
    source: PeerSource = PeerSource.TRACKER
    """Where its address came from (``INCOMING`` when it dialled us)."""
    version: str = ""
    """Its extension handshake's ``v`` (``PeerExtensions``); empty until then, or absent."""
    listen_port: int = 0
    """Its extension handshake's ``p``: where it accepts connections; 0 when not said."""
    url: str = ""
    """A web seed's URL (BEP 19); '' for a peer. A web seed has every piece, is never choked
    by us nor offered to PeX, and is never dialled again by address."""
    web_seed: WebSeedReport | None = None
    """A web seed's retry state, from its latest ``PeerStats``."""

    @property
    def listen_address(self) -> PeerAddress | None:
        """Where it can be dialled: the address we dialled, or its ``p`` for one that dialled
        us; None when it never said."""
        if not self.incoming or self.address is None:
            return self.address
        if self.listen_port:
            return PeerAddress(self.address.host, self.listen_port)
        return None

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
