"""The main frame: the list, the log, the status line and the bottom line, at 80x24 and 200x60."""

from __future__ import annotations

import dataclasses

import pytest

from torviz.services.coordinator.tui.keys import handle_key
from torviz.services.coordinator.tui.lines import Style
from torviz.services.coordinator.tui.render import list_rows, render
from torviz.services.coordinator.tui.render_list import columns, wrap
from torviz.services.coordinator.tui.text import (
    eta_text,
    percent_text,
    short_rate_text,
    tilde,
    truncate,
)
from torviz.services.coordinator.tui.view_model import Mode, ViewModel
from torviz.shared.bus import EventLevel, MetadataProgress, SessionTotals, TorrentState

from .records import TOTALS, assert_frame, changes, event, row, texts

SIZES = [(80, 24), (200, 60), (100, 30), (99, 30)]


def _session() -> ViewModel:
    model = ViewModel()
    rows = (
        row("ubuntu-24.04.iso", progress=0.456, down=2 * 1024 * 1024, left=3 * 2**20, peers=12),
        row("seeded.bin", TorrentState.SEEDING, 1.0, up=1024.0),
        row("held", TorrentState.PAUSED, 0.1),
        row("broken", TorrentState.ERROR, 0.0, error="disk full"),
        row("checking", TorrentState.CHECKING, 0.0, check=0.25),
        row("from a magnet", TorrentState.METADATA, 0.0),
    )
    events = (event(1, "ubuntu-24.04.iso: added"), event(2, "tracker fails", EventLevel.WARNING))
    model.apply(changes(*rows, complete=True, events=events), 1_000_000.0)
    return model


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_every_size_gives_exact_lines_with_the_rows_and_the_bottom_line(
    width: int, height: int
) -> None:
    model = _session()
    lines = render(model, width, height)
    assert_frame(lines, width, height)
    screen = texts(lines)
    assert "Name" in screen[0] and "Progress" in screen[0]
    assert screen[-1].endswith("· ? help")
    for name, word, percent in (
        ("ubuntu-24.04.iso", "downloading", "45.6%"),
        ("seeded.bin", "seeding", "100.0%"),
        ("held", "paused", "10.0%"),
        ("broken", "error", "0.0%"),
        ("checking", "checking", "25.0%"),
        ("from a magnet", "metadata", "0.0%"),
    ):
        line = next(text for text in screen if name in text)
        assert word in line and percent in line, line
    assert any("Log" in text for text in screen)
    assert any("ubuntu-24.04.iso: added" in text for text in screen)


def test_wide_screens_put_the_log_beside_the_list_and_narrow_ones_under_it() -> None:
    model = _session()
    wide = texts(render(model, 200, 60))
    assert "│Log" in wide[0]
    narrow = texts(render(model, 80, 24))
    assert "Log" not in narrow[0]
    log_title = next(i for i, text in enumerate(narrow) if text.startswith("── Log"))
    assert log_title > 6  # below the six rows


def test_the_bar_rates_peers_and_eta_on_a_wide_list() -> None:
    model = _session()
    line = next(t for t in texts(render(model, 200, 60)) if "ubuntu" in t)
    assert "█" in line and "░" in line
    assert "2.00 MiB/s" in line
    assert " 12 " in line
    assert "2s" in line  # 3 MiB at 2 MiB/s
    seeded = next(t for t in texts(render(model, 200, 60)) if "seeded.bin" in t)
    assert "1.00 KiB/s" in seeded
    assert seeded.split("│")[0].split()[-1] == "-"  # no ETA for a seed


def test_every_column_and_a_bar_fit_from_80_columns_and_beside_the_log_from_120() -> None:
    model = _session()
    for width in (80, 119, 120, 160):
        header = texts(render(model, width, 30))[0]
        assert all(word in header for word in ("Name", "Progress", "Down", "Up", "Peers", "ETA"))
        ubuntu = next(t for t in texts(render(model, width, 30)) if "ubuntu" in t)
        assert "█" in ubuntu, width
        assert ("│" in ubuntu) == (width >= 120)


def test_list_rates_take_at_most_ten_cells() -> None:
    shown = [short_rate_text(rate) for rate in (0, 999, 1000, 868.2 * 1024, 1.234 * 2**20)]
    assert shown == ["0 B/s", "999 B/s", "0.98 KiB/s", "868 KiB/s", "1.23 MiB/s"]
    assert max(len(short_rate_text(r * 1.7)) for r in range(0, 2**40, 2**33)) <= 10


def test_the_selected_row_is_marked_and_styled() -> None:
    model = _session()
    model.select_index(4)  # broken, checking, from a magnet, held, seeded.bin, ubuntu
    lines = render(model, 80, 24)
    marked = [text for text in texts(lines) if text.startswith(">")]
    assert len(marked) == 1 and "seeded.bin" in marked[0]
    selected = next(line for line in lines if line[0][0].startswith(">"))
    assert all(style is Style.SELECTED for text, style in selected if text.strip())


def test_the_bottom_line_counts_and_says_dht_only_when_there_is_one() -> None:
    model = _session()
    last = texts(render(model, 200, 60))[-1]
    assert last.startswith("↓ 1.5 KiB/s ↑ 0 B/s · 2 torrents · 3 peers · 3 agents on 1 host ")
    assert "DHT" not in last
    model.apply(changes(totals=SessionTotals(0.0, 0.0, 1, 1, 1, 2, 57), revision=2), 0.0)
    last = texts(render(model, 200, 60))[-1]
    assert "1 torrent · 1 peer · 1 agent on 2 hosts · DHT 57 nodes" in last
    assert texts(render(model, 30, 10))[-1].endswith("· ? help")
    assert texts(render(ViewModel(), 80, 24))[-1].startswith("connecting")


def test_long_names_are_cut_with_an_ellipsis_and_hostile_names_escaped() -> None:
    model = ViewModel()
    hostile = "evil\x1b[2J\x07name\n" + "x" * 300
    wide = "映画" * 40
    model.apply(changes(row(hostile), row(wide), complete=True), 0.0)
    for width, height in SIZES:
        lines = render(model, width, height)
        assert_frame(lines, width, height)
        screen = "\n".join(texts(lines))
        assert "\x1b" not in screen and "\x07" not in screen
        assert "evil\\x1b[" in screen
        if width >= 200:
            assert "evil\\x1b[2J\\x07name\\x0axxx" in screen
        assert "…" in screen


def test_hostile_log_lines_are_escaped() -> None:
    model = ViewModel()
    model.apply(changes(events=(event(1, "bad \x1b]0;title\x07 peer"),)), 0.0)
    screen = "\n".join(texts(render(model, 120, 30)))
    assert "bad \\x1b]0;title\\x07 peer" in screen


def test_paths_under_the_home_folder_show_as_tilde() -> None:
    model = ViewModel(home="/home/ann/")
    text = "a: added, saved in /home/ann/Downloads (not /home/anna/x)"
    model.apply(changes(events=(event(1, text),)), 0.0)
    screen = "\n".join(texts(render(model, 160, 30)))
    assert "saved in ~/Downloads (not /home/anna/x)" in screen
    assert tilde("/home/ann", "/home/ann") == "~"
    assert tilde("/home/ann/x", "") == tilde("/home/ann/x", "/") == "/home/ann/x"


def test_only_the_rows_in_view_are_shown_and_the_selection_is_among_them() -> None:
    model = ViewModel()
    model.apply(changes(*(row(f"t{i:04d}") for i in range(1000)), complete=True), 0.0)
    model.select_index(500)
    model.fit_list(list_rows(80, 24))
    screen = texts(render(model, 80, 24))
    shown = [t for t in screen if t[1:6].startswith("t")]
    assert len(shown) == list_rows(80, 24)
    assert any(t.startswith(">t0500") for t in shown)


def test_the_log_shows_the_newest_at_the_bottom_and_scrolls_back() -> None:
    model = ViewModel()
    for i in range(100):
        model.add_log(EventLevel.INFO, f"line {i:03d}", 0.0)
    screen = texts(render(model, 120, 30))
    log = [t.split("│", 1)[1] for t in screen[:-2]]
    assert "line 099" in log[-1]
    assert "line 073" in log[1]  # 28 lines: the title and 27 log lines
    model.log_scroll = 10
    log = [t.split("│", 1)[1] for t in texts(render(model, 120, 30))[:-2]]
    assert "line 089" in log[-1]
    assert "scrolled back 10" in log[0]


def test_the_prompt_line_shows_the_text_the_cursor_and_the_error() -> None:
    model = _session()
    handle_key(model, "+")
    for ch in "/tmp/x.torrent":
        handle_key(model, ch)
    lines = render(model, 80, 24)
    assert texts(lines)[-2].startswith("Add (magnet link or .torrent path): /tmp/x.torrent")
    assert any(style is Style.CURSOR for _, style in lines[-2])
    model.prompt.error = "no such file"
    assert "✗ no such file" in texts(render(model, 80, 24))[-2]
    assert texts(render(model, 80, 24))[-1].endswith("? help")


def test_a_long_prompt_keeps_the_cursor_in_view() -> None:
    model = _session()
    handle_key(model, "+")
    handle_key(model, "magnet:?xt=urn:btih:" + "a" * 40 + "&dn=" + "n" * 100 + "END")
    line = render(model, 80, 24)[-2]
    assert "END" in texts([line])[0]
    assert_frame([line], 80, 1)


def test_confirm_lines() -> None:
    model = _session()
    model.select_index(0)
    handle_key(model, "d")
    assert texts(render(model, 80, 24))[-2].startswith("Remove broken? (y/n)")
    handle_key(model, "n")
    handle_key(model, "D")
    assert texts(render(model, 120, 24))[-2].startswith("Remove broken and delete broken? (y/n)")
    handle_key(model, "n")
    handle_key(model, "S")
    assert texts(render(model, 80, 24))[-2].startswith("Shut down the daemon and its agents? (y/n)")


def test_the_status_line_shows_the_last_message() -> None:
    model = _session()
    model.say("daemon not answering: retrying", EventLevel.WARNING)
    lines = render(model, 80, 24)
    assert texts(lines)[-2].startswith("daemon not answering: retrying")
    assert lines[-2][0][1] is Style.WARN


def test_an_empty_session_says_how_to_add() -> None:
    model = ViewModel()
    model.apply(changes(complete=True), 0.0)
    assert any("press + to add" in t for t in texts(render(model, 80, 24)))


@pytest.mark.parametrize(("width", "height"), [(1, 1), (10, 3), (40, 5), (80, 2), (5, 0)])
def test_tiny_screens_still_get_exact_frames(width: int, height: int) -> None:
    model = _session()
    for mode in Mode:
        model.mode = mode
        assert_frame(render(model, width, height), width, height)


def test_eta_percent_and_truncation() -> None:
    assert [eta_text(left, 1.0) for left in (0, 12, 245, 7800, 3 * 86400 + 4 * 3600)] == [
        "-",
        "12s",
        "4m05s",
        "2h10m",
        "3d04h",
    ]
    assert eta_text(100, 0.0) == "-"
    assert percent_text(0.9999) == "99.9%"
    assert percent_text(1.0) == "100.0%"
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("映画映画", 5) == "映画…"
    assert columns(80).name >= 16
    assert TOTALS.torrents == 2


def test_long_log_lines_wrap_under_their_text_and_stop_after_four_lines() -> None:
    model = ViewModel()
    model.add_log(EventLevel.INFO, "w" * 60, 0.0)
    model.add_log(EventLevel.ERROR, "e" * 1000, 0.0)
    log = [t.split("│", 1)[1] for t in texts(render(model, 120, 30))[:-2]]
    width = len(log[0])
    first = next(i for i, t in enumerate(log) if "wwww" in t)
    assert log[first + 1].startswith(" " * 9 + "w")  # the rest of it, under its text
    assert log[-1].rstrip().endswith("…")  # the long one: four lines, then cut
    assert sum("eee" in t for t in log) == 4
    assert all(len(t) == width for t in log)
    assert wrap("abcdef", 4) == ["abcd", "ef"]
    assert wrap("映画映画", 3) == ["映", "画", "映", "画"]


def test_wrap_breaks_after_a_space_near_the_end_and_cuts_long_words() -> None:
    assert wrap("tracker fails: connection refused", 16) == [
        "tracker fails: ",
        "connection ",
        "refused",
    ]
    assert wrap("a " + "x" * 20, 8) == ["a xxxxxx", "xxxxxxxx", "xxxxxx"]


def test_a_magnet_fetching_its_metadata_shows_how_much_came() -> None:
    model = ViewModel()
    fetching = dataclasses.replace(
        row("magnet", TorrentState.METADATA, 0.0), metadata=MetadataProgress(3, 2500, 10000)
    )
    unknown = dataclasses.replace(
        row("other", TorrentState.METADATA, 0.0), metadata=MetadataProgress(1, 0, None)
    )
    model.apply(changes(fetching, unknown, complete=True), 0.0)
    screen = texts(render(model, 80, 24))
    assert "25.0%" in next(t for t in screen if "magnet" in t)
    assert "0.0%" in next(t for t in screen if "other" in t)
