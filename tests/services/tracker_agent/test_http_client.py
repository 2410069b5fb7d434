"""The HTTP(S) tracker client against scripted servers on loopback.

The test process is not gevent-patched, so the client's sockets simply block here; the same
code is cooperative inside the agent. Every failure must be one short line with a named reason.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testing import free_port
from tests.services.tracker_agent.conftest import StartAgent
from tests.services.tracker_agent.fakes import HOSTILE_HTTP, HttpServer, Reply, SilentTcpServer
from tests.services.tracker_agent.harness import AGENT_ID, REPO, Coordinator, track
from tests.shared.runtime.private_ca import PrivateCa, make_private_ca
from torviz.services.tracker_agent.http_client import (
    announce_http,
    http_get,
    scrape_http,
    tracker_client,
    user_agent,
)
from torviz.shared.bencode import encode
from torviz.shared.bus import TrackerState
from torviz.shared.errors import TrackerError
from torviz.shared.tracker import (
    MAX_RESPONSE_SIZE,
    AnnounceFailure,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    encode_compact_v4,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

PEERS = (PeerAddress("127.0.0.2", 6881), PeerAddress("127.0.0.3", 6882))
OK_BODY = encode(
    {b"interval": 900, b"min interval": 60, b"complete": 1, b"incomplete": 2,
     b"peers": encode_compact_v4(PEERS)}
)  # fmt: skip
REQUEST = AnnounceRequest(
    info_hash=InfoHash(b"\xaa" * 20),
    peer_id=PeerId(b"-TV0100-abcdefghijkl"),
    port=6881,
    uploaded=0,
    downloaded=0,
    left=10,
)


def redirect(to: str, status: int = 302) -> Reply:
    return Reply(status, headers={"Location": to})


@pytest.fixture
def server() -> Iterator[HttpServer]:
    routes: dict[str, Reply] = {
        "/announce": Reply(body=OK_BODY),
        "/refused": Reply(body=encode({b"failure reason": b"unregistered torrent"})),
        "/garbage": Reply(body=b"<html>not bencode</html>"),
        "/gone": Reply(404, b"nope"),
        "/error": Reply(500, b""),
        "/loop-a": redirect("/loop-b"),
        "/loop-b": redirect("/loop-a"),
        "/relative": redirect("announce", 301),
        "/ftp": redirect("ftp://127.0.0.1/announce"),
        "/nowhere": Reply(302),
        "/declared-huge": Reply(headers={"Content-Length": str(MAX_RESPONSE_SIZE + 1)},
                                content_length=False),
        "/undeclared-huge": Reply(body=b"x" * (MAX_RESPONSE_SIZE + 10), content_length=False),
        "/exact": Reply(body=b"y" * 1000),
        "/drip": Reply(body=b"z" * 100, drip=0.05),
    }  # fmt: skip
    for n in range(1, 8):
        routes[f"/hop{n}"] = redirect(f"/hop{n - 1}")
    routes["/hop0"] = Reply(body=OK_BODY)
    with HttpServer(dict(routes)) as running:
        yield running


def reason_of(url: str, **kwargs) -> tuple[str, str]:
    with pytest.raises(TrackerError) as caught:
        http_get(url, timeout=kwargs.pop("timeout", 2.0), **kwargs)
    return caught.value.reason, str(caught.value)


def test_announce_parses_the_reply_and_sends_our_user_agent(server):
    result = announce_http(server.url("/announce"), REQUEST, timeout=2.0)
    assert isinstance(result, AnnounceResponse)
    assert result.addresses == PEERS
    assert (result.interval, result.complete, result.incomplete) == (900, 1, 2)
    path, headers = server.requests[0]
    assert path.startswith("/announce?info_hash=%AA%AA")
    assert "event" not in path and "numwant" not in path
    assert headers["User-Agent"] == user_agent()
    assert user_agent().startswith("torviz/0.")
    assert "Accept-Encoding" not in headers


def test_tracker_refusal_is_a_failure_not_an_error(server):
    result = announce_http(server.url("/refused"), REQUEST, timeout=2.0)
    assert result == AnnounceFailure(reason="unregistered torrent")


def test_invalid_bencode_names_the_cause(server):
    with pytest.raises(TrackerError) as caught:
        announce_http(server.url("/garbage"), REQUEST, timeout=2.0)
    assert caught.value.reason == "bad_bencode"
    assert str(caught.value).startswith("tracker reply is not valid bencode")


@pytest.mark.parametrize(
    ("path", "reason", "message"),
    [
        ("/gone", "http_status", "HTTP 404 Not Found"),
        ("/error", "http_status", "HTTP 500 Internal Server Error"),
        ("/loop-a", "redirect_loop", "redirect loop at http://127.0.0.1:{port}/loop-a"),
        ("/hop6", "too_many_redirects", "too many redirects (more than 5)"),
        ("/ftp", "bad_redirect", "redirect to a non-HTTP URL: 'ftp://127.0.0.1/announce'"),
        ("/nowhere", "bad_redirect", "redirect without a Location header"),
        ("/declared-huge", "response_too_large", "response too large (over 1048576 bytes)"),
        ("/undeclared-huge", "response_too_large", "response too large (over 1048576 bytes)"),
    ],
)
def test_failures_are_one_named_line(server, path, reason, message):
    assert reason_of(server.url(path)) == (reason, message.format(port=server.port))


def test_five_redirects_are_followed_relative_ones_too(server):
    assert http_get(server.url("/hop5"), timeout=2.0) == OK_BODY
    assert http_get(server.url("/relative"), timeout=2.0) == OK_BODY
    assert [p.split("?")[0] for p, _ in server.requests[-2:]] == ["/relative", "/announce"]


def test_declared_oversize_body_is_refused_without_reading(server):
    started = time.monotonic()
    # The server declares a huge length and sends nothing: reading would wait for the timeout.
    assert reason_of(server.url("/declared-huge"), timeout=5.0)[0] == "response_too_large"
    assert time.monotonic() - started < 1.0


def test_body_limit_is_exact(server):
    assert http_get(server.url("/exact"), timeout=2.0, max_body=1000) == b"y" * 1000
    assert reason_of(server.url("/exact"), max_body=999) == (
        "response_too_large",
        "response too large (over 999 bytes)",
    )


def test_connection_refused():
    port = free_port()
    assert reason_of(f"http://127.0.0.1:{port}/announce") == (
        "connection_refused",
        "connection refused",
    )


def test_silent_server_times_out_within_the_bound():
    with SilentTcpServer() as silent:
        started = time.monotonic()
        assert reason_of(silent.url, timeout=0.3) == ("timed_out", "timed out after 0.3 s")
        assert time.monotonic() - started < 1.0


def test_dripping_body_is_cut_at_the_deadline(server):
    started = time.monotonic()
    assert reason_of(server.url("/drip"), timeout=0.4) == ("timed_out", "timed out after 0.4 s")
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:99999/announce", "http://[::1/announce", "udp://127.0.0.1:1", "http:///x"],
)
def test_bad_urls(url):
    assert reason_of(url)[0] == "bad_url"


def test_ipv6_tracker():
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    with HttpServer({"/announce": Reply(body=OK_BODY)}, host="::1") as v6:
        assert v6.url("/announce").startswith("http://[::1]:")
        result = announce_http(v6.url("/announce"), REQUEST, timeout=2.0)
        assert isinstance(result, AnnounceResponse) and result.addresses == PEERS


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=20,
    )  # fmt: skip
    return cert, key


def test_https_checks_the_certificate(tls_files):
    cert, key = tls_files
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    with HttpServer({"/announce": Reply(body=OK_BODY)}, tls=server_context) as https:
        url = https.url("/announce")
        assert url.startswith("https://127.0.0.1:")
        reason, message = reason_of(url)
        assert reason == "tls_error"
        assert message.startswith("TLS certificate rejected: ") and "\n" not in message
        trusting = tracker_client(ca_file=str(cert))
        result = announce_http(url, REQUEST, timeout=2.0, client=trusting)
        assert isinstance(result, AnnounceResponse) and result.addresses == PEERS


@pytest.fixture
def private_ca(tmp_path: Path) -> PrivateCa:
    return make_private_ca(tmp_path)


def test_https_tracker_with_a_private_ca(private_ca: PrivateCa) -> None:
    routes: dict[str, Reply | Callable[[], Reply]] = {"/announce": Reply(body=OK_BODY)}
    with HttpServer(routes, tls=private_ca.server_context()) as https:
        url = https.url("/announce")
        trusting = tracker_client(ca_file=str(private_ca.ca_file))
        try:
            for _ in range(2):
                result = announce_http(url, REQUEST, timeout=2.0, client=trusting)
                assert isinstance(result, AnnounceResponse) and result.addresses == PEERS
        finally:
            trusting.close()
        assert reason_of(url) == (
            "tls_error",
            "TLS certificate rejected: unable to get local issuer certificate",
        )


def test_the_agent_trusts_its_ca_file(
    private_ca: PrivateCa, coordinator: Coordinator, start_agent: StartAgent
) -> None:
    """``[tracker_agent] ca_file`` reaches the agent's client: the private CA's tracker works."""
    routes: dict[str, Reply | Callable[[], Reply]] = {"/announce": Reply(body=OK_BODY)}
    with HttpServer(routes, tls=private_ca.server_context()) as https:
        url = https.url("/announce")
        start_agent(f'announce_timeout = 2.0\nca_file = "{private_ca.ca_file}"')
        coordinator.send(track(REQUEST.info_hash, (url,)))
        working = coordinator.state(url, TrackerState.WORKING)
        assert working.error is None
        coordinator.wait_for(lambda m: set(PEERS) <= coordinator.peers(REQUEST.info_hash), 5.0)


def test_the_agent_without_the_ca_file_reports_one_line(
    private_ca: PrivateCa, coordinator: Coordinator, start_agent: StartAgent
) -> None:
    routes: dict[str, Reply | Callable[[], Reply]] = {"/announce": Reply(body=OK_BODY)}
    with HttpServer(routes, tls=private_ca.server_context()) as https:
        url = https.url("/announce")
        start_agent("announce_timeout = 2.0")
        coordinator.send(track(REQUEST.info_hash, (url,)))
        failed = coordinator.state(url, TrackerState.FAILED)
        assert failed.error == "TLS certificate rejected: unable to get local issuer certificate"


def test_an_unreadable_ca_file_stops_the_agent_with_one_line(
    coordinator: Coordinator, tmp_path: Path
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'[tracker_agent]\ndht = false\nca_file = "{tmp_path / "none.pem"}"\n')
    finished = subprocess.run(
        [sys.executable, "-m", "torviz.services.tracker_agent",
         "--coordinator", coordinator.endpoint, "--agent-id", AGENT_ID, "--config", str(config)],
        cwd=REPO, capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert finished.returncode == 2
    assert finished.stderr.startswith(
        f"torviz-tracker-agent: error: cannot read CA certificates from {tmp_path / 'none.pem'}: "
    ), finished.stderr
    assert len(finished.stderr.strip().splitlines()) == 1


STATS = ScrapeStats(complete=4, downloaded=9, incomplete=2)


def test_scrape_uses_the_bep48_url_and_reads_the_counts():
    info_hash = REQUEST.info_hash
    body = encode({b"files": {info_hash.raw: {b"complete": 4, b"downloaded": 9, b"incomplete": 2}}})
    with HttpServer({"/x/scrape.php": Reply(body=body)}) as server:
        assert scrape_http(server.url("/x/announce.php?k=1"), info_hash, timeout=2.0) == STATS
        ((path, _),) = server.requests
        assert path == "/x/scrape.php?k=1&info_hash=" + "%AA" * 20
        with pytest.raises(TrackerError) as caught:
            scrape_http(server.url("/x/announce.php"), InfoHash(b"\x01" * 20), timeout=2.0)
        assert caught.value.reason == "not_listed"


def test_no_scrape_url_means_no_request():
    with pytest.raises(TrackerError) as caught:
        scrape_http("http://127.0.0.1:9/tracker", REQUEST.info_hash, timeout=2.0)
    assert (caught.value.reason, str(caught.value)) == (
        "no_scrape",
        "the tracker has no scrape URL (BEP 48)",
    )


def test_a_parser_can_be_offloaded():
    calls = []

    def offload(parse, body):
        calls.append(len(body))
        return parse(body)

    with HttpServer({"/announce": Reply(body=OK_BODY)}) as server:
        result = announce_http(server.url("/announce"), REQUEST, timeout=2.0, offload=offload)
    assert isinstance(result, AnnounceResponse) and calls == [len(OK_BODY)]


@pytest.mark.parametrize("path", sorted(set(HOSTILE_HTTP) - {"/loop2"}))
def test_hostile_replies_give_one_named_line(path):
    routes: dict[str, Reply | Callable[[], Reply]] = {
        p: reply for p, (reply, _) in HOSTILE_HTTP.items()
    }
    with HttpServer(routes) as server:
        started = time.monotonic()
        result: AnnounceResponse | AnnounceFailure | TrackerError
        try:
            result = announce_http(server.url(path), REQUEST, timeout=5.0)
        except TrackerError as exc:
            result = exc
        text = result.message if isinstance(result, AnnounceFailure) else str(result)
        assert text.startswith(HOSTILE_HTTP[path][1]) and "\n" not in text
        assert time.monotonic() - started < 3.0
