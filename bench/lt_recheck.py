"""libtorrent's side of the verify benchmark: time ``force_recheck`` of complete data.

Usage (one process per timed run; `bench/verify_vs_libtorrent.py` runs it)::

    /work/venv/bin/python bench/lt_recheck.py --torrent FILE --save-path DIR
        [--listen-host 127.0.0.2] [--hashing-threads N] [--timeout 300]

Strategy: a libtorrent session with every network feature off (no DHT, LSD, UPnP, NAT-PMP, uTP;
listening only on one loopback address: `testing.lt_peer.loopback_settings`), the torrent added
with ``save_path`` = the complete data and its trackers removed, so nothing is announced.
Adding it checks the data (libtorrent has no resume data for it): that initial check is timed
too, untimed by the caller's figures.
Then ``handle.force_recheck()`` is timed until libtorrent posts ``torrent_checked_alert`` (the
alert, not a status poll, ends the clock: no polling granularity), and the status is read to
confirm every piece is there and the torrent is seeding.

Prints one JSON object on stdout: ``initial_check_s``, ``recheck_s``, ``num_pieces``,
``pieces``, ``state``, ``cpu_s`` (this process, during the recheck), ``hashing_threads``.
Exit 0 when the recheck found every piece, 1 otherwise.

Rules:
- Every wait is bounded by ``--timeout``; the session is always torn down.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import libtorrent as lt

from testing.lt_peer import loopback_settings

__all__ = ["main", "recheck"]

_POLL_S = 0.05


def _session(listen_host: str, hashing_threads: int | None) -> Any:
    extra = {} if hashing_threads is None else {"hashing_threads": hashing_threads}
    settings = loopback_settings(listen_host, alerts=("error", "status"), extra=extra)
    # The bindings take a dict where the stubs want a settings_pack.
    return lt.session(cast("lt.settings_pack", settings))


def _wait_checked(session: Any, handle: Any, timeout: float) -> None:
    """Wait for this torrent's ``torrent_checked_alert``; raise TimeoutError after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session.wait_for_alert(int(_POLL_S * 1000))
        for alert in session.pop_alerts():
            if isinstance(alert, lt.torrent_checked_alert) and alert.handle == handle:
                return
            if isinstance(alert, lt.torrent_error_alert | lt.file_error_alert):
                raise RuntimeError(alert.message())
    raise TimeoutError(f"no torrent_checked_alert within {timeout} s")


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def recheck(
    torrent: Path, save_path: Path, listen_host: str, hashing_threads: int | None, timeout: float
) -> dict[str, Any]:
    """Add `torrent` on `save_path`, wait for its check, then time one ``force_recheck``."""
    session = _session(listen_host, hashing_threads)
    try:
        params = lt.add_torrent_params()
        params.ti = lt.torrent_info(str(torrent))
        params.save_path = str(save_path)
        params.trackers = []
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags &= ~lt.torrent_flags.paused
        started = time.monotonic()
        handle = session.add_torrent(params)
        handle.replace_trackers([])
        _wait_checked(session, handle, timeout)
        initial = time.monotonic() - started
        cpu_before = _cpu_s()
        started = time.monotonic()
        handle.force_recheck()
        _wait_checked(session, handle, timeout)
        elapsed = time.monotonic() - started
        cpu = _cpu_s() - cpu_before
        status = handle.status()
        return {
            "initial_check_s": initial,
            "recheck_s": elapsed,
            "cpu_s": cpu,
            "num_pieces": status.num_pieces,
            "pieces": params.ti.num_pieces(),
            "state": str(status.state),
            "is_seeding": bool(status.is_seeding),
            "hashing_threads": session.get_settings()["hashing_threads"],
            "libtorrent": lt.__version__,
        }
    finally:
        del session


def main(argv: list[str] | None = None) -> int:
    """Run one timed recheck and print its JSON; 0 when every piece was found."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--torrent", type=Path, required=True)
    parser.add_argument("--save-path", type=Path, required=True)
    parser.add_argument("--listen-host", default="127.0.0.2")
    parser.add_argument("--hashing-threads", type=int, help="default: libtorrent's own")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    try:
        result = recheck(
            args.torrent, args.save_path, args.listen_host, args.hashing_threads, args.timeout
        )
    except (RuntimeError, TimeoutError) as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0 if result["num_pieces"] == result["pieces"] and result["is_seeding"] else 1


if __name__ == "__main__":
    sys.exit(main())
