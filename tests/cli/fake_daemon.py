"""A stand-in for the daemon's control endpoint: a real ZeroMQ ROUTER on an ipc socket, in a
thread, answering the CLI's ``Hello`` with a ``Welcome`` and each request with what the test's
``answer`` function returns. Every request is recorded. Used with ``--control ipc://...``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import zmq

from torviz.shared.bus import (
    ControlFailed,
    Hello,
    Message,
    Welcome,
    decode_frames,
    encode_frames,
)

Answer = Callable[[Message], Message]


class FakeDaemon:
    def __init__(self, folder: Path, answer: Answer) -> None:
        self.endpoint = f"ipc://{folder / 'control.sock'}"
        self.answer = answer
        self.requests: list[Message] = []
        self._stop = threading.Event()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(self.endpoint)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def flags(self) -> list[str]:
        return ["--control", self.endpoint]

    def of_type(self, kind: type[Message]) -> list[Message]:
        return [request for request in self.requests if isinstance(request, kind)]

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(50):
                continue
            identity, *frames = self._socket.recv_multipart()
            message, _ = decode_frames(frames)
            reply: Message
            if isinstance(message, Hello):
                reply = Welcome(message.protocol_version, "coordinator", "fake", 1.0)
            else:
                self.requests.append(message)
                try:
                    reply = self.answer(message)
                except Exception as exc:  # a test's answer that broke: the CLI says so
                    reply = ControlFailed("test_failure", repr(exc))
            self._socket.send_multipart([identity, *encode_frames(reply)])

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close(linger=0)
        self._context.term()


@contextmanager
def fake_daemon(folder: Path, answer: Answer) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(folder, answer)
    daemon._thread.start()
    try:
        yield daemon
    finally:
        daemon.close()
