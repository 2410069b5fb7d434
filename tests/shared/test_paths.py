"""Path sanitising: every hostile component refused with its reason; joins stay inside."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.errors import MetainfoError
from torviz.shared.paths import check_component, resolve_inside, safe_relative_path

BAD_COMPONENTS = [
    ("a\x00b", "nul_in_path"),
    ("\x00", "nul_in_path"),
    ("", "empty_path_component"),
    (".", "dot_component"),
    ("..", "path_traversal"),
    ("a/../b", "path_traversal"),
    ("..\\x", "path_traversal"),
    ("a\\..", "path_traversal"),
    ("/", "absolute_path"),
    ("/etc", "absolute_path"),
    ("\\windows", "absolute_path"),
    ("\\\\server\\share", "absolute_path"),
    ("C:", "absolute_path"),
    ("c:evil.exe", "absolute_path"),
    ("C:\\x", "absolute_path"),
    ("a/b", "separator_in_component"),
    ("a\\b", "separator_in_component"),
    ("a/", "separator_in_component"),
    ("./a", "separator_in_component"),
    ("x" * 256, "path_component_too_long"),
    ("\u00e9" * 128, "path_component_too_long"),
]

GOOD_COMPONENTS = [
    "file.txt",
    "...",
    "..a",
    "a..",
    ".hidden",
    ".pad",
    " spaced ",
    "caf\u00e9",
    "\u65e5\u672c\u8a9e",
    "ab:c",
    "CON",
    "x" * 255,
    "\u00e9" * 127 + "x",
]


@pytest.mark.parametrize(("component", "reason"), BAD_COMPONENTS)
def test_bad_component(component: str, reason: str) -> None:
    with pytest.raises(MetainfoError) as info:
        check_component(component)
    assert info.value.reason == reason
    # Wherever it appears, the same component gets the same reason.
    for name, components in ((component, ["ok"]), ("name", [component]), ("n", ["a", component])):
        with pytest.raises(MetainfoError) as info:
            safe_relative_path(name, components)
        assert info.value.reason == reason


@pytest.mark.parametrize("component", GOOD_COMPONENTS)
def test_good_component(component: str) -> None:
    assert check_component(component) == component


def test_single_file_path_is_the_name() -> None:
    assert safe_relative_path("movie.mkv", None) == ("movie.mkv",)


def test_multi_file_path_starts_with_the_name() -> None:
    assert safe_relative_path("album", ["cd1", "01.flac"]) == ("album", "cd1", "01.flac")


def test_path_depth_is_bounded_before_components_are_checked() -> None:
    components = ["d"] * 63 + ["f"]
    assert safe_relative_path("n", components) == ("n", *components)
    for bad_tail in (["f"], [".."], [""]):
        with pytest.raises(MetainfoError) as info:
            safe_relative_path("n", components + bad_tail)
        assert info.value.reason == "path_too_deep"
        assert str(info.value) == "a file's path has 65 components, the limit is 64"
    assert len(safe_relative_path("n", [*components, "g"], max_depth=65)) == 66


def test_empty_path_list() -> None:
    with pytest.raises(MetainfoError) as info:
        safe_relative_path("album", [])
    assert info.value.reason == "empty_path"


def test_resolve_inside() -> None:
    assert resolve_inside("/downloads", ("album", "a.txt")) == "/downloads/album/a.txt"
    assert resolve_inside("/downloads/", ("a",)) == "/downloads/a"
    assert resolve_inside("dl", ("a", "b")) == os.path.join("dl", "a", "b")
    assert resolve_inside(".", ("a",)) == "a"
    assert resolve_inside("/", ("a",)) == "/a"


@pytest.mark.parametrize(
    ("base", "components"),
    [
        ("/downloads", ("..", "etc")),
        ("/downloads", ("a", "..", "..", "etc")),
        ("/downloads", ("/etc/passwd",)),
        ("/downloads", ("..", "downloads2", "x")),  # a sibling sharing the prefix
        ("/downloads", ()),
        ("/downloads", (".",)),
        ("/downloads", ("a", "..")),
        ("/downloads", ("a\x00b",)),
        (".", ("..", "x")),
        (".", ("/abs",)),
        (".", ()),
    ],
)
def test_resolve_inside_refuses_escapes(base: str, components: tuple[str, ...]) -> None:
    with pytest.raises(MetainfoError) as info:
        resolve_inside(base, components)
    assert info.value.reason == "path_escapes_download_dir"


@given(st.lists(st.text(alphabet="ab./\\\x00:C", max_size=6), max_size=4))
def test_sanitised_paths_always_resolve_inside(components: list[str]) -> None:
    try:
        path = safe_relative_path("torrent", components)
    except MetainfoError:
        return
    joined = resolve_inside("/downloads", path)
    assert joined.startswith("/downloads/torrent")
