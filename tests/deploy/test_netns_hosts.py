"""deploy/netns-hosts.sh: simulated hosts reach each other over TCP and vanish on `down`.

Needs root and a kernel that lets us create network namespaces; otherwise the tests that build
hosts skip, except that under CI=true (which runs as root) a missing `ip` is a failure. Every
process and namespace a test makes is removed in a fixture, even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "netns-hosts.sh"
HOSTS = 3
PORT = 7811
TIMEOUT = 5.0

# Accepts one connection from each other host and answers with its own address.
SERVER = f"""
import socket, sys
address, expected = sys.argv[1], int(sys.argv[2])
with socket.create_server((address, {PORT})) as server:
    server.settimeout({TIMEOUT})
    for _ in range(expected):
        connection, _peer = server.accept()
        with connection:
            connection.settimeout({TIMEOUT})
            connection.recv(64)
            connection.sendall(address.encode())
"""

# Connects to every address given, retrying while the server starts, and prints the answers.
CLIENT = f"""
import socket, sys, time
for address in sys.argv[1:]:
    deadline = time.monotonic() + {TIMEOUT}
    while True:
        try:
            with socket.create_connection((address, {PORT}), timeout=1) as connection:
                connection.sendall(b"hello")
                print(connection.recv(64).decode())
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
"""


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30, check=False
    )


def _namespaces() -> set[str]:
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=True
    )
    return {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}


def _root_links() -> set[str]:
    listing = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10, check=True
    )
    return {line.split(":")[1].strip() for line in listing.stdout.splitlines()}


def _skip_or_fail(reason: str, *, fail_in_ci: bool) -> None:
    if fail_in_ci and os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason} (CI=true: CI provides it, so this is a failure)")
    pytest.skip(reason)


@pytest.fixture
def hosts() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """Bring up HOSTS hosts under a unique prefix; yield (prefix, [(namespace, address)])."""
    if shutil.which("ip") is None:
        _skip_or_fail("the 'ip' command (iproute2) is missing", fail_in_ci=True)
    if os.geteuid() != 0:
        pytest.skip("building network namespaces needs root")
    prefix = f"tvt{os.getpid()}"
    try:
        result = _run("up", prefix, str(HOSTS))
        if result.returncode != 0:
            message = result.stderr.strip()
            if "not permitted" in message or "Permission denied" in message:
                pytest.skip(f"the kernel refused network namespaces: {message}")
            pytest.fail(f"up failed ({result.returncode}): {message}")
        rows = [tuple(line.split()) for line in result.stdout.splitlines()]
        yield prefix, [(row[0], row[1]) for row in rows]
    finally:
        _run("down", prefix)


def test_every_host_reaches_every_other_over_tcp(
    hosts: tuple[str, list[tuple[str, str]]],
) -> None:
    prefix, table = hosts
    assert [name for name, _ in table] == [f"{prefix}-{i}" for i in range(1, HOSTS + 1)]
    servers = [
        subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", SERVER, address, str(HOSTS - 1)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name, address in table
    ]
    try:
        for name, address in table:
            others = [other for _, other in table if other != address]
            client = subprocess.run(
                ["ip", "netns", "exec", name, sys.executable, "-c", CLIENT, *others],
                capture_output=True,
                text=True,
                timeout=TIMEOUT * HOSTS,
                check=False,
            )
            assert client.returncode == 0, f"{name}: {client.stderr}"
            assert client.stdout.split() == others
        for server in servers:
            assert server.wait(timeout=TIMEOUT) == 0
    finally:
        for server in servers:
            if server.poll() is None:
                server.kill()
            server.communicate(timeout=TIMEOUT)


def test_hosts_have_no_route_out(hosts: tuple[str, list[tuple[str, str]]]) -> None:
    _, table = hosts
    for name, address in table:
        routes = subprocess.run(
            ["ip", "-n", name, "-4", "route", "show"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
        subnet = address.rsplit(".", 1)[0] + ".0/24"
        assert [route.split()[0] for route in routes] == [subnet], name


def test_down_removes_everything_and_is_idempotent() -> None:
    if shutil.which("ip") is None:
        _skip_or_fail("the 'ip' command (iproute2) is missing", fail_in_ci=True)
    if os.geteuid() != 0:
        pytest.skip("building network namespaces needs root")
    prefix = f"tvd{os.getpid()}"
    before_links = _root_links()
    try:
        up = _run("up", prefix, "2")
        if up.returncode != 0 and (
            "not permitted" in up.stderr or "Permission denied" in up.stderr
        ):
            pytest.skip(f"the kernel refused network namespaces: {up.stderr.strip()}")
        assert up.returncode == 0, up.stderr
        assert {f"{prefix}-1", f"{prefix}-2", f"{prefix}-hub"} <= _namespaces()
        again = _run("up", prefix, "2")
        assert again.returncode == 1
        assert "exist already" in again.stderr
    finally:
        first = _run("down", prefix)
    assert first.returncode == 0, first.stderr
    assert not {ns for ns in _namespaces() if ns.startswith(f"{prefix}-")}
    assert _root_links() == before_links
    second = _run("down", prefix)
    assert (second.returncode, second.stderr) == (0, "")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["up"],
        ["up", "a/b", "2"],
        ["up", "ok", "0"],
        ["up", "ok", "251"],
        ["up", "ok", "two"],
        ["up", "ok", "2", "192.168.1"],
        ["up", "ok", "2", "10.300.1"],
        ["down"],
        ["sideways", "ok"],
    ],
)
def test_bad_arguments_print_usage_and_exit_2(args: list[str]) -> None:
    result = _run(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage:")
    assert len(result.stderr.splitlines()) == 1
