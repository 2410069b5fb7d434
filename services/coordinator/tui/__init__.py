"""The terminal UI (``torviz-coordinator tui``): a live view of a running daemon.

Strategy: layers, each its own module, the pure ones testable without a terminal or a daemon:
- ``view_model``: the session as the UI knows it (rows, selection, log, mode), fed the
  daemon's ``SessionChanges``; pure.
- ``keys``: a key -> the view model's new state and an optional ``Command``; pure.
- ``render`` (with ``render_list``, ``render_detail``, ``render_pages``, ``pieces``):
  (view model, width, height) -> exactly ``height`` lines of styled segments (``lines``);
  pure. ``text`` holds the widths, escaping and number formats they share.
- ``completion``: Tab completion of a path in the add prompt (reads folders only).
- ``screen``: blessed: draws a frame, writing only the lines that changed.
- ``app``: the loop: keys, the daemon polled once a second, commands as control requests.

Rules: importing this package imports nothing of zmq or blessed (``app`` does, when it runs);
the UI is a plain process (no gevent), one control client, blocking zmq.
"""
