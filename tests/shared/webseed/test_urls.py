"""BEP 19 URL mapping: the BEP's own examples, libtorrent's choices, percent-encoding, refusals."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.errors import TorvizError, WebSeedError
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.webseed import MAX_URL_LENGTH, encode_component, file_url, parse_web_seed_url

_PIECES = b"6:pieces20:" + b"\x00" * 20


def _url(seed: str, path: tuple[str, ...], only_file: bool) -> str:
    return file_url(parse_web_seed_url(seed), path, only_file=only_file)


# --- the BEP's examples, through a real .torrent ------------------------------------------------


def test_bep19_single_file_example() -> None:
    """BEP 19: ``8:url-list26:http://mirror.com/file.exe``: the URL is the file's."""
    data = (
        b"d8:announce27:http://tracker.com/announce8:url-list26:http://mirror.com/file.exe"
        b"4:infod6:lengthi949e4:name8:file.exe12:piece lengthi16384e" + _PIECES + b"ee"
    )
    meta = parse_metainfo(data)
    (seed,) = meta.web_seeds
    entry = meta.info.files[0]
    assert _url(seed, entry.path, only_file=True) == "http://mirror.com/file.exe"


def test_bep19_single_file_folder_gets_the_name() -> None:
    """BEP 19: "If the url-list URL ends in a slash the client must add the name"."""
    assert _url("http://mirror.com/", ("file.exe",), True) == "http://mirror.com/file.exe"


def test_bep19_multi_file_example() -> None:
    """BEP 19's multi-file example: ``http://mirror.com/pub/`` + ``michael`` + ``Readme.txt``."""
    data = (
        b"d8:announce27:http://tracker.com/announce8:url-list22:http://mirror.com/pub/"
        b"4:infod5:filesld6:lengthi949e4:pathl10:Readme.txteee4:name7:michael"
        b"12:piece lengthi16384e" + _PIECES + b"ee"
    )
    meta = parse_metainfo(data)
    (seed,) = meta.web_seeds
    files = meta.info.files
    assert _url(seed, files[0].path, len(files) == 1) == "http://mirror.com/pub/michael/Readme.txt"


def test_multi_file_paths_nest_under_the_name() -> None:
    seed = "http://mirror.com/pub/"
    assert (
        _url(seed, ("michael", "docs", "a.txt"), False)
        == "http://mirror.com/pub/michael/docs/a.txt"
    )


# --- libtorrent's choices where the BEP is silent ---------------------------------------------


def test_multi_file_url_without_slash_gets_one() -> None:
    """libtorrent: "handle incorrect .torrent files which are multi-file but have web seeds not
    ending with a slash"."""
    got = _url("http://mirror.com/pub", ("michael", "Readme.txt"), False)
    assert got == "http://mirror.com/pub/michael/Readme.txt"


def test_files_torrent_with_one_entry_uses_the_url_as_is() -> None:
    """libtorrent counts ``num_files() == 1``: a ``files`` torrent of one file is single-file."""
    got = _url("http://mirror.com/the-file.bin", ("michael", "Readme.txt"), True)
    assert got == "http://mirror.com/the-file.bin"


def test_empty_path_counts_as_a_folder() -> None:
    assert _url("http://mirror.com", ("file.exe",), True) == "http://mirror.com/file.exe"


def test_query_is_kept_after_the_appended_path() -> None:
    got = _url("https://cdn.example/pub/?sig=ab%2Fc&e=1", ("n", "f.bin"), False)
    assert got == "https://cdn.example/pub/n/f.bin?sig=ab%2Fc&e=1"
    assert _url("http://m.com/f.iso?x=1", ("f.iso",), True) == "http://m.com/f.iso?x=1"


# --- percent-encoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("component", "encoded"),
    [
        ("Readme.txt", "Readme.txt"),
        ("A-Za-z0-9._~", "A-Za-z0-9._~"),
        ("été", "%C3%A9t%C3%A9"),
        ("日本", "%E6%97%A5%E6%9C%AC"),
        ("🎵", "%F0%9F%8E%B5"),
        ("a b", "a%20b"),
        ("a/b", "a%2Fb"),
        ("a\\b", "a%5Cb"),
        ("100%", "100%25"),
        ("%41", "%2541"),
        ("q?x#y", "q%3Fx%23y"),
        ("a+b&c=d;e", "a%2Bb%26c%3Dd%3Be"),
        ("it's (1)!*,$@:", "it%27s%20%281%29%21%2A%2C%24%40%3A"),
        ("[x]", "%5Bx%5D"),
    ],
)
def test_component_encoding(component: str, encoded: str) -> None:
    assert encode_component(component) == encoded


def test_file_url_encodes_each_part_and_keeps_slashes_between() -> None:
    got = _url("http://m.com/pub/", ("Album é", "CD 1", "01 #1?.flac"), False)
    assert got == "http://m.com/pub/Album%20%C3%A9/CD%201/01%20%231%3F.flac"


@given(
    st.text(min_size=1, max_size=40).filter(lambda s: not any(0xD800 <= ord(c) < 0xE000 for c in s))
)
def test_component_encoding_round_trips(component: str) -> None:
    encoded = encode_component(component)
    assert set(encoded) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%"
    )
    assert unquote(encoded, errors="strict") == component


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=4))
def test_appended_path_splits_back_into_its_parts(path: list[str]) -> None:
    path = [p.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for p in path]
    got = urlsplit(_url("http://m.com/base/", tuple(path), False))
    parts = got.path.split("/")
    assert parts[:2] == ["", "base"]
    assert [unquote(p) for p in parts[2:]] == path
    assert got.query == "" and got.fragment == ""


# --- checking and normalising a URL -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("HTTP://Mirror.COM/Pub/", "http://mirror.com/Pub/"),
        ("  http://m.com/a  ", "http://m.com/a"),
        ("https://m.com:8443/x", "https://m.com:8443/x"),
        ("http://m.com:/x", "http://m.com/x"),
        ("http://m.com/a b/é", "http://m.com/a%20b/%C3%A9"),
        ("http://m.com/a%20b/", "http://m.com/a%20b/"),
        ("http://m.com/?q=a b", "http://m.com/?q=a%20b"),
        ("http://m.com/[a]?b=[c]", "http://m.com/%5Ba%5D?b=%5Bc%5D"),
        ("http://m.com/;x=1/@:!$&'()*+,=", "http://m.com/;x=1/@:!$&'()*+,="),
        ("http://bücher.example/", "http://xn--bcher-kva.example/"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
        ("http://[::1]:8080/f", "http://[::1]:8080/f"),
        ("http://[0:0::1]/", "http://[::1]/"),
    ],
)
def test_urls_are_normalised(text: str, url: str) -> None:
    assert parse_web_seed_url(text).url == url


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ftp://mirror.com/file", "unsupported_scheme"),
        ("file:///etc/passwd", "unsupported_scheme"),
        ("mirror.com/file", "unsupported_scheme"),
        ("javascript:alert(1)", "unsupported_scheme"),
        ("http://user:pw@mirror.com/", "user_info_in_url"),
        ("http://user@mirror.com/", "user_info_in_url"),
        ("http://mirror.com/file#part", "fragment_in_url"),
        ("http://mirror.com:0/", "bad_port"),
        ("http://mirror.com:65536/", "bad_port"),
        ("http://mirror.com:-1/", "bad_port"),
        ("http://mirror.com:80a/", "bad_port"),
        ("http://mirror.com:+80/", "bad_port"),
        ("http://mirror.com:\u0661\u0662/", "bad_port"),
        ("http://mirror.com:000000080/", "bad_port"),
        ("http:///file", "missing_host"),
        ("http://:80/file", "missing_host"),
        ("http://[::1/", "bad_host"),
        ("http://[nope]/", "bad_host"),
        ("http://mir ror.com/", "bad_host"),
        ("http://mirror.com\\evil/", "bad_host"),
        ("http://.../", "bad_host"),
        ("http://mirror.com/a\nHost: evil", "control_character"),
        ("http://mirror.com/a\tb", "control_character"),
        ("http://mirror.com/\x00", "control_character"),
        ("http://mirror.com/a%2", "bad_percent_encoding"),
        ("http://mirror.com/a%zz", "bad_percent_encoding"),
        ("http://" + "a" * 254 + "/", "bad_host"),
    ],
)
def test_bad_urls_are_refused(text: str, reason: str) -> None:
    with pytest.raises(WebSeedError) as caught:
        parse_web_seed_url(text)
    assert caught.value.reason == reason
    assert isinstance(caught.value, TorvizError)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


def test_url_length_is_bounded() -> None:
    head = "http://m.com/"
    assert parse_web_seed_url(head + "a" * (MAX_URL_LENGTH - len(head)))
    with pytest.raises(WebSeedError) as caught:
        parse_web_seed_url(head + "a" * (MAX_URL_LENGTH - len(head) + 1))
    assert caught.value.reason == "url_too_long"


def test_file_url_needs_a_path() -> None:
    with pytest.raises(ValueError, match="path component"):
        file_url(parse_web_seed_url("http://m.com/"), (), only_file=True)
