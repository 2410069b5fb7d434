"""torviz: a BitTorrent client built as actor services talking over ZeroMQ.

The folders stay at the root of the repository (``shared/``, ``services/``); this package names
them through two symlinks, so the installed distribution owns one top-level name: every
import, console script and ``python -m`` reads ``torviz.shared`` and ``torviz.services``.
"""
