"""The detail view of a torrent with web seeds: a ``Web seeds`` section (URL, state, bytes,
bad pieces, why) between the trackers and the peers, and a web seed among the peers shown by
its URL (clipped) with its retry state where a peer shows its client. A torrent without web
seeds keeps its four sections."""

from __future__ import annotations

import dataclasses

import pytest

from torviz.services.coordinator.tui.lines import Style
from torviz.services.coordinator.tui.render import render
from torviz.services.coordinator.tui.view_model import Mode, ViewModel
from torviz.shared.bus import (
    PeerSource,
    PeerStatus,
    TorrentStatus,
    WebSeedReport,
    WebSeedRow,
    WebSeedState,
    WebSeedUrlState,
)

from .records import assert_frame, changes, ih, row, status, texts

SIZES = [(80, 24), (120, 30), (200, 60)]
LONG = "http://mirror.example.com/pub/linux/releases/"
BACKING_OFF = WebSeedReport(WebSeedState.BACKING_OFF, 2, 12.0, "HTTP 503 Service Unavailable", 0, 0)
SEED_PEER = PeerStatus(
    address=None,
    client="web seed",
    flags="D",
    download_rate=1024.0,
    upload_rate=0.0,
    downloaded=5,
    uploaded=0,
    progress=1.0,
    source=PeerSource.WEB_SEED,
    agent="peer-1",
    host="alpha",
    url=LONG,
    web_seed=BACKING_OFF,
)
ROWS = (
    WebSeedRow(LONG, WebSeedUrlState.CONNECTED, "", 12 << 20, 0),
    WebSeedRow("http://bad.example/", WebSeedUrlState.BANNED, "sent corrupt data", 3 << 20, 3),
)


def _model(torrent: TorrentStatus) -> ViewModel:
    model = ViewModel()
    model.apply(changes(row("movie"), complete=True), 0.0)
    model.mode, model.detail_hash = Mode.DETAIL, ih("movie")
    model.set_detail(torrent)
    return model


def _with_seeds(**kwargs: object) -> TorrentStatus:
    base = status(**kwargs)  # type: ignore[arg-type]
    return dataclasses.replace(base, peer_list=(*base.peer_list, SEED_PEER), web_seeds=ROWS)


def _headings(screen: list[str]) -> list[str]:
    return [t.split(" (")[0] for t in screen if t[:1].isupper() and " (" in t]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_the_web_seeds_section_and_a_web_seed_peer(width: int, height: int) -> None:
    lines = render(_model(_with_seeds()), width, height)
    assert_frame(lines, width, height)
    screen = texts(lines)
    assert _headings(screen) == ["Files", "Trackers", "Web seeds", "Peers", "Pieces"]
    assert any(t.startswith("Web seeds (2)") for t in screen)
    start = next(i for i, t in enumerate(screen) if t.startswith("Web seeds"))
    first, second = screen[start + 1], screen[start + 2]
    assert "connected" in first and "12.0 MiB" in first
    assert "banned" in second and "3.0 MiB" in second and "3 bad pieces" in second
    # one URL column: the states line up
    assert first.index("connected") == second.index("banned")
    if width >= 120:
        assert LONG in first and "sent corrupt data" in second
    else:
        assert "http://mirror.example.com/pub/" in first and "…" in first
    [peer] = [t for t in screen if "peer-1@alpha" in t and "http://" in t]
    assert "http://mirror.exampl…" in peer  # the URL, clipped to the address column
    assert "backing off" in peer and "1.0 KiB/s" in peer
    if width >= 120:
        assert "backing off, retry in 12 s (2 failed): HTTP 5" in peer
    assert "None" not in "\n".join(screen)


def test_the_web_seed_states_have_their_colours() -> None:
    lines = render(_model(_with_seeds()), 120, 30)
    screen = texts(lines)
    start = next(i for i, t in enumerate(screen) if t.startswith("Web seeds"))
    styles = [dict((text.strip(), style) for text, style in lines[start + i]) for i in (1, 2)]
    assert styles[0]["connected"] is Style.GOOD
    assert styles[1]["banned"] is Style.BAD


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_a_torrent_without_web_seeds_keeps_its_four_sections(width: int, height: int) -> None:
    lines = render(_model(status()), width, height)
    assert_frame(lines, width, height)
    screen = texts(lines)
    assert _headings(screen) == ["Files", "Trackers", "Peers", "Pieces"]
    assert not any("Web seeds" in t for t in screen)


def test_many_web_seeds_and_peers_are_cut_and_scroll_together() -> None:
    many = tuple(
        WebSeedRow(f"http://m{i:02d}.example/", WebSeedUrlState.WAITING, "", 0, 0)
        for i in range(40)
    )
    model = _model(dataclasses.replace(_with_seeds(peers=30), web_seeds=many))
    lines = render(model, 80, 24)
    assert_frame(lines, 80, 24)
    screen = texts(lines)
    assert _headings(screen) == ["Files", "Trackers", "Web seeds", "Peers", "Pieces"]
    assert any("of 40 (j/k scroll)" in t for t in screen)
    assert any("m00.example" in t for t in screen)
    model.detail_scroll = 3
    screen = texts(render(model, 80, 24))
    assert not any("m00.example" in t for t in screen)
    assert any("m03.example" in t for t in screen)


def test_hostile_web_seed_texts_are_escaped() -> None:
    hostile = WebSeedRow("http://x.example/\x1b[2J", WebSeedUrlState.GIVEN_UP, "bad\x07", 0, 0)
    peer = dataclasses.replace(
        SEED_PEER,
        url="http://x.example/\x9b",
        web_seed=dataclasses.replace(BACKING_OFF, last_error="\x1b]0;t"),
    )
    torrent = dataclasses.replace(status(peers=0), peer_list=(peer,), web_seeds=(hostile,))
    for width, height in SIZES:
        lines = render(_model(torrent), width, height)
        assert_frame(lines, width, height)
        screen = "\n".join(texts(lines))
        assert "\x1b" not in screen and "\x9b" not in screen and "\x07" not in screen
        assert "http://x.example/\\x1b[2J" in screen and "bad\\x07" in screen
