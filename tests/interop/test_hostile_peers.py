"""No host can lock peers out of a torviz seeder: a libtorrent leecher gets the whole torrent
while hostile sockets squat on the connection slots and the pre-handshake queue.

A torviz seeder (``torviz-coordinator download --seed-time``, every service a real process)
seeds a trackerless torrent on a loopback address of its own, so the leecher can only reach it
by dialling it (the incoming path is what is attacked). Before the leecher starts,
``SlotSquatters`` opens 100 idle connections (handshake, HAVE_NONE, then keep-alives only) and
70 slowloris sockets (one byte a second), and keeps reopening those the seeder closes. Without
the per-host caps, the replacement of idle peers and the pre-handshake queue's rules, the idle
connections held every slot of the torrent and the slowloris sockets every slot of the queue.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testing.content import make_content, make_torrent, multi_file_layout
from testing.swarm import Swarm, free_port, next_loopback_address
from tests.interop.test_download import _assert_identical
from tests.support.daemon import COORDINATOR
from tests.support.hostile_peers import SlotSquatters
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire.handshake import HANDSHAKE_LENGTH, Handshake, Reserved, encode_handshake

pytestmark = pytest.mark.interop

IDLE = 100
SLOWLORIS = 70
LEECH_TIMEOUT = 45.0
"""Seconds the leecher gets for 3 MiB: unhindered it needs a few."""
SEEDER_READY_TIMEOUT = 60.0

CONFIG = """
[peer_agent]
listen_host = "{host}"
listen_ports = [{port}, {port}]
replace_idle_after = {replace_idle_after}

[tracker_agent]
dht = false
"""


def _sometime(condition: Callable[[], bool], within: float) -> bool:
    """Whether ``condition`` holds at some moment within ``within`` seconds (polled)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def start_seeder(torrent: Path, data: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    """The seeder; its services' logs go to ``log`` (a pipe nobody reads could block them)."""
    command = [*COORDINATOR, "download", str(torrent), "-o", str(data), "--config", str(config)]
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [*command, "--seed-time", "300", "--log-level", "INFO"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def wait_seeding(
    address: PeerAddress, info_hash: InfoHash, process: subprocess.Popen[bytes]
) -> None:
    """Wait until the seeder answers a handshake for the torrent (it is attached and listens)."""
    source = next_loopback_address()
    ours = encode_handshake(Handshake(info_hash, PeerId(b"-XX0001-probe-------"), Reserved.build()))
    deadline = time.monotonic() + SEEDER_READY_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, "the seeder exited"
        try:
            with socket.create_connection(
                (address.host, address.port), timeout=2.0, source_address=(source, 0)
            ) as probe:
                probe.sendall(ours)
                answer = b""
                while len(answer) < HANDSHAKE_LENGTH:
                    chunk = probe.recv(HANDSHAKE_LENGTH - len(answer))
                    if not chunk:
                        break
                    answer += chunk
                if len(answer) == HANDSHAKE_LENGTH:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the seeder did not answer at {address} in {SEEDER_READY_TIMEOUT} s")


@pytest.mark.parametrize(
    "hosts",
    [
        pytest.param(1, id="from_one_address"),
        pytest.param(100, id="from_a_hundred_addresses"),
    ],
)
def test_a_leecher_gets_the_torrent_while_idle_and_slowloris_sockets_squat(
    swarm: Swarm, tmp_path: Path, hosts: int
) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(), seed=31)
    torrent = make_torrent(spec, 64 * 1024, [], tmp_path / "t.torrent")  # trackerless
    host = swarm.next_address()
    seeder_address = PeerAddress(host, free_port(host, udp=False))
    config = tmp_path / "seeder.toml"
    # From many addresses the per-host cap does not help: idle peers are replaced instead,
    # after a short idleness here so that the test need not wait a minute.
    config.write_text(CONFIG.format(host=host, port=seeder_address.port, replace_idle_after=3.0))
    log = tmp_path / "seeder.log"
    seeder = start_seeder(torrent.path, spec.root, config, log)
    squatters = None
    try:
        wait_seeding(seeder_address, torrent.info_hash, seeder)
        sources = [next_loopback_address() for _ in range(hosts)]
        squatters = SlotSquatters(
            seeder_address, torrent.info_hash, sources, idle=IDLE, slowloris=SLOWLORIS
        ).start()
        time.sleep(5.0)  # the attack in place, its idle connections idle for long enough
        assert squatters.answered_idle() >= 1  # it does hold slots: the attack is real
        # Slowloris sockets are dropped and reopened all the time: one must be open at times.
        assert _sometime(lambda: squatters.open_slowloris() >= 1, within=10.0)
        leecher = swarm.leecher(
            torrent.path, tmp_path / "lt", connect_peers=[seeder_address], wait=True
        )
        leecher.wait_finished(LEECH_TIMEOUT)
        assert seeder.poll() is None  # hostile sockets cost it nothing worse
    finally:
        if squatters is not None:
            squatters.stop()
        seeder.terminate()
        try:
            seeder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            seeder.kill()
            seeder.wait(timeout=10)
        print(log.read_text(errors="replace")[-3000:])  # shown when the test failed
    _assert_identical(spec, tmp_path / "lt")
