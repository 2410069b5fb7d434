"""HTTPS web seeds (issue 17): nginx on loopback serves the files over TLS with a certificate
of a private CA made for the test (tests/shared/runtime/private_ca.py).

- with ``[peer_agent] web_seed_ca_file`` naming that CA, the one-shot ``download`` from the
  web seed alone completes, byte-identical;
- without it the certificate is not trusted: no request reaches nginx, the web seed is given up
  after ``web_seed_max_failures`` failures and the download ends with one line naming the
  certificate failure, bounded in time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testing.content import compare_content, make_content, make_torrent, multi_file_layout
from tests.interop.test_web_seed import DOWNLOAD_TIMEOUT, MIB
from tests.shared.runtime.private_ca import make_private_ca
from tests.support.nginx import Nginx, nginx_or_skip
from tests.support.web_seeds import add_url_list, download_alone, web_seed_config

pytestmark = pytest.mark.interop

MAX_FAILURES = 2


def test_an_https_web_seed_is_trusted_through_the_ca_file_only(tmp_path: Path) -> None:
    nginx_or_skip()
    ca = make_private_ca(tmp_path)
    spec = make_content(tmp_path / "seed", multi_file_layout(2 * MIB + 3, "tls"), seed=191)
    torrent = make_torrent(spec, 32 * 1024, [], tmp_path / "t.torrent")
    with Nginx(spec.root, tmp_path / "nginx", tls=(ca.cert_file, ca.key_file)) as nginx:
        assert nginx.url.startswith("https://127.0.0.1:")
        add_url_list(torrent.path, [nginx.url])

        untrusted = tmp_path / "untrusted"
        untrusted.mkdir()
        started = time.monotonic()
        refused = download_alone(
            torrent.path,
            untrusted / "out",
            web_seed_config(max_failures=MAX_FAILURES),
            untrusted,
            60,
            "--stall-timeout",
            "3",
        )
        took = time.monotonic() - started
        assert nginx.requests() == (), "a request got through an untrusted TLS connection"

        trusted = tmp_path / "trusted"
        trusted.mkdir()
        done = download_alone(
            torrent.path,
            trusted / "out",
            web_seed_config(ca_file=ca.ca_file),
            trusted,
            DOWNLOAD_TIMEOUT,
        )
        served = nginx.requests()

    assert refused.code == 1, refused.stderr[-3000:]
    assert "Traceback" not in refused.stderr
    [line] = [text for text in refused.stderr.splitlines() if text.startswith("torviz: ")]
    assert line.startswith("torviz: error: ") and "certificate" in line, line
    assert took < 40, f"the untrusted download took {took:.1f} s to give up"

    assert done.code == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert compare_content(spec.root, trusted / "out", spec) == []
    assert served and {r.status for r in served} == {206}, served[:3]
