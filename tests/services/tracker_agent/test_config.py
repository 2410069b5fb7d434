"""The ``[tracker_agent]`` settings: defaults, the keys this agent reads, and refused values."""

from __future__ import annotations

import pytest

from torviz.services.tracker_agent.core.udp_exchange import RetransmitPolicy
from torviz.shared.config import TrackerAgentConfig, parse_config
from torviz.shared.errors import ConfigError


def test_defaults_follow_bep_15_and_bep_12():
    config = TrackerAgentConfig()
    assert (config.udp_retransmit_base, config.udp_max_retransmits) == (15.0, 8)
    assert RetransmitPolicy(config.udp_retransmit_base, config.udp_max_retransmits).wait(8) == 3840
    assert config.announce_to_all_tiers is False
    assert (config.announce_timeout, config.scrape_interval) == (15.0, 300.0)


def test_keys_are_read_from_toml():
    config = parse_config(
        """
        [tracker_agent]
        announce_to_all_tiers = true
        announce_timeout = 4
        udp_retransmit_base = 0.5
        udp_max_retransmits = 3
        scrape_interval = 0
        """
    ).tracker_agent
    assert config == TrackerAgentConfig(
        announce_timeout=4.0,
        announce_to_all_tiers=True,
        udp_retransmit_base=0.5,
        udp_max_retransmits=3,
        scrape_interval=0.0,
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("announce_timeout = 0", "tracker_agent.announce_timeout must be a positive number"),
        ("udp_retransmit_base = -1", "tracker_agent.udp_retransmit_base must be a positive"),
        ("udp_max_retransmits = 17", "tracker_agent.udp_max_retransmits must be between 0 and 16"),
        ("scrape_interval = -5", "tracker_agent.scrape_interval must be 0 or more seconds"),
        ("numwant = -1", "tracker_agent.numwant must be between 0 and 2147483647"),
    ],
)
def test_unusable_values_name_the_setting(line, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(f"[tracker_agent]\n{line}\n")
    assert caught.value.reason == "bad_value"
    assert str(caught.value).startswith(message)


def test_a_wrong_type_is_refused_as_for_every_section():
    with pytest.raises(ConfigError) as caught:
        parse_config("[tracker_agent]\nannounce_to_all_tiers = 'yes'\n")
    assert caught.value.reason == "bad_type"
