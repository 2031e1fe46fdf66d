"""What the station's connections deliver, read from Linux's TCP_INFO (link version 4).

Every socket sync makes to ground comes through :meth:`DeliveryMeter.watch`'s factory; a
poll every 50 ms adds up the bytes each has had acknowledged (``tcpi_bytes_acked``, plus its
SACKed segments × its MSS, as the simulator counts an ack's newly delivered bytes) and feeds
the sum to protocol/window_clamp.py's rate filter.
The window each request asks ground to clamp its connection to comes from that rate, the
base RTT the sender measured and the connections open. Where TCP_INFO is not there (not
Linux) the meter gives no window and requests carry none: the link works as before.

The same poll feeds the send gate (:meth:`DeliveryMeter.gated`): sync writes a body carrying a
window only as the station's budget allows, because ground's clamp binds a real connection
seconds late (docs/link.md "A cut in real time"): while every stream has just started, at
most the rule's budget without its share (``gain`` × rate × base RTT); then it grows
gradually to the gate's total (``gate_share`` × ``gain`` × rate × base RTT) and stays there.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from protocol.send_gate import SendGate
from protocol.window_clamp import DeliveryRate, WindowAsk, WindowRule

# struct tcp_info (include/uapi/linux/tcp.h): tcpi_state is its first byte, tcpi_snd_mss a
# u32 at 16, tcpi_unacked, tcpi_sacked, tcpi_lost and tcpi_retrans (segments) u32s at 24-36,
# tcpi_bytes_acked (Linux 4.1+) a u64 at 120, tcpi_notsent_bytes (4.6+) a u32 at 144.
# (Not tcpi_delivered: it counts segments, and a segment of 100 bytes is one as much as a full one.)
_TCP_INFO = getattr(socket, "TCP_INFO", None)
_INFO_BYTES = 232
_STATE, _SND_MSS, _UNACKED, _SACKED, _BYTES_ACKED, _NOTSENT = 0, 16, 24, 28, 120, 144
_ESTABLISHED = 1
POLL_EVERY_S = 0.05
# A gated request body is written this much at a time (docs/link.md "A cut in real time").
GATE_SLICE_BYTES = 8 * 1024
GATE_WAIT_MAX_S = 1.0  # no poll for this long: the gate opens rather than hold a request
# The gate sizes its budget by the base RTT, but never by less than this: it learns that bytes
# left only when it reads the sockets (every poll, or once before a slice waits), so a budget
# of rate × a base RTT far shorter than a poll admits that much per poll, the rate measured
# falls to it, and the budget with it. On loopback (1.7 ms) a start with small first flights
# spiralled down to ~8 KiB a poll (160 MiB took 227 s, not 20 s). Two polls: polls come late
# on a busy event loop. A space link's base RTT (0.6 s and more) is far above it.
GATE_RTT_FLOOR_S = 2 * POLL_EVERY_S


@dataclass(frozen=True, slots=True)
class TcpCounters:
    """One connection's view: is it established, the bytes it has had acknowledged, and does
    it hold bytes not yet acknowledged (sent or not)?"""

    established: bool
    delivered_bytes: int
    busy: bool = False
    # In the network (Linux's packets in flight: unacked − SACKed − lost + retransmitted, × MSS)
    # plus written and not yet sent: a segment SACKed or lost holds no link capacity.
    outstanding_bytes: int = 0
    unsent_bytes: int = 0  # of them, written and not yet sent (tcpi_notsent_bytes)
    # SACKed segments × MSS: across, but held by ground's TCP behind a hole, unreadable until
    # it fills; a cut loses them with the connection.
    held_bytes: int = 0


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
    (mss,) = struct.unpack_from("=I", raw, _SND_MSS)
    unacked, sacked, lost, retrans = struct.unpack_from("=IIII", raw, _UNACKED)
    (acked,) = struct.unpack_from("=Q", raw, _BYTES_ACKED)
    (notsent,) = struct.unpack_from("=I", raw, _NOTSENT)
    established = raw[_STATE] == _ESTABLISHED
    return TcpCounters(
        established=established,
        delivered_bytes=acked + sacked * mss,
        busy=established and (unacked > 0 or notsent > 0),
        outstanding_bytes=max(0, unacked - sacked - lost + retrans) * mss + notsent,
        held_bytes=sacked * mss,
        unsent_bytes=notsent,
    )


def _transport_view(
    transport: asyncio.BaseTransport, read: Callable[[socket.socket], TcpCounters | None]
) -> tuple[int, TcpCounters | None]:
    """The bytes waiting in ``transport``'s own buffer, and its socket's counters (None: none)."""
    size = getattr(transport, "get_write_buffer_size", None)
    buffered = size() if callable(size) else 0
    sock = transport.get_extra_info("socket")
    return buffered, None if sock is None else read(sock)


def unacked(
    transport: asyncio.BaseTransport, read: Callable[[socket.socket], TcpCounters | None] = read_counters
) -> bool | None:
    """Does ``transport`` hold bytes ground's TCP has not acknowledged (in its own buffer, or
    its socket's sent or unsent)? None: it cannot tell (closed, or no TCP_INFO)."""
    if transport.is_closing():
        return None
    buffered, c = _transport_view(transport, read)
    if buffered > 0:
        return True
    return None if c is None else c.busy


class DeliveryMeter:
    """The station's sockets to ground, and what they have delivered together."""

    def __init__(
        self,
        rule: WindowRule | None = None,
        read: Callable[[socket.socket], TcpCounters | None] = read_counters,
        rtt_floor_s: float = GATE_RTT_FLOOR_S,
        remembered_rate: float | None = None,
        guessed: bool = False,
    ) -> None:
        self.rate = DeliveryRate(rule)
        # The send gate's budget (protocol/send_gate.py), sized by the base RTT but never by
        # less than ``rtt_floor_s`` (GATE_RTT_FLOOR_S); the last pass's rate until a silence
        # (``guessed``: the reference link's, until the link shows a queue).
        self.send_gate = SendGate(
            self.rate, rtt_floor_s=rtt_floor_s, remembered_rate=remembered_rate, guessed=guessed
        )
        self._ask = WindowAsk(rule)
        self._read = read
        self._sockets: dict[socket.socket, int] = {}  # socket → the most delivered bytes read
        self.delivered = 0  # bytes, over every socket ever watched
        self.established = 0  # connections established at the last poll
        self.busy = 0  # of them, those holding bytes not yet acknowledged
        # The send gate (``gated``): bytes outstanding on every socket at the last poll, bytes
        # admitted since, and who waits for the next poll.
        self.outstanding = 0
        self.held = 0  # SACKed bytes ground holds behind holes, at the last poll
        # The last window asked saw a queue (or a start): the gate then counts ``held`` too.
        self.queue = True
        self._admitted = 0
        self._polled: asyncio.Event | None = None

    def watch(self, factory: Callable[[Any], socket.socket]) -> Callable[[Any], socket.socket]:
        """``factory`` (aiohttp's socket_factory), remembering every socket it makes."""

        def make(addr_info: Any) -> socket.socket:
            sock = factory(addr_info)
            self._sockets[sock] = 0
            return sock

        return make

    def _read_sockets(self) -> list[tuple[socket.socket, TcpCounters]]:
        """Every watched socket's counters now; the closed ones are forgotten."""
        read = []
        for sock in list(self._sockets):
            c = self._read(sock)
            if c is not None:
                read.append((sock, c))
            elif sock.fileno() < 0:
                del self._sockets[sock]
        return read

    def _note_outstanding(self, read: list[tuple[socket.socket, TcpCounters]]) -> None:
        """The bytes outstanding on the established sockets ``read``: what was admitted since
        the last reading is in them, sent or not yet sent."""
        self.outstanding = sum(c.outstanding_bytes for _, c in read if c.established)
        self.held = sum(c.held_bytes for _, c in read if c.established)
        self._admitted = 0

    def poll(self, now: float, base_rtt_s: float | None) -> None:
        """Read every watched socket once; forget the closed ones."""
        read = self._read_sockets()
        grew = False
        for sock, c in read:
            # SACKed segments turn into acked bytes (the sum wobbles by a segment): count rises only.
            if c.delivered_bytes > self._sockets[sock]:
                self.delivered += c.delivered_bytes - self._sockets[sock]
                self._sockets[sock] = c.delivered_bytes
                grew = True
        self.established = sum(c.established for _, c in read)
        self.busy = sum(c.busy for _, c in read)
        self._note_outstanding(read)
        if self._polled is not None:
            self._polled.set()
            self._polled = None
        # Sampled only when something was delivered, as the simulator samples at each ack: a
        # dark link leaves the filter as it was until the first bytes after it.
        if grew and base_rtt_s is not None:
            self.rate.observe(now, self.delivered, base_rtt_s)

    def window(
        self, now: float, base_rtt_s: float | None, queue: bool = True, queued: bool = False
    ) -> int | None:
        """The window to ask for the connection a request takes, shared with the busy ones; None
        before a base RTT is known (simlink's TransferDriver asks the same). ``queued``: the
        link's own queue shows (TransferSender.queue_now; ``queue`` is that or a start)."""
        self.queue = queue
        if queued:
            self.send_gate.link_queued()
        if base_rtt_s is None:
            return None
        restart = self.send_gate.restart_budget(base_rtt_s)
        return self._ask.ask(now, self.rate.rate(), base_rtt_s, self.busy + 1, queue, restart)

    def gate(
        self,
        window_bytes: int | None,
        now: float = 0.0,
        base_rtt_s: float | None = None,
        until: float | None = None,
    ) -> None:
        """Hold the station's outstanding bytes to ``window_bytes`` × the connections it was
        shared among, until ``until`` (monotonic time) if given, then open gradually
        (protocol/send_gate.py ``SendGate.hold``)."""
        self.send_gate.hold(window_bytes, self.busy, now, base_rtt_s, until)

    @property
    def restart_rate(self) -> float | None:
        """The delivery rate the link had before this start or return (``SendGate.restart_rate``)."""
        return self.send_gate.restart_rate

    @property
    def budget(self) -> int | None:
        """The bytes the station may hold outstanding now (None: the gate is open)."""
        return self.send_gate.budget(time.monotonic())

    @property
    def gated_bytes(self) -> int:
        """What the gate holds to its budget: the bytes in the network or unsent, and while
        the link holds a queue (or every stream just started) the SACKed bytes ground holds
        behind holes too, which a cut loses as well. Not without a queue: the streams are held
        by random loss there and the network holds under a BDP anyway, and counting them cost
        0.6 s / 3 % 0.901 -> 0.845 of the rate in real time (docs/link.md "SACKed bytes are
        a cut's too")."""
        return self.outstanding + (self.held if self.queue else 0)

    async def admit(self, n: int) -> None:
        """Wait until ``n`` more upload bytes keep the station's outstanding bytes within its
        budget (or nothing is outstanding: a write larger than the budget still goes). Past
        the budget the sockets are read again before waiting for a poll: a path that drains as
        fast as it is written (loopback: 8 KiB a 50 ms poll was 160 KB/s) is never held."""
        reread = False
        while True:
            held = self.gated_bytes + self._admitted
            budget = self.budget
            if budget is None or held == 0 or held + n <= budget:
                self._admitted += n
                return
            if not reread:
                reread = True
                self._note_outstanding(self._read_sockets())  # (the rate is left to the poll)
                continue
            if not await self._next_poll():
                self.outstanding = self.held = self._admitted = 0

    async def gated(
        self,
        data: bytes,
        slice_bytes: int = GATE_SLICE_BYTES,
        transport: Callable[[], asyncio.BaseTransport | None] | None = None,
    ) -> AsyncIterator[bytes]:
        """``data`` as a request body written a slice at a time, each once ``admit`` lets it
        and, given the request's ``transport`` (asked when the body is written), once what
        went before it has left the socket (``_sent``)."""
        way = None if transport is None else transport()
        for i in range(0, len(data), slice_bytes):
            piece = data[i : i + slice_bytes]
            if way is not None:
                await self._sent(way)
            await self.admit(len(piece))
            yield piece

    def _unsent(self, transport: asyncio.BaseTransport) -> int:
        """Bytes written to ``transport`` not yet sent: in its own buffer and in its socket."""
        buffered, c = _transport_view(transport, self._read)
        return buffered + (0 if c is None else c.unsent_bytes)

    async def _sent(self, transport: asyncio.BaseTransport) -> None:
        """Wait until the bytes written to ``transport`` have all been sent. A slice written
        behind bytes its congestion window still holds would wait in the socket, counted
        against the budget while other connections could send it now: at 0.6 s / 1 % that
        held the link to 0.78 of its rate in the simulator, against 0.94 so (docs/link.md
        "A slice once the last has left")."""
        while not transport.is_closing() and self._unsent(transport) > 0:
            if not await self._next_poll():
                return

    async def _next_poll(self) -> bool:
        """Wait for the next poll of the sockets; False if none came within GATE_WAIT_MAX_S
        (a meter not polling, as in a test without its run(), never holds a write)."""
        if self._polled is None:
            self._polled = asyncio.Event()
        try:
            await asyncio.wait_for(self._polled.wait(), GATE_WAIT_MAX_S)
        except TimeoutError:
            return False
        return True

    async def run(self, base_rtt_s: Callable[[], float | None]) -> None:
        """Poll every ``POLL_EVERY_S`` until cancelled."""
        while True:
            with contextlib.suppress(OSError):
                self.poll(time.monotonic(), base_rtt_s())
            await asyncio.sleep(POLL_EVERY_S)
