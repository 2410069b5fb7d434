"""Capture real libtorrent DHT datagrams (KRPC, BEP 5) into tests/vectors/dht/.

Usage:
    .venv/bin/python tests/vectors/dht/capture_libtorrent_dht.py

What it does, loopback only: a plain UDP socket on 127.0.0.1 plays a DHT node ("us"); two
libtorrent sessions, A on 127.0.0.2 and B on 127.0.0.3, run their DHT with us as the only
bootstrap node (``dht_bootstrap_nodes``), LSD / UPnP / NAT-PMP / uTP off and the IP
restrictions of the routing table and of searches off (all three nodes share 127.0.0.0/8).
Nothing can leave the machine: libtorrent learns every node address from us, and we only hand
out the two sessions' loopback addresses.

1. Both sessions bootstrap: their first queries reach us (libtorrent 2 bootstraps with a
   get_peers for an id near its own, flagged ``bs: 1``, not with find_node); we answer each
   with the other session as the only node, so A and B learn each other.
2. Session B announces info hash X (``dht_announce``, port 7000): its get_peers and
   announce_peer queries reach us (we answer with a token); A gets the same announce from B.
3. We query session A: ping, ping with BEP 43 ``ro``, find_node for B's id (with BEP 32
   ``want``), get_peers for X, announce_peer for X (port 6881, A's token), get_peers again
   (now with values), announce_peer with a bad token (error 203), an unknown method (BEP 5 says
   204; libtorrent answers 203 "unknown message").

Every datagram both ways is kept; the first of each kind is written as ``lt_<kind>.bin`` (the
raw UDP payload libtorrent sent), and ``libtorrent_dht.json`` records the queries we sent and
the first reply we gave to each kind of libtorrent query (hex, built here by hand with
bencode.py, deliberately not through shared.dht), the sessions' ids and addresses, the info
hash and the tokens, so the tests can check every field and that ``encode_krpc`` writes the very
bytes libtorrent answered (and acted on: B announced with the token of our reply). Bounded:
60 s, then it fails.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any, cast

import bencodepy
import libtorrent as lt

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout, when run as a script

from testing.lt_peer import loopback_settings

OUT = Path(__file__).resolve().parent
US = ("127.0.0.1", 0)
HOSTS = {"A": "127.0.0.2", "B": "127.0.0.3"}
OUR_ID = bytes.fromhex("7f" * 10 + "0123456789abcdef0123")
INFO_HASH = bytes.fromhex("d2474e86c95b19b8bcfdb92bc12c9d44667cfa36")
OUR_TOKEN = b"tv01"
B_ANNOUNCE_PORT = 7000
OUR_ANNOUNCE_PORT = 6881
DEADLINE_S = 60.0

_DHT_SETTINGS: dict[str, Any] = {
    "enable_dht": True,
    "dht_restrict_routing_ips": False,
    "dht_restrict_search_ips": False,
    "alert_mask": 0,
}


def _session(host: str, bootstrap: str) -> Any:
    settings = loopback_settings(host, extra={**_DHT_SETTINGS, "dht_bootstrap_nodes": bootstrap})
    return lt.session(cast("lt.settings_pack", settings))


def _bdecode(data: bytes) -> dict[bytes, Any]:
    value = bencodepy.decode(data)
    assert isinstance(value, dict), "a KRPC message is a dict"
    return value


class Capture:
    """Our UDP socket, every datagram seen both ways, and the first of each kind."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(US)
        self.sock.settimeout(0.2)
        self.address = self.sock.getsockname()
        self.log: list[dict[str, Any]] = []
        self.first: dict[str, bytes] = {}
        self.nodes: dict[str, tuple[bytes, tuple[str, int]]] = {}  # session -> (id, address)
        self.sent: dict[str, str] = {}  # kind -> hex of the query we sent
        self.answers: dict[bytes, bytes] = {}  # our t -> libtorrent's answer

    def session_of(self, address: tuple[str, int]) -> str:
        return next(name for name, host in HOSTS.items() if host == address[0])

    def keep(self, kind: str, data: bytes) -> None:
        self.first.setdefault(kind, data)

    def send(self, kind: str, message: dict[bytes, Any], to: tuple[str, int]) -> bytes:
        data: bytes = bencodepy.encode(message)
        if kind:
            self.sent.setdefault(kind, data.hex())
        self.log.append({"to": list(to), "hex": data.hex()})
        self.sock.sendto(data, to)
        return data

    def pump(self, seconds: float) -> None:
        """Receive for ``seconds``, answering libtorrent's queries."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data, source = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.log.append({"from": list(source), "hex": data.hex()})
            message = _bdecode(data)
            name = self.session_of(source)
            if message[b"y"] == b"q":
                self.answer(message, data, source, name)
            else:
                self.answers[message[b"t"]] = data

    def answer(
        self, message: dict[bytes, Any], data: bytes, source: tuple[str, int], name: str
    ) -> None:
        method = message[b"q"].decode()
        args = message[b"a"]
        self.nodes.setdefault(name, (args[b"id"], source))
        bootstrap = method == "get_peers" and args[b"info_hash"] != INFO_HASH
        kind = f"{'bootstrap_' if bootstrap else ''}{method}"
        self.keep(f"{kind}_query", data)
        body: dict[bytes, Any] = {b"id": OUR_ID}
        if method in ("find_node", "get_peers"):
            others = [node for other, node in self.nodes.items() if other != name]
            body[b"nodes"] = b"".join(
                node_id + socket.inet_aton(host) + port.to_bytes(2, "big")
                for node_id, (host, port) in others
            )
        if method == "get_peers":
            body[b"token"] = OUR_TOKEN
        reply = {b"t": message[b"t"], b"y": b"r", b"r": body}
        self.send(f"reply_{kind}", reply, source)

    def ask(self, kind: str, t: bytes, query: dict[bytes, Any], to: tuple[str, int]) -> bytes:
        """Send one query to ``to`` and wait (bounded) for its answer."""
        self.send(kind, {b"t": t, b"y": b"q", **query}, to)
        end = time.monotonic() + 10
        while t not in self.answers:
            if time.monotonic() > end:
                raise TimeoutError(f"libtorrent did not answer our {kind}")
            self.pump(0.2)
        answer = self.answers.pop(t)
        self.keep(f"{kind}_{'error' if _bdecode(answer)[b'y'] == b'e' else 'response'}", answer)
        return answer


def capture() -> dict[str, Any]:
    """Run the exchange; returns the manifest (the files are written by ``main``)."""
    started = time.monotonic()
    cap = Capture()
    bootstrap = f"{cap.address[0]}:{cap.address[1]}"
    sessions = {name: _session(host, bootstrap) for name, host in HOSTS.items()}
    try:
        while len(cap.nodes) < 2:
            if time.monotonic() - started > DEADLINE_S / 2:
                raise TimeoutError(f"sessions did not bootstrap through us: {sorted(cap.nodes)}")
            cap.pump(0.5)
        # Each session now knows the other: tell them once more so the tables hold it.
        for name, session in sessions.items():
            other = cap.nodes["B" if name == "A" else "A"][1]
            session.add_dht_node(other)
        cap.pump(2.0)
        sessions["B"].dht_announce(lt.sha1_hash(INFO_HASH), B_ANNOUNCE_PORT, 0)
        while "announce_peer_query" not in cap.first:
            if time.monotonic() - started > DEADLINE_S * 0.75:
                raise TimeoutError("session B did not announce to us")
            cap.pump(0.5)
        cap.pump(1.0)  # B's announce to A lands too

        a_addr = cap.nodes["A"][1]
        b_id = cap.nodes["B"][0]
        cap.ask("ping", b"p1", {b"q": b"ping", b"a": {b"id": OUR_ID}}, a_addr)
        cap.ask("ping_ro", b"p2", {b"q": b"ping", b"a": {b"id": OUR_ID}, b"ro": 1}, a_addr)
        find = {b"id": OUR_ID, b"target": b_id, b"want": [b"n4", b"n6"]}
        cap.ask("find_node", b"f1", {b"q": b"find_node", b"a": find}, a_addr)
        absent = bytes(a ^ 0xFF for a in INFO_HASH)  # nobody announced it: nodes, no values
        get_other = {b"id": OUR_ID, b"info_hash": absent}
        cap.ask("get_peers_nodes", b"g1", {b"q": b"get_peers", b"a": get_other}, a_addr)
        get = {b"id": OUR_ID, b"info_hash": INFO_HASH}
        answer = _bdecode(cap.ask("get_peers", b"g2", {b"q": b"get_peers", b"a": get}, a_addr))
        a_token = answer[b"r"][b"token"]
        announce = {
            b"id": OUR_ID,
            b"info_hash": INFO_HASH,
            b"port": OUR_ANNOUNCE_PORT,
            b"token": a_token,
        }
        cap.ask("announce_peer", b"a1", {b"q": b"announce_peer", b"a": announce}, a_addr)
        cap.ask("get_peers_values", b"g3", {b"q": b"get_peers", b"a": get}, a_addr)
        bad = {**announce, b"token": b"forged", b"implied_port": 1}
        cap.ask("announce_peer_bad_token", b"a2", {b"q": b"announce_peer", b"a": bad}, a_addr)
        cap.ask("frobnicate", b"u1", {b"q": b"frobnicate", b"a": {b"id": OUR_ID}}, a_addr)
        return {
            "libtorrent": lt.__version__,
            "us": {"host": cap.address[0], "port": cap.address[1], "id": OUR_ID.hex()},
            "sessions": {
                name: {"host": address[0], "port": address[1], "id": node_id.hex()}
                for name, (node_id, address) in cap.nodes.items()
            },
            "info_hash": INFO_HASH.hex(),
            "our_token": OUR_TOKEN.hex(),
            "a_token": a_token.hex(),
            "b_announce_port": B_ANNOUNCE_PORT,
            "our_announce_port": OUR_ANNOUNCE_PORT,
            "sent": cap.sent,
            "files": sorted(f"lt_{kind}.bin" for kind in cap.first),
            "_first": cap.first,
        }
    finally:
        for session in sessions.values():
            session.pause()
        del sessions
        cap.sock.close()


def main() -> None:
    manifest = capture()
    first: dict[str, bytes] = manifest.pop("_first")
    for kind, data in first.items():
        (OUT / f"lt_{kind}.bin").write_bytes(data)
    (OUT / "libtorrent_dht.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    for kind, data in sorted(first.items()):
        print(f"lt_{kind}.bin: {data!r}")


if __name__ == "__main__":
    main()
