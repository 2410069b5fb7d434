"""``torviz-coordinator create`` run as a real process, then ``info`` on what it made.

Piece hashes are checked against an independent computation: the files concatenated in the
expected order and cut into pieces here, with nothing from torviz.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bencodepy
import pytest

from torviz.services.coordinator.cli.commands.create import hash_pieces, scan_tree
from torviz.services.coordinator.cli.progress import Progress, human_size, render_line
from torviz.shared.create import CreateError, plan_files
from torviz.shared.geometry import TorrentGeometry

TRACKER = "http://127.0.0.1:6969/announce"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "torviz.services.coordinator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def info_json(path: Path) -> dict[str, Any]:
    result = run_cli("info", "--json", str(path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    return report


def printed_info_hash(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.strip().startswith("info hash:")]
    assert len(lines) == 1, stdout
    return lines[0].split(":", 1)[1].strip()


def expected_pieces(files: list[Path], piece_length: int) -> bytes:
    data = b"".join(path.read_bytes() for path in files)
    return b"".join(
        hashlib.sha1(data[i : i + piece_length]).digest() for i in range(0, len(data), piece_length)
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], word: str) -> None:
    where = f"{result.args}: {result.stderr!r}"
    assert result.returncode == 1, where
    assert "Traceback" not in result.stderr, where
    lines = result.stderr.splitlines()
    assert len(lines) == 1, where
    assert lines[0].startswith("torviz: error: "), where
    assert word in lines[0], where


def make_tree(root: Path) -> list[Path]:
    """A directory whose pieces cross file boundaries; returns the files in torrent order."""
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "deeper").mkdir()
    contents = {
        "b.bin": os.urandom(50_000),
        "A.txt": b"capital letters sort first\n" * 100,
        ".hidden": b"hidden files are shared too",
        "empty": b"",
        "sub-a": os.urandom(16_384),
        "sub/z.bin": os.urandom(70_001),
        "sub/deeper/c": os.urandom(5),
    }
    for name, data in contents.items():
        (root / name).write_bytes(data)
    order = [".hidden", "A.txt", "b.bin", "empty", "sub-a", "sub/deeper/c", "sub/z.bin"]
    return [root / name for name in order]


def test_create_single_file_then_info(tmp_path: Path) -> None:
    source = tmp_path / "movie.bin"
    source.write_bytes(os.urandom(100_000))
    out = tmp_path / "movie.torrent"
    result = run_cli(
        "create",
        str(source),
        "-o",
        str(out),
        "--tracker",
        TRACKER,
        "--tracker",
        "udp://127.0.0.2:6969",
        "--web-seed",
        "http://127.0.0.1:8000/movie.bin",
        "--comment",
        "made by a test",
        "--private",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress output when stderr is not a terminal
    report = info_json(out)
    assert report["info_hash"] == printed_info_hash(result.stdout)
    assert report["name"] == "movie.bin"
    assert report["total_size"] == 100_000
    assert report["piece_length"] == 16_384  # libtorrent's automatic choice for 100 kB
    assert report["num_pieces"] == 7
    assert report["files"] == [{"path": "movie.bin", "length": 100_000}]
    assert report["trackers"] == [[TRACKER], ["udp://127.0.0.2:6969"]]
    assert report["web_seeds"] == ["http://127.0.0.1:8000/movie.bin"]
    assert report["private"] is True

    top = bencodepy.decode(out.read_bytes())
    assert top[b"info"][b"pieces"] == expected_pieces([source], 16_384)
    assert top[b"announce"] == TRACKER.encode()
    assert top[b"comment"] == b"made by a test"
    assert top[b"created by"].startswith(b"torviz/")
    assert abs(top[b"creation date"] - time.time()) < 120
    assert hashlib.sha1(bencodepy.encode(top[b"info"])).hexdigest() == report["info_hash"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


@pytest.mark.parametrize("piece_size", ["16K", "32768", "auto"])
def test_create_multi_file_then_info(tmp_path: Path, piece_size: str) -> None:
    root = tmp_path / "share"
    files = make_tree(root)
    (root / "inside-link").symlink_to("b.bin")  # a link inside the tree: hashed as b.bin
    (tmp_path / "outside.bin").write_bytes(b"secret")
    (root / "outside-link").symlink_to(tmp_path / "outside.bin")
    (root / "dir-link").symlink_to("sub")
    os.mkfifo(root / "fifo")
    out = tmp_path / "share.torrent"
    result = run_cli("create", str(root), "-o", str(out), "-t", TRACKER, "--piece-size", piece_size)
    assert result.returncode == 0, result.stderr
    warnings = sorted(result.stderr.splitlines())
    assert len(warnings) == 3, warnings
    assert all(line.startswith("torviz: warning: skipping ") for line in warnings)
    assert "dir-link" in warnings[0] and "fifo" in warnings[1] and "outside" in warnings[2]

    files.insert(4, root / "inside-link")
    report = info_json(out)
    assert report["info_hash"] == printed_info_hash(result.stdout)
    assert report["name"] == "share"
    assert report["files"] == [
        {"path": "share/" + str(path.relative_to(root)), "length": path.stat().st_size}
        for path in files
    ]
    total = sum(path.stat().st_size for path in files)
    assert report["total_size"] == total
    piece_length = {"16K": 16_384, "32768": 32_768, "auto": 16_384}[piece_size]
    assert report["piece_length"] == piece_length
    assert report["num_pieces"] == -(-total // piece_length)
    assert report["trackers"] == [[TRACKER]]
    assert report["private"] is False
    top = bencodepy.decode(out.read_bytes())
    assert top[b"info"][b"pieces"] == expected_pieces(files, piece_length)
    assert b"announce-list" not in top


def test_create_output_inside_the_tree_is_not_hashed(tmp_path: Path) -> None:
    root = tmp_path / "share"
    root.mkdir()
    (root / "data").write_bytes(b"x" * 1000)
    out = root / "share.torrent"
    for extra in ([], ["--force"]):
        result = run_cli("create", str(root), "-o", str(out), "-t", TRACKER, *extra)
        assert result.returncode == 0, result.stderr
        assert [f["path"] for f in info_json(out)["files"]] == ["share/data"]
    assert sorted(p.name for p in root.iterdir()) == ["data", "share.torrent"]


def test_create_no_date_is_reproducible(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(os.urandom(40_000))
    outputs = []
    for name in ("one.torrent", "two.torrent"):
        out = tmp_path / name
        result = run_cli("create", str(source), "-o", str(out), "-t", TRACKER, "--no-date")
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert b"creation date" not in bencodepy.decode(outputs[0])


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"data")
    out = tmp_path / "f.torrent"
    out.write_bytes(b"precious")
    result = run_cli("create", str(source), "-o", str(out), "-t", TRACKER)
    assert_one_error_line(result, "already exists")
    assert out.read_bytes() == b"precious"
    result = run_cli("create", str(source), "-o", str(out), "-t", TRACKER, "--force")
    assert result.returncode == 0, result.stderr
    assert info_json(out)["total_size"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "f.torrent"]


def test_create_bad_arguments(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"data")
    (tmp_path / "empty-dir").mkdir()
    (tmp_path / "zero").write_bytes(b"")
    (tmp_path / "only-empty").mkdir()
    (tmp_path / "only-empty" / "nothing").write_bytes(b"")
    (tmp_path / "bad-name").mkdir()
    (tmp_path / "bad-name" / "line\nbreak").write_bytes(b"x")
    out = str(tmp_path / "out.torrent")
    cases = [
        ([str(tmp_path / "missing"), "-o", out, "-t", TRACKER], "No such file"),
        ([str(tmp_path / "empty-dir"), "-o", out, "-t", TRACKER], "holds no files"),
        ([str(tmp_path / "only-empty"), "-o", out, "-t", TRACKER], "all empty"),
        ([str(tmp_path / "zero"), "-o", out, "-t", TRACKER], "is empty"),
        ([str(tmp_path / "bad-name"), "-o", out, "-t", TRACKER], "control character"),
        ([str(source), "-o", out, "-t", TRACKER, "--piece-size", "3000"], "power of two"),
        ([str(source), "-o", out, "-t", TRACKER, "--piece-size", "8K"], "power of two"),
        ([str(source), "-o", out, "-t", TRACKER, "--piece-size", "big"], "piece size"),
        ([str(source), "-o", out, "-t", "tracker.example"], "tracker URL"),
        ([str(source), "-o", out, "-t", TRACKER, "-w", "ftp://127.0.0.1/x"], "web seed URL"),
        ([str(source), "-o", str(tmp_path / "no" / "dir.torrent"), "-t", TRACKER], "cannot write"),
        ([str(source), "-o", str(tmp_path), "-t", TRACKER], "is a directory"),
        ([str(source), "-o", out, "-t", TRACKER, "--threads", "0"], "threads"),
        ([str(source), "-o", str(source), "-t", TRACKER, "--force"], "input and the output"),
    ]
    for args, word in cases:
        assert_one_error_line(run_cli("create", *args), word)
    assert not (tmp_path / "out.torrent").exists()
    assert source.read_bytes() == b"data"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".torviz-")]
    assert leftovers == []


def test_create_usage_errors(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"data")
    assert run_cli("create", str(source), "-o", str(tmp_path / "x.torrent")).returncode == 2
    assert run_cli("create", str(source), "-t", TRACKER).returncode == 2
    assert run_cli("create", "-o", str(tmp_path / "x.torrent"), "-t", TRACKER).returncode == 2


def _read_pty(fd: int, process: subprocess.Popen[bytes], deadline: float) -> bytes:
    chunks = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError as exc:  # EIO: the child closed the terminal
                if exc.errno == errno.EIO:
                    break
                raise
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    return b"".join(chunks)


def test_create_draws_progress_on_a_terminal(tmp_path: Path) -> None:
    source = tmp_path / "f"
    source.write_bytes(os.urandom(3_000_000))
    out_args = ["-o", str(tmp_path / "f.torrent"), "-t", TRACKER]
    master, slave = pty.openpty()
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "torviz.services.coordinator", "create", str(source), *out_args],
        stdin=slave,  # a keyboard too: blessed must still send the terminal no queries
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    )
    os.close(slave)
    try:
        screen = _read_pty(master, process, time.monotonic() + 30)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
        assert process.stdout is not None
        process.stdout.close()
    assert time.monotonic() - started < 5  # an unanswered query would stall for seconds
    text = screen.decode("utf-8", errors="replace")
    assert "hashing 100% [" in text
    assert f"{human_size(3_000_000)} / {human_size(3_000_000)}" in text
    assert "done" in text
    assert "\x1b[K" in text  # blessed's clear-to-end-of-line for xterm: it did the drawing
    assert "\x1bP+q" not in text and "\x1b[6n" not in text  # no capability/cursor queries


def test_render_line() -> None:
    line = render_line("hashing", 512 * 1024, 1024 * 1024, 2.0, 80)
    assert line.startswith("hashing  50% [")
    assert line.endswith("] 512.0 KiB / 1.0 MiB  256.0 KiB/s  ETA 0:02")
    assert len(line) <= 80
    assert render_line("hashing", 0, 100, 0.0, 80).endswith("ETA --:--")
    assert render_line("hashing", 100, 100, 1.0, 80).endswith("done")
    narrow = render_line("hashing", 50, 100, 1.0, 30)
    assert len(narrow) <= 30 and "[" not in narrow


def test_progress_draws_nothing_off_a_terminal(tmp_path: Path) -> None:
    with (tmp_path / "log").open("w") as stream:
        with Progress(100, "hashing", stream=stream) as progress:
            progress.advance(60)
            progress.advance(40)
        assert progress.done == 100
    assert (tmp_path / "log").read_text() == ""


def test_hash_pieces_across_files_and_threads(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "t")
    sizes = tuple(path.stat().st_size for path in files)
    for piece_length, threads in ((16_384, 1), (16_384, 3), (65_536, 2), (1 << 20, 2)):
        geometry = TorrentGeometry(piece_length, sum(sizes), sizes)
        result = hash_pieces(tuple(map(str, files)), geometry, threads)
        assert result.piece_hashes == expected_pieces(files, piece_length)


def test_hash_pieces_notices_a_shrunk_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 20_000)
    geometry = TorrentGeometry(16_384, 30_000, (30_000,))  # planned before the file shrank
    with pytest.raises(CreateError) as caught:
        hash_pieces((str(path),), geometry, 2)
    assert caught.value.reason == "file_changed"


def test_scan_tree_matches_plan(tmp_path: Path) -> None:
    files = make_tree(tmp_path / "t")
    scan = scan_tree(str(tmp_path / "t"))
    assert [Path(p) for p in scan.disk_paths] == files
    assert scan.plan == plan_files(
        "t", [(path.relative_to(tmp_path / "t").parts, path.stat().st_size) for path in files]
    )
    assert scan.warnings == ()
