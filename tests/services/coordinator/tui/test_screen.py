"""The screen writes only the lines that changed, everything after a resize, and maps styles
to colours or, without colours, to bold and reverse."""

from __future__ import annotations

import io

import blessed
from blessed.keyboard import resolve_sequence

from torviz.services.coordinator.tui.lines import Line, Style
from torviz.services.coordinator.tui.screen import Screen, key_names


class _Sized(Screen):
    """A screen whose size the test sets."""

    def __init__(self, term: blessed.Terminal, size: tuple[int, int]) -> None:
        super().__init__(term)
        self.fixed = size

    @property
    def size(self) -> tuple[int, int]:
        return self.fixed


def _screen(kind: str = "xterm-256color") -> tuple[_Sized, io.StringIO]:
    out = io.StringIO()
    term = blessed.Terminal(kind=kind, stream=out, force_styling=True)
    return _Sized(term, (10, 3)), out


def _frame(*texts: str) -> list[Line]:
    return [((text, Style.NORMAL),) for text in texts]


def test_an_unchanged_frame_writes_nothing_and_a_changed_line_only_itself() -> None:
    screen, out = _screen()
    screen.draw(_frame("one", "two", "three"))
    first = out.getvalue()
    assert all(text in first for text in ("one", "two", "three"))
    out.truncate(0)
    out.seek(0)
    screen.draw(_frame("one", "two", "three"))
    assert out.getvalue() == ""
    screen.draw(_frame("one", "TWO", "three"))
    written = out.getvalue()
    assert "TWO" in written and "one" not in written and "three" not in written
    assert screen.term.move_xy(0, 1) in written


def test_a_new_size_redraws_everything() -> None:
    screen, out = _screen()
    screen.draw(_frame("one", "two", "three"))
    out.truncate(0)
    out.seek(0)
    screen.fixed = (20, 3)
    assert screen.changed_size()
    screen.draw(_frame("one", "two", "three"))
    written = out.getvalue()
    assert all(text in written for text in ("one", "two", "three"))
    assert str(screen.term.clear) in written
    assert not screen.changed_size()


def test_styles_are_colours_or_bold_and_reverse_without_colours() -> None:
    screen, out = _screen()
    screen.draw([(("bad", Style.BAD), ("sel", Style.SELECTED))])
    written = out.getvalue()
    assert str(screen.term.red) + "bad" in written
    assert str(screen.term.reverse) + "sel" in written
    plain, out = _screen("vt100")
    assert plain.term.number_of_colors < 8
    plain.draw([(("bad", Style.BAD),)])
    assert str(plain.term.bold) + "bad" in out.getvalue()


def test_key_names() -> None:
    term = blessed.Terminal(kind="xterm-256color", stream=io.StringIO(), force_styling=True)
    keymap, codes = term._keymap, term._keycodes

    def names(sequence: str) -> list[str]:
        return key_names(resolve_sequence(sequence, keymap, codes))

    assert names("q") == ["q"]
    assert names(" ") == [" "]
    assert names("\x1b[A") == ["KEY_UP"]
    assert names("\r") == ["KEY_ENTER"]
    assert names("\t") == ["KEY_TAB"]
    assert names("\x1b[1;2A") == ["KEY_SHIFT_UP"]
    assert names("\x1bq") == ["KEY_ESCAPE", "q"]  # Esc then q, typed quickly
    assert names("\x1b") == ["KEY_ESCAPE"]
