"""Keys: what a key press does to the view model, and the command it asks of the daemon.

Strategy: ``handle_key(model, key)`` changes the view model in place (mode, selection, prompt,
scrolling) and returns a ``Command`` for the app to run, or ``None``. A key is a string: one
character as typed, or blessed's name of a special key (``KEY_UP``, ``KEY_ENTER`` ...), so this
module needs no terminal. Tab completion is a function passed in (``completion.complete_path``
in the app), so the file system stays out of this module too.

Rules: pure. The list: ``q``/Esc quit; every other mode: Esc goes back to the list. A
destructive command (remove, remove with data, shut down) only follows ``y`` on its question.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torviz.shared.bus import TorrentState
from torviz.shared.types import InfoHash

from .view_model import Confirm, ConfirmKind, Mode, Prompt, ViewModel

__all__ = [
    "Add",
    "Command",
    "FindSavePath",
    "OpenDetail",
    "Pause",
    "Quit",
    "Remove",
    "Resume",
    "Shutdown",
    "Verify",
    "handle_key",
]

UP = ("k", "KEY_UP")
DOWN = ("j", "KEY_DOWN")
ESC = "KEY_ESCAPE"
ENTER = "KEY_ENTER"
LOG_BACK = ("[", "<", "KEY_SHIFT_UP", "KEY_SR")
LOG_FORWARD = ("]", ">", "KEY_SHIFT_DOWN", "KEY_SF")
LOG_STEP = 3


@dataclass(frozen=True, slots=True)
class Pause:
    info_hash: InfoHash


@dataclass(frozen=True, slots=True)
class Resume:
    info_hash: InfoHash


@dataclass(frozen=True, slots=True)
class Verify:
    info_hash: InfoHash


@dataclass(frozen=True, slots=True)
class Remove:
    info_hash: InfoHash
    delete_files: bool


@dataclass(frozen=True, slots=True)
class Add:
    text: str
    """A magnet link or a .torrent path, as typed."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class OpenDetail:
    info_hash: InfoHash


@dataclass(frozen=True, slots=True)
class FindSavePath:
    """Look up where the torrent's data is, for the question before deleting it."""

    info_hash: InfoHash


Command = Pause | Resume | Verify | Remove | Add | Shutdown | Quit | OpenDetail | FindSavePath
Completer = Callable[[str], str]


def _no_completion(text: str) -> str:
    return text


def handle_key(model: ViewModel, key: str, complete: Completer = _no_completion) -> Command | None:
    """Apply ``key`` to ``model``.

    Args:
        model: changed in place (``dirty`` set when the screen must be redrawn).
        key: one character, or a blessed key name such as ``KEY_UP``.
        complete: the prompt's Tab: text -> text completed.

    Returns:
        The command to run, or ``None``.
    """
    mode = model.mode
    if mode is Mode.PROMPT:
        command = _prompt_key(model, key, complete)
    elif mode is Mode.CONFIRM:
        command = _confirm_key(model, key)
    elif mode is Mode.HELP:
        command = _back(model) if key in (ESC, "?", "q") else None
    elif mode is Mode.AGENTS:
        command = _back(model) if key in (ESC, "A", "q") else None
        _scroll_key(model, key)
    elif mode is Mode.DETAIL:
        command = _detail_key(model, key)
    else:
        command = _list_key(model, key)
    model.dirty = True
    return command


def _back(model: ViewModel) -> Command | None:
    """Back to the list (no command)."""
    model.mode = Mode.LIST
    model.confirm = None
    return None


def _list_key(model: ViewModel, key: str) -> Command | None:
    if key in ("q", ESC):
        return Quit()
    if _log_key(model, key) or _move_key(model, key):
        return None
    if key in ("+", "a"):
        model.mode, model.prompt = Mode.PROMPT, Prompt()
        return None
    if key == "?":
        model.mode = Mode.HELP
        return None
    if key == "A":
        model.mode, model.detail_scroll = Mode.AGENTS, 0
        return None
    if key == "S":
        model.mode, model.confirm = Mode.CONFIRM, Confirm(ConfirmKind.SHUTDOWN)
        return None
    return _torrent_key(model, key)


def _torrent_key(model: ViewModel, key: str) -> Command | None:
    """Keys about the selected torrent (list and detail view)."""
    row = model.selected_row()
    if row is None:
        return None
    if key == " ":
        if row.state in (TorrentState.PAUSED, TorrentState.STOPPED, TorrentState.ERROR):
            return Resume(row.info_hash)
        return Pause(row.info_hash)
    if key == "v":
        return Verify(row.info_hash)
    if key in ("d", "D"):
        kind = ConfirmKind.REMOVE if key == "d" else ConfirmKind.REMOVE_DATA
        path = ""
        if kind is ConfirmKind.REMOVE_DATA:
            path = _data_path(model, row.info_hash, row.name)
        model.mode = Mode.CONFIRM
        model.confirm = Confirm(kind, row.info_hash, row.name, path)
        return FindSavePath(row.info_hash) if kind is ConfirmKind.REMOVE_DATA else None
    if key == ENTER and model.mode is Mode.LIST:
        model.mode, model.detail_hash, model.detail_scroll = Mode.DETAIL, row.info_hash, 0
        if model.detail is not None and model.detail.info_hash != row.info_hash:
            model.detail = None
        return OpenDetail(row.info_hash)
    return None


def _data_path(model: ViewModel, info_hash: InfoHash, name: str) -> str:
    """What removing with data deletes: save path / name (the save path from the detail)."""
    detail = model.detail
    if detail is not None and detail.info_hash == info_hash and detail.save_path:
        return detail.save_path.rstrip("/") + "/" + detail.name
    return name


def _move_key(model: ViewModel, key: str) -> bool:
    steps = {
        "KEY_PGUP": -model.page_rows,
        "KEY_PGDOWN": model.page_rows,
        "KEY_HOME": -len(model.order),
        "KEY_END": len(model.order),
    }
    if key in UP:
        model.move(-1)
    elif key in DOWN:
        model.move(1)
    elif key in steps:
        model.move(steps[key])
    else:
        return False
    return True


def _log_key(model: ViewModel, key: str) -> bool:
    if key in LOG_BACK:
        model.log_scroll = min(model.log_scroll + LOG_STEP, max(0, len(model.log) - 1))
    elif key in LOG_FORWARD:
        model.log_scroll = max(0, model.log_scroll - LOG_STEP)
    else:
        return False
    return True


def _scroll_key(model: ViewModel, key: str) -> None:
    """j/k, PgUp/PgDn and Home scroll a page (the detail's cut sections, the agents)."""
    steps = {"KEY_PGUP": -10, "KEY_PGDOWN": 10, "KEY_HOME": -(10**9)}
    steps |= dict.fromkeys(UP, -1) | dict.fromkeys(DOWN, 1)
    if key in steps:
        model.detail_scroll = max(0, min(model.detail_scroll + steps[key], _scroll_limit(model)))


def _scroll_limit(model: ViewModel) -> int:
    """How far a page can scroll: its longest list (then every list shows its end)."""
    if model.mode is Mode.AGENTS:
        return len(model.agents)
    detail = model.detail
    if detail is None:
        return 0
    files = len(detail.detail.files) if detail.detail is not None else 0
    return max(files, len(detail.trackers), len(detail.peer_list))


def _detail_key(model: ViewModel, key: str) -> Command | None:
    if key in (ESC, "q"):
        model.mode = Mode.LIST
        return None
    if key in (*UP, *DOWN, "KEY_PGUP", "KEY_PGDOWN", "KEY_HOME"):
        _scroll_key(model, key)
    elif key == "?":
        model.mode = Mode.HELP
    else:
        command = _torrent_key(model, key)
        if isinstance(command, Verify | Pause | Resume | FindSavePath):
            return command
    return None


def _confirm_key(model: ViewModel, key: str) -> Command | None:
    confirm = model.confirm
    if key in ("n", "N", ESC, "q") or confirm is None:
        return _back(model)
    if key not in ("y", "Y"):
        return None
    model.mode, model.confirm = Mode.LIST, None
    if confirm.kind is ConfirmKind.SHUTDOWN:
        return Shutdown()
    assert confirm.info_hash is not None
    return Remove(confirm.info_hash, confirm.kind is ConfirmKind.REMOVE_DATA)


def _prompt_key(model: ViewModel, key: str, complete: Completer) -> Command | None:
    prompt = model.prompt
    text, cursor = prompt.text, prompt.cursor
    if key == ESC:
        model.mode = Mode.LIST
        return None
    if key == ENTER:
        if not text.strip():
            model.mode = Mode.LIST
            return None
        return Add(text.strip())
    if key == "KEY_BACKSPACE":
        if cursor:
            text, cursor = text[: cursor - 1] + text[cursor:], cursor - 1
    elif key == "KEY_DELETE":
        text = text[:cursor] + text[cursor + 1 :]
    elif key == "KEY_LEFT":
        cursor = max(0, cursor - 1)
    elif key == "KEY_RIGHT":
        cursor = min(len(text), cursor + 1)
    elif key == "KEY_HOME":
        cursor = 0
    elif key == "KEY_END":
        cursor = len(text)
    elif key == "KEY_TAB":
        if cursor == len(text):
            text = complete(text)
            cursor = len(text)
    elif key.isprintable() and not key.startswith("KEY_"):  # typed, or a paste
        text, cursor = text[:cursor] + key + text[cursor:], cursor + len(key)
    else:
        return None
    if text != prompt.text:
        prompt.error = ""
    prompt.text, prompt.cursor = text, cursor
    return None
