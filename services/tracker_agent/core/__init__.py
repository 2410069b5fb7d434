"""The tracker agent's pure parts: no socket, no greenlet, no clock (``now`` is passed in).

- ``tracking``: what to announce where, and what to tell the coordinator (``TrackerAgentCore``).
- ``schedule``: one torrent's announce schedule over its tiers, with retry backoff.
- ``udp_exchange``: one BEP 15 request (connect, request, retransmit) as a state machine.

The I/O shell stays one level up: ``agent`` (the actor and its greenlets), ``http_client`` and
``udp_client`` (the sockets). ``tests/shared/test_purity.py`` keeps this package pure.
"""
