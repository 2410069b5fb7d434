"""Who announces a torrent, and which port: layouts written as strings.

Agents are written ``id@host`` (tracker agents) and ``id@host:port`` (peer agents); an announce
reads ``tracker host:port peer`` with ``-`` for no peer agent listening there, and ``+`` after
the one that reports the totals.
"""

from __future__ import annotations

import itertools

import pytest

from torviz.services.coordinator.core.announcers import (
    Announce,
    PeerAgentView,
    TrackerAgentView,
    choose_announces,
)
from torviz.shared.types import PeerAddress

FALLBACK = 6881


def trackers(text: str) -> list[TrackerAgentView]:
    views = []
    for word in text.split():
        agent_id, _, host = word.partition("@")
        views.append(TrackerAgentView(f"{agent_id}#1".encode(), agent_id, host))
    return views


def peers(text: str) -> list[PeerAgentView]:
    views = []
    for word in text.split():
        agent_id, _, address = word.partition("@")
        host, _, port = address.rpartition(":")
        views.append(
            PeerAgentView(f"{agent_id}#1".encode(), agent_id, PeerAddress(host, int(port)))
        )
    return views


def shown(announces: tuple[Announce, ...]) -> list[str]:
    return [
        f"{a.tracker_id} {a.host or '?'}:{a.port} {a.peer_agent or '-'}{' +' if a.totals else ''}"
        for a in announces
    ]


def choose(tracker_text: str, peer_text: str, *, private: bool = False) -> list[str]:
    return shown(
        choose_announces(
            trackers(tracker_text), peers(peer_text), private=private, fallback_port=FALLBACK
        )
    )


@pytest.mark.parametrize(
    ("tracker_text", "peer_text", "expected"),
    [
        # One host, everything local (the embedded daemon): the one pair.
        ("t1@127.0.0.1", "p1@127.0.0.1:6990", ["t1 127.0.0.1:6990 p1 +"]),
        # The deployment the guide shows: a tracker agent beside each peer agent.
        (
            "t2@10.0.0.2 t3@10.0.0.3",
            "p2@10.0.0.2:6881 p3@10.0.0.3:6882",
            ["t2 10.0.0.2:6881 p2 +", "t3 10.0.0.3:6882 p3"],
        ),
        # Pairs are made by address, not by the order of the ids.
        (
            "a@10.0.0.3 b@10.0.0.2",
            "p2@10.0.0.2:6881 p3@10.0.0.3:6882",
            ["a 10.0.0.3:6882 p3 +", "b 10.0.0.2:6881 p2"],
        ),
        # A tracker agent alone on the coordinator's host stays silent beside a paired one.
        (
            "t1@10.0.0.1 t2@10.0.0.2",
            "p2@10.0.0.2:6881 p3@10.0.0.3:6882",
            ["t2 10.0.0.2:6881 p2 +"],
        ),
        # Two peer agents on one host: the first by id is announced.
        ("t2@10.0.0.2", "pb@10.0.0.2:7000 pa@10.0.0.2:7001", ["t2 10.0.0.2:7001 pa +"]),
        # Two tracker agents on one host: the first by id announces, once.
        ("tb@10.0.0.2 ta@10.0.0.2", "p2@10.0.0.2:6881", ["ta 10.0.0.2:6881 p2 +"]),
        # The old layout: the tracker agent on the coordinator's host, peer agents elsewhere.
        # As before: the first peer agent's port, from the first tracker agent, unreachable.
        (
            "t1@10.0.0.1",
            "p3@10.0.0.3:6882 p2@10.0.0.2:6881",
            ["t1 10.0.0.1:6881 - +"],
        ),
        ("tb@10.0.0.9 ta@10.0.0.8", "p2@10.0.0.2:6885", ["ta 10.0.0.8:6885 - +"]),
        # One host whose agents report different addresses: the same fallback.
        ("t1@127.0.0.1", "p1@127.0.0.5:6990", ["t1 127.0.0.1:6990 - +"]),
        # A tracker agent that has not said where it announces from (no AgentInfo yet).
        ("t1@", "p1@127.0.0.1:6990", ["t1 ?:6990 - +"]),
        ("t1@ t2@10.0.0.2", "p2@10.0.0.2:6881", ["t2 10.0.0.2:6881 p2 +"]),
        # No peer agent listens: the configured port.
        ("t1@10.0.0.1", "", [f"t1 10.0.0.1:{FALLBACK} - +"]),
        # No tracker agent: nobody announces.
        ("", "p1@127.0.0.1:6990", []),
        ("", "", []),
        # IPv6 pairs like IPv4.
        ("t6@fd00::2", "p6@fd00::2:6881", ["t6 fd00::2:6881 p6 +"]),
    ],
)
def test_layouts(tracker_text: str, peer_text: str, expected: list[str]) -> None:
    assert choose(tracker_text, peer_text) == expected


@pytest.mark.parametrize(
    ("tracker_text", "peer_text", "expected"),
    [
        ("t2@10.0.0.2 t3@10.0.0.3", "p2@10.0.0.2:6881 p3@10.0.0.3:6882", ["t2 10.0.0.2:6881 p2 +"]),
        ("t1@10.0.0.1 t3@10.0.0.3", "p2@10.0.0.2:6881 p3@10.0.0.3:6882", ["t3 10.0.0.3:6882 p3 +"]),
        ("t1@10.0.0.1 t9@10.0.0.9", "p2@10.0.0.2:6881", ["t1 10.0.0.1:6881 - +"]),
    ],
)
def test_a_private_torrent_is_announced_once(
    tracker_text: str, peer_text: str, expected: list[str]
) -> None:
    assert choose(tracker_text, peer_text, private=True) == expected


def test_the_choice_does_not_depend_on_the_order_agents_joined() -> None:
    tracker_list = trackers("t1@10.0.0.1 t2@10.0.0.2 t3@10.0.0.3 t3b@10.0.0.3")
    peer_list = peers("p2@10.0.0.2:6881 p3@10.0.0.3:6882 p3b@10.0.0.3:6883 p4@10.0.0.4:6884")
    first = choose_announces(tracker_list, peer_list, private=False, fallback_port=FALLBACK)
    assert shown(first) == ["t2 10.0.0.2:6881 p2 +", "t3 10.0.0.3:6882 p3"]
    for t_order, p_order in itertools.islice(
        itertools.product(itertools.permutations(tracker_list), itertools.permutations(peer_list)),
        200,
    ):
        assert choose_announces(t_order, p_order, private=False, fallback_port=FALLBACK) == first


def test_every_announce_names_a_listening_peer_agent_or_is_the_only_one() -> None:
    # Over every layout of up to three tracker and three peer agents on three hosts: either all
    # announces are reachable, or there is exactly one (the fallback); never a dead address
    # beside a live one, never two announces from one address, and one reports the totals.
    hosts = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    for t_hosts in itertools.product(hosts, repeat=3):
        for p_hosts in itertools.product(hosts, repeat=2):
            tracker_list = [
                TrackerAgentView(f"t{i}".encode(), f"t{i}", h) for i, h in enumerate(t_hosts)
            ]
            peer_list = [
                PeerAgentView(f"p{i}".encode(), f"p{i}", PeerAddress(h, 7000 + i))
                for i, h in enumerate(p_hosts)
            ]
            for private in (False, True):
                got = choose_announces(
                    tracker_list, peer_list, private=private, fallback_port=FALLBACK
                )
                assert got, (t_hosts, p_hosts)
                assert sum(a.totals for a in got) == 1 and got[0].totals
                assert all(a.reachable for a in got) or len(got) == 1
                assert len({a.host for a in got}) == len(got)
                if private:
                    assert len(got) == 1
                paired = set(t_hosts) & set(p_hosts)
                assert all(a.reachable for a in got) == bool(paired)
                if not private:
                    assert {a.host for a in got} == (paired or {got[0].host})
