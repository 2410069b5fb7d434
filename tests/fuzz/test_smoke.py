"""Fuzzing in every test run: a short atheris run of each target, and a plain replay of every
seed and every saved finding.

Strategy: the smoke run gives each target a few thousand coverage-guided inputs (about 20 s for
all of them on two cores), enough to catch a parser change that breaks on the first odd byte;
long campaigns are ``campaign.sh``'s job (figures in ``README.md``). The replay needs no
atheris, so regressions stay checked wherever the tests run. Planted bugs prove the pipeline
itself: a finding is caught, saved under its target's name, and replays; a contract violation
in a target is not swallowed.

Rules: without atheris the smoke runs skip, naming the fix; under ``CI=true`` they fail, since
CI installs the test extra.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fuzz import run
from tests.fuzz.targets import TARGETS
from torviz.shared.errors import BusError, KrpcError
from torviz.shared.types import PeerAddress
from torviz.shared.wire.pex import DecodedPex, PexMessage

SMOKE_RUNS = 3_000

REGRESSION_FILES = sorted(run.REGRESSIONS.glob("*.bin"))


def _require_atheris() -> None:
    if importlib.util.find_spec("atheris") is None:
        reason = "atheris is not installed: .venv/bin/pip install -e '.[test]'"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{reason} (CI=true: CI installs it, so this is a failure)")
        pytest.skip(reason)


def _describe(outcome: run.Outcome) -> str:
    lines = [f"{outcome.target}: exit {outcome.returncode}, findings:"]
    for path in outcome.findings:
        data = path.read_bytes()
        lines.append(f"  {path.name} ({len(data)} bytes): {data[:200].hex()}")
    lines.append("copy the file into tests/fuzz/regressions/ and fix the parser; log tail:")
    lines.append(outcome.log_tail)
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(TARGETS))
def test_smoke_fuzz(name: str, tmp_path: Path) -> None:
    _require_atheris()
    outcome = run.fuzz(name, runs=SMOKE_RUNS, save_crashes=tmp_path)
    assert outcome.clean, _describe(outcome)
    assert outcome.executions >= SMOKE_RUNS
    assert outcome.coverage > 0, "the parsers were not instrumented"


@pytest.mark.parametrize("name", list(TARGETS))
def test_every_seed_passes_its_target(name: str) -> None:
    target = TARGETS[name]
    inputs = list(target.seeds())
    assert inputs, f"{name} has no seeds"
    for data in inputs:
        target.run(data)


@pytest.mark.parametrize("path", REGRESSION_FILES, ids=[p.name for p in REGRESSION_FILES])
def test_saved_finding_no_longer_fails(path: Path) -> None:
    run.replay(path)


def test_every_saved_finding_names_a_target() -> None:
    for path in run.REGRESSIONS.iterdir():
        if path.suffix == ".bin":
            assert path.name.split("-", 1)[0] in TARGETS, path.name


# --- the pipeline itself ---------------------------------------------------------------------


def test_a_crash_is_found_saved_and_replayed(tmp_path: Path) -> None:
    _require_atheris()
    outcome = run.fuzz(
        "planted_crash", runs=100, save_crashes=tmp_path, module="tests.fuzz.planted"
    )
    assert not outcome.clean
    [saved] = outcome.findings
    assert saved.name.startswith("planted_crash-crash-") and saved.suffix == ".bin"
    assert saved.read_bytes() == b"boom"
    with pytest.raises(IndexError, match="planted bug"):
        run.replay(saved, module="tests.fuzz.planted")


def test_a_hang_is_found_and_saved(tmp_path: Path) -> None:
    _require_atheris()
    outcome = run.fuzz(
        "planted_hang", runs=100, timeout=1, save_crashes=tmp_path, module="tests.fuzz.planted"
    )
    assert [p.name.split("-")[1] for p in outcome.findings] == ["timeout"]
    assert outcome.seconds < 15, "the per-input limit did not stop the hang"


def _raise(exc: Exception) -> Callable[..., object]:
    def planted(*args: object, **kwargs: object) -> object:
        raise exc

    return planted


_PEER = PeerAddress("192.0.2.1", 6881)
_TOO_MANY = DecodedPex(PexMessage(added=(_PEER,) * 101, added_flags=(0,) * 101), 0)
"""A ``ut_pex`` decoding over the cap (the target's caps are 100 and 2)."""

_PING = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe"
_REQUEST = b"d8:msg_typei0e5:piecei0ee"
"""What a broken encoder returns for every message: a round trip then changes the message."""

PLANTED_BUGS = [
    # An undocumented exception type escapes.
    ("magnet", "parse_magnet", _raise(IndexError("x")), IndexError),
    ("tracker_udp", "decode_request", _raise(struct.error("x")), struct.error),
    # A documented type with an undocumented reason is a finding too.
    ("bus_codec", "decode_message", _raise(BusError("made_up", "x")), AssertionError),
    # Round trips and whole-versus-chunked agreement are checked.
    ("bencode_strict", "bencode", lambda value: b"i0e", AssertionError),
    ("wire_codec", "encode", lambda message: b"\xff", AssertionError),
    ("extension_handshake", "encode_extension_handshake", lambda h: b"de", AssertionError),
    # The targets of the other modules (named ``module.attribute``).
    ("dht_krpc", "targets_dht.decode_krpc", _raise(KeyError("x")), KeyError),
    ("dht_krpc", "targets_dht.decode_krpc", _raise(KrpcError("made_up", "x")), AssertionError),
    ("dht_krpc", "targets_dht.encode_krpc", lambda message: _PING, AssertionError),
    ("dht_table_file", "targets_dht.RoutingTable.load", _raise(ValueError("x")), ValueError),
    ("ut_metadata", "targets_peers.encode_metadata_message", lambda m: _REQUEST, AssertionError),
    ("ut_pex", "targets_peers.decode_pex", lambda payload, max_entries: _TOO_MANY, AssertionError),
    ("ut_pex", "targets_peers.encode_pex", lambda m: b"de", AssertionError),
]


@pytest.mark.parametrize(
    ("name", "attribute", "replacement", "error"),
    PLANTED_BUGS,
    ids=[f"{name}-{attribute}" for name, attribute, _, _ in PLANTED_BUGS],
)
def test_a_target_reports_a_broken_contract(
    name: str,
    attribute: str,
    replacement: Callable[..., object],
    error: type[Exception],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    module = "tests.fuzz" if "." in attribute else "tests.fuzz.targets"
    monkeypatch.setattr(f"{module}.{attribute}", replacement)
    target = TARGETS[name]
    with pytest.raises(error):
        for data in target.seeds():
            target.run(data)
