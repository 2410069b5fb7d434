"""Fixture wiring for the whole test tree; the fixtures live in testing/ and tests/support/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.processes import kill_leftovers
from testing.swarm import Swarm, missing_interop_tools

# No test may join the public DHT: every tracker agent a test starts (in this process or as a
# child, which inherits this) skips public bootstrap nodes and sends nothing to a public
# address (services/tracker_agent/core/dht_rules.py). tests/services/tracker_agent/
# test_dht_guard.py fails without this line.
os.environ["TORVIZ_DHT_LOCAL_ONLY"] = "1"


@pytest.fixture(scope="session")
def interop_tools() -> None:
    """Skip interop tests when opentracker or libtorrent is missing; under CI=true, fail."""
    missing = missing_interop_tools()
    if missing:
        reason = "interop tools missing: " + "; ".join(missing)
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{reason} (CI=true: CI installs them, so this is a failure)")
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _interop_requirements(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("interop") is not None:
        request.getfixturevalue("interop_tools")


@pytest.fixture(scope="session", autouse=True)
def _reap_leftover_processes() -> Iterator[None]:
    """Safety net behind the fixtures: stop any child process a test left running."""
    yield
    kill_leftovers()


@pytest.fixture
def swarm(tmp_path: Path, interop_tools: None) -> Iterator[Swarm]:
    """A `Swarm` for one test; every tracker and peer it started is stopped afterwards."""
    with Swarm(tmp_path / "swarm") as s:
        yield s
