"""A private certificate authority for HTTPS tests, made with the ``openssl`` command.

Strategy: ``make_private_ca(folder)`` writes a CA certificate and a server certificate it
signed (EC P-256, valid one day, subjectAltName ``IP:127.0.0.1`` and ``DNS:localhost``) into a
test's temporary folder. Clients trust the CA file (``ca_file``); the server certificate alone
is not a trust anchor, so a passing test shows a real chain check. ``server_context`` is the
``ssl`` context a loopback ``http.server`` wraps its socket with.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_TIMEOUT_S = 30


@dataclass(frozen=True)
class PrivateCa:
    """The files of a private CA and of one server certificate it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def _openssl(*argv: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    subprocess.run([openssl, *argv], check=True, capture_output=True, timeout=_TIMEOUT_S)


def make_private_ca(folder: Path) -> PrivateCa:
    """Make a CA and a server certificate for 127.0.0.1 and localhost in ``folder``."""
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    csr, cert, key = folder / "server.csr", folder / "server.pem", folder / "server.key"
    ext = folder / "server.ext"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
        "-subj", "/CN=torviz test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl("req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectKeyIdentifier=hash\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(ext),
    )  # fmt: skip
    return PrivateCa(ca_file=ca, cert_file=cert, key_file=key)
