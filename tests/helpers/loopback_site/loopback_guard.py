"""No test traffic leaves the machine: any connect to an address that is not loopback fails loudly.

Installed for the test process by tests/conftest.py, and for the local stack the e2e tier runs as a
subprocess through `sitecustomize.py` next to this file (its directory is put on that process's
PYTHONPATH). An SSRF filter that lets an address through then fails a test instead of sending traffic out.
Standalone on purpose: `sitecustomize` imports it before anything else exists.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any


class StrayConnection(AssertionError):
    """A test (or the stack under test) tried to connect to an address that is not loopback."""


def is_loopback(address: object) -> bool:
    if not isinstance(address, tuple):
        return True  # AF_UNIX paths and other families: not the network
    host = str(address[0]).split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name connect() would resolve itself: refused, the code under test resolves first


def install() -> Callable[[], None]:
    """Patch socket connects; returns the function that restores them."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if not is_loopback(address):
            raise StrayConnection(f"a connection to {address!r}, which is not loopback, was attempted")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not is_loopback(address):
            raise StrayConnection(f"a connection to {address!r}, which is not loopback, was attempted")
        return real_connect_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex  # type: ignore[method-assign,assignment]

    def uninstall() -> None:
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex  # type: ignore[method-assign]

    return uninstall
