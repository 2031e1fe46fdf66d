"""What the station's connections deliver, read from Linux's TCP_INFO (link version 4).

Every socket sync makes to ground comes through :meth:`DeliveryMeter.watch`'s factory; a
poll every 50 ms adds up the bytes each has had acknowledged (``tcpi_bytes_acked``, plus its
SACKed segments × its MSS, as the simulator counts an ack's newly delivered bytes) and feeds
the sum to protocol/window_clamp.py's rate filter.
The window each request asks ground to clamp its connection to comes from that rate, the
base RTT the sender measured and the connections open. Where TCP_INFO is not there (not
Linux) the meter gives no window and requests carry none: the link works as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol.window_clamp import DeliveryRate, WindowAsk, WindowRule

# struct tcp_info (include/uapi/linux/tcp.h): tcpi_state is its first byte, tcpi_snd_mss a
# u32 at 16, tcpi_unacked and tcpi_sacked (segments) u32s at 24 and 28, tcpi_bytes_acked
# (Linux 4.1+) a u64 at 120, tcpi_notsent_bytes (4.6+) a u32 at 144.
# (Not tcpi_delivered: it counts segments, and a segment of 100 bytes is one as much as a full one.)
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_INFO_BYTES = 232
_STATE, _SND_MSS, _UNACKED, _SACKED, _BYTES_ACKED, _NOTSENT = 0, 16, 24, 28, 120, 144
_ESTABLISHED = 1
POLL_EVERY_S = 0.05


@dataclass(frozen=True, slots=True)
class TcpCounters:
    """One connection's view: is it established, the bytes it has had acknowledged, and does
    it hold bytes not yet acknowledged (sent or not)?"""

    established: bool
    delivered_bytes: int
    busy: bool = False


def read_counters(sock: socket.socket) -> TcpCounters | None:
    """The socket's TCP_INFO counters, or None (closed, not TCP, or a kernel without them)."""
    if _TCP_INFO is None or sock.fileno() < 0:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _INFO_BYTES)
    except OSError:
        return None
    if len(raw) < _NOTSENT + 4:
        return None
    mss, unacked, sacked = (
        struct.unpack_from("=III", raw, _SND_MSS)[0],
        *struct.unpack_from("=II", raw, _UNACKED),
    )
    (acked,) = struct.unpack_from("=Q", raw, _BYTES_ACKED)
    (notsent,) = struct.unpack_from("=I", raw, _NOTSENT)
    established = raw[_STATE] == _ESTABLISHED
    return TcpCounters(
        established=established,
        delivered_bytes=acked + sacked * mss,
        busy=established and (unacked > 0 or notsent > 0),
    )


class DeliveryMeter:
    """The station's sockets to ground, and what they have delivered together."""

    def __init__(
        self,
        rule: WindowRule | None = None,
        read: Callable[[socket.socket], TcpCounters | None] = read_counters,
    ) -> None:
        self.rate = DeliveryRate(rule)
        self._ask = WindowAsk(rule)
        self._read = read
        self._sockets: dict[socket.socket, int] = {}  # socket → the most delivered bytes read
        self.delivered = 0  # bytes, over every socket ever watched
        self.established = 0  # connections established at the last poll
        self.busy = 0  # of them, those holding bytes not yet acknowledged

    def watch(self, factory: Callable[[Any], socket.socket]) -> Callable[[Any], socket.socket]:
        """``factory`` (aiohttp's socket_factory), remembering every socket it makes."""

        def make(addr_info: Any) -> socket.socket:
            sock = factory(addr_info)
            self._sockets[sock] = 0
            return sock

        return make

    def poll(self, now: float, base_rtt_s: float | None) -> None:
        """Read every watched socket once; forget the closed ones."""
        established = busy = 0
        grew = False
        for sock, seen in list(self._sockets.items()):
            c = self._read(sock)
            if c is None:
                if sock.fileno() < 0:
                    del self._sockets[sock]
                continue
            established += c.established
            busy += c.busy
            # SACKed segments turn into acked bytes (the sum wobbles by a segment): count rises only.
            if c.delivered_bytes > seen:
                self.delivered += c.delivered_bytes - seen
                self._sockets[sock] = c.delivered_bytes
                grew = True
        self.established, self.busy = established, busy
        # Sampled only when something was delivered, as the simulator samples at each ack: a
        # dark link leaves the filter as it was until the first bytes after it.
        if grew and base_rtt_s is not None:
            self.rate.observe(now, self.delivered, base_rtt_s)

    def window(self, now: float, base_rtt_s: float | None, queue: bool = True) -> int | None:
        """The window to ask for the connection a request takes, shared with the busy ones; None
        before a base RTT is known (simlink's TransferDriver asks the same)."""
        if base_rtt_s is None:
            return None
        return self._ask.ask(now, self.rate.rate(), base_rtt_s, self.busy + 1, queue)

    async def run(self, base_rtt_s: Callable[[], float | None]) -> None:
        """Poll every ``POLL_EVERY_S`` until cancelled."""
        while True:
            with contextlib.suppress(OSError):
                self.poll(time.monotonic(), base_rtt_s())
            await asyncio.sleep(POLL_EVERY_S)
