"""Tab completion of a path on a real folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from torviz.services.coordinator.tui.completion import complete_path, matches


def _tree(tmp_path: Path) -> Path:
    (tmp_path / "movies").mkdir()
    (tmp_path / "movies" / "one.torrent").write_bytes(b"d")
    (tmp_path / "music.torrent").write_bytes(b"d")
    (tmp_path / "music-live.torrent").write_bytes(b"d")
    (tmp_path / "books").mkdir()
    (tmp_path / ".hidden").write_bytes(b"d")
    return tmp_path


def test_a_single_folder_match_gets_its_slash(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert complete_path(f"{root}/mov") == f"{root}/movies/"
    assert complete_path(f"{root}/movies/") == f"{root}/movies/one.torrent"


def test_several_matches_complete_to_their_longest_common_prefix(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert complete_path(f"{root}/mu") == f"{root}/music"
    assert matches(f"{root}/mu") == ["music-live.torrent", "music.torrent"]
    assert complete_path(f"{root}/m") == f"{root}/m"  # movies/ and music*: nothing more shared


def test_no_match_and_unreadable_folders_leave_the_text(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert complete_path(f"{root}/zzz") == f"{root}/zzz"
    assert complete_path(f"{root}/nothere/x") == f"{root}/nothere/x"
    assert complete_path(f"{root}/music.torrent/x") == f"{root}/music.torrent/x"


def test_hidden_entries_only_when_asked_for(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    assert ".hidden" not in matches(f"{root}/")
    assert complete_path(f"{root}/.h") == f"{root}/.hidden"


def test_a_relative_path_and_a_magnet_link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _tree(tmp_path)
    monkeypatch.chdir(root)
    assert complete_path("boo") == "books/"
    assert complete_path("magnet:?xt=urn:btih:ab") == "magnet:?xt=urn:btih:ab"


def test_home_is_expanded_for_the_lookup_and_kept_in_the_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(_tree(tmp_path)))
    assert complete_path("~/boo") == "~/books/"
