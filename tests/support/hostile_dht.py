"""Hostile DHT nodes for the DHT interop tests: a query flood, garbage datagrams, a node that
answers with 1,000 bogus nodes, a node that claims an id close to every target.

The implementation lives in `testing/hostile_dht.py`, beside the other reference processes,
so that the DHT benchmark (which never imports from tests/) uses the same nodes.
"""

from testing.hostile_dht import HostileConfig, HostileDht, bdecode, bencode

__all__ = ["HostileConfig", "HostileDht", "bdecode", "bencode"]
