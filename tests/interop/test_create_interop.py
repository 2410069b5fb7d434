"""Torrents made by ``torviz-coordinator create`` against libtorrent and mktorrent.

- libtorrent (always in its own process, never in pytest's) loads each torrent with the info
  hash torviz printed, and a libtorrent session pointed at the original files checks them and
  finds every piece valid: it becomes a seeder without downloading a byte.
- libtorrent's own automatic piece size equals ``choose_piece_length`` for a range of sizes.
- mktorrent given the same files and options produces the same info hash: same file order
  (by "/"-joined path), same name, same piece length, same info keys.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import bencodepy
import pytest

from torviz.shared.create import choose_piece_length

pytestmark = pytest.mark.interop

CREATE = [sys.executable, "-m", "torviz.services.coordinator", "create"]
REPO = Path(__file__).resolve().parents[2]

# Announces go to a closed loopback port: nothing answers, nothing leaves the machine.
TRACKER = "http://127.0.0.1:9/announce"

# Runs in a child process: load torrents, seed-check them against their data, report JSON.
LIBTORRENT_SCRIPT = r"""
import json, sys, time
import libtorrent as lt
from testing.lt_peer import loopback_settings

jobs = json.loads(sys.argv[1])
session = lt.session(loopback_settings("127.0.0.3", alerts=("status", "error")))
report = {"torrents": [], "auto_piece_size": {}}
try:
    for job in jobs["torrents"]:
        ti = lt.torrent_info(job["torrent"])
        params = lt.add_torrent_params()
        params.ti = ti
        params.save_path = job["save_path"]
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        handle = session.add_torrent(params)
        # Wait for the end of the full check (the torrent_checked alert), not for seeding: data
        # that fails the check must end the wait too, and quickly.
        deadline = time.monotonic() + 30
        checked = False
        while not checked and time.monotonic() < deadline:
            session.wait_for_alert(100)
            for alert in session.pop_alerts():
                if isinstance(alert, (lt.torrent_checked_alert, lt.torrent_error_alert)):
                    checked = True
        status = handle.status()
        checking = (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data)
        while status.state in checking and time.monotonic() < deadline:
            time.sleep(0.02)
            status = handle.status()
        report["torrents"].append({
            "torrent": job["torrent"],
            "info_hash": str(ti.info_hashes().v1),
            "num_pieces": ti.num_pieces(),
            "piece_length": ti.piece_length(),
            "files": [[ti.files().file_path(i), ti.files().file_size(i)]
                      for i in range(ti.num_files())],
            "have_pieces": status.num_pieces,
            "checked": checked,
            "state": str(status.state),
            "error": status.errc.message() if status.errc.value() else "",
        })
        session.remove_torrent(handle)
    for size in jobs["auto_sizes"]:
        fs = lt.file_storage()
        fs.add_file("d/f", size)
        ct = lt.create_torrent(fs, 0, flags=lt.create_torrent.v1_only)
        report["auto_piece_size"][str(size)] = ct.piece_length()
finally:
    del session
print(json.dumps(report))
"""


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed (CI must run the interop tests)")
        pytest.skip(f"{tool} is not installed")
    return path


def _need_libtorrent() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", "import libtorrent"], capture_output=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("the libtorrent Python bindings are not importable")
        pytest.skip("the libtorrent Python bindings are not importable")


def _create(path: Path, out: Path, *args: str) -> str:
    result = subprocess.run(
        [*CREATE, str(path), "-o", str(out), "-t", TRACKER, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "info hash:" in line)
    return line.split(":", 1)[1].strip()


def _info_hash_of(torrent: Path) -> str:
    top = bencodepy.decode(torrent.read_bytes())
    return hashlib.sha1(bencodepy.encode(top[b"info"])).hexdigest()


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree whose pieces cross file boundaries at every piece size used, and a single file."""
    base = tmp_path_factory.mktemp("interop")
    tree = base / "tree"
    (tree / "docs" / "deep").mkdir(parents=True)
    sizes = {
        "a.bin": 100_003,
        "B.bin": 16_384,
        "docs/readme.txt": 777,
        "docs/deep/z.bin": 250_001,
        "docs-extra.bin": 40_000,
        ".hidden": 12,
        "empty": 0,
    }
    for name, size in sizes.items():
        (tree / name).write_bytes(os.urandom(size))
    (base / "single.bin").write_bytes(os.urandom(1_000_001))
    return base


def test_libtorrent_loads_and_seeds_what_torviz_creates(shared_data: Path) -> None:
    _need_libtorrent()
    out = shared_data / "out"
    out.mkdir(exist_ok=True)
    made = {
        "tree-16k.torrent": _create(
            shared_data / "tree", out / "tree-16k.torrent", "--piece-size", "16K"
        ),
        "tree-auto.torrent": _create(shared_data / "tree", out / "tree-auto.torrent", "--private"),
        "single.torrent": _create(shared_data / "single.bin", out / "single.torrent"),
        "single-64k.torrent": _create(
            shared_data / "single.bin", out / "single-64k.torrent", "--piece-size", "64K"
        ),
    }
    auto_sizes = [1, 2_684_355, 2_684_356, 10_737_419, 10**9, 10**11, 10**13]
    jobs = {
        "torrents": [{"torrent": str(out / name), "save_path": str(shared_data)} for name in made],
        "auto_sizes": auto_sizes,
    }
    result = subprocess.run(
        [sys.executable, "-c", LIBTORRENT_SCRIPT, json.dumps(jobs)],
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
        cwd=REPO,  # testing/ (the loopback settings) is importable from there
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for entry in report["torrents"]:
        name = Path(entry["torrent"]).name
        assert entry["info_hash"] == made[name], name
        assert entry["error"] == "", (name, entry["error"])
        assert entry["checked"], (name, entry)
        assert entry["have_pieces"] == entry["num_pieces"], (name, entry)
        assert entry["state"] == "seeding", (name, entry["state"])
        if name.startswith("tree"):
            # libtorrent sees the same files in the same order (it lists empty files too).
            assert [path for path, _ in entry["files"]] == [
                "tree/.hidden",
                "tree/B.bin",
                "tree/a.bin",
                "tree/docs-extra.bin",
                "tree/docs/deep/z.bin",
                "tree/docs/readme.txt",
                "tree/empty",
            ]
    assert report["auto_piece_size"] == {str(s): choose_piece_length(s) for s in auto_sizes}


@pytest.mark.parametrize(
    ("source", "exponent", "extra"),
    [
        # mktorrent 1.1 takes exponents 15..28 only.
        ("tree", 15, []),
        ("tree", 16, ["--private"]),
        ("tree", 18, []),
        ("single.bin", 15, []),
        ("single.bin", 17, ["--private"]),
    ],
)
def test_info_hash_matches_mktorrent(
    shared_data: Path, tmp_path: Path, source: str, exponent: int, extra: list[str]
) -> None:
    mktorrent = _need("mktorrent")
    ours = tmp_path / "ours.torrent"
    theirs = tmp_path / "theirs.torrent"
    info_hash = _create(shared_data / source, ours, "--piece-size", str(1 << exponent), *extra)
    command = [mktorrent, "-a", TRACKER, "-l", str(exponent), "-o", str(theirs)]
    if "--private" in extra:
        command.append("-p")
    subprocess.run(
        [*command, str(shared_data / source)], capture_output=True, timeout=120, check=True
    )
    # mktorrent adds 'created by' and 'creation date' outside the info dict only, so the info
    # dicts, and with them the info hashes, are equal.
    assert _info_hash_of(theirs) == info_hash
    assert _info_hash_of(ours) == info_hash
    ours_top = bencodepy.decode(ours.read_bytes())
    theirs_top = bencodepy.decode(theirs.read_bytes())
    assert ours_top[b"info"] == theirs_top[b"info"]
    assert ours_top[b"announce"] == theirs_top[b"announce"]
