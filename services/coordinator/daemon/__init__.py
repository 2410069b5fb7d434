"""The coordinator's daemon side: its entry point, its composition root, its agents, its places.

- ``__main__``: the daemon process's entry point (``python -m torviz.services.coordinator.daemon``),
  which ``torviz-coordinator start`` and ``download`` hand over to by exec. It patches the
  standard library for gevent first thing, unconditionally, as every agent's entry point does,
  then runs the command with the CLI's own parser (``services.coordinator.cli.serve``). It is the
  one module here that imports the CLI; nothing imports it.
- ``run``: the composition root (``run_daemon``): the lock, the coordinator actor, the agents.
- ``launcher``: the embedded agents as child processes.
- ``background``: a daemon started detached, for a command that needs one (``tui``): its own
  session, its output appended to ``daemon.log`` in its state directory, waited for until it
  answers.
- ``locations``: the state directory, the daemon's lock and the ``daemon.json`` it publishes
  there, and the config file's default place. It lives here, not in the CLI, because the daemon
  owns that state directory and writes ``daemon.json``; the CLI only reads it (``find_daemon``),
  so the file's format is written and read in one module, and the CLI depends on the daemon
  side, never the other way round.

Importing this package imports nothing: ``locations`` stays light enough for the CLI's quick
commands (no gevent, zmq or pykka), while ``run`` is imported only in the patched process.
"""
