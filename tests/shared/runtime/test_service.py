"""The service runner in real processes: signals, crashes, hung actors, patching order."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import gevent.monkey
import pytest

from torviz.shared.runtime.service import EXIT_FAILURE, EXIT_OK, ServiceRunner

from .conftest import ServiceProcess


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_stops_the_service_cleanly(
    signum: signal.Signals, short_dir: Path, start_service: Any
) -> None:
    service: ServiceProcess = start_service("echo", f"ipc://{short_dir}/sig")
    service.ready()
    began = time.monotonic()
    service.signal(signum)
    assert service.wait(timeout=10) == EXIT_OK, service.stderr()
    assert time.monotonic() - began < 5.0
    assert service.markers() == ["on_stop echo"]
    assert f"{signum.name} received, stopping" in service.stderr()


def test_an_actor_that_dies_stops_the_service_with_failure(start_service: Any) -> None:
    service: ServiceProcess = start_service("die")
    assert service.wait(timeout=10) == EXIT_FAILURE, service.stderr()
    assert "on_stop first" in service.markers()
    assert "deliberate crash" in service.stderr()


def test_a_failing_factory_still_stops_what_was_started(start_service: Any) -> None:
    service: ServiceProcess = start_service("fail_start")
    assert service.wait(timeout=10) == EXIT_FAILURE, service.stderr()
    assert service.markers() == ["on_stop first"]
    assert "deliberate start failure" in service.stderr()


def test_a_hung_actor_cannot_keep_the_process_alive(start_service: Any) -> None:
    service: ServiceProcess = start_service("stuck")
    began = time.monotonic()
    assert service.wait(timeout=15) == EXIT_FAILURE, service.stderr()
    assert time.monotonic() - began < 10.0
    assert service.markers() == ["on_stop last", "on_stop stuck"]  # reverse start order
    assert "exiting hard" in service.stderr()


def test_the_runner_refuses_pykka_imported_before_patching(start_service: Any) -> None:
    service: ServiceProcess = start_service("late_patch")
    assert service.wait(timeout=10) != EXIT_OK
    assert "pykka was imported before gevent.monkey.patch_all()" in service.stderr()
    assert service.markers() == []


@pytest.mark.skipif(
    gevent.monkey.is_module_patched("threading"), reason="this test process is patched"
)
def test_the_runner_refuses_an_unpatched_process() -> None:
    with pytest.raises(RuntimeError, match="patch_all"):
        ServiceRunner("unpatched").run([])
