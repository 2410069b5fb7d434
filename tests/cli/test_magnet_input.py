"""Magnet links where a torrent is taken (``download``, ``add``), ``add --save-torrent``,
``export`` and ``status`` of a torrent fetching its metadata.

The CLI runs as a real process; the daemon is a stand-in (``fake_daemon``: a real ZeroMQ
socket answering as the test says), so each answer the coordinator may give is shown exactly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import bencodepy
import pytest

from torviz.shared.bus import (
    AddTorrent,
    ControlFailed,
    ExportTorrent,
    GetStatus,
    Message,
    MetadataProgress,
    PeerSource,
    PeerStatus,
    StatusReport,
    TorrentAdded,
    TorrentExported,
    TorrentState,
    TorrentStatus,
)
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.types import InfoHash, PeerAddress

from .fake_daemon import Answer, FakeDaemon, fake_daemon
from .test_info import HEX, run_cli

GOOD = f"magnet:?xt=urn:btih:{HEX}&dn=Example"
TORRENT = bencodepy.encode(
    {
        b"announce": b"http://127.0.0.1:6969/announce",
        b"info": {
            b"name": b"Example",
            b"piece length": 16384,
            b"pieces": bytes(range(20)),
            b"length": 1000,
        },
    }
)
TORRENT_HASH = parse_metainfo(TORRENT).info_hash


def status(
    info_hash: InfoHash,
    state: TorrentState,
    *,
    peers: int = 0,
    metadata: MetadataProgress | None = None,
    peer_list: tuple[PeerStatus, ...] = (),
    name: str = "Example",
) -> TorrentStatus:
    known = state is not TorrentState.METADATA
    return TorrentStatus(
        info_hash=info_hash,
        name=name,
        state=state,
        progress=0.0,
        total_length=1000 if known else 0,
        downloaded=0,
        uploaded=0,
        download_rate=0.0,
        upload_rate=0.0,
        peers=peers,
        seeds=0,
        pieces_verified=0,
        num_pieces=1 if known else 0,
        save_path="/tmp/x",
        error=None,
        trackers=(),
        peer_list=peer_list,
        check_progress=None,
        metadata=metadata,
    )


def cli(
    daemon: FakeDaemon, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, *daemon.flags, cwd=cwd)


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    [line] = stderr.splitlines()
    return line


@pytest.fixture
def nothing_asked(tmp_path: Path) -> Iterator[FakeDaemon]:
    def refuse(message: Message) -> Message:
        raise AssertionError(f"the daemon was asked {type(message).__name__}")

    with fake_daemon(tmp_path, refuse) as daemon:
        yield daemon


# --- a bad magnet link: one line, exit 2, nothing started or asked -----------------------------


@pytest.mark.parametrize(
    ("link", "word"),
    [
        ("magnet:?dn=no-hash", "exact topic"),
        (f"magnet:?xt=urn:btih:{HEX[:-2]}", "info hash"),
        ("MAGNET:?xt=urn:btih:zz", "info hash"),
        (f"magnet:?xt=urn:btih:{HEX}&x.pe=example.com:6881", "x.pe"),
    ],
)
def test_download_of_a_bad_magnet_link_is_one_line_and_status_2(
    link: str, word: str, tmp_path: Path
) -> None:
    result = run_cli("download", link, "-o", str(tmp_path / "dl"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("torviz: error: not a usable magnet link: "), line
    assert word in line and "No such file" not in line, line
    assert not (tmp_path / "dl").exists()  # refused before the download started


def test_add_of_a_bad_magnet_link_asks_no_daemon(nothing_asked: FakeDaemon) -> None:
    result = cli(nothing_asked, "add", "magnet:?dn=no-hash")
    assert result.returncode == 2, result.stderr
    assert one_line(result.stderr).startswith("torviz: error: not a usable magnet link: ")
    assert nothing_asked.requests == []


# --- add MAGNET ----------------------------------------------------------------------------------


def test_add_sends_the_magnet_link_itself(tmp_path: Path) -> None:
    def answer(message: Message) -> Message:
        assert isinstance(message, AddTorrent)
        return TorrentAdded(InfoHash.from_hex(HEX), "Example")

    with fake_daemon(tmp_path, answer) as daemon:
        result = cli(daemon, "add", f"  {GOOD}  ", "--dir", "dl", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"added Example ({HEX})\n"
    [request] = daemon.requests
    assert request == AddTorrent(metainfo=b"", download_dir=str(tmp_path / "dl"), magnet=GOOD)


def test_a_refused_magnet_is_the_daemons_one_line(tmp_path: Path) -> None:
    def answer(message: Message) -> Message:
        return ControlFailed("duplicate_torrent", f"{HEX} is already in the session")

    with fake_daemon(tmp_path, answer) as daemon:
        result = cli(daemon, "add", GOOD)
    assert result.returncode == 1
    assert one_line(result.stderr) == f"torviz: error: {HEX} is already in the session"


class Session:
    """A fake daemon's torrent: METADATA with no peer, then fetching, then downloading."""

    def __init__(self, info_hash: InfoHash, metainfo: bytes, *, stay: bool = False) -> None:
        self.info_hash = info_hash
        self.metainfo = metainfo
        self.stay = stay  # never leaves the metadata state
        self.polls = 0

    def answer(self, message: Message) -> Message:
        match message:
            case AddTorrent():
                return TorrentAdded(self.info_hash, "Example")
            case GetStatus():
                self.polls += 1
                if self.polls <= 2:
                    torrent = status(self.info_hash, TorrentState.METADATA)
                elif self.polls <= 4 or self.stay:
                    progress = MetadataProgress(peers_asked=2, received=16384, size=32768)
                    torrent = status(
                        self.info_hash, TorrentState.METADATA, peers=3, metadata=progress
                    )
                else:
                    torrent = status(self.info_hash, TorrentState.DOWNLOADING, peers=3)
                return StatusReport((torrent,), ())
            case ExportTorrent(info_hash=info_hash):
                if self.polls <= 4 or self.stay:
                    return ControlFailed("no_metadata", "not yet")
                return TorrentExported(info_hash, self.metainfo)
        raise AssertionError(message)


def test_add_save_torrent_waits_for_the_metadata_and_writes_it(tmp_path: Path) -> None:
    session = Session(TORRENT_HASH, TORRENT)
    link = f"magnet:?xt=urn:btih:{TORRENT_HASH.hex}&dn=Example"
    out = tmp_path / "saved.torrent"
    with fake_daemon(tmp_path, session.answer) as daemon:
        result = cli(daemon, "add", link, "--save-torrent", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == TORRENT
    assert result.stdout.splitlines() == [
        f"added Example ({TORRENT_HASH.hex})",
        "Example: finding peers",
        "Example: fetching metadata: 2 peers, 16.0 of 32.0 KiB",
        f"saved the .torrent to {out}",
    ]
    assert [type(m) for m in daemon.requests if not isinstance(m, GetStatus)] == [
        AddTorrent,
        ExportTorrent,
    ]
    assert list(tmp_path.glob(".torviz-*")) == []  # no temporary file left


def test_add_of_a_torrent_file_saves_the_same_bytes_through_export(tmp_path: Path) -> None:
    session = Session(TORRENT_HASH, TORRENT)
    session.polls = 10  # a .torrent is never in the metadata state
    source = tmp_path / "in.torrent"
    source.write_bytes(TORRENT)
    with fake_daemon(tmp_path, session.answer) as daemon:
        result = cli(daemon, "add", str(source), "--save-torrent", str(tmp_path / "copy.torrent"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "copy.torrent").read_bytes() == TORRENT
    [added] = daemon.of_type(AddTorrent)
    assert added == AddTorrent(metainfo=TORRENT, download_dir="", magnet="")


def test_save_torrent_never_clobbers_a_file_without_force(tmp_path: Path) -> None:
    out = tmp_path / "saved.torrent"
    out.write_bytes(b"keep me")
    session = Session(TORRENT_HASH, TORRENT)
    session.polls = 10
    with fake_daemon(tmp_path, session.answer) as daemon:
        refused = cli(daemon, "add", GOOD, "--save-torrent", str(out))
        assert refused.returncode == 1
        assert one_line(refused.stderr) == (
            f"torviz: error: {out} already exists; pass --force to overwrite it"
        )
        assert daemon.requests == []  # refused before the torrent was added
        assert out.read_bytes() == b"keep me"
        link = f"magnet:?xt=urn:btih:{TORRENT_HASH.hex}"
        forced = cli(daemon, "add", link, "--save-torrent", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.read_bytes() == TORRENT


def test_a_wrong_torrent_from_the_daemon_is_never_written(tmp_path: Path) -> None:
    other = InfoHash.from_hex("00" * 20)
    session = Session(other, TORRENT)  # exports TORRENT for a torrent it is not
    session.polls = 10
    out = tmp_path / "saved.torrent"
    with fake_daemon(tmp_path, session.answer) as daemon:
        result = cli(daemon, "add", GOOD, "--save-torrent", str(out))
    assert result.returncode == 1
    assert f"exported {TORRENT_HASH.hex} when {other.hex} was asked for" in one_line(result.stderr)
    assert not out.exists() and list(tmp_path.glob(".torviz-*")) == []


def test_ctrl_c_while_waiting_for_the_metadata_leaves_the_torrent_added(tmp_path: Path) -> None:
    session = Session(TORRENT_HASH, TORRENT, stay=True)
    link = f"magnet:?xt=urn:btih:{TORRENT_HASH.hex}&dn=Example"
    with fake_daemon(tmp_path, session.answer) as daemon:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torviz.services.coordinator",
                "add",
                link,
                "--save-torrent",
                str(tmp_path / "saved.torrent"),
                *daemon.flags,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while session.polls < 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert session.polls >= 6, "the CLI did not wait for the metadata"
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130
    line = one_line(err)
    assert line.startswith("torviz: interrupted: Example stays added; "), line
    assert f"torviz-coordinator export {TORRENT_HASH.hex} FILE" in line
    assert "fetching metadata: 2 peers, 16.0 of 32.0 KiB" in out
    assert daemon.of_type(ExportTorrent) == []
    assert not (tmp_path / "saved.torrent").exists()


# --- export ID FILE ------------------------------------------------------------------------------


def exporting(session: Session) -> Answer:
    def answer(message: Message) -> Message:
        if isinstance(message, GetStatus):
            torrent = status(session.info_hash, TorrentState.METADATA, name="Some\x1b[2JName")
            return StatusReport((torrent,), ())
        return session.answer(message)

    return answer


def test_export_of_a_torrent_without_its_metadata_is_one_line(tmp_path: Path) -> None:
    session = Session(TORRENT_HASH, TORRENT, stay=True)
    out = tmp_path / "out.torrent"
    with fake_daemon(tmp_path, exporting(session)) as daemon:
        result = cli(daemon, "export", TORRENT_HASH.hex[:8], str(out))
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        "torviz: error: the metadata of Some\\x1b[2JName is not fetched yet"
    )
    assert daemon.of_type(GetStatus) == [GetStatus(TORRENT_HASH.hex[:8])]
    assert daemon.of_type(ExportTorrent) == [ExportTorrent(TORRENT_HASH)]
    assert not out.exists()


def test_export_writes_the_torrent_and_never_clobbers_without_force(tmp_path: Path) -> None:
    session = Session(TORRENT_HASH, TORRENT)
    session.polls = 10
    out = tmp_path / "out.torrent"
    with fake_daemon(tmp_path, session.answer) as daemon:
        result = cli(daemon, "export", TORRENT_HASH.hex, str(out))
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"exported Example ({TORRENT_HASH.hex}) to {out}\n"
        assert out.read_bytes() == TORRENT
        out.write_bytes(b"keep me")
        again = cli(daemon, "export", TORRENT_HASH.hex, str(out))
        assert again.returncode == 1
        assert "already exists; pass --force" in one_line(again.stderr)
        assert out.read_bytes() == b"keep me"
        forced = cli(daemon, "export", TORRENT_HASH.hex, str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.read_bytes() == TORRENT
    assert len(daemon.of_type(ExportTorrent)) == 2  # the refusal asked nothing


# --- status: the metadata state, each peer's source and version ---------------------------------

HOSTILE_VERSION = "Evil 1.0\x1b]0;pwned\x07"


def fetching(message: Message) -> Message:
    assert isinstance(message, GetStatus)
    peers = (
        PeerStatus(
            address=PeerAddress("127.0.0.1", 6881),
            client="libtorrent 2.0.9",
            flags="E",
            download_rate=0.0,
            upload_rate=0.0,
            downloaded=0,
            uploaded=0,
            progress=0.0,
            version="libtorrent/2.0.9.0",
            source=PeerSource.MAGNET,
        ),
        PeerStatus(
            address=PeerAddress("::1", 51413),
            client="unknown",
            flags="IE",
            download_rate=0.0,
            upload_rate=0.0,
            downloaded=0,
            uploaded=0,
            progress=0.0,
            version=HOSTILE_VERSION,
            source=PeerSource.PEX,
        ),
    )
    progress = MetadataProgress(peers_asked=2, received=16384, size=None)
    torrent = status(
        InfoHash.from_hex(HEX),
        TorrentState.METADATA,
        peers=2,
        metadata=progress,
        peer_list=peers,
    )
    return StatusReport((torrent,), ())


def test_status_shows_the_metadata_fetch_and_each_peers_source_and_version(
    tmp_path: Path,
) -> None:
    with fake_daemon(tmp_path, fetching) as daemon:
        result = cli(daemon, "status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  state      metadata: 2 peers asked, 16.0 of ? KiB received" in lines
    assert "  progress   size not known until the metadata is in" in lines
    [first, second] = [line for line in lines if line.startswith("  peer ")]
    assert first.endswith("magnet   libtorrent 2.0.9 (libtorrent/2.0.9.0)"), first
    assert second.endswith("pex      unknown (Evil 1.0\\x1b]0;pwned\\x07)"), second
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout


def test_status_json_has_the_metadata_and_each_peers_source_and_version(tmp_path: Path) -> None:
    with fake_daemon(tmp_path, fetching) as daemon:
        result = cli(daemon, "status", "--json")
    assert result.returncode == 0, result.stderr
    [torrent] = json.loads(result.stdout)["torrents"]
    assert torrent["state"] == "metadata"
    assert torrent["metadata"] == {"peers_asked": 2, "received": 16384, "size": None}
    assert [(p["source"], p["version"]) for p in torrent["peer_list"]] == [
        ("magnet", "libtorrent/2.0.9.0"),
        ("pex", HOSTILE_VERSION),
    ]
