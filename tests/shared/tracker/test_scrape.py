"""HTTP scrape (BEP 48): the announce -> scrape URL rule, request URLs and reply parsing."""

from __future__ import annotations

import pytest

from torviz.shared.bencode import encode
from torviz.shared.errors import TrackerError
from torviz.shared.tracker import ScrapeStats, build_scrape_url, parse_scrape_response, scrape_url
from torviz.shared.tracker.scrape import MAX_SCRAPE_ENTRIES
from torviz.shared.types import InfoHash

X = InfoHash(b"x" * 20)
Y = InfoHash(b"y" * 20)
Z = InfoHash(b"z" * 20)


@pytest.mark.parametrize(
    ("announce", "scrape"),
    [
        # The classic table (old wiki spec), with a neutral host.
        ("http://t.example/announce", "http://t.example/scrape"),
        ("http://t.example/x/announce", "http://t.example/x/scrape"),
        ("http://t.example/announce.php", "http://t.example/scrape.php"),
        ("http://t.example/a", None),
        ("http://t.example/announce?x2%0644", "http://t.example/scrape?x2%0644"),
        ("http://t.example/x%064announce", None),
        # BEP 48 looks at the path only: a '/' inside the query does not hide "announce".
        ("http://t.example/announce?x=2/4", "http://t.example/scrape?x=2/4"),
        # Passkeys before the last component survive; one after it leaves no scrape URL.
        ("https://t.example:8443/0123abcd/announce", "https://t.example:8443/0123abcd/scrape"),
        ("http://t.example/announce/0123abcd", None),
        ("http://t.example/announcements", "http://t.example/scrapements"),
        ("http://t.example/announce#top", "http://t.example/scrape#top"),
        ("HTTP://t.example/announce", "HTTP://t.example/scrape"),
        ("http://t.example/Announce", None),
        ("http://t.example", None),
        ("http://t.example/", None),
        ("http://t.example?announce", None),
        ("udp://t.example:6969/announce", None),
        ("not a url", None),
    ],
)
def test_scrape_url_rule(announce: str, scrape: str | None) -> None:
    assert scrape_url(announce) == scrape


def test_build_scrape_url() -> None:
    odd = InfoHash(bytes.fromhex("0123456789abcdef0123456789abcdef01234567"))
    assert build_scrape_url("http://t/scrape", [odd]) == (
        "http://t/scrape?info_hash=%01%23Eg%89%AB%CD%EF%01%23Eg%89%AB%CD%EF%01%23Eg"
    )
    assert build_scrape_url("http://t/scrape?k=1", [X, Y]) == (
        f"http://t/scrape?k=1&info_hash={'x' * 20}&info_hash={'y' * 20}"
    )
    with pytest.raises(ValueError):
        build_scrape_url("http://t/scrape", [])
    with pytest.raises(ValueError):
        build_scrape_url("http://t/scrape", [X] * 65)


def test_bep48_example() -> None:
    body = (
        b"d5:filesd"
        b"20:xxxxxxxxxxxxxxxxxxxxd8:completei11e10:downloadedi13772e10:incompletei19ee"
        b"20:yyyyyyyyyyyyyyyyyyyyd8:completei21e10:downloadedi206e10:incompletei20ee"
        b"20:zzzzzzzzzzzzzzzzzzzzd8:completei14e10:downloadedi12191e10:incompletei9ee"
        b"ee"
    )
    assert parse_scrape_response(body) == {
        X: ScrapeStats(11, 13772, 19),
        Y: ScrapeStats(21, 206, 20),
        Z: ScrapeStats(14, 12191, 9),
    }
    assert parse_scrape_response(body + b"\n") == parse_scrape_response(body)
    for size in range(len(body)):
        with pytest.raises(TrackerError) as caught:
            parse_scrape_response(body[:size])
        assert caught.value.reason == "bad_bencode"


def test_lenient_entries() -> None:
    body = encode(
        {
            "files": {
                b"x" * 20: {"complete": 1, "incomplete": -4, "name": b"extra keys are fine"},
                b"y" * 20: {"complete": b"1", "downloaded": 0, "incomplete": 0},  # wrong type
                b"short": {"complete": 1, "downloaded": 1, "incomplete": 1},  # not a hash
                b"z" * 20: b"not a dict",
            }
        }
    )
    assert parse_scrape_response(body) == {X: ScrapeStats(1, 0, 0)}
    assert parse_scrape_response(encode({"files": {}})) == {}


@pytest.mark.parametrize(
    ("body", "reason", "text"),
    [
        (b"d14:failure reason9:not todaye", "tracker_failure", "not today"),
        (b"d14:failure_reason9:not todaye", "tracker_failure", "not today"),
        (b"d14:failure reasoni1ee", "tracker_failure", "no reason given"),
        (b"de", "bad_field", "'files'"),
        (b"d5:fileslee", "bad_field", "'files'"),
        (b"le", "not_a_dict", "dictionary"),
        (b"d5:filesd", "bad_bencode", "truncated"),
        (b"<html>", "bad_bencode", "bad_token"),
    ],
)
def test_malformed_scrape_replies(body: bytes, reason: str, text: str) -> None:
    with pytest.raises(TrackerError) as caught:
        parse_scrape_response(body)
    assert caught.value.reason == reason
    assert text in str(caught.value)


def test_entries_are_bounded() -> None:
    files = {
        i.to_bytes(20, "big"): {"complete": 1, "downloaded": 2, "incomplete": 3}
        for i in range(5_000)
    }
    stats = parse_scrape_response(encode({"files": files}))
    assert len(stats) == MAX_SCRAPE_ENTRIES
