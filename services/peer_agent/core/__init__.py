"""The peer agent's pure parts: no socket, gevent, zmq, pykka or clock here; ``now`` is passed in.

- ``session``: one peer connection's wire protocol as a state machine (``download``, ``upload``,
  ``pipeline``, ``partials`` are its parts, ``events`` what it reports).
- ``commands``: what the agent tells a connection (from the coordinator's per-peer messages).
- ``routing``: which connections hear a coordinator message; a magnet torrent's upgrade.
- ``translate``: a session's events as the bus messages the connection sends.
- ``uploader``: which pieces a connection's uploader reads ahead, holds and when it pauses.
- ``torrents`` and ``slots``: attached torrents, connections, limits, bans; who gets a slot.
- ``backlog``: accepted sockets waiting for their handshake header.
- ``piece_cache``: whole pieces read from storage for uploading.
- ``deliveries``: pieces sent to a storage agent until it answers.
- ``web_seed``: one web seed URL's state for a torrent (BEP 19): runs of pieces as HTTP Range
  requests, replies judged, retries (``web_seed_runs``, ``web_seed_types`` are its parts).
"""
