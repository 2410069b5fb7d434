"""``[coordinator] max_path_depth``: how deep a torrent's file paths may go, checked on add."""

from __future__ import annotations

import hashlib

import pytest

from torviz.shared.bencode import encode
from torviz.shared.bus import AddTorrent, ControlFailed, TorrentAdded
from torviz.shared.config import CoordinatorConfig, parse_config
from torviz.shared.errors import ConfigError

from .test_core import new_core


def deep_torrent(depth: int) -> bytes:
    files = [{b"length": 1, b"path": [b"d"] * (depth - 1) + [b"f"]}]
    info = {
        b"name": b"deep",
        b"files": files,
        b"piece length": 16384,
        b"pieces": hashlib.sha1(b"x").digest(),
    }
    return encode({b"info": info})


def test_the_default_refuses_a_path_over_64_and_a_setting_allows_more() -> None:
    refused = new_core().add_torrent(AddTorrent(deep_torrent(65), ""), now=0.0)
    assert isinstance(refused, ControlFailed) and refused.reason == "path_too_deep"
    assert "65" in refused.message and "64" in refused.message
    assert isinstance(new_core().add_torrent(AddTorrent(deep_torrent(64), ""), 0.0), TorrentAdded)
    deeper = new_core(max_path_depth=100).add_torrent(AddTorrent(deep_torrent(100), ""), 0.0)
    assert isinstance(deeper, TorrentAdded)


@pytest.mark.parametrize("value", [0, 1025])
def test_the_setting_is_bounded(value: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[coordinator]\nmax_path_depth = {value}\n")
    assert caught.value.reason == "bad_value" and "max_path_depth" in str(caught.value)
    assert CoordinatorConfig().max_path_depth == 64
