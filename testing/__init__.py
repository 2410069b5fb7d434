"""Reference peers and processes on loopback, shared by tests/ and bench/ (not installed).

Strategy: every reference program (opentracker, libtorrent peers, torviz's own services) runs
as a child process on its own 127.0.0.x address, driven through pipes and signals.
`processes.py` holds the process plumbing, `swarm.py` the `Swarm` API, `opentracker.py` the
tracker, `lt_peer.py` the libtorrent peer script and the libtorrent settings every session of
ours uses, `content.py` deterministic content and .torrent files, `hosts.py` and `cluster.py`
simulated hosts (network namespaces) and torviz across them, `peer_agent.py` a peer agent
process with a fake coordinator and storage. Tests reach these through fixtures
(`tests/conftest.py`), benchmarks directly.

Rules:
- Nothing here imports pytest or anything under tests/: bench/ uses it without the test tree.
- Loopback (or simulated hosts) only; every process started here is stopped by its owner.
"""

from testing.content import (
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
from testing.lt_peer import PeerConfigError
from testing.opentracker import (
    InfoHashLike,
    OpenTracker,
    announce_probe,
    listener_count,
    start_opentracker,
)
from testing.processes import ManagedProcess, SwarmError, kill_leftovers, process_exists
from testing.swarm import (
    LtPeer,
    LtPeerConfig,
    PeerStatus,
    Swarm,
    free_port,
    missing_interop_tools,
    next_loopback_address,
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
