"""The detail view (files, trackers, peers, the piece map and its legend), help and agents."""

from __future__ import annotations

import dataclasses

import pytest

from torviz.services.coordinator.tui.lines import ORIGIN_STYLES, Style
from torviz.services.coordinator.tui.pieces import legend, map_cells
from torviz.services.coordinator.tui.render import render
from torviz.services.coordinator.tui.render_detail import share_rows
from torviz.services.coordinator.tui.view_model import Mode, ViewModel
from torviz.shared.bus import FileStatus, PieceMap, PieceOrigin, ServiceKind

from .records import ORIGINS, agent, assert_frame, changes, ih, row, status, texts

SIZES = [(80, 24), (200, 60)]


def _detail(**kwargs: object) -> ViewModel:
    model = ViewModel()
    model.apply(changes(row("movie"), complete=True), 0.0)
    model.mode, model.detail_hash = Mode.DETAIL, ih("movie")
    model.set_detail(status(**kwargs))  # type: ignore[arg-type]
    return model


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_the_detail_shows_every_section(width: int, height: int) -> None:
    lines = render(_detail(), width, height)
    assert_frame(lines, width, height)
    screen = texts(lines)
    assert screen[0].startswith("movie")
    assert "downloading · 50.0% · 2.1 KiB" in screen[1]
    assert "Saved in /srv/dl" in screen[2]
    for heading in ("Files (2)", "Trackers (1)", "Peers (2)", "Pieces (3 of 6 verified)"):
        assert any(text.startswith(heading) for text in screen), heading
    assert any("movie/a.mkv" in t and "50.0%" in t for t in screen)
    assert any("movie/b.srt" in t and "100.0%" in t for t in screen)
    assert any("http://tracker.example/announce working 5 seeders 7 leechers" in t for t in screen)
    peer = next(t for t in screen if "10.0.0.9:6881" in t)
    assert "qBittorrent 4.6" in peer and "peer-1@alpha" in peer
    assert ("tracker" in peer) == (width >= 100)  # where the address came from: when wide
    assert "4.0 KiB/s" in peer
    assert any(t.startswith(".>?#ab ") for t in screen)
    assert screen[-1].endswith("? help")


def test_the_legend_names_each_host_by_its_letter_and_colour() -> None:
    pieces = PieceMap(bytes([4, 5, 6]), (*ORIGINS, PieceOrigin("peer-3", "alpha")))
    line = legend(pieces, 200)
    text = "".join(t for t, _ in line)
    assert ". missing" in text and "> downloading" in text and "# have" in text
    assert "a alpha" in text and "b beta" in text
    assert text.count("alpha") == 1  # two agents on one host: one letter
    cells = map_cells(pieces, 10)
    assert [c for c, _ in cells] == ["a", "b", "a"]
    assert cells[0][1] is ORIGIN_STYLES[0] and cells[1][1] is ORIGIN_STYLES[1]
    assert cells[2][1] is ORIGIN_STYLES[0]


def test_hostile_hosts_are_escaped_in_the_legend() -> None:
    pieces = PieceMap(bytes([4]), (PieceOrigin("p", "h\x1b[31m"),))
    text = "".join(t for t, _ in legend(pieces, 200))
    assert "\x1b" not in text and "h\\x1b[31m" in text


def test_many_pieces_are_grouped_least_done_first_then_by_most_origins() -> None:
    cells = bytes([3, 3, 0, 3]) + bytes([4, 4, 5, 3]) + bytes([3, 1, 2, 3]) + bytes([2, 3, 3, 3])
    looks = map_cells(PieceMap(cells, ORIGINS), 4)
    assert [c for c, _ in looks] == [".", "a", ">", "?"]
    assert [c for c, _ in map_cells(PieceMap(bytes([5] * 1000 + [99]), ORIGINS), 3)] == [
        "b",
        "b",
        "b",
    ]
    big = PieceMap(bytes([3]) * 2**21, ())
    assert len(map_cells(big, 1000)) <= 1000


def test_an_origin_past_the_list_counts_as_have() -> None:
    looks = map_cells(PieceMap(bytes([4, 9]), ORIGINS[:1]), 10)
    assert [c for c, _ in looks] == ["a", "#"]
    assert looks[1][1] is Style.GOOD


def test_the_map_fills_lines_of_the_width() -> None:
    model = _detail(cells=bytes([3]) * 500)
    screen = texts(render(model, 80, 24))
    map_rows = [t for t in screen if set(t.strip()) == {"#"}]
    assert map_rows and all(len(t.rstrip()) <= 80 for t in map_rows)
    assert sum(len(t.strip()) for t in map_rows) <= 500


def test_long_sections_are_cut_keep_their_headings_and_scroll() -> None:
    files = tuple(FileStatus(f"movie/part{i:03d}.bin", 100, 0) for i in range(200))
    model = _detail(files=files, peers=50)
    screen = texts(render(model, 80, 24))
    for heading in ("Files (200)", "Trackers (1)", "Peers (50)", "Pieces"):
        assert any(t.startswith(heading) for t in screen), heading
    assert any("rows 1-" in t and "of 200" in t for t in screen)
    assert any("part000" in t for t in screen)
    model.detail_scroll = 5
    screen = texts(render(model, 80, 24))
    assert not any("part000" in t for t in screen)
    assert any("part005" in t for t in screen)


def test_a_magnet_without_metadata_has_no_map_yet() -> None:
    model = _detail(cells=b"", files=())
    screen = texts(render(model, 80, 24))
    assert any("no piece map yet" in t for t in screen)
    assert any(t.startswith("Files (0)") for t in screen)


def test_the_detail_waits_for_its_torrent() -> None:
    model = _detail()
    model.detail = None
    screen = texts(render(model, 80, 24))
    assert screen[0].startswith("Loading movie")


def test_hostile_detail_texts_are_escaped() -> None:
    hostile = dataclasses.replace(
        status(files=(FileStatus("a\x1b[2Jb", 1, 0),)), name="n\x9bame", error="bad\x07"
    )
    model = _detail()
    model.set_detail(hostile)
    for width, height in SIZES:
        lines = render(model, width, height)
        assert_frame(lines, width, height)
        screen = "\n".join(texts(lines))
        assert "\x1b" not in screen and "\x9b" not in screen and "\x07" not in screen
        assert "a\\x1b[2Jb" in screen and "n\\x9bame" in screen and "Error: bad\\x07" in screen


def test_share_rows_gives_short_sections_what_they_need_and_the_rest_to_long_ones() -> None:
    assert share_rows([1, 0, 100], 10) == [1, 0, 9]
    assert share_rows([50, 50, 50], 9) == [3, 3, 3]
    assert share_rows([2, 2], 10) == [2, 2]
    assert share_rows([5, 5], 0) == [0, 0]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_help_lists_every_key(width: int, height: int) -> None:
    model = ViewModel()
    model.mode = Mode.HELP
    lines = render(model, width, height)
    assert_frame(lines, width, height)
    screen = "\n".join(texts(lines))
    assert texts(lines)[0].startswith("torviz: keys")
    for key in ("+ or a", "space", "Enter", " v ", " d ", " D ", " A ", "[ / ]", " S ", "Esc"):
        assert key in screen, key


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_the_agents_view(width: int, height: int) -> None:
    model = ViewModel()
    agents = (
        agent("peer-1", ServiceKind.PEER_AGENT, "alpha"),
        agent("store\x1b", ServiceKind.STORAGE_AGENT, "beta"),
    )
    model.apply(changes(agents=agents), 0.0)
    model.mode = Mode.AGENTS
    lines = render(model, width, height)
    assert_frame(lines, width, height)
    screen = texts(lines)
    assert screen[0].startswith("Agents (2)")
    peer = next(t for t in screen if "peer-1" in t)
    assert peer.startswith("peer ") and "alpha" in peer and "3/200" in peer
    assert ("4242" in peer) == (width >= 100)  # the pid: when wide
    assert "2.00 KiB/s" in peer and "2s ago" in peer
    assert peer.count("B/s") == 2  # down and up, at every width
    assert any("store\\x1b" in t for t in screen)
