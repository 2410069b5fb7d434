"""The coordinator's pure decisions: bus events, control requests and the time in, addressed
commands out.

Nothing here touches a socket, a greenlet, a process or the clock: every entry point takes
``now``, and commands leave through the ``Coordinator``'s outbox (``actor.py`` sends them).

- ``coordinator``: the ``Coordinator`` session, the one class the actor drives.
- ``lifecycle``: a torrent's states and the one table of moves between them.
- ``agent_bookkeeping``: welcoming, vetting, hearing and forgetting agents.
- ``agents``, ``placement``: the registry of agents and which peer agent dials next.
- ``torrent``, ``swarm``, ``peer_record``, ``redial``, ``picking``, ``choking``: one torrent,
  its swarm of connections and the policies that run it.
- ``announcing``, ``announcers``: which tracker agents announce each torrent, with which port.
- ``adding``: torrents added from a .torrent or a magnet link, or restored.
- ``bans``, ``swarm_choking``: a swarm's bans (repeat offenders, the smart ban's liars) and
  its choking.
- ``web_seeds``, ``swarm_web_seeds``: a torrent's web seed URLs (BEP 19) and where each
  stands, and their sessions in the swarm.
- ``status``, ``torrent_detail``, ``piece_origins``: the status report, a torrent's files and
  piece map, and which peer agent delivered each piece.
- ``session_watch``, ``event_log``, ``torrent_log``: what changed since a watcher's last
  question, the daemon's log as the user reads it, and the log lines about a torrent.
"""

from .coordinator import LISTEN_PORT_WAIT, MAX_HASH_FAILURES, Coordinator, SessionListener

__all__ = ["LISTEN_PORT_WAIT", "MAX_HASH_FAILURES", "Coordinator", "SessionListener"]
