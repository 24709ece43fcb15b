"""Loopback ports for the benchmarks' servers.

A port taken by binding to 0 comes from the kernel's ephemeral range, where any outgoing
connection made before the server binds it can take it again. These come from 20000-32000,
below that range (as the tests' ports do), and are checked free when chosen.
"""

from __future__ import annotations

import secrets
import socket

_PORTS = range(20000, 32000)


def free_port() -> int:
    for _ in range(200):
        port = secrets.choice(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port in 20000-32000")
