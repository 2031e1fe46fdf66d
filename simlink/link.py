"""The space link in virtual time: serialisation at rate, propagation delay, segment loss,
dark windows, cuts, and a TCP-like transport on top (what the real drivers run over).

Why model TCP at all: packet loss *inside* TCP cannot be produced by a userspace proxy (it
only sees bytes TCP already repaired), yet on a 600 ms, lossy link it sets the goodput. So
each direction carries MSS-sized segments, one at a time at the link rate, each lost with
the profile's probability (or when sent into a dark window); the sender keeps a congestion
window (Linux's CUBIC by default, simlink/congestion.py: slow start with HyStart's delay exit,
0.7 of the window kept on a loss, then the cubic curve; "reno" halves and adds a segment a round
trip), retransmits what was lost (RACK: as soon as a later-sent segment is acknowledged; a lost
tail by Linux's tail loss probe, 2 RTTs after the last ack; else on its RTO, which backs off
while dark), and halves its window for each RTO idle, as Linux does. The RTO is Linux's
(tcp_rtt_estimator: seeded by the handshake, its variance falling once a round trip), not RFC
6298's per-ack one, whose variance vanished within a window of acks and fired spurious
timeouts on every queue that grew (docs/link.md "The simulator's TCP timers"). The receiver
delivers bytes in order. Simplifications, said plainly: one ACK per segment (40 bytes), no
receive-window limit below 4 MB, no ECN, no Nagle/delayed-ACK timing, no proportional rate
reduction (the window falls to ssthresh at once) and no HyStart ack-train test (at these rates
acks are further apart than its 2 ms).

Cuts follow the real-time proxy (``linkemu/proxy.py``): a dark window stalls everything and
cuts every connection ``cut_after_s`` into it; random cuts hit while the link is up. A cut
tells both ends at once (the proxy resets both sockets) and loses what was in flight.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from onboard.delivery import GATE_SLICE_BYTES

from .clock import EventLoop, Timer
from .congestion import congestion_control
from .profile import LinkProfile

# The station's gate as it really writes a body, a slice at a time (SimLink.gate_slices; off:
# the gate admits each segment as it is sent). With the slices, a slice goes into its socket
# only while no more than GATE_UNSENT_MAX bytes written before it wait there (onboard's gate:
# 0, DeliveryMeter._sent; None: the gate before 5 Dec, tenth session, which wrote regardless).
GATE_SLICES = False
GATE_UNSENT_MAX: int | None = 0
# The congestion control every modelled connection runs (simlink/congestion.py): Linux's
# default, what the station's and ground's kernels run. "reno": Linux's reno (the model before
# 5 Dec, thirteenth session, was Reno's growth with CUBIC's HyStart).
CONGESTION_CONTROL = "cubic"

TCP_IP_HEADER_BYTES = 40
HANDSHAKE_PACKET_BYTES = 60
INITIAL_WINDOW_SEGMENTS = 10  # Linux default (RFC 6928)
MAX_WINDOW_BYTES = 4 * 1024**2  # receive-window cap: far above any BDP in the shipped profiles
MIN_RTO_S = 0.2  # Linux's floor
MAX_RTO_S = 120.0
SYN_RETRIES_S = (1, 2, 4, 8, 16, 32)  # Linux tcp_syn_retries=6: gives up ~63 s after the first SYN
SACK_BLOCKS = 3  # an ack's SACK blocks at most (4 without TCP timestamps; Linux uses them)


class Endpoint(Protocol):
    """What sits at either end of a simulated connection (an HTTP client or server driver)."""

    def connection_made(self, conn: SimConnection) -> None: ...
    def data_received(self, conn: SimConnection, data: bytes) -> None: ...
    def connection_lost(self, conn: SimConnection, reason: str) -> None: ...


@dataclass(slots=True)
class WayStats:
    stream_bytes: int = 0  # application bytes that started across, once each (what a proxy counts)
    retransmitted_bytes: int = 0  # application bytes that crossed again (TCP retransmissions)
    ip_bytes: int = 0  # everything on the radio: segments with headers, ACKs, handshakes
    segments: int = 0
    lost_segments: int = 0
    # The sending side's TCP events, as Linux counts them (bench_tcp_model.py sets them beside
    # the kernel's): data segments sent again, timeouts with data outstanding, tail probes.
    resent_segments: int = 0
    timeouts: int = 0
    loss_probes: int = 0
    busy_s: float = 0.0  # time spent serialising
    per_minute: dict[int, int] = field(default_factory=dict)  # ip bytes by minute of the run


def default_buffer_bytes(rate_bps: float, delay_s: float, mss: int) -> int:
    """The bottleneck queue of one way when a profile gives no ``buffer_kb``."""
    # Two bandwidth-delay products, at least 64 full packets (a modem's queue; four
    # connections' initial windows must fit in it). Beyond it packets are dropped, which is
    # what makes TCP back off instead of queueing forever.
    bdp = rate_bps / 8 * max(2 * delay_s, 0.05)
    return int(max(64 * (mss + TCP_IP_HEADER_BYTES), 2 * bdp))


class Way:
    """One direction of the physical link: a FIFO that serialises packets at the rate."""

    def __init__(
        self, loop: EventLoop, name: str, rate_bps: float, delay_s: float, mss: int, buffer_bytes: int = 0
    ) -> None:
        self.loop = loop
        self.name = name
        self.rate_bps = rate_bps
        self.delay_s = delay_s
        self.busy_until = 0.0
        self.stats = WayStats()
        self.buffer_bytes = buffer_bytes or default_buffer_bytes(rate_bps, delay_s, mss)
        self.queue_limit_s = self.buffer_bytes * 8 / rate_bps

    def transmit(
        self, now: float, ip_bytes: int, app_bytes: int = 0, first: bool = True
    ) -> tuple[float, float] | None:
        """Queue a packet: (start, arrival) times, or None if the bottleneck buffer is full.

        It is counted when it starts to cross (a packet still queued when the run ends has not
        crossed, as with the proxy's counters); ``app_bytes`` are stream bytes it carries, a
        first crossing or (``first=False``) a retransmission.
        """
        start = max(now, self.busy_until)
        if start - now > self.queue_limit_s:
            return None
        dur = ip_bytes * 8 / self.rate_bps
        self.busy_until = start + dur
        if start <= now:
            self._count(start, dur, ip_bytes, app_bytes, first)
        else:
            self.loop.at(start, self._count, start, dur, ip_bytes, app_bytes, first)
        return start, start + dur + self.delay_s

    def _count(self, start: float, dur: float, ip_bytes: int, app_bytes: int, first: bool) -> None:
        s = self.stats
        s.ip_bytes += ip_bytes
        s.busy_s += dur
        if first:
            s.stream_bytes += app_bytes
        else:
            s.retransmitted_bytes += app_bytes
        minute = int(start // 60)
        s.per_minute[minute] = s.per_minute.get(minute, 0) + ip_bytes


def random_cut_times(profile: LinkProfile, duration_s: float, seed: int) -> list[float]:
    """When cuts strike: at random (Poisson at ``cuts_per_hour``) and at the profile's fixed
    times (``cuts_at_s``); the same in virtual and real time."""
    out: list[float] = [t for t in profile.cuts_at_s if t < duration_s]
    if profile.cuts_per_hour > 0:
        rng = random.Random(f"cuts-{seed}")
        t = rng.expovariate(profile.cuts_per_hour / 3600)
        while t < duration_s:
            out.append(t)
            t += rng.expovariate(profile.cuts_per_hour / 3600)
    return sorted(out)


class SimLink:
    """The link for one run: both directions, dark windows, cuts, and the live connections."""

    def __init__(
        self,
        loop: EventLoop,
        profile: LinkProfile,
        *,
        duration_s: float,
        seed: int,
        orbit_offset_s: float = 0.0,
        tcp_cc: str | None = None,
    ) -> None:
        self.loop = loop
        self.profile = profile
        self.tcp_cc = tcp_cc or CONGESTION_CONTROL  # each connection's (congestion_control)
        congestion_control(self.tcp_cc)  # an unknown name fails here, not mid-run
        self.rng = random.Random(f"link-{seed}")
        mss = profile.mss_bytes
        buf = profile.buffer_bytes
        self.to_ground = Way(loop, "to_ground", profile.to_ground_bps, profile.one_way_delay_s, mss, buf)
        self.to_station = Way(loop, "to_station", profile.to_station_bps, profile.one_way_delay_s, mss, buf)
        # Windows well past the end, so traffic still in flight at the end meets the right sky.
        self.dark = profile.dark_windows(duration_s + 3 * 3600, orbit_offset_s)
        self._starts = [s for s, _ in self.dark]
        self.conns: list[SimConnection] = []
        self.cuts_random = 0
        self.cuts_dark = 0
        self.cut_events = 0
        self.cut_in_network_bytes = 0
        # Each cut's station → ground bytes in the network (sent, not delivered to ground in
        # order), and of them the bytes that had crossed but waited in ground's reassembly
        # queue behind a lost segment (the kernel drops them with the connection).
        self.cut_costs: list[tuple[int, int]] = []
        # The same bytes thrown away when a connection is aborted for another reason (a request
        # timed out, a raced connection left over): not a cut's cost, counted apart.
        self.aborted_in_network_bytes = 0
        # Station → ground bytes acknowledged (SACKed included) on every connection so far:
        # what Linux's TCP_INFO tcpi_delivered adds up to; ``on_delivered`` hears each rise.
        self.up_delivered = 0
        self.on_delivered: Callable[[float, int], None] | None = None
        # The station's send gate (onboard/delivery.py, protocol/send_gate.py): the bytes it may
        # hold outstanding on every connection together now (None: open). A connection whose
        # request carries a window (``gated``) sends new data only within it; those it holds
        # wait for the next ack on any connection.
        self.send_budget: Callable[[], int | None] | None = None
        # The gate counts SACKed bytes too (the driver sets it as the station's
        # DeliveryMeter.queue: while the link holds a queue or every stream just started).
        self.gate_counts_held = True
        self._gate_waiting: list[SimConnection] = []
        # The gate as the station's really is (``gate_slices``, off by default: docs/link.md
        # "A slice once the last has left"): a gated body goes into its socket a slice at a
        # time, each admitted while every socket's bytes in flight *and written but not yet
        # sent* stay within the budget, and (GATE_UNSENT_MAX) once its own socket has sent
        # what was written before it.
        self.gate_slices = GATE_SLICES
        self.syns = 0  # SYNs the station sent (first and retried)
        self.syns_dark = 0  # of them, sent while the link was dark (docs/link.md: their cost)
        for s, e in self.dark:
            if s + profile.cut_after_s < e:
                loop.at(s + profile.cut_after_s, self._cut_all, "loss of signal")
        for t in random_cut_times(profile, duration_s, seed):
            if not self.is_dark(t):
                loop.at(t, self._cut_all, "random cut")

    def is_dark(self, t: float) -> bool:
        i = bisect.bisect_right(self._starts, t) - 1
        return i >= 0 and t < self.dark[i][1]

    def lost(self, start: float, arrive: float) -> bool:
        """Is a packet sent at ``start`` and due at ``arrive`` lost (dark at either end, or at random)?"""
        return self.is_dark(start) or self.is_dark(arrive) or self.rng.random() < self.profile.loss

    def _cut_all(self, reason: str) -> None:
        """Cut every live connection; counted per connection, as the proxy counts them."""
        live = [c for c in self.conns if not c.closed]
        self.cut_events += bool(live)  # one cut of the link, however many connections it drops
        if reason == "random cut":
            self.cuts_random += len(live)
        else:
            self.cuts_dark += len(live)
        lost = [c.in_network() for c in live]
        if live:
            self.cut_costs.append((sum(n for n, _ in lost), sum(o for _, o in lost)))
            self.cut_in_network_bytes += self.cut_costs[-1][0]
        for c in live:
            c.abort(reason, cut=True)

    def in_network_bytes(self) -> int:
        """Station → ground bytes on the line or in the link's queue now, over every live
        connection (not those held out of order at ground: the packet emulator's figure)."""
        held = (c.in_network() for c in self.conns if not c.closed)
        return sum(n - ooo for n, ooo in held)

    def busy_count(self) -> int:
        """The station's connections with bytes not yet acknowledged (sent or not), as it counts
        them from TCP_INFO (onboard/delivery.py): the streams sharing the window budget."""
        return sum(1 for c in self.conns if c.established and not c.closed and c.up.end > c.up.una)

    def _delivered(self, n: int) -> None:
        self.up_delivered += n
        if self.on_delivered is not None:
            self.on_delivered(self.loop.now, self.up_delivered)
        if self._gate_waiting:
            waiting, self._gate_waiting = self._gate_waiting, []
            for c in waiting:
                c.up.pump()

    def wait_for_ack(self, conn: SimConnection) -> None:
        """``conn`` is held by the send gate: the next ack on any connection pumps it again."""
        if conn not in self._gate_waiting:
            self._gate_waiting.append(conn)

    def _gate_fits(self, conn: SimConnection, n: int, held: Callable[[SimConnection], int]) -> bool:
        """Do ``n`` more bytes of ``conn``'s request fit the send gate, every live connection
        holding ``held`` of it (or nothing held at all)? If not, ``conn`` waits for an ack."""
        budget = None if self.send_budget is None else self.send_budget()
        if budget is None:
            return True
        total = sum(held(c) for c in self.conns if not c.closed)
        if total == 0 or total + n <= budget:
            return True
        self.wait_for_ack(conn)
        return False

    def gate_admits(self, conn: SimConnection, n: int) -> bool:
        """``gate_slices``: may ``n`` more bytes of ``conn``'s request go into its socket? As
        DeliveryMeter.admit: Linux's packets in flight, the SACKed bytes ground holds behind a
        hole (``gate_counts_held``) and the bytes written and not yet sent on every
        connection, plus ``n``, within the budget, or nothing outstanding at all."""
        return self._gate_fits(conn, n, lambda c: c.up.pipe + self._held(c) + c.up.unsent())

    def gate_holds(self, conn: SimConnection, n: int) -> bool:
        """Does the send gate hold ``n`` more bytes of ``conn``'s request? As the station's gate
        (DeliveryMeter.admit): the bytes in flight on every connection (TCP_INFO's packets in
        flight) and, while ``gate_counts_held``, its SACKed segments (what a cut would lose)
        plus ``n`` within the budget, or nothing in flight at all. Unlike it, the gate admits
        a segment as it is sent, not an 8 KiB slice into the socket (a byte waiting for the
        congestion window is not held here), and it learns of each ack at once, not at its
        next 50 ms poll of TCP_INFO."""
        if not conn.gated:
            return False
        return not self._gate_fits(conn, n, lambda c: c.up.pipe + self._held(c))

    def _held(self, conn: SimConnection) -> int:
        """``conn``'s SACKed bytes if the gate counts them (DeliveryMeter.gated_bytes)."""
        return conn.up.sacked_bytes if self.gate_counts_held else 0

    def connect(self, client: Endpoint, server: Endpoint, *, syns: int = len(SYN_RETRIES_S)) -> SimConnection:
        """Open a connection from the station (client) to ground (server); the client is told
        ``connection_made`` or, after ``syns`` SYNs unanswered, ``connection_lost`` (2: a
        racing attempt, onboard/sync.py's TCP_SYNCNT=1)."""
        conn = SimConnection(self, client, server)
        conn.max_syns = syns
        self.conns = [c for c in self.conns if not c.closed]
        self.conns.append(conn)
        conn._send_syn(0)
        return conn


class SimConnection:
    """A TCP connection across the simulated link; ``send`` from either side, ``abort`` to cut."""

    def __init__(self, link: SimLink, client: Endpoint, server: Endpoint) -> None:
        self.link = link
        self.loop = link.loop
        self.client = client
        self.server = server
        self.established = False
        self.server_knows = False
        self.closed = False
        self.gated = False  # its request carries a window: the station's send gate paces it
        self.up = _Half(self, link.to_ground, link.to_station, server)  # station → ground
        self.down = _Half(self, link.to_station, link.to_ground, client)  # ground → station
        self._syn_timer: Timer | None = None
        self.max_syns = len(SYN_RETRIES_S)

    # -- handshake ---------------------------------------------------------------------
    def _send_syn(self, attempt: int) -> None:
        if self.closed or self.established:
            return
        if attempt >= self.max_syns:
            self.abort("connect timed out (no answer to SYN)")
            return
        self._syn_timer = self.loop.after(SYN_RETRIES_S[attempt], self._send_syn, attempt + 1)
        self.link.syns += 1
        self.link.syns_dark += self.link.is_dark(self.loop.now)
        r = self.link.to_ground.transmit(self.loop.now, HANDSHAKE_PACKET_BYTES)
        if r and not self.link.lost(*r):
            self.loop.at(r[1], self._syn_arrived, self.loop.now)

    def _syn_arrived(self, syn_sent_at: float) -> None:
        if self.closed:
            return
        if not self.server_knows:
            self.server_knows = True
            self.server.connection_made(self)
        r = self.link.to_station.transmit(self.loop.now, HANDSHAKE_PACKET_BYTES)
        if r and not self.link.lost(*r):
            self.loop.at(r[1], self._synack_arrived, syn_sent_at)

    def _synack_arrived(self, syn_sent_at: float) -> None:
        if self.closed or self.established:
            return
        self.established = True
        if self._syn_timer:
            self._syn_timer.cancel()
        # Like Linux, the handshake's round trip seeds both directions' RTO, so a 2.6 s lunar
        # round trip does not fire the 1 s initial RTO on the first data. The SYN-ACK echoes
        # the timestamp of the SYN it answers (RFC 7323, on by default in Linux), so a SYN
        # retransmitted after 1 s on a longer path still gives a sample (tcp_ack_update_rtt).
        for half in (self.up, self.down):
            half._estimate(self.loop.now - syn_sent_at)
        self.client.connection_made(self)
        self.up.pump()

    def adopt(self, client: Endpoint) -> None:
        """Hand the station's end to another endpoint (a raced connection to the request it
        serves, simlink/vhttp.py SimRace)."""
        self.client = client
        self.down.receiver = client

    # -- data --------------------------------------------------------------------------
    def send(self, from_client: bool, data: bytes) -> None:
        if self.closed or not data:
            return
        (self.up if from_client else self.down).write(data)

    def in_network(self) -> tuple[int, int]:
        """Station → ground bytes sent but not delivered to ground in order (what a cut now
        would throw away of the link's work; bytes still in the station's send buffer cost no
        link time), and of them those waiting in ground's reassembly queue."""
        up = self.up
        held = sum(len(p) for s, p in up.ooo.items() if s >= up.rcv_nxt)
        return max(0, up.nxt - up.rcv_nxt), held

    def abort(self, reason: str, *, cut: bool = False) -> None:
        """Cut both ways now; what is in flight is lost; both ends are told. ``cut``: the
        link's cut (``SimLink._cut_all`` counts its cost); else the bytes count as aborted."""
        if self.closed:
            return
        self.closed = True
        if self._syn_timer:
            self._syn_timer.cancel()
        if not cut:
            self.link.aborted_in_network_bytes += self.in_network()[0]
        self.up.stop()
        self.down.stop()
        if self.server_knows:
            self.server.connection_lost(self, reason)
        self.client.connection_lost(self, reason)


@dataclass(slots=True)
class _Seg:
    seq: int
    length: int
    payload: bytes
    sent_at: float = 0.0
    sends: int = 0
    crossed: bool = False  # has started across the link once (a queue drop does not count)
    sacked: bool = False
    lost: bool = False  # marked lost by the sender (queued for retransmission)


class _Half:
    """One direction of a connection: a SACK/RACK sender (its congestion control: ``cc``) and an
    in-order receiver."""

    def __init__(self, conn: SimConnection, fwd: Way, rev: Way, receiver: Endpoint) -> None:
        self.conn = conn
        self.loop = conn.loop
        self.link = conn.link
        self.fwd = fwd
        self.rev = rev
        self.receiver = receiver
        self.mss = conn.link.profile.mss_bytes
        self.data = bytearray()  # bytes from ``una`` onwards
        self.una = 0
        self.nxt = 0
        self.end = 0
        self.admitted = 0  # ``gate_slices``: bytes the station's gate let into the socket
        self.segs: dict[int, _Seg] = {}  # outstanding, in seq order (insertion order)
        self.retx: list[int] = []
        self.pipe = 0
        # SACKed and not yet cumulatively acknowledged: at ground, but held in its TCP's
        # reassembly queue behind a hole, where a cut loses them (Linux's tcpi_sacked).
        self.sacked_bytes = 0
        self.cwnd = float(INITIAL_WINDOW_SEGMENTS * self.mss)
        # The receiver's window, as ground's TCP_WINDOW_CLAMP sets it (link version 4): new
        # data leaves only while the unacknowledged bytes stay under it.
        self.rwnd = float(MAX_WINDOW_BYTES)
        self.rwnd_limited = False  # the last pump stopped at the receiver's window
        self.ssthresh = math.inf
        self.cc = congestion_control(conn.link.tcp_cc)
        self.recover = -1
        # Linux's estimator (tcp_rtt_estimator): ``mdev`` and ``rttvar`` are 4 × the mean
        # deviation; ``rttvar`` falls only once per round trip (at ``rtt_seq``) towards the
        # round's largest ``mdev``, never below the 200 ms floor.
        self.srtt: float | None = None
        self.mdev = 0.0
        self.mdev_max = 0.0
        self.rttvar = 0.0
        self.rtt_seq = 0
        self.rto = 1.0
        self.backoff = 1
        self.rto_timer: Timer | None = None
        self.pto_armed = False  # the timer is a tail loss probe's, not the RTO's
        self.tlp_high: int | None = None  # a probe flies, sent when nxt was this (Linux tlp_high_seq)
        self.last_send = -math.inf
        self.rack_sent_at = -math.inf
        self.frto_at: float | None = None
        self.frto_saved: tuple[float, float] | None = None
        self.rcv_nxt = 0
        self.ooo: dict[int, bytes] = {}
        # What Linux's TCP_INFO would report (tcpi_segs_out, tcpi_total_retrans).
        self.segs_out = 0
        self.total_retrans = 0

    def stop(self) -> None:
        if self.rto_timer:
            self.rto_timer.cancel()
            self.rto_timer = None
        self.pto_armed = False

    def write(self, data: bytes) -> None:
        self.data += data
        self.end += len(data)
        self.pump()

    def _slices(self) -> bool:
        return self is self.conn.up and self.conn.gated and self.link.gate_slices

    def written(self) -> int:
        """The bytes in the socket: all of them, or (``gate_slices``) those the gate admitted."""
        return self.admitted if self._slices() else self.end

    def unsent(self) -> int:
        """Bytes in the socket not yet sent (Linux's tcpi_notsent_bytes)."""
        return max(0, self.written() - self.nxt)

    def _admit(self) -> None:
        """``gate_slices``: write the request's next slices while the gate admits them."""
        while self.admitted < self.end:
            if GATE_UNSENT_MAX is not None and self.unsent() > GATE_UNSENT_MAX:
                self.link.wait_for_ack(self.conn)
                return
            n = min(GATE_SLICE_BYTES, self.end - self.admitted)
            if not self.link.gate_admits(self.conn, n):
                return
            self.admitted += n

    def pump(self) -> None:
        if self.conn.closed or not self.conn.established:
            return
        now = self.loop.now
        if not self.segs and now - self.last_send > self.rto:
            self._restart_after_idle(now - self.last_send)
        self.rwnd_limited = False
        if self._slices():
            self._admit()
        sent_new = False
        while self.pipe == 0 or self.pipe + self.mss <= self.cwnd:
            if self.retx:
                seg = self.segs.get(self.retx.pop(0))
                if seg is None or seg.sacked or not seg.lost:
                    continue
                seg.lost = False
                if seg.seq == self.una:
                    # Linux restarts the RTO when it retransmits the head, so the timer does
                    # not fire before the fast retransmission's own ack can be back.
                    self.stop()
            else:
                seg = self._new_segment()
                if seg is None:
                    break
                sent_new = True
            self._transmit(seg)
        self._arm_timer(sent_new)

    def _restart_after_idle(self, idle_s: float) -> None:
        """RFC 2861 as Linux does it (tcp_cwnd_restart): an idle connection's window halves for
        each RTO it idled past the first, down to the initial window, and ssthresh keeps ¾ of it."""
        restart = min(float(INITIAL_WINDOW_SEGMENTS * self.mss), self.cwnd)
        self.ssthresh = max(self.ssthresh, 0.75 * self.cwnd)
        cwnd = self.cwnd
        while (idle_s := idle_s - self.rto) > 0 and cwnd > restart:
            cwnd /= 2
        self.cwnd = max(cwnd, restart)

    def _new_segment(self) -> _Seg | None:
        """The next segment of new data, if the receiver's window and the station's gate let it go."""
        written = self.written()
        if self.nxt >= written:
            if written < self.end:
                self.rwnd_limited = True  # held by the station's gate, not by cwnd (Linux)
            return None
        n = min(self.mss, written - self.nxt)
        if self.nxt + n - self.una > self.rwnd:
            self.rwnd_limited = True
            return None  # the receiver's window is full: its acks pump again
        if self is self.conn.up and not self._slices() and self.link.gate_holds(self.conn, n):
            self.rwnd_limited = True  # held by the station, not by cwnd: no growth (Linux)
            return None  # the next ack on any connection pumps it again
        off = self.nxt - self.una
        seg = _Seg(seq=self.nxt, length=n, payload=bytes(self.data[off : off + n]))
        self.segs[seg.seq] = seg
        self.nxt += n
        return seg

    def _transmit(self, seg: _Seg) -> None:
        now = self.loop.now
        st = self.fwd.stats
        st.segments += 1
        seg.sends += 1
        st.resent_segments += seg.sends > 1
        self.segs_out += 1
        self.total_retrans += seg.sends > 1
        seg.sent_at = now
        if self.pipe == 0:
            self.cc.tx_start(now - self.last_send, now)  # Linux's CA_EVENT_TX_START
        self.pipe += seg.length
        self.last_send = now
        r = self.fwd.transmit(now, seg.length + TCP_IP_HEADER_BYTES, seg.length, first=not seg.crossed)
        if r is not None:
            seg.crossed = True
        if r is None or self.link.lost(*r):
            st.lost_segments += 1
            return
        self.loop.at(r[1], self._arrive, seg.seq, seg.payload, now)

    # -- receiver side -------------------------------------------------------------------
    def _arrive(self, seq: int, payload: bytes, sent_at: float) -> None:
        if self.conn.closed:
            return
        if seq >= self.rcv_nxt and seq not in self.ooo:
            self.ooo[seq] = payload
        chunks = []
        while self.rcv_nxt in self.ooo:
            chunk = self.ooo.pop(self.rcv_nxt)
            chunks.append(chunk)
            self.rcv_nxt += len(chunk)
        r = self.rev.transmit(self.loop.now, TCP_IP_HEADER_BYTES)
        if r is not None and not self.link.lost(*r):
            self.loop.at(r[1], self._on_ack, self.rcv_nxt, self._sack_blocks(seq), seq, sent_at)
        if chunks:
            self.receiver.data_received(self.conn, b"".join(chunks))

    def _sack_blocks(self, seq: int) -> tuple[tuple[int, int], ...]:
        """The SACK blocks of an ack (RFC 2018): the block holding the segment just arrived
        first, then the highest others, three at most (Linux's with timestamps). One lost ack
        no longer hides a segment's arrival: the next ack repeats it, where an ack naming only
        its own segment let RACK resend every one whose ack was lost (~0.3 % more segments
        resent than lost at 1 %, each a spurious retransmission)."""
        if not self.ooo:
            return ()
        blocks: list[tuple[int, int]] = []
        for s in sorted(self.ooo):
            end = s + len(self.ooo[s])
            if blocks and blocks[-1][1] == s:
                blocks[-1] = (blocks[-1][0], end)
            else:
                blocks.append((s, end))
        first = [b for b in blocks if b[0] <= seq < b[1]]
        rest = [b for b in reversed(blocks) if not b[0] <= seq < b[1]]
        return tuple((first + rest)[:SACK_BLOCKS])

    # -- sender side: acks, loss recovery, timers ----------------------------------------
    def _on_ack(self, cum: int, blocks: tuple[tuple[int, int], ...], sack_seq: int, sent_at: float) -> None:
        if self.conn.closed:
            return
        # RACK (RFC 8985): this ack proves delivery of a copy sent at ``sent_at``; the link keeps
        # order, so anything still unacked that was sent before it is lost.
        self.rack_sent_at = max(self.rack_sent_at, sent_at)
        if self.frto_at is not None:
            if sent_at < self.frto_at and self.frto_saved is not None:
                # An original sent before the timeout was delivered: the timeout was spurious.
                self.cwnd, self.ssthresh = self.frto_saved
                self.backoff = 1
            self.frto_at = None
            self.frto_saved = None
        newly = 0
        seg = self.segs.get(sack_seq)
        if seg is not None and not seg.sacked and seg.sends == 1:
            self._rtt_sample(self.loop.now - seg.sent_at, acked_to=cum)
        for start, end in blocks:
            newly += self._sack(start, end)
        if cum > self.una:
            for s in list(self.segs):
                if s >= cum:
                    break
                done = self.segs.pop(s)
                if done.sacked:
                    self.sacked_bytes -= done.length
                else:
                    if not done.lost:
                        self.pipe -= done.length
                    newly += done.length
            del self.data[: cum - self.una]
            self.una = cum
            if self.tlp_high is not None and cum >= self.tlp_high:
                self.tlp_high = None
            self.backoff = 1
            self.stop()
        if newly and self is self.conn.up:
            self.link._delivered(newly)
        # Linux grows the window only while it limits sending (tcp_is_cwnd_limited): not while
        # the receiver's clamp does, or lifting the clamp would release a burst.
        if newly and self.una > self.recover and not self.rwnd_limited:
            self._grow(newly)
        self._detect_loss()
        self.pump()
        if not self.segs:
            self.stop()

    def _sack(self, start: int, end: int) -> int:
        """Mark the segments in [start, end) SACKed; the bytes newly so."""
        newly = 0
        while start < end and (seg := self.segs.get(start)) is not None:
            if not seg.sacked:
                seg.sacked = True
                self.sacked_bytes += seg.length
                if not seg.lost:
                    self.pipe -= seg.length
                newly += seg.length
            start += seg.length
        return newly

    def _grow(self, acked: int) -> None:
        """Slow start up to ssthresh, then the congestion control's growth for the rest (Linux's
        tcp_slow_start, then cong_avoid with what it left)."""
        rest = float(acked)
        if self.cwnd < self.ssthresh:
            step = min(rest, self.ssthresh - self.cwnd)
            self.cwnd += step
            rest -= step
        if rest > 0:
            self.cwnd += self.mss * self.cc.increase(self.cwnd / self.mss, rest / self.mss, self.loop.now)
        self.cwnd = min(self.cwnd, float(MAX_WINDOW_BYTES))

    def _detect_loss(self) -> None:
        newly_lost = [
            s for s in self.segs.values() if not s.sacked and not s.lost and s.sent_at < self.rack_sent_at
        ]
        if not newly_lost:
            return
        if self.una > self.recover:  # one window reduction per loss episode
            self.ssthresh = self.mss * self.cc.ssthresh(self.cwnd / self.mss)
            self.cwnd = self.ssthresh
            self.recover = self.nxt
        for s in newly_lost:
            s.lost = True
            self.pipe -= s.length
            self.retx.append(s.seq)
        self.retx.sort()

    def _rtt_sample(self, r: float, acked_to: int = 0) -> None:
        """Linux's RTT estimator, sample by sample. (RFC 6298's per-sample rttvar, used until
        4 Dec, fell to nothing within a window of acks at a steady queue, so an RTO of srtt +
        200 ms fired on every queue that grew by more: 1,279 spurious RTOs in one 14-min
        2.6 s run, docs/link.md "The simulator's TCP timers".)"""
        self.cc.rtt_sample(r, self.loop.now)
        if self.cwnd < self.ssthresh and self.cc.slow_start_over(r, self.una, self.nxt, self.cwnd / self.mss):
            self.ssthresh = self.cwnd  # HyStart: the queue is filling, leave slow start
        self._estimate(r, acked_to)

    def _estimate(self, r: float, acked_to: int = 0) -> None:
        """srtt, rttvar and the RTO from one sample (the handshake's too: HyStart begins with
        the congestion control, after it, so only ``_rtt_sample`` feeds it)."""
        if self.srtt is None:
            self.srtt, self.mdev = r, 2 * r  # so the first RTO is 3 × the sample
            self.rttvar = self.mdev_max = max(self.mdev, MIN_RTO_S)
            self.rtt_seq = self.nxt
        else:
            m = r - self.srtt
            self.srtt += m / 8
            if m < 0:
                # A falling RTT moves mdev with a finer gain (Linux's variant of Eifel), so the
                # RTO does not shrink at once after a queue drains.
                m = -m - self.mdev / 4
                if m > 0:
                    m /= 8
            else:
                m -= self.mdev / 4
            self.mdev += m
            if self.mdev > self.mdev_max:
                self.mdev_max = self.mdev
                self.rttvar = max(self.rttvar, self.mdev_max)
            if max(acked_to, self.una) > self.rtt_seq:
                if self.mdev_max < self.rttvar:
                    self.rttvar -= (self.rttvar - self.mdev_max) / 4
                self.rtt_seq = self.nxt
                self.mdev_max = MIN_RTO_S
        self.rto = min(MAX_RTO_S, max(MIN_RTO_S, self.srtt + self.rttvar))

    def _arm_rto(self) -> None:
        self.pto_armed = False
        self.rto_timer = self.loop.after(min(MAX_RTO_S, self.rto * self.backoff), self._on_rto)

    def _arm_timer(self, sent_new: bool) -> None:
        """After a send or an ack: a tail loss probe's timer where Linux would set one (RFC 8985
        §7, tcp_schedule_loss_probe: moved on by new data), else the RTO's if none runs."""
        if not self.segs:
            return
        probe = (
            self.srtt is not None
            and self.tlp_high is None
            and self.una > self.recover  # Linux's Open state: no loss being repaired
            and not self.retx
            and self.backoff == 1
        )
        if not probe:
            if self.rto_timer is None:
                self._arm_rto()
            return
        if self.rto_timer is not None and not (self.pto_armed and sent_new):
            return
        # No timer: an ack moved una (stop()) and the RTO would run afresh from now; new data
        # moves a probe's timer on, but not past the RTO of the oldest segment.
        advancing = self.rto_timer is None
        self.stop()
        assert self.srtt is not None
        unsacked = (g for g in self.segs.values() if not g.sacked)
        head = next(unsacked, None)
        lone = head is not None and next(unsacked, None) is None  # one segment in flight
        pto = 2 * self.srtt + (MIN_RTO_S if lone else 0.002)
        rto_left = self.rto if advancing or head is None else head.sent_at + self.rto - self.loop.now
        if rto_left > 0:
            pto = min(pto, rto_left)
        self.pto_armed = True
        self.rto_timer = self.loop.after(pto, self._on_pto)

    def _on_pto(self) -> None:
        """The tail loss probe: a new segment if there is one, else the last one again, so its
        ack lets RACK find a lost tail without waiting for the RTO."""
        self.rto_timer = None
        self.pto_armed = False
        if self.conn.closed or not self.segs:
            return
        seg = self._new_segment()
        if seg is None:
            seg = next((g for g in reversed(self.segs.values()) if not g.sacked), None)
            if seg is not None and not seg.lost:
                self.pipe -= seg.length  # the copy takes the original's place in the pipe
        if seg is not None:
            self.fwd.stats.loss_probes += 1
            self.tlp_high = self.nxt
            self._transmit(seg)
        self._arm_rto()

    def _on_rto(self) -> None:
        self.rto_timer = None
        self.pto_armed = False
        if self.conn.closed or not self.segs:
            return
        self.fwd.stats.timeouts += 1
        self.tlp_high = None
        if self.frto_at is None:  # remember the window, in case this timeout proves spurious
            self.frto_saved = (self.cwnd, self.ssthresh)
        self.frto_at = self.loop.now
        if self.backoff == 1:
            # The first timeout of an episode sets ssthresh; Linux's tcp_enter_loss leaves it
            # alone at the next ones (a dark's backed-off RTOs do not grind it to 2 segments).
            self.ssthresh = self.mss * self.cc.ssthresh(self.cwnd / self.mss)
        self.cc.on_timeout()
        self.backoff = min(self.backoff * 2, 64)
        self.cwnd = float(self.mss)
        self.recover = self.nxt
        # Retransmit the oldest segment only: if it was truly lost (a dark window), its ack
        # will show RACK that everything sent before the retransmission is lost too; if it was
        # only queued behind a long bottleneck queue, acks of the originals arrive first and
        # F-RTO (RFC 5682) undoes the window cut, instead of resending a whole queue's worth.
        for seg in self.segs.values():
            if not seg.sacked:
                if seg.lost:
                    self.retx.remove(seg.seq)
                else:
                    self.pipe -= seg.length
                # RFC 6298 §5.4: the timeout retransmits the earliest unacknowledged segment
                # whatever the window holds. (Queued for pump() instead, it waited for a pipe
                # that segments never marked lost kept above the 1-MSS window: a retransmission
                # lost twice stalled the connection for good; issue 14.)
                seg.lost = False
                self._transmit(seg)
                break
        self.pump()
        if self.rto_timer is None and self.segs:
            self._arm_rto()


def total_stats(link: SimLink) -> dict[str, int | float]:
    """Totals over both directions, for the report."""
    a, b = link.to_ground.stats, link.to_station.stats
    return {
        "stream_bytes": a.stream_bytes + b.stream_bytes,
        "retransmitted_bytes": a.retransmitted_bytes + b.retransmitted_bytes,
        "ip_bytes": a.ip_bytes + b.ip_bytes,
    }


__all__ = ["Endpoint", "EventLoop", "SimConnection", "SimLink", "Way", "WayStats", "total_stats"]
