"""The storage agent's pure parts: decisions without files, sqlite, threads or sockets.

- ``storage``: the storage interface (pieces laid over files) and a file's state on disk.
- ``errors``: ``StorageError``, the ``OSError`` table, and the ``StorageFailed`` event.
- ``torrents``: the table of torrents, their phases, and the admission of data requests.
- ``fastresume``: the resume record, and which pieces an open trusts or hashes again.
- ``smart_ban``: who sent the bad blocks of a piece that failed with several senders.

Rules: nothing here imports gevent, zmq, socket, pykka, threading or the clock
(``tests/shared/test_purity.py`` checks it); the modules outside ``core/`` do the I/O.
"""
