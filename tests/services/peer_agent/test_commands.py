"""The coordinator's per-peer messages as the commands the agent tells a connection."""

from __future__ import annotations

import hashlib

from torviz.services.peer_agent.core.commands import (
    Assign,
    Disconnect,
    FetchMetadata,
    OfferPeers,
    Revoke,
    SetChoked,
    command_for,
)
from torviz.shared import bus
from torviz.shared.bus import DisconnectReason
from torviz.shared.types import InfoHash, PeerAddress

INFO_HASH = InfoHash(hashlib.sha1(b"torrent").digest())


def test_each_per_peer_message_becomes_its_command() -> None:
    assert command_for(bus.AssignPieces(INFO_HASH, "pa1/1", (3, 4))) == Assign((3, 4))
    assert command_for(bus.CancelPieces(INFO_HASH, "pa1/1", (4,))) == Revoke((4,))
    assert command_for(bus.SetChoke(INFO_HASH, "pa1/1", False)) == SetChoked(False)
    ended = command_for(bus.DisconnectPeer(INFO_HASH, "pa1/1", DisconnectReason.BANNED))
    assert ended == Disconnect(DisconnectReason.BANNED, "the coordinator closed it")


def test_metadata_requests_and_pex_become_their_commands() -> None:
    assert command_for(bus.RequestMetadata(INFO_HASH, "pa1/1", (0, 5))) == FetchMetadata((0, 5))
    a, b = PeerAddress("10.0.0.1", 6881), PeerAddress("::1", 7)
    sent = command_for(
        bus.SendPex(INFO_HASH, "pa1/1", (bus.PexPeer(a, 2), bus.PexPeer(b, 0)), (a,))
    )
    assert sent == OfferPeers(((a, 2), (b, 0)), (a,))
