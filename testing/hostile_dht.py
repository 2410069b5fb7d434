"""Hostile DHT nodes on loopback: a query flood, garbage datagrams, a node that answers with
1,000 bogus nodes, a node that claims an id close to every target. Each runs as its own
process (`HostileDht`), so its CPU is not the test's and the flood's rate holds.

Strategy: this file is both the parent side (`HostileDht`, `HostileConfig`) and the child
(``python testing/hostile_dht.py --config JSON``, standard library only, with its own
tiny bencode: an independent implementation, nothing of torviz's codec). The child prints one
JSON object per line: ``{"event":"ready","addresses":[...]}`` then ``{"event":"stats",...}``
every 0.5 s with its counters (datagrams and bytes sent and received, queries seen per method,
answers sent, bogus nodes handed out, the distinct addresses that queried it). Modes:

- ``flood``: `rate` queries a second (ping, get_peers, find_node, announce_peer with a bad
  token, in turn) to `target`, each from one of `sources` sockets on 127.66.x.y with a random
  id; answers are counted (bytes in against bytes out is the amplification factor).
- ``garbage``: `rate` malformed datagrams a second to `target`: random bytes, truncated and
  over-deep bencode, absurd string lengths, queries with missing or mistyped fields, unknown
  methods, responses to transactions never sent, oversized datagrams.
- ``bogus_nodes``: a node on `listen` that answers every find_node/get_peers with `per_answer`
  nodes from a fixed set of `bogus_count` (1,000) addresses in 127.77.0.0/16 where nobody
  listens, their ids close to the target (so a lookup ranks them first and waits on each);
  it also queries `target` every second so that it enters the target's table.
- ``spoof_ids``: a node on `spoof_count` addresses 127.79.0.x that answers every query for a
  target T with an id a few bits from T, nodes that are its own other addresses (ids close to
  T too) and a token, never values: it tries to eclipse every lookup. It queries `target`
  every second from each address.
- ``table_fill`` (not hostile: the load benchmark's honest crowd): `fill_buckets` x 8 well-
  behaved nodes on 127.80.x.y whose ids share 0, 1, 2, ... leading bits with the target's
  (learnt from its answer to a ping), so each of the target's first `fill_buckets` buckets
  can be full. Each queries the target once (and again every 60 s) and answers pings,
  find_node and get_peers (nodes of its own crowd) like an honest node.

Rules:
- Loopback only: every address bound or sent to is checked to be in 127.0.0.0/8.
- Bounded: the child exits on SIGTERM, on stdin EOF, or after `max_seconds`; it parses at most
  `_MAX_DATAGRAM` bytes a datagram, nesting 32 deep.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    from testing.processes import ManagedProcess

__all__ = ["HostileConfig", "HostileDht", "bdecode", "bencode", "main"]

Mode = Literal["flood", "garbage", "bogus_nodes", "spoof_ids", "table_fill"]

_MAX_DATAGRAM = 2048
_MAX_DEPTH = 32
_STATS_INTERVAL = 0.5
_TICK = 0.01

# --- a tiny bencode (independent of torviz's) ---------------------------------------------


def bencode(value: Any) -> bytes:
    """Encode ints, bytes, str, lists and dicts (keys sorted)."""
    if isinstance(value, bool | int):
        return b"i%de" % int(value)
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one value (strings stay bytes); raises ValueError on anything malformed."""

    def parse(at: int, depth: int) -> tuple[Any, int]:
        if depth > _MAX_DEPTH or at >= len(data):
            raise ValueError("too deep or truncated")
        lead = data[at : at + 1]
        if lead == b"i":
            end = data.index(b"e", at)
            return int(data[at + 1 : end]), end + 1
        if lead in (b"l", b"d"):
            at += 1
            items: list[Any] = []
            while data[at : at + 1] != b"e":
                item, at = parse(at, depth + 1)
                items.append(item)
            if lead == b"l":
                return items, at + 1
            if len(items) % 2:
                raise ValueError("odd dict")
            return dict(zip(items[::2], items[1::2], strict=True)), at + 1
        colon = data.index(b":", at)
        length = int(data[at:colon])
        if length < 0 or colon + 1 + length > len(data):
            raise ValueError("bad string length")
        return data[colon + 1 : colon + 1 + length], colon + 1 + length

    value, end = parse(0, 0)
    if end != len(data):
        raise ValueError("trailing data")
    return value


# --- config --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostileConfig:
    """What one hostile process does (travels as `--config` JSON).

    Fields:
        mode: see the module docstring.
        target: ``host:port`` of the node under attack (loopback).
        rate: datagrams a second (flood, garbage).
        sources: source sockets of the flood, on 127.66.x.y.
        listen: the bogus node's ``host:port`` (port 0: any).
        bogus_count: distinct bogus nodes handed out, in 127.77.0.0/16.
        per_answer: bogus nodes in one answer (26 bytes each; 8 is what honest nodes send).
        spoof_count: addresses of the spoofing node, 127.79.0.1.. .
        fill_buckets: buckets of the target to fill (table_fill), 8 nodes each.
        max_seconds: the process exits after this long whatever happens.
    """

    mode: Mode
    target: str
    rate: int = 1000
    sources: int = 256
    listen: str = ""
    bogus_count: int = 1000
    per_answer: int = 8
    spoof_count: int = 8
    fill_buckets: int = 24
    max_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.mode not in ("flood", "garbage", "bogus_nodes", "spoof_ids", "table_fill"):
            raise ValueError(f"unknown mode {self.mode!r}")
        for address in (self.target, self.listen):
            if address and not address.startswith("127."):
                raise ValueError(f"{address!r} is not on loopback")
        if not (0 < self.rate <= 100_000 and 0 < self.sources <= 4096):
            raise ValueError("rate must be 1..100000, sources 1..4096")
        if not (0 < self.bogus_count <= 65_000 and 0 < self.per_answer <= 70):
            raise ValueError("bogus_count must be 1..65000, per_answer 1..70")
        if not (0 < self.spoof_count <= 250 and 0 < self.max_seconds <= 3600):
            raise ValueError("spoof_count must be 1..250, max_seconds up to 3600")
        if not 0 < self.fill_buckets <= 100:
            raise ValueError("fill_buckets must be 1..100")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host.startswith("127."):
        raise ValueError(f"{address!r} is not on loopback")
    return host, int(port)


def _compact(host: str, port: int) -> bytes:
    return socket.inet_aton(host) + struct.pack("!H", port)


def _near(target: bytes, rng: random.Random, bits: int = 24) -> bytes:
    """An id sharing all but the low `bits` bits with `target`."""
    flip = rng.getrandbits(bits) | 1
    return (int.from_bytes(target, "big") ^ flip).to_bytes(20, "big")


# --- the child -----------------------------------------------------------------------------


class _Child:
    def __init__(self, config: HostileConfig, stop: threading.Event) -> None:
        self.config = config
        self.stop = stop
        self.rng = random.Random(int.from_bytes(os.urandom(8), "big"))
        self.sockets: list[socket.socket] = []
        self.counters: dict[str, int] = {
            "sent": 0,
            "bytes_sent": 0,
            "received": 0,
            "bytes_received": 0,
            "answers_sent": 0,
            "undecodable": 0,
            "nodes_handed_out": 0,
        }
        self.queries: dict[str, int] = {}
        self.queriers: set[tuple[str, int]] = set()
        self.target = _split(config.target) if config.target else None
        self.bogus = [
            (f"127.77.{1 + i // 250}.{1 + i % 250}", 6881 + i % 7)
            for i in range(config.bogus_count)
        ]
        self.bogus_next = 0
        self.tx = 0
        self.target_id: bytes | None = None  # table_fill: learnt from the target's answer
        self.fill_ids: list[bytes] = []

    def bind(self) -> list[str]:
        config = self.config
        if config.mode == "flood":
            hosts = [f"127.66.{1 + i // 250}.{1 + i % 250}" for i in range(config.sources)]
            wanted = [(host, 0) for host in hosts]
        elif config.mode == "garbage":
            wanted = [(f"127.67.0.{1 + i}", 0) for i in range(16)]
        elif config.mode == "bogus_nodes":
            wanted = [_split(config.listen) if config.listen else ("127.78.0.1", 0)]
        elif config.mode == "table_fill":
            count = config.fill_buckets * 8
            wanted = [(f"127.80.{1 + i // 250}.{1 + i % 250}", 0) for i in range(count)]
        else:
            wanted = [(f"127.79.0.{1 + i}", 0) for i in range(config.spoof_count)]
        for host, port in wanted:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((host, port))
            sock.setblocking(False)
            self.sockets.append(sock)
        return [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in self.sockets]

    def send(self, sock: socket.socket, data: bytes, address: tuple[str, int]) -> None:
        if not address[0].startswith("127."):
            return
        try:
            sock.sendto(data, address)
        except OSError:
            return
        self.counters["sent"] += 1
        self.counters["bytes_sent"] += len(data)

    def next_tx(self) -> bytes:
        self.tx = (self.tx + 1) % 65536
        return struct.pack("!H", self.tx)

    # -- outgoing -----------------------------------------------------------------------

    def query(self, method: str, own_id: bytes) -> bytes:
        args: dict[str, Any] = {"id": own_id}
        if method == "get_peers":
            args["info_hash"] = self.rng.randbytes(20)
        elif method == "find_node":
            args["target"] = self.rng.randbytes(20)
        elif method == "announce_peer":
            args.update(info_hash=self.rng.randbytes(20), port=6881, token=b"forged")
        return bencode({"t": self.next_tx(), "y": "q", "q": method, "a": args})

    def garbage(self) -> bytes:
        rng = self.rng
        kind = rng.randrange(10)
        if kind == 0:
            return rng.randbytes(rng.randrange(1, 1500))
        if kind == 1:
            return self.query("get_peers", rng.randbytes(20))[: rng.randrange(1, 40)]
        if kind == 2:
            return b"l" * 5000 + b"e" * 5000
        if kind == 3:
            return b"d1:t2:aa1:y1:q1:q4:ping1:ad2:id999999999:" + rng.randbytes(20) + b"ee"
        if kind == 4:
            return bencode({"t": b"ab", "y": "q", "q": "get_peers", "a": {"id": b"short"}})
        if kind == 5:
            return bencode({"t": b"ab", "y": "q", "q": "no_such_method", "a": {"id": b"x" * 20}})
        if kind == 6:
            nodes = rng.randbytes(26 * 40)
            return bencode({"t": self.next_tx(), "y": "r", "r": {"id": b"r" * 20, "nodes": nodes}})
        if kind == 7:
            return bencode({"t": b"ab", "y": "q", "q": "find_node", "a": [1, 2, 3]})
        if kind == 8:
            return b"d1:y1:q" + b"1:x" * 400 + b"e"
        return bencode({"t": b"", "y": "e", "e": [201, "x" * 1200]})

    def fire(self, count: int) -> None:
        methods = ("ping", "get_peers", "find_node", "announce_peer")
        assert self.target is not None
        for _ in range(count):
            sock = self.sockets[self.rng.randrange(len(self.sockets))]
            if self.config.mode == "flood":
                method = methods[self.counters["sent"] % len(methods)]
                data = self.query(method, self.rng.randbytes(20))
            else:
                data = self.garbage()
            self.send(sock, data, self.target)

    def ping_target(self) -> None:
        """The bogus and spoofing nodes make themselves known: find_node for a random id."""
        if self.target is None:
            return
        for index, sock in enumerate(self.sockets):
            own_id = self.own_id(index, self.rng.randbytes(20))
            self.send(sock, self.query("find_node", own_id), self.target)

    def own_id(self, index: int, target: bytes) -> bytes:
        if self.config.mode == "spoof_ids":
            return _near(target, self.rng)
        if self.config.mode == "table_fill" and self.fill_ids:
            return self.fill_ids[index]
        return hashlib.sha1(b"bogus-node-%d" % index).digest()

    # -- incoming -----------------------------------------------------------------------

    def learn_target(self, message: dict[Any, Any]) -> None:
        """table_fill: the target's id from its answer; then ids sharing 0, 1, 2, ... leading
        bits with it (8 each), and every node queries the target once."""
        reply = message.get(b"r")
        node_id = reply.get(b"id") if isinstance(reply, dict) else None
        if self.target_id is not None or not isinstance(node_id, bytes) or len(node_id) != 20:
            return
        self.target_id = node_id
        base = int.from_bytes(node_id, "big")
        for index in range(len(self.sockets)):
            shared = index // 8  # leading bits in common with the target
            low = self.rng.getrandbits(159 - shared) if shared < 159 else 0
            value = (base ^ (1 << (159 - shared))) & ~((1 << (159 - shared)) - 1) | low
            self.fill_ids.append(value.to_bytes(20, "big"))
        self.ping_target()

    def answer(self, index: int, data: bytes, source: tuple[str, int]) -> None:
        self.counters["received"] += 1
        self.counters["bytes_received"] += len(data)
        try:
            message = bdecode(data[:_MAX_DATAGRAM])
        except (ValueError, IndexError):
            self.counters["undecodable"] += 1
            return
        if not isinstance(message, dict):
            return
        if self.config.mode == "table_fill" and message.get(b"y") == b"r":
            self.learn_target(message)
        if message.get(b"y") != b"q":
            return
        method = message.get(b"q", b"")
        args = message.get(b"a", {})
        if not isinstance(method, bytes) or not isinstance(args, dict):
            return
        name = method.decode("ascii", "replace")[:32]
        self.queries[name] = self.queries.get(name, 0) + 1
        if len(self.queriers) < 10_000:
            self.queriers.add(source)
        if self.config.mode not in ("bogus_nodes", "spoof_ids", "table_fill"):
            return
        target = args.get(b"info_hash") or args.get(b"target") or self.rng.randbytes(20)
        if not isinstance(target, bytes) or len(target) != 20:
            target = self.rng.randbytes(20)
        reply: dict[str, Any] = {"id": self.own_id(index, target)}
        if name in ("find_node", "get_peers"):
            reply["nodes"] = self.nodes_for(target, index)
        if name == "get_peers":
            reply["token"] = b"tok" + bytes([index])
        out = {"t": message.get(b"t", b""), "y": "r", "r": reply}
        self.send(self.sockets[index], bencode(out), source)
        self.counters["answers_sent"] += 1

    def nodes_for(self, target: bytes, index: int) -> bytes:
        if self.config.mode == "table_fill":
            if not self.fill_ids:
                return b""
            picks = self.rng.sample(range(len(self.sockets)), min(8, len(self.sockets)))
            return b"".join(
                self.fill_ids[i] + _compact(*self.sockets[i].getsockname()) for i in picks
            )
        if self.config.mode == "spoof_ids":
            return b"".join(
                _near(target, self.rng) + _compact(*s.getsockname())
                for i, s in enumerate(self.sockets)
                if i != index
            )[: 26 * 8]
        entries = []
        for _ in range(self.config.per_answer):
            host, port = self.bogus[self.bogus_next]
            self.bogus_next = (self.bogus_next + 1) % len(self.bogus)
            entries.append(_near(target, self.rng, bits=32) + _compact(host, port))
        self.counters["nodes_handed_out"] += len(entries)
        return b"".join(entries)

    # -- loop ---------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return {
            **self.counters,
            "queries": dict(self.queries),
            "queriers": len(self.queriers),
        }

    def run(self) -> None:
        config = self.config
        started = time.monotonic()
        next_stats = next_ping = started
        owed = 0.0
        last = started
        by_fd = {s.fileno(): i for i, s in enumerate(self.sockets)}
        while not self.stop.is_set() and time.monotonic() - started < config.max_seconds:
            now = time.monotonic()
            if config.mode in ("flood", "garbage"):
                owed = min(owed + (now - last) * config.rate, config.rate)  # at most 1 s owed
                self.fire(int(owed))
                owed -= int(owed)
            elif config.mode == "table_fill":
                if now >= next_ping:  # a ping to learn the target's id, then queries
                    if self.target_id is None and self.target is not None:
                        ping = bencode(
                            {"t": self.next_tx(), "y": "q", "q": "ping", "a": {"id": b"f" * 20}}
                        )
                        self.send(self.sockets[0], ping, self.target)
                        next_ping = now + 0.5
                    else:
                        self.ping_target()
                        next_ping = now + 60.0
            elif now >= next_ping:
                self.ping_target()
                next_ping = now + 1.0
            last = now
            readable, _, _ = select.select(self.sockets, [], [], _TICK)
            for sock in readable:
                for _ in range(256):
                    try:
                        data, source = sock.recvfrom(65536)
                    except (BlockingIOError, OSError):
                        break
                    self.answer(by_fd[sock.fileno()], data, source)
            if now >= next_stats:
                _emit("stats", **self.stats())
                next_stats = now + _STATS_INTERVAL
        _emit("stats", **self.stats())


def _emit(event: str, **values: Any) -> None:
    try:
        sys.stdout.write(json.dumps({"event": event, **values}) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        os._exit(0)


def _watch_stdin(stop: threading.Event) -> None:
    try:
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except OSError:
        pass
    stop.set()


def main(argv: list[str] | None = None) -> int:
    """Run one hostile node until stopped; returns the exit code."""
    parser = argparse.ArgumentParser(description="a hostile DHT node on loopback")
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    try:
        raw = json.loads(args.config)
        config = HostileConfig(**raw)
    except (ValueError, TypeError) as exc:
        _emit("error", reason="bad_config", message=str(exc))
        return 2
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    threading.Thread(target=_watch_stdin, args=(stop,), daemon=True).start()
    child = _Child(config, stop)
    try:
        addresses = child.bind()
    except OSError as exc:
        _emit("error", reason="bind_failed", message=str(exc))
        return 3
    _emit("ready", addresses=addresses)
    child.run()
    return 0


# --- the parent ----------------------------------------------------------------------------


class HostileDht:
    """One hostile DHT process (see the module docstring); stopped by `close` or `with`.

    Args:
        config: what it does.
        log_path: where its stderr goes.
    """

    def __init__(self, config: HostileConfig, *, log_path: Path | None = None) -> None:
        from testing.processes import ManagedProcess  # the child runs without the repository

        self.config = config
        self.process: ManagedProcess = ManagedProcess(
            f"hostile-dht-{config.mode}",
            [sys.executable, str(Path(__file__).resolve()), "--config", json.dumps(asdict(config))],
            log_path=log_path,
        )
        self.addresses: list[str] = []

    def wait_ready(self, timeout: float = 10.0) -> list[str]:
        """Wait until its sockets are bound; returns their ``host:port``."""
        event = self.process.wait_event("ready", timeout)
        self.addresses = [str(a) for a in event.get("addresses", [])]
        return list(self.addresses)

    def stats(self) -> dict[str, Any]:
        """The newest counters (empty before the first stats event)."""
        return dict(self.process.last("stats") or {})

    def wait_stats(self, predicate: Any, timeout: float) -> dict[str, Any]:
        """Wait for a stats event whose counters satisfy `predicate` (a callable on a dict)."""
        return self.process.wait_event("stats", timeout, predicate)

    def close(self) -> dict[str, Any]:
        """Stop the process; returns its final counters."""
        self.process.stop()
        return self.stats()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
