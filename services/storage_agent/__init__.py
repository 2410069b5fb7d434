"""The storage agent: the only code that touches downloaded files (verify, write, serve, resume).

Its shape, pure parts first:

- ``core/``: decisions without I/O: the storage interface (``core.storage``), errors, the torrent
  table and its phases, fast resume, the smart ban.
- ``pieces``: the piece path in one place, from a ``StorePiece`` on the data socket to its
  ``PieceVerified`` / ``PieceRejected`` and ``PieceStored`` (and block reads beside it).
- ``control`` and ``jobs``: opening, rechecking, flushing and closing torrents, off the inbox.
- ``store`` (files on disk), ``memory`` (in memory, for tests), ``removal``, ``hashing``
  (SHA-1 on worker threads), ``resume`` (the SQLite record).
- ``agent``: the actor owning the sockets and dispatching; ``__main__``: the entry point.
"""
