"""A tiny torviz service for the runtime tests, run as its own process.

Usage: ``python bus_service_script.py MODE ENDPOINT MARKER``

- ``echo``: a storage-like actor binds a ROUTER (with the hello gate) at ENDPOINT, prints
  ``READY <endpoint>``, echoes ``StorePiece`` data back as ``BlockRead``, answers ``ListTorrents``
  and ``ShutdownRequested`` (then stops the service).
- ``die``: the actor crashes after start; the runner must exit 1.
- ``stuck``: the actor's ``on_stop`` never returns; the runner must exit 1, not hang.
- ``fail_start``: the second factory raises; the first actor must still be stopped.
- ``late_patch``: pykka is imported before gevent patches; the runner must refuse.

Every actor that stops appends ``on_stop <name>`` to MARKER.
"""

from __future__ import annotations

import sys

if sys.argv[1] == "late_patch":
    import pykka  # deliberately before patching: the runner must refuse

import gevent.monkey

gevent.monkey.patch_all()

import os  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import pykka  # noqa: E402

from torviz.shared.bus import (  # noqa: E402
    BlockRead,
    HelloPolicy,
    ListTorrents,
    ServiceKind,
    ShutdownAccepted,
    ShutdownRequested,
    StatusReport,
    StorePiece,
)
from torviz.shared.runtime.logging import setup_logging  # noqa: E402
from torviz.shared.runtime.service import ActorFactory, ServiceRunner  # noqa: E402
from torviz.shared.runtime.sockets import BusSocket, Incoming  # noqa: E402


class Marked(pykka.ThreadingActor):
    def __init__(self, name: str, marker: Path) -> None:
        super().__init__()
        self.name = name
        self.marker = marker

    def on_stop(self) -> None:
        with self.marker.open("a") as out:
            out.write(f"on_stop {self.name}\n")


class Echo(Marked):
    """Owns a ROUTER BusSocket: started in on_start, closed in on_stop."""

    def __init__(self, endpoint: str, marker: Path, runner: ServiceRunner) -> None:
        super().__init__("echo", marker)
        self.endpoint = endpoint
        self.runner = runner
        self.bus: BusSocket | None = None

    def on_start(self) -> None:
        policy = HelloPolicy(
            service=ServiceKind.STORAGE_AGENT,
            server_id="echo",
            accepts=frozenset({ServiceKind.PEER_AGENT, ServiceKind.CLI}),
            heartbeat_interval=1.0,
        )
        self.bus = BusSocket.router(self.actor_ref.tell, name="echo", hello_policy=policy)
        bound = self.bus.bind(self.endpoint)
        self.bus.start()
        print(f"READY {bound}", flush=True)

    def on_receive(self, message: Any) -> None:
        assert self.bus is not None
        match message:
            case Incoming(StorePiece(info_hash, piece, _), data, sender) if data is not None:
                self.bus.send(BlockRead(piece, info_hash, piece, 0), data, to=sender)
            case Incoming(ListTorrents(), _, sender):
                self.bus.send(StatusReport((), ()), to=sender)
            case Incoming(ShutdownRequested(), _, sender):
                self.bus.send(ShutdownAccepted(), to=sender)
                self.runner.request_stop(reason="shutdown requested")

    def on_stop(self) -> None:
        if self.bus is not None:
            self.bus.close()
        super().on_stop()


class Dies(Marked):
    def on_start(self) -> None:
        self.actor_ref.tell("boom")

    def on_receive(self, message: Any) -> None:
        raise RuntimeError(f"deliberate crash on {message!r}")


class Stuck(Marked):
    def on_stop(self) -> None:
        super().on_stop()
        gevent.sleep(3600)


def main() -> int:
    mode, endpoint, marker_path = sys.argv[1:4]
    marker = Path(marker_path)
    setup_logging("test_service", "DEBUG", agent_id=str(os.getpid()))
    runner = ServiceRunner("test_service", stop_timeout=1.0, poll_interval=0.05)

    def explode() -> pykka.ActorRef[Any]:
        raise RuntimeError("deliberate start failure")

    table: dict[str, list[ActorFactory]] = {
        "echo": [lambda: Echo.start(endpoint, marker, runner)],
        "die": [lambda: Marked.start("first", marker), lambda: Dies.start("dies", marker)],
        "stuck": [lambda: Stuck.start("stuck", marker), lambda: Marked.start("last", marker)],
        "fail_start": [lambda: Marked.start("first", marker), explode],
        "late_patch": [lambda: Marked.start("never", marker)],
    }
    if mode == "stuck":
        gevent.spawn_later(0.2, runner.request_stop)
    return runner.run(table[mode])


if __name__ == "__main__":
    sys.exit(main())
