"""The virtual-time link: rate, delay, loss recovery, dark windows and cuts behave as modelled."""

from __future__ import annotations

import dataclasses

import pytest

from simlink.clock import EventLoop
from simlink.errors import SimError
from simlink.link import SimConnection, SimLink
from simlink.profile import LinkProfile, load_profile
from simlink.realtime_link import kernel_tcp_counts


class Sink:
    def __init__(self, payload: bytes = b"") -> None:
        self.payload = payload
        self.got = bytearray()
        self.done_at: float | None = None
        self.lost: list[tuple[float, str]] = []

    def connection_made(self, conn: SimConnection) -> None:
        if self.payload:
            conn.send(True, self.payload)

    def data_received(self, conn: SimConnection, data: bytes) -> None:
        self.got += data
        self.done_at = conn.loop.now

    def connection_lost(self, conn: SimConnection, reason: str) -> None:
        self.lost.append((conn.loop.now, reason))


def _profile(name: str = "iss-ku", **kw: object) -> LinkProfile:
    base = dict(dark=(), orbit_s=0.0, cuts_per_hour=0.0)
    base.update(kw)
    return dataclasses.replace(load_profile(name), **base)  # type: ignore[arg-type]


def _send(p: LinkProfile, size: int, seed: int = 1, until: float = 3600.0) -> tuple[Sink, SimLink]:
    loop = EventLoop()
    link = SimLink(loop, p, duration_s=until, seed=seed)
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    client, server = Sink(data), Sink()
    link.connect(client, server)
    loop.run_until(until)
    assert bytes(server.got) == data  # in order, complete, exact
    return server, link


@pytest.mark.parametrize("name", ["iss-ku", "degraded", "lunar", "dialup"])
def test_lossless_bulk_transfer_fills_the_link(name: str) -> None:
    p = _profile(name, loss=0.0)
    size = max(50_000, int(p.to_ground_bps / 8 * 30))  # ~30 s worth at the rate
    server, link = _send(p, size)
    assert server.done_at is not None
    ideal = size * 8 / p.to_ground_bps + 1.5 * p.rtt_s  # serialisation + handshake + last segment
    assert server.done_at < ideal * 1.6, (server.done_at, ideal)
    assert link.to_ground.stats.stream_bytes == size


def test_loss_costs_retransmissions_and_time() -> None:
    clean, _ = _send(_profile(loss=0.0), 1_000_000)
    lossy, link = _send(_profile(loss=0.02), 1_000_000)
    st = link.to_ground.stats
    assert st.lost_segments > 0 and st.retransmitted_bytes >= st.lost_segments * 500
    assert lossy.done_at is not None and clean.done_at is not None and lossy.done_at > clean.done_at


def test_same_seed_same_run() -> None:
    a, la = _send(_profile(loss=0.03), 300_000, seed=5)
    b, lb = _send(_profile(loss=0.03), 300_000, seed=5)
    assert a.done_at == b.done_at and la.to_ground.stats == lb.to_ground.stats


def test_dark_window_stalls_then_cuts_both_ends() -> None:
    p = dataclasses.replace(load_profile("iss-ku"), cuts_per_hour=0.0, loss=0.0)
    start = p.dark[0].start_s
    loop = EventLoop()
    link = SimLink(loop, p, duration_s=start + 600, seed=1)
    client, server = Sink(), Sink()
    loop.run_until(start - 5)
    conn = link.connect(client, server)
    loop.run_until(start - 1)
    assert conn.established
    conn.send(True, b"x" * 10_000_000)  # far more than fits before the gap
    loop.run_until(start + p.cut_after_s + 1)
    assert conn.closed and link.cuts_dark == 1
    assert client.lost and client.lost[0][0] == pytest.approx(start + p.cut_after_s)
    assert server.lost and len(server.got) < 10_000_000


def test_connect_while_dark_times_out() -> None:
    p = dataclasses.replace(load_profile("lunar"), cuts_per_hour=0.0)
    start = p.dark[0].start_s
    loop = EventLoop()
    link = SimLink(loop, p, duration_s=start + 7200, seed=1)
    loop.run_until(start + 60)
    client, server = Sink(), Sink()
    link.connect(client, server)
    loop.run_until(start + 300)
    assert client.lost and "timed out" in client.lost[0][1]


def test_random_cuts_follow_the_profile_rate() -> None:
    p = _profile(cuts_per_hour=10.0)
    loop = EventLoop()
    link = SimLink(loop, p, duration_s=10 * 3600, seed=2)
    holder: list[SimConnection] = []

    def reconnect() -> None:
        if holder:
            holder[-1].abort("replaced")  # one live connection at a time: cuts count connections
        holder.append(link.connect(Sink(), Sink()))
        loop.after(60, reconnect)

    reconnect()
    loop.run_until(10 * 3600)
    assert 60 <= link.cuts_random <= 140  # ~100 expected (Poisson)


def test_parallel_flows_share_a_lossless_link_without_collapse() -> None:
    """Four connections slow-starting together (the sender's window of 4 requests) must not
    overflow the bottleneck into timeouts: HyStart leaves slow start as the queue builds."""
    p = _profile(loss=0.0)
    loop = EventLoop()
    link = SimLink(loop, p, duration_s=600, seed=1)
    servers = [Sink() for _ in range(4)]
    for s in servers:
        link.connect(Sink(b"x" * 400_000), s)
    loop.run_until(600)
    ideal = 4 * 400_000 * 8 / p.to_ground_bps
    done = [s.done_at for s in servers]
    assert all(t is not None for t in done) and max(done) < 1.5 * ideal + 2 * p.rtt_s, (done, ideal)  # type: ignore[operator,type-var]
    assert link.to_ground.stats.retransmitted_bytes < 0.02 * 1_600_000


def test_a_cut_counts_its_bytes_in_the_network_and_a_timeout_apart() -> None:
    """Per cut: station → ground bytes sent but not delivered to ground in order, of them those
    held out of order at ground (behind a lost segment), both exactly; bytes of a connection
    aborted for another reason (a request's timeout) are not a cut's (docs/link.md, "Cuts")."""
    p = _profile(loss=0.05)
    loop = EventLoop()
    link = SimLink(loop, p, duration_s=600, seed=3)
    slow, cut = Sink(), Sink()
    a = link.connect(slow, Sink())
    b = link.connect(cut, Sink())
    loop.run_until(5)
    a.send(True, b"a" * 200_000)
    b.send(True, b"b" * 200_000)
    loop.run_until(8)
    for _ in range(40):  # to a moment when both have bytes on the way (not between flights)
        if a.in_network()[0] and b.in_network()[0]:
            break
        loop.run_until(loop.now + 0.05)
    a_net, _ = a.in_network()
    a.abort("request timed out")
    assert link.aborted_in_network_bytes == a_net > 0 and link.cut_costs == []
    b_net, b_held = b.in_network()
    assert b_net == b.up.nxt - b.up.rcv_nxt > 0
    assert b_held == sum(len(x) for s, x in b.up.ooo.items() if s >= b.up.rcv_nxt) <= b_net
    link._cut_all("random cut")  # noqa: SLF001
    assert link.cut_costs == [(b_net, b_held)] and link.cut_in_network_bytes == b_net
    assert link.cut_events == 1 and link.aborted_in_network_bytes == a_net
    link._cut_all("random cut")  # nothing live: no cut, nothing counted  # noqa: SLF001
    assert link.cut_events == 1 and len(link.cut_costs) == 1


def test_a_queue_that_grows_fires_no_timeout_on_a_lossless_link() -> None:
    """Requests joining one by one on a 2.6 s path stand each other in a growing queue. Linux's
    RTO (its rttvar falls once per round trip, not per ack) waits that out: on a lossless link
    every retransmission is a spurious timeout. With RFC 6298's per-ack rttvar the RTO came
    down to srtt + 200 ms and fired on every queue that grew by more."""
    p = _profile("lunar", loss=0.0)
    loop = EventLoop()
    link = SimLink(loop, p, duration_s=600, seed=1)
    servers: list[Sink] = []
    for i in range(24):  # a request every 1.5 s, ~1.5 s of link time each: the queue builds
        server = Sink()
        servers.append(server)
        loop.at(i * 1.5, link.connect, Sink(b"x" * 100_000), server)
    loop.run_until(600)
    assert all(len(s.got) == 100_000 for s in servers)
    st = link.to_ground.stats
    assert st.retransmitted_bytes == 0 and st.resent_segments == st.timeouts == st.loss_probes == 0


def test_a_lost_tail_is_probed_before_the_timeout() -> None:
    """A request's last segment lost has no later segment to reveal it: Linux's tail loss
    probe (RFC 8985 §7) resends it 2 round trips (+ 200 ms for a lone segment) after the last
    ack, or at the RTO if that comes first, without the timeout's window cut and backoff.
    On a fresh connection the RTO is 3 round trips."""
    p = _profile("lunar", loss=0.0)
    loop = EventLoop()
    link = SimLink(loop, p, duration_s=600, seed=1)
    server = Sink()
    conn = link.connect(Sink(b"x" * 14_000), server)  # one initial window: 10 segments
    transmit = conn.up._transmit  # noqa: SLF001
    dropped: list[float] = []
    lost = link.lost

    def drop_the_last_once(seg):  # type: ignore[no-untyped-def]
        if seg.seq + seg.length == 14_000 and not dropped:
            dropped.append(loop.now)
            link.lost = lambda start, arrive: True  # type: ignore[method-assign]
            transmit(seg)
            link.lost = lost  # type: ignore[method-assign]
            return
        transmit(seg)

    conn.up._transmit = drop_the_last_once  # type: ignore[method-assign]  # noqa: SLF001
    loop.run_until(60)
    assert dropped and len(server.got) == 14_000 and server.done_at is not None
    rtt = p.rtt_s
    # Sent 1 RTT in (after the handshake), the other segments acked 1 RTT later; the probe
    # leaves 2 RTTs + 200 ms after that ack and crosses in half of one: ~4.6 RTTs in. The
    # RTO, 3 RTTs after that ack, would land it ~5.5 RTTs in.
    assert server.done_at < dropped[0] + 4 * rtt, (server.done_at, dropped[0], rtt)
    assert conn.up.backoff == 1 and conn.up.cwnd >= 10 * p.mss_bytes  # no timeout fired
    st = link.to_ground.stats  # counted as Linux counts them (benchmarks/bench_tcp_model.py)
    assert (st.loss_probes, st.timeouts, st.resent_segments) == (1, 0, 1)
    assert st.segments == 11


def test_the_rto_follows_linux_estimator() -> None:
    """tcp_rtt_estimator: the first sample gives 3 × itself; rttvar falls by a quarter of its
    excess over the round's deviation once per round trip (not per ack), never under 200 ms."""
    p = _profile("lunar", loss=0.0)
    link = SimLink(EventLoop(), p, duration_s=60, seed=1)
    half = link.connect(Sink(), Sink()).up
    half._estimate(2.0)  # noqa: SLF001
    assert half.rto == pytest.approx(6.0)
    for _ in range(50):  # a window of acks within one round trip: una never passes rtt_seq
        half._estimate(2.0, acked_to=0)  # noqa: SLF001
    assert half.rto == pytest.approx(6.0, rel=0.01)
    half.nxt = 1000
    rtos = []
    for k in range(1, 30):  # one ack per round trip
        half._estimate(2.0, acked_to=k * 1000)  # noqa: SLF001
        half.nxt = (k + 1) * 1000
        rtos.append(half.rto)
    # The first round trip's deviation is the first sample's (mdev_max); from the next on it
    # is the 200 ms floor.
    assert rtos[0] == pytest.approx(6.0)
    assert rtos[1] == pytest.approx(2.0 + 0.2 + (4.0 - 0.2) * 0.75)
    assert all(a >= b for a, b in zip(rtos, rtos[1:], strict=False)) and rtos[-1] >= 2.2
    assert rtos[-1] == pytest.approx(2.2, abs=0.01)


def test_the_kernels_counters_read_as_the_models() -> None:
    """/proc/net/snmp and netstat as a namespace's `cat` prints them: SYN retries (counted by
    Linux among retransmissions and timeouts) are taken out, as the model never counts them."""
    text = (
        "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Tcp: RtoAlgorithm ActiveOpens OutSegs RetransSegs InErrs\nTcp: 1 40 10000 180 0\n"
        "TcpExt: SyncookiesSent TCPTimeouts TCPLossProbes TCPSynRetrans\nTcpExt: 0 176 19 173\n"
        "IpExt: InNoRoutes\nIpExt: 0\n"
    )
    c = kernel_tcp_counts(text)
    assert (c.segments, c.resent_segments, c.timeouts, c.loss_probes) == (10_000, 7, 3, 19)
    with pytest.raises(SimError, match="unexpected"):
        kernel_tcp_counts("Tcp: OutSegs\nUdp: 5\n")
    with pytest.raises(SimError, match="no Tcp OutSegs"):
        kernel_tcp_counts("Udp: InDatagrams\nUdp: 5\n")
