"""The coordinator's composition root, shared by ``start`` (the daemon) and ``download``.

It runs in the daemon's process, whose entry point (``__main__``) has already run
``gevent.monkey.patch_all()``. ``run_daemon`` first settles who may
reach the daemon: the state directory (where the default ipc sockets go) is made private
(0700), and an endpoint that cannot be bound safely is one line and no start (a tcp endpoint
without keys, an ipc socket in a folder others may enter). Then it takes the state
directory's lock, starts the coordinator actor (which binds the bus and control sockets), then the
embedded agents as child processes, and any extra actors the caller wants (the one-shot download
adds a watcher). On a signal or a stop request it stops the actors in reverse order (the
coordinator tells the agents to shut down), waits for the children, and releases the lock.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka

from torviz.shared.bus import ControlFailed
from torviz.shared.config import Config
from torviz.shared.peer_id import generate_peer_id
from torviz.shared.runtime.curve import control_security, server_security
from torviz.shared.runtime.ipc import make_private_dir
from torviz.shared.runtime.logging import setup_logging
from torviz.shared.runtime.service import ActorFactory, ServiceRunner

from ..actor import CoordinatorActor
from ..core import Coordinator
from ..event_handler import install, uninstall
from ..session_store import SessionStore, StoreListener
from .launcher import Launcher
from .locations import DaemonLock, resolve_endpoints

__all__ = ["DaemonOptions", "run_daemon"]

log = logging.getLogger(__name__)

StartWatcher = Callable[
    ["pykka.ActorProxy[CoordinatorActor]", ServiceRunner], "pykka.ActorRef[Any]"
]


@dataclass(frozen=True, slots=True)
class DaemonOptions:
    config: Config
    config_file: str | None
    """Passed on to the embedded agents."""
    state_dir: Path
    download_dir: str
    control: str | None = None
    """Overrides the control endpoint of the config."""
    log_level: str = "INFO"
    log_file: str | None = None
    """Where every process appends its log lines; None: stderr."""
    persistent: bool = True
    """Keep the session (torrents, paused flags, totals) and resume state across runs."""


def run_daemon(options: DaemonOptions, watcher: StartWatcher | None = None) -> int:
    """Run the coordinator and its embedded agents until stopped; returns the exit code.

    Args:
        options: directories, endpoints and config.
        watcher: starts one more actor once the coordinator runs, given the coordinator's proxy
            and the runner (the one-shot download's progress watcher).
    """
    setup_logging("coordinator", options.log_level, path=options.log_file)
    config = options.config
    endpoints = resolve_endpoints(config, options.state_dir, options.control)
    make_private_dir(options.state_dir)
    security = config.security
    key_name = security.key_name or "coordinator"
    curve = server_security(endpoints.bus, security, key_name)
    control_curve = control_security(endpoints.control, security)
    if config.coordinator.embedded_agents:
        server_security(endpoints.data, security, key_name)  # the same check, before starting
    lock = DaemonLock(options.state_dir)
    lock.acquire(endpoints.control, (security.keys_dir, key_name) if security.keys_dir else None)
    launcher: Launcher | None = None
    if config.coordinator.embedded_agents:
        launcher = Launcher(
            bus=endpoints.bus,
            data=endpoints.data,
            state_dir=str(options.state_dir) if options.persistent else None,
            config_file=options.config_file,
            log_level=options.log_level,
            log_file=options.log_file,
            keys=(security.keys_dir, key_name) if security.keys_dir else None,
        )
    store = SessionStore(options.state_dir / "session.sqlite") if options.persistent else None
    core = Coordinator(
        peer_id=generate_peer_id(),
        listen_port=config.peer_agent.listen_ports[0],
        storage_endpoint=endpoints.data,
        config=dataclasses.replace(config.coordinator, download_dir=options.download_dir),
        rng=random.Random(),
        session=StoreListener(store) if store is not None else None,
    )
    events = install(core.events)  # before the restore, whose lines are events too
    if store is not None:
        _restore(core, store)
    runner = ServiceRunner("coordinator", stop_timeout=10.0)
    started: list[pykka.ActorRef[Any]] = []

    def start_coordinator() -> pykka.ActorRef[Any]:
        ref = CoordinatorActor.start(
            core,
            endpoints,
            server_id=f"coordinator-{socket.gethostname()}-{os.getpid()}",
            request_stop=runner.request_stop,
            launcher=launcher,
            session=store,
            curve=curve,
            control_curve=control_curve,
        )
        started.append(ref)
        if launcher is not None:
            launcher.start_all()
        return ref

    factories: list[ActorFactory] = [start_coordinator]
    if watcher is not None:
        factories.append(lambda: watcher(started[0].proxy(), runner))
    try:
        return runner.run(factories)
    finally:
        if launcher is not None:
            launcher.stop()
        if store is not None:
            store.close()
        if events is not None:
            uninstall(events)
        lock.release()


def _restore(core: Coordinator, store: SessionStore) -> None:
    """Bring back the torrents of the last run, each in the state it was left in."""
    now = time.monotonic()
    for saved in store.load():
        reply = core.restore(
            saved.metainfo,
            saved.save_path,
            paused=saved.paused,
            totals=(saved.uploaded, saved.downloaded),
            now=now,
            magnet=saved.magnet,
            metadata=saved.metadata,
            web_seeds=saved.web_seeds,
        )
        if isinstance(reply, ControlFailed):
            log.error("cannot restore torrent %s: %s", saved.info_hash, reply.message)
        else:
            state = "paused" if saved.paused else "active"
            log.info("restored %s (%s)", reply.name, state, extra={"info_hash": reply.info_hash})
