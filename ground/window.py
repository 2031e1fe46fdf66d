"""Clamping a station connection's receive window to what the station asks (link version 4).

The station measures what its link delivers and sends, with each request carrying upload
bytes, the window each of its connections should keep (protocol/window_clamp.py). Ground
sets it with Linux's ``TCP_WINDOW_CLAMP`` on every open connection of that station at once
(a chunk keeps its connection for 8 s and more: a window set only on the next request's
connection would reach the others that late), so the station's kernel keeps no more than
that unacknowledged on each, and a cut throws away at most what the windows allow (issue 14).
Only a ground that can set it lists link version 4.
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


class StationWindows:
    """Each station's open connections, so that a window it asks for applies to all of them."""

    def __init__(self) -> None:
        self._open: dict[str, list[Any]] = {}

    def request(self, station: str, transport: Any, window_bytes: int | None) -> int:
        """Note ``transport`` as ``station``'s; with a window, clamp every open connection of
        the station to it. Returns how many were clamped."""
        live = [t for t in self._open.get(station, ()) if not t.is_closing()]
        if transport is not None and not transport.is_closing() and transport not in live:
            live.append(transport)
        self._open[station] = live
        if window_bytes is None:
            return 0
        return sum(clamp(t, window_bytes) for t in live)


# A window of fewer segments than this stalls on delayed acks: the station's kernel sends one
# short segment and the ack waits for the timer. On loopback (MSS 64 KiB) an 8 KiB clamp held
# every connection to ~100 KB/s, rwnd-limited 99.6 % of the time (ss -ti); a space link's MSS
# (~1.4 kB) puts this floor under the station's least window, where it changes nothing.
MIN_WINDOW_SEGMENTS = 4


def clamp(transport: Any, window_bytes: int) -> bool:
    """Clamp the receive window of the connection under ``transport`` (to at least
    ``MIN_WINDOW_SEGMENTS`` of its segments); False where it cannot (no socket, as behind a
    test client, or the kernel refused): the request goes on as before."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or _CLAMP is None:
        return False
    try:
        mss = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
        sock.setsockopt(socket.IPPROTO_TCP, _CLAMP, max(window_bytes, MIN_WINDOW_SEGMENTS * mss))
    except OSError:
        return False
    return True
