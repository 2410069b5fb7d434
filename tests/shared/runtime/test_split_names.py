"""Every name ``curve`` and ``sockets`` gave before their split is still theirs to give.

``shared/runtime/curve.py`` and ``sockets.py`` were split by theme (key files, handshake watches;
the control client, the hello gate, the socket rules). Callers import from the old modules, so
each name is checked importable there and the very object of its new home; and the lines the
moved code logs keep their loggers, which operators filter on.
"""

from __future__ import annotations

import importlib
import logging

import pytest

from torviz.shared.runtime import control, curve, handshakes, hello_gate, key_files, sockets

CURVE_NAMES = [
    "AGENT_ROLES",
    "AUTHORIZED_DIR",
    "CONTROL_ZAP_DOMAIN",
    "COORDINATOR_KEY",
    "MAX_AUTHORIZED",
    "MAX_KEY_FILE",
    "MAX_METADATA",
    "ROLE_METADATA",
    "ZAP_DOMAIN",
    "AuthorizedKey",
    "CurveClient",
    "CurveServer",
    "HandshakeWatch",
    "KeyPair",
    "ServerHandshakeWatch",
    "authorized_keys",
    "check_key_name",
    "check_public_key",
    "client_security",
    "control_security",
    "load_authorized_dir",
    "load_keypair",
    "load_public_key",
    "read_key_role",
    "role_of_name",
    "server_security",
]
SOCKETS_NAMES = [
    "BusSocket",
    "ControlClient",
    "DaemonUnreachableError",
    "Incoming",
    "PermissionDeniedError",
    "SocketStats",
    "control_request",
]
HOMES = [key_files, handshakes, curve, control, sockets]


def _home(name: str) -> str:
    """The module a name is defined in now (the first of ``HOMES`` that holds it)."""
    return next(m.__name__ for m in HOMES if name in vars(m) and name in m.__all__)


@pytest.mark.parametrize(
    ("old", "name"),
    [("torviz.shared.runtime.curve", n) for n in CURVE_NAMES]
    + [("torviz.shared.runtime.sockets", n) for n in SOCKETS_NAMES],
)
def test_a_name_is_importable_where_it_was(old: str, name: str) -> None:
    module = importlib.import_module(old)
    assert name in module.__all__
    assert getattr(module, name) is getattr(importlib.import_module(_home(name)), name)


def test_the_old_modules_give_no_fewer_names() -> None:
    assert set(CURVE_NAMES) <= set(curve.__all__)
    assert set(SOCKETS_NAMES) <= set(sockets.__all__)


def test_the_moved_code_logs_as_before() -> None:
    assert handshakes.log is logging.getLogger(curve.__name__)
    assert hello_gate.log is logging.getLogger(sockets.__name__)
