"""The peer agent: the only code that talks to BitTorrent peers (dial, accept, download, seed).

Its shape, pure parts first:

- ``core/``: decisions without I/O: the peer session (wire protocol state machine) and its
  download and upload halves, its events and their translation to bus messages, the commands
  the agent tells a connection and which connections hear what, the uploader policy, the
  piece cache, storage deliveries, the registry of torrents (magnet ones too) and connections
  with its slot policy, the handshake backlog.
- ``connection``: one peer socket as an actor with its reader, writer, timer and uploader
  greenlets; ``listener``: the listening socket and the handshake headers it reads.
- ``storage_link`` (pieces to a storage agent and their answers), ``piece_reads`` (the piece
  cache filled over the storage links), ``uplink`` (a connection's ways out of its actor).
- ``agent``: the actor owning the coordinator link and routing; ``address``, ``settings``;
  ``__main__``: the entry point.
"""
