"""The only I/O in ``shared/``: zmq.green bus sockets, the service runner, logging setup.

Strategy: this package re-exports nothing, and importing it imports nothing; each caller
imports the module it needs (``shared.runtime.sockets``, ``.service``, ``.logging``, ...), and
pays for that module's imports only. So a pure module or the command line may import
``shared.runtime.logging`` without loading gevent, zmq or pykka, while every service's entry
point patches gevent first thing and then imports what it runs.
"""
