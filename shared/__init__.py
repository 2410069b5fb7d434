"""Code every torviz service uses: pure protocol codecs and policies, the bus contract, and
(in ``runtime/`` only) the I/O helpers the services share."""
