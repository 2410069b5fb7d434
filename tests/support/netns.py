"""Simulated hosts for pytest: `testing.hosts.namespace_hosts`, or a skip where namespaces
cannot be made here (a failure under CI=true, which runs as root with iproute2)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.hosts import HostsError, NamespaceHosts, namespace_hosts

__all__ = ["hosts_or_skip"]


@contextlib.contextmanager
def hosts_or_skip(
    work_dir: Path, count: int, subnet: str, prefix: str | None = None
) -> Iterator[NamespaceHosts]:
    """``namespace_hosts`` for pytest: skip where namespaces cannot be made here.

    Skips when ``ip`` is missing or we are not root, and when the kernel refuses namespaces;
    under CI=true (which runs as root with iproute2) every one of these is a failure instead.
    """
    in_ci = os.environ.get("CI", "").lower() in ("true", "1")
    try:
        context = namespace_hosts(work_dir, count, subnet, prefix)
        made = context.__enter__()
    except HostsError as exc:
        if in_ci and exc.reason != "not_root":
            pytest.fail(f"cannot build simulated hosts: {exc} (CI=true: this is a failure)")
        pytest.skip(f"cannot build simulated hosts: {exc}")
    try:
        yield made
    finally:
        context.__exit__(None, None, None)
