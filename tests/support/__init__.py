"""Real-peer test fixtures: opentracker and libtorrent peers as processes on loopback.

See `swarm.py` for the process plumbing and the `Swarm` API, `opentracker.py` for the tracker,
`lt_peer.py` for the libtorrent peer script and `content.py` for deterministic content and
.torrent files. Tests reach these through the `swarm` fixture in `tests/conftest.py`.
"""

from tests.support.content import (
    ContentSpec,
    FileSpec,
    Layout,
    TorrentFile,
    compare_content,
    files_identical,
    make_content,
    make_torrent,
    multi_file_layout,
    single_file_layout,
)
from tests.support.lt_peer import PeerConfigError
from tests.support.opentracker import (
    InfoHashLike,
    OpenTracker,
    announce_probe,
    listener_count,
    start_opentracker,
)
from tests.support.swarm import (
    LtPeer,
    LtPeerConfig,
    ManagedProcess,
    PeerStatus,
    Swarm,
    SwarmError,
    free_port,
    kill_leftovers,
    missing_interop_tools,
    next_loopback_address,
    process_exists,
)

__all__ = [
    "ContentSpec",
    "FileSpec",
    "InfoHashLike",
    "Layout",
    "LtPeer",
    "LtPeerConfig",
    "ManagedProcess",
    "OpenTracker",
    "PeerConfigError",
    "PeerStatus",
    "Swarm",
    "SwarmError",
    "TorrentFile",
    "announce_probe",
    "compare_content",
    "files_identical",
    "free_port",
    "kill_leftovers",
    "listener_count",
    "make_content",
    "make_torrent",
    "missing_interop_tools",
    "multi_file_layout",
    "next_loopback_address",
    "process_exists",
    "single_file_layout",
    "start_opentracker",
]
