"""Clamping a station connection's receive window to what the station asks (link version 4).

The station measures what its link delivers and sends, with each request carrying upload
bytes, the window each of its connections should keep (protocol/window_clamp.py). Ground
sets it with Linux's ``TCP_WINDOW_CLAMP`` on that request's connection, so the station's
kernel keeps no more than that unacknowledged on it, and a cut throws away at most what the
windows allow (issue 14). Only a ground that can set it lists link version 4.
"""

from __future__ import annotations

import socket
from typing import Any

from protocol.transfer_wire import LINK_VERSIONS
from protocol.window_clamp import WINDOW_CLAMP_LINK_VERSION

_CLAMP = getattr(socket, "TCP_WINDOW_CLAMP", None)


def available() -> bool:
    """Can this ground clamp a connection's receive window (Linux)?"""
    return _CLAMP is not None


def link_versions() -> frozenset[int]:
    """The live-link versions this ground lists: version 4 only where it can clamp."""
    return LINK_VERSIONS if available() else LINK_VERSIONS - {WINDOW_CLAMP_LINK_VERSION}


def clamp(transport: Any, window_bytes: int) -> bool:
    """Clamp the receive window of the connection under ``transport``; False where it cannot
    (no socket, as behind a test client, or the kernel refused): the request goes on as before."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or _CLAMP is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _CLAMP, window_bytes)
    except OSError:
        return False
    return True
