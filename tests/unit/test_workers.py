"""`tether serve --workers`: the port probe and the workers' shared sockets."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import free_port
from tether.api.workers import _listening_socket


def test_workers_share_the_port_but_a_second_service_cannot_join_it() -> None:
    port = free_port()
    a = _listening_socket("127.0.0.1", port)
    b = _listening_socket("127.0.0.1", port)  # a second worker of the same service
    try:
        a.listen()
        b.listen()
        # the probe a starting service makes: the port is taken already
        with pytest.raises(OSError, match="in use"):
            _listening_socket("127.0.0.1", port, share=False)
    finally:
        a.close()
        b.close()
    _listening_socket("127.0.0.1", port, share=False).close()  # free again


def test_a_port_held_by_an_ordinary_listener_is_refused_to_workers() -> None:
    port = free_port()
    plain = socket.socket()
    plain.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    plain.bind(("127.0.0.1", port))
    plain.listen()
    try:
        with pytest.raises(OSError, match="in use"):
            _listening_socket("127.0.0.1", port)
    finally:
        plain.close()
