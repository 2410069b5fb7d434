"""How ``status`` shows a torrent's announces: one line each, the fix when nobody listens
behind one, and the same in ``--json``."""

from __future__ import annotations

import dataclasses

from torviz.services.coordinator.cli.status_json import torrent_json as _as_json
from torviz.services.coordinator.cli.status_text import torrent_text as _as_text
from torviz.shared.bus import (
    AnnounceStatus,
    TorrentState,
    TorrentStatus,
    TrackerState,
    TrackerStatus,
)
from torviz.shared.types import InfoHash

URL = "http://10.0.0.4:6969/announce"
WORKING = TrackerStatus(URL, 0, TrackerState.WORKING, None, 3, 2, None, 1700.0)
FAILED = TrackerStatus(URL, 0, TrackerState.FAILED, "timed out", None, None, None, 30.0)
PAIRED = (
    AnnounceStatus("tracker-2", "10.0.0.2", 6882, "peer-2", True, (WORKING,)),
    AnnounceStatus("tracker-3", "fd00::3", 6883, "peer-3", False, (FAILED,)),
)
TORRENT = TorrentStatus(
    *(InfoHash(b"\x11" * 20), "f.bin", TorrentState.SEEDING, 1.0, 10, 0, 0, 0.0, 0.0, 0, 0),
    *(1, 1, "/d", None, (WORKING,), (), None, PAIRED, True),
)


def test_each_announce_is_one_line() -> None:
    lines = [line for line in _as_text(TORRENT).splitlines() if line.startswith("  announce")]
    assert lines == [
        "  announce   10.0.0.2:6882          by tracker-2, peer agent peer-2, 1/1 trackers working",
        "  announce   [fd00::3]:6883         by tracker-3, peer agent peer-3, 0/1 trackers working",
    ]
    assert "hint" not in _as_text(TORRENT)


def test_an_announce_nobody_listens_behind_says_how_to_fix_it() -> None:
    alone = AnnounceStatus("tracker-1", "10.0.0.1", 6882, "", True, ())
    text = _as_text(dataclasses.replace(TORRENT, announces=(alone,), reachable=False))
    assert "  announce   10.0.0.1:6882          by tracker-1, no peer agent" in text.splitlines()
    assert (
        "  hint       peers from trackers reach 10.0.0.1:6882 only if a peer agent listens "
        "there: run a tracker agent on each peer agent's host"
    ) in text.splitlines()


def test_json_names_each_announce_address_and_its_trackers() -> None:
    document = _as_json(TORRENT)
    assert document["reachable"] is True
    first, second = document["announces"]
    assert first == {
        "tracker_agent": "tracker-2",
        "address": "10.0.0.2:6882",
        "port": 6882,
        "peer_agent": "peer-2",
        "reports_totals": True,
        "trackers": [dict(document["trackers"][0])],
    }
    assert second["address"] == "[fd00::3]:6883" and second["reports_totals"] is False
    assert second["trackers"][0]["state"] == "failed"
    assert second["trackers"][0]["last_error"] == "timed out"
    unknown = AnnounceStatus("tracker-1", "", 6881, "", True, ())
    [row] = _as_json(dataclasses.replace(TORRENT, announces=(unknown,)))["announces"]
    assert (row["address"], row["peer_agent"]) == ("", None)
