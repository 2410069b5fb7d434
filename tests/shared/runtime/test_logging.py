"""Log lines: one per record, UTC timestamp, service, logger, torrent and peer tags."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from torviz.shared.errors import ConfigError
from torviz.shared.runtime.logging import setup_logging, short_hash, with_context
from torviz.shared.types import InfoHash, PeerAddress

IH = InfoHash(bytes.fromhex("0123456789abcdef0123456789abcdef01234567"))
LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<service>\S+) (?P<level>[A-Z]+) "
    r"(?P<logger>[\w.]+)(?: \[(?P<tags>.*?)\])?: (?P<message>.*)$"
)


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def lines(out: io.StringIO) -> list[re.Match[str]]:
    found = []
    for line in out.getvalue().splitlines():
        match = LINE.match(line)
        assert match, line
        found.append(match)
    return found


def test_a_record_is_one_line_with_service_level_and_logger(stream: io.StringIO) -> None:
    setup_logging("peer_agent", "debug", agent_id="pa1", stream=stream)
    logging.getLogger("torviz.services.peer_agent.session").debug("choked by %s", "peer")
    [line] = lines(stream)
    assert line["service"] == "peer_agent[pa1]"
    assert line["level"] == "DEBUG"
    assert line["logger"] == "torviz.services.peer_agent.session"
    assert line["tags"] is None
    assert line["message"] == "choked by peer"


def test_newlines_and_tracebacks_stay_on_the_record_line(stream: io.StringIO) -> None:
    setup_logging("coordinator", stream=stream)
    log = logging.getLogger("x")
    log.info("two\nlines")
    try:
        raise ValueError("bad")
    except ValueError:
        log.exception("failed")
    first, second = lines(stream)
    assert first["message"] == "two\\nlines"
    assert second["message"].startswith("failed\\nTraceback (most recent call last):\\n")
    assert second["message"].endswith("ValueError: bad")


def test_context_tags_follow_a_torrent_and_a_peer(stream: io.StringIO) -> None:
    setup_logging("storage_agent", stream=stream)
    base = logging.getLogger("torviz.services.storage_agent.store")
    with_context(base, info_hash=IH).info("verified %d", 3)
    with_context(base, info_hash=IH, peer="pa1/17").warning("rejected")
    with_context(base, peer=PeerAddress("::1", 6881)).info("dialled")
    tags = [line["tags"] for line in lines(stream)]
    assert tags == ["ih=01234567", "ih=01234567 peer=pa1/17", "peer=[::1]:6881"]
    assert short_hash(IH) == "01234567"


def test_level_filters_and_setup_replaces_its_own_handler(stream: io.StringIO) -> None:
    setup_logging("tracker_agent", "WARNING", stream=io.StringIO())
    setup_logging("tracker_agent", logging.WARNING, stream=stream)
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "torviz"]
    assert len(ours) == 1
    logging.getLogger("t").info("hidden")
    logging.getLogger("t").error("shown")
    assert [line["message"] for line in lines(stream)] == ["shown"]


def test_an_unknown_level_is_a_config_error(stream: io.StringIO) -> None:
    with pytest.raises(ConfigError) as caught:
        setup_logging("cli", "chatty", stream=stream)
    assert caught.value.reason == "bad_log_level"
    assert "'chatty'" in str(caught.value)
