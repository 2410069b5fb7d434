"""Helpers only tests use: aria2, misbehaving seeders and peers, a daemon, other users, tmpfs.

The reference peers and processes that the benchmarks use as well (swarms, opentracker,
libtorrent peers, content, simulated hosts) live in the top-level `testing` package.
"""
