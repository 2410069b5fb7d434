"""The mainline DHT (BEP 5, with BEP 32, 42 and 43) as sans-IO state machines: no sockets, no clock.

``krpc`` encodes and decodes KRPC messages, ``node_id`` holds ids and the XOR metric (and BEP 42),
``routing`` the routing table, ``tokens`` and ``peer_store`` what a responder keeps, ``lookup`` one
iterative search, and ``node`` the whole node fed datagrams and a clock.
"""
