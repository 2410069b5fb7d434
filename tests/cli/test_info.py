"""``torviz-coordinator info`` run as a real process: good torrents, magnets, broken inputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import bencodepy
import pytest

from torviz.services.coordinator import cli

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "torrents"
HEX = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a"
JSON_KEYS = {
    "info_hash",
    "name",
    "total_size",
    "piece_length",
    "num_pieces",
    "files",
    "trackers",
    "web_seeds",
    "private",
    "magnet",
}


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torviz.services.coordinator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def write(path: Path, torrent: Mapping[bytes, object]) -> Path:
    path.write_bytes(bencodepy.encode(torrent))
    return path


def multi_file_torrent() -> dict[bytes, object]:
    """Three files with a BEP 47 padding file, two tiers, url-list as one string."""
    return {
        b"announce": b"http://127.0.0.1:6969/announce",
        b"announce-list": [
            [b"http://127.0.0.1:6969/announce", b"udp://127.0.0.1:6969"],
            [b"udp://127.0.0.2:6969"],
        ],
        b"url-list": b"http://127.0.0.1:8000/files/",
        b"comment": b"a test torrent",
        b"created by": b"hand",
        b"creation date": 1_700_000_000,
        b"info": {
            b"name": b"album",
            b"piece length": 32768,
            b"pieces": bytes(range(20)) * 4,
            b"private": 1,
            b"files": [
                {b"length": 30000, b"path": [b"cd1", b"a.flac"]},
                {b"length": 2768, b"path": [b".pad", b"2768"], b"attr": b"p"},
                {b"length": 70000, b"path": [b"cd2", b"b.flac"]},
            ],
        },
    }


def test_info_json_multi_file(tmp_path: Path) -> None:
    torrent = multi_file_torrent()
    path = write(tmp_path / "album.torrent", torrent)
    result = run_cli("info", "--json", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert set(report) == JSON_KEYS
    info = torrent[b"info"]
    assert isinstance(info, dict)
    assert report["info_hash"] == hashlib.sha1(bencodepy.encode(info)).hexdigest()
    assert report["name"] == "album"
    assert report["total_size"] == 102768
    assert report["piece_length"] == 32768
    assert report["num_pieces"] == 4
    assert report["files"] == [
        {"path": "album/cd1/a.flac", "length": 30000},
        {"path": "album/cd2/b.flac", "length": 70000},
    ]
    assert report["trackers"] == [
        ["http://127.0.0.1:6969/announce", "udp://127.0.0.1:6969"],
        ["udp://127.0.0.2:6969"],
    ]
    assert report["web_seeds"] == ["http://127.0.0.1:8000/files/"]
    assert report["private"] is True
    assert report["magnet"].startswith(f"magnet:?xt=urn:btih:{report['info_hash']}&dn=album&tr=")


def test_info_text_multi_file(tmp_path: Path) -> None:
    path = write(tmp_path / "album.torrent", multi_file_torrent())
    result = run_cli("info", str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    fields = {
        line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in lines if line[0] != " "
    }
    assert fields["name"] == "album"
    assert len(fields["info hash"]) == 40
    assert fields["total size"] == "100.4 KiB (102768 bytes)"
    assert fields["piece length"] == "32.0 KiB (32768 bytes)"
    assert fields["pieces"] == "4"
    assert fields["private"] == "yes"
    assert fields["comment"] == "a test torrent"
    assert fields["created by"] == "hand"
    assert fields["creation date"] == "2023-11-14 22:13:20 UTC (1700000000)"
    assert fields["files"] == "2 (+1 padding)"
    assert "  tier 1: http://127.0.0.1:6969/announce" in lines
    assert "  tier 1: udp://127.0.0.1:6969" in lines
    assert "  tier 2: udp://127.0.0.2:6969" in lines
    assert "  http://127.0.0.1:8000/files/" in lines
    files = [line.split()[-1] for line in lines if line.startswith("  ") and "KiB  " in line]
    assert files == ["album/cd1/a.flac", "[padding]", "album/cd2/b.flac"]
    assert any(line.endswith("album/.pad/2768  [padding]") for line in lines)


def test_info_single_file_json(tmp_path: Path) -> None:
    torrent = {
        b"announce": b"udp://127.0.0.1:6969",
        b"info": {
            b"name": b"movie.mkv",
            b"length": 16385,
            b"piece length": 16384,
            b"pieces": bytes(40),
        },
    }
    result = run_cli("info", "--json", str(write(tmp_path / "m.torrent", torrent)))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["files"] == [{"path": "movie.mkv", "length": 16385}]
    assert report["trackers"] == [["udp://127.0.0.1:6969"]]
    assert report["web_seeds"] == []
    assert report["private"] is False
    assert report["num_pieces"] == 2


def test_info_escapes_control_characters(tmp_path: Path) -> None:
    torrent = {
        b"info": {
            b"name": b"evil\x1b[2Jname",
            b"length": 1,
            b"piece length": 16384,
            b"pieces": bytes(20),
        },
    }
    result = run_cli("info", str(write(tmp_path / "e.torrent", torrent)))
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "evil\\x1b[2Jname" in result.stdout


def test_info_magnet_json() -> None:
    uri = f"magnet:?xt=urn:btih:{HEX}&dn=Some+Name&tr=udp%3A%2F%2F127.0.0.1%3A6969&tr=http://127.0.0.2/a&ws=http://127.0.0.1/w"
    result = run_cli("info", "--json", uri)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {
        "info_hash": HEX,
        "name": "Some Name",
        "total_size": None,
        "piece_length": None,
        "num_pieces": None,
        "files": None,
        "trackers": [["udp://127.0.0.1:6969"], ["http://127.0.0.2/a"]],
        "web_seeds": ["http://127.0.0.1/w"],
        "private": None,
        "magnet": f"magnet:?xt=urn:btih:{HEX}&dn=Some%20Name&tr=udp%3A%2F%2F127.0.0.1%3A6969"
        "&tr=http%3A%2F%2F127.0.0.2%2Fa&ws=http%3A%2F%2F127.0.0.1%2Fw",
    }


def test_info_magnet_text() -> None:
    result = run_cli("info", f"magnet:?xt=urn:btih:{HEX}")
    assert result.returncode == 0, result.stderr
    assert f"info hash:     {HEX}" in result.stdout.splitlines()
    assert "name:          (none)" in result.stdout.splitlines()
    assert "files:         unknown until the metadata is fetched" in result.stdout


def _broken_table(tmp: Path) -> list[tuple[Path | str, str]]:
    """(argument, a word the error line must contain)."""
    good_info = {b"name": b"x", b"length": 1, b"piece length": 16384, b"pieces": bytes(20)}

    def torrent(name: str, value: object) -> Path:
        path = tmp / name
        path.write_bytes(value if isinstance(value, bytes) else bencodepy.encode(value))
        return path

    big = tmp / "big.torrent"
    with big.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024 + 1)  # sparse: no real disk use
    return [
        (torrent("text.torrent", b"hello, not bencode"), "not a valid .torrent"),
        (torrent("empty.torrent", b""), "not a valid .torrent"),
        (torrent("cut.torrent", bencodepy.encode({b"info": good_info})[:-5]), "not a valid"),
        (torrent("list.torrent", [1, 2]), "dictionary"),
        (torrent("noinfo.torrent", {b"announce": b"http://127.0.0.1/"}), "info"),
        (torrent("infolist.torrent", {b"info": [1]}), "info"),
        (torrent("pieces.torrent", {b"info": {**good_info, b"pieces": bytes(19)}}), "20"),
        (torrent("count.torrent", {b"info": {**good_info, b"pieces": bytes(40)}}), "piece"),
        (torrent("neg.torrent", {b"info": {**good_info, b"length": -1}}), "negative"),
        (
            torrent(
                "dotdot.torrent",
                {
                    b"info": {
                        b"name": b"x",
                        b"piece length": 16384,
                        b"pieces": bytes(20),
                        b"files": [{b"length": 1, b"path": [b"..", b"etc"]}],
                    }
                },
            ),
            "..",
        ),
        (big, "64.0 MiB"),
        (tmp, "directory"),
        (tmp / "missing.torrent", "No such file"),
        ("magnet:?dn=nohash", "exact topic"),
        (f"magnet:?xt=urn:btih:{HEX[:-2]}", "info hash"),
    ]


def test_info_broken_inputs(tmp_path: Path) -> None:
    for argument, word in _broken_table(tmp_path):
        result = run_cli("info", str(argument))
        where = f"{argument}: {result.stderr!r}"
        assert result.returncode == 1, where
        assert result.stdout == "", where
        assert "Traceback" not in result.stderr, where
        lines = result.stderr.splitlines()
        assert len(lines) == 1, where
        assert lines[0].startswith("torviz: error: "), where
        assert word in lines[0], where


def _vector_files(kind: str) -> list[Path]:
    return sorted((VECTORS / kind).glob("*.torrent")) if (VECTORS / kind).is_dir() else []


# Every vector through the same ``main`` the console script runs, in this process (a process
# per file would cost ~0.2 s each); a few of them also go through the real console script.
@pytest.mark.skipif(not _vector_files("broken"), reason="no broken-torrent vectors yet")
def test_info_broken_vectors(capsys: pytest.CaptureFixture[str]) -> None:
    for path in _vector_files("broken"):
        code = cli.main(["info", str(path)])
        out, err = capsys.readouterr()
        assert code == 1, path
        assert out == "", path
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("torviz: error: "), (path, lines)
    for path in _vector_files("broken")[:: max(1, len(_vector_files("broken")) // 3)]:
        result = run_cli("info", str(path))
        assert result.returncode == 1, path
        assert "Traceback" not in result.stderr, path
        assert len(result.stderr.splitlines()) == 1, (path, result.stderr)


@pytest.mark.skipif(not _vector_files("good"), reason="no good-torrent vectors yet")
def test_info_good_vectors(capsys: pytest.CaptureFixture[str]) -> None:
    for path in _vector_files("good"):
        assert cli.main(["info", "--json", str(path)]) == 0, path
        report = json.loads(capsys.readouterr().out)
        assert set(report) == JSON_KEYS
        assert len(report["info_hash"]) == 40
        assert report["total_size"] >= sum(f["length"] for f in report["files"])
        assert cli.main(["info", str(path)]) == 0, path
        text = capsys.readouterr().out
        assert f"info hash:     {report['info_hash']}" in text.splitlines()


def test_info_does_not_load_the_service_stack() -> None:
    # info and create run as plain Python: importing the CLI must not pull in gevent, zmq or
    # pykka (gevent must be patched first by the long-running commands, or not at all).
    code = (
        "import sys, services.coordinator.cli as c; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'zmq', 'pykka')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_info_usage_errors() -> None:
    assert run_cli("info").returncode == 2
    assert run_cli("info", "--bogus", "x").returncode == 2
