"""Logging for every torviz service: one line per record on stderr, greppable across services.

Strategy: ``setup_logging`` installs one handler on the root logger whose lines read::

    2025-01-31T12:00:00.123Z peer_agent[pa1] INFO services.peer_agent.session [ih=0123abcd
    peer=pa1/17]: choked by the peer

(one line; wrapped here).

Modules log through ``logging.getLogger(__name__)``; code that works for one torrent or one peer
wraps its logger with ``with_context(log, info_hash=..., peer=...)`` so every line carries the
same short tags in every service, and ``grep ih=0123abcd`` follows a torrent from the
coordinator through the peer and storage agents.

Rules:
- One record is one line: newlines in messages and tracebacks are escaped as ``\\n``.
- Timestamps are UTC with milliseconds, so lines from several hosts sort together.
- ``setup_logging`` may be called again (tests, reconfiguration); it replaces its own handler
  and leaves handlers installed by others alone.
- Lines go to stderr, or appended to a file (``path``), which several processes may share:
  each line is one ``write`` on a file opened for appending. The level ``OFF`` keeps every
  line back (``download`` keeps stderr for its one-line outcome unless asked for logs).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

from torviz.shared.errors import ConfigError
from torviz.shared.types import InfoHash, PeerAddress

__all__ = ["LOG_LEVELS", "ContextAdapter", "setup_logging", "short_hash", "with_context"]

LOG_LEVELS = "DEBUG, INFO, WARNING, ERROR or OFF"
"""The level names ``setup_logging`` takes, for help texts."""
_OFF = logging.CRITICAL + 10

_HANDLER_NAME = "torviz"
_SHORT_HASH = 8  # hex digits of an info hash in log lines


def short_hash(info_hash: InfoHash) -> str:
    """The first 8 hex digits of an info hash: enough to tell torrents apart in a log."""
    return info_hash.hex[:_SHORT_HASH]


class _LineFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(
            fmt=f"%(asctime)s.%(msecs)03dZ {service} %(levelname)s %(name)s%(torviz_tags)s: "
            "%(message)s",
            datefmt="%Y-%m-%dT%H:%M:%S",
        )
        self.converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "torviz_context", "")
        record.torviz_tags = f" [{context}]" if context else ""
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


def setup_logging(
    service: str,
    level: str | int = "INFO",
    *,
    agent_id: str | None = None,
    stream: TextIO | None = None,
    path: str | None = None,
) -> logging.Handler:
    """Send every record of this process to ``stream`` (or the file ``path``) as one line each.

    Args:
        service: the service kind, e.g. ``"peer_agent"``.
        level: a level name (``"DEBUG"``, ``"info"``, ``"OFF"``...) or number.
        agent_id: this process's id, shown next to the service (several peer agents may run).
        stream: where lines go (default: ``sys.stderr`` at the time of the call).
        path: a file to append lines to instead of ``stream``.

    Returns:
        The installed handler.

    Raises:
        ConfigError: ``level`` is not a logging level, or ``path`` cannot be opened.
    """
    number = _level_number(level)
    label = f"{service}[{agent_id}]" if agent_id else service
    handler: logging.Handler
    if path is not None:
        try:
            handler = logging.FileHandler(path, mode="a", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                "bad_log_file", f"cannot open the log file {path}: {exc.strerror or exc}"
            ) from None
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(_LineFormatter(label))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(number)
    return handler


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    if level.upper() == "OFF":
        return _OFF
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ConfigError("bad_log_level", f"unknown log level {level!r} (try {LOG_LEVELS})")
    return number


class ContextAdapter(logging.LoggerAdapter[logging.Logger]):
    """A logger that tags each record with a torrent and/or peer (see ``with_context``)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        extra["torviz_context"] = self.extra["torviz_context"] if self.extra else ""
        kwargs["extra"] = extra
        return msg, kwargs


def with_context(
    logger: logging.Logger,
    *,
    info_hash: InfoHash | None = None,
    peer: str | PeerAddress | None = None,
) -> ContextAdapter:
    """Wrap ``logger`` so every line is tagged ``[ih=0123abcd peer=...]``.

    Args:
        logger: usually ``logging.getLogger(__name__)``.
        info_hash: the torrent, shortened to 8 hex digits.
        peer: a peer key (``"pa1/17"``) or address.
    """
    tags = []
    if info_hash is not None:
        tags.append(f"ih={short_hash(info_hash)}")
    if peer is not None:
        tags.append(f"peer={peer}")
    return ContextAdapter(logger, {"torviz_context": " ".join(tags)})
