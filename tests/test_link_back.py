"""Issue 14, the link's return (docs/link.md "After a loss of signal", "The send gate in the
simulator"): a probe's raced connection answered across the path calls the link back, so
every stream starts a round trip before the probe's own answer would have said so; the
windows and the gate then measure afresh, as after the first bytes of a return; and the
simulator holds its connections to the station's send gate, as onboard/delivery.py does.

Layers: the sender's rule (sans-IO, hypothesis), the rate filter and the gate (sans-IO), the
simulated link's gate (hypothesis: never over the budget, nothing stuck), and the simulator
(a 2.6 s path's return: data moves a round trip sooner, the start held under a BDP).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocol.rangeset import RangeSet
from protocol.send_gate import SendGate
from protocol.transfer import LinkDown, LinkUp, SenderConfig, TransferSender, TransferSpec
from protocol.transfer_wire import Status, TransferKey, TransferKind, UploadState, encode_response
from protocol.window_clamp import MIN_WINDOW_BYTES, DeliveryRate, WindowRule, restart_budget_bytes
from simlink.clock import EventLoop
from simlink.link import SimConnection, SimLink
from simlink.profile import load_profile

PHOTO_BYTES = 100_000  # more than goes inside an OPEN; less than the streams' queue of ready chunks


def _photo(s: TransferSender, now: float = 0.0, name: bytes = b"photo", owner: str = "a") -> TransferKey:
    key = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(name).digest())
    data = bytes(PHOTO_BYTES)
    spec = TransferSpec(key=key, size_bytes=PHOTO_BYTES, owner=owner, priority=1)
    s.add(spec, lambda o, n: data[o : o + n], now)
    return key


def _down_sender(rtt_s: float, cfg: SenderConfig) -> tuple[TransferSender, float]:
    """A sender that measured a round trip of ``rtt_s``, then lost the link with a photo to
    send and four more taken in the dark; returns it and the time its first probe may leave."""
    s = TransferSender(cfg, 0.0)
    body = b"text"
    key = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(body).digest())
    s.add(
        TransferSpec(key=key, size_bytes=len(body), owner="a", priority=0), lambda o, n: body[o : o + n], 0.0
    )
    (o,) = s.data_to_send(0.0)
    done = Status(seq=o.seq, key=key, state=UploadState.COMMITTED, size_bytes=4, ranges=RangeSet([(0, 4)]))
    s.receive(encode_response(done), rtt_s, started_at=0.0)
    _photo(s, rtt_s)
    for out in s.data_to_send(rtt_s):
        s.request_failed(out.seq, rtt_s + 1.0, "cut")
    assert not s.link_up
    for i in range(4):  # photos other astronauts took in the dark: each opens once the link is back
        _photo(s, rtt_s + 2.0, f"photo {i}".encode(), owner=f"crew {i}")
    list(iter(s.next_event, None))
    return s, rtt_s + 1.0 + cfg.backoff_max_s + 1.0


@settings(max_examples=150, deadline=None)
@given(rtt=st.floats(0.05, 5.0), k=st.floats(0.1, 2.0), waited_rtts=st.floats(0.0, 400.0))
def test_a_probe_connected_across_the_path_calls_the_link_back(
    rtt: float, k: float, waited_rtts: float
) -> None:
    """While down, a probe that began on its connection ``waited`` after it was handed out
    calls the link up then iff waited ≥ k × the least round trip; then every stream may go."""
    waited = waited_rtts * rtt
    assume(abs(waited - k * rtt) > 1e-6 * rtt)  # (not on the boundary's float rounding)
    s, t0 = _down_sender(rtt, SenderConfig(up_on_connect_rtts=k))
    probes = s.data_to_send(t0)
    assert len(probes) == 1 and probes[0].race_every_s is not None  # down: one probe, racing
    s.request_began(probes[0].seq, t0 + waited)
    events = list(iter(s.next_event, None))
    if waited >= k * rtt:
        assert s.link_up and events == [LinkUp(at=t0 + waited)]
        assert len(s.data_to_send(t0 + waited)) > 1  # the streams start at once
    else:
        assert not s.link_up and not events


@settings(max_examples=60, deadline=None)
@given(rtt=st.floats(0.05, 5.0), waited_rtts=st.floats(0.0, 400.0))
def test_without_the_rule_only_an_answer_calls_the_link_back(rtt: float, waited_rtts: float) -> None:
    s, t0 = _down_sender(rtt, SenderConfig(up_on_connect_rtts=None))
    (probe,) = s.data_to_send(t0)
    s.request_began(probe.seq, t0 + waited_rtts * rtt)
    assert not s.link_up and not list(iter(s.next_event, None))


def test_a_link_called_back_goes_down_again_when_the_probe_fails() -> None:
    """A connection is not a promise: the probe failing after it took the link back down (a
    cut), and the next probe races again."""
    rtt = 1.4
    s, t0 = _down_sender(rtt, SenderConfig())
    (probe,) = s.data_to_send(t0)
    s.request_began(probe.seq, t0 + 2 * rtt)
    assert s.link_up
    s.request_failed(probe.seq, t0 + 3 * rtt, "reset")
    assert not s.link_up
    assert any(isinstance(e, LinkDown) for e in iter(s.next_event, None))


# -- the rate filter and the gate (sans-IO) ------------------------------------------------


def _measured(rate_bytes_s: float, base: float) -> tuple[DeliveryRate, float]:
    """A filter that measured ``rate_bytes_s`` for 20 base RTTs, and the time of its last sample.
    (Steps of 1/16 s add up exactly: steps of 0.05 s drifted under the filter's 50 ms between
    samples, one was skipped and a quiet said to be under the silence rule was over it.)"""
    r = DeliveryRate()
    step = 0.0625
    i, delivered = 0, 0
    while i * step < 20 * base:
        r.observe(i * step, delivered, base)
        i += 1
        delivered += int(rate_bytes_s * step)
    assert r.rate() is not None
    return r, (i - 1) * step


@settings(max_examples=80, deadline=None)
@given(rate=st.floats(1e4, 1e7), base=st.floats(0.1, 3.0), quiet=st.floats(0.0, 60.0))
def test_link_back_measures_afresh_only_after_a_silence(rate: float, base: float, quiet: float) -> None:
    """As the first sample after a silence would: the rate before is kept for the gate's
    restart, the filter starts from nothing; within the silence rule nothing changes."""
    r, now = _measured(rate, base)
    was = r.rate()
    rule = WindowRule()
    r.link_back(now + quiet, base)
    if quiet > max(rule.silence_rtts * base, rule.silence_min_s) + 0.05:
        assert r.rate() is None and r.before == was
    elif quiet < max(rule.silence_rtts * base, rule.silence_min_s) - 0.05:
        assert r.rate() == was and r.before is None


def test_the_gate_restarts_from_the_rate_before_and_opens_by_the_clock_it_is_given() -> None:
    """SendGate is sans-IO: at a return it holds the restart budget (0.9 × the BDP before),
    and opening it grows by ``release`` per base RTT of the time passed in, to the rule's total."""
    base, rate = 1.4, 187_500.0
    r, now = _measured(rate, base)
    r.link_back(now + 60.0, base)
    gate = SendGate(r)
    gate.hold(MIN_WINDOW_BYTES, busy=40, now=now + 60.0, base_rtt_s=base, until=now + 70.0)
    assert r.before == pytest.approx(rate, rel=1e-3)
    restart = restart_budget_bytes(r.before, base)
    assert restart is not None and gate.budget(now + 61.0) == restart
    assert gate.budget(now + 70.0 + base) == pytest.approx(restart * r.rule.release, abs=1)
    assert gate.budget(now + 70.0 + 100 * base) is None  # nothing measured since: it opens


@settings(max_examples=120, deadline=None)
@given(
    rate=st.floats(2e4, 2e6),
    base=st.floats(0.3, 3.0),
    steps=st.lists(
        st.tuples(st.floats(0.01, 0.5), st.floats(0.0, 1.5), st.integers(0, 80)), min_size=1, max_size=60
    ),
)
def test_while_a_return_is_held_the_gate_never_falls_under_its_restart_budget(
    rate: float, base: float, steps: list[tuple[float, float, int]]
) -> None:
    """Held after a return, the budget stays at least the restart's (0.9 × the BDP last
    measured), whatever the link delivers meanwhile: the first samples after a link back span the round
    trip before any data was acknowledged (real time at 2.6 s: 16 kB/s on a 187 kB/s link),
    and a budget following them held the data back for ~10 s (docs/link.md)."""
    r, now = _measured(rate, base)
    back = now + 60.0
    r.link_back(back, base)
    gate = SendGate(r)
    until = back + 10 * base
    t, delivered = back, 10**9
    for dt, share, busy in steps:  # each: time passes, the link delivers a share of the rate, a request asks
        t += dt
        delivered += int(share * rate * dt)
        r.observe(t, delivered, base)
        if t < until:
            gate.hold(MIN_WINDOW_BYTES, busy=busy, now=t, base_rtt_s=base, until=until)
            got = gate.budget(t)
            # The link as last measured: a second silence may leave a newer rate, never none.
            restart = restart_budget_bytes(r.before, base)
            assert restart is not None
            assert got is not None and got >= restart


# -- the simulated link's gate -------------------------------------------------------------


class _Sink:
    def __init__(self, payload: bytes = b"") -> None:
        self.payload = payload
        self.got = 0

    def connection_made(self, conn: SimConnection) -> None:
        if self.payload:
            conn.gated = True
            conn.send(True, self.payload)

    def data_received(self, conn: SimConnection, data: bytes) -> None:
        self.got += len(data)

    def connection_lost(self, conn: SimConnection, reason: str) -> None:
        pass


_GATED = {
    "budget": st.integers(MIN_WINDOW_BYTES, 400_000),
    "sizes": st.lists(st.integers(1, 300_000), min_size=1, max_size=12),
    "profile": st.sampled_from(["fill-rtt0.6-loss1", "fill-rtt2.6-loss1", "iss-ku"]),
}


def _gated_run(
    budget: int, sizes: list[int], profile: str, watch: Callable[[SimLink], None], *, slices: bool = False
) -> tuple[list[int], int]:
    """Gated connections carrying ``sizes`` bytes to ground under ``budget`` on ``profile``
    (no darks or cuts), ``watch`` called at every segment sent: the bytes each delivered and
    the profile's MSS."""
    p = dataclasses.replace(load_profile(profile), dark=(), orbit_s=0.0, cuts_per_hour=0.0)
    loop = EventLoop()
    link = SimLink(loop, p, duration_s=3600, seed=1)
    link.gate_slices = slices
    link.send_budget = lambda: budget
    transmit = link.to_ground.transmit

    def counted(now: float, *args, **kw):  # type: ignore[no-untyped-def]
        watch(link)
        return transmit(now, *args, **kw)

    link.to_ground.transmit = counted  # type: ignore[method-assign]
    sinks = [_Sink() for _ in sizes]
    for n, sink in zip(sizes, sinks, strict=True):
        link.connect(_Sink(bytes(n)), sink)
    loop.run_until(3600)
    return [s.got for s in sinks], p.mss_bytes


@settings(max_examples=25, deadline=None)
@given(**_GATED)
def test_the_simulated_gate_never_holds_more_than_its_budget_and_strands_nothing(
    budget: int, sizes: list[int], profile: str
) -> None:
    """Gated connections together never hold more new data a cut would lose than the budget
    (sent once, neither acked nor marked lost: in flight, or SACKed and held at ground behind
    a hole; a segment may go when nothing is), whatever the loss, and every byte arrives. The
    SACKed-bytes counter the gate reads is the scoreboard's sum throughout."""
    worst = [0]

    def watch(link: SimLink) -> None:
        live = [c for c in link.conns if not c.closed]
        for c in live:
            assert c.up.sacked_bytes == sum(g.length for g in c.up.segs.values() if g.sacked)
        # Sent once (a retransmission is not the gate's: Linux resends alone).
        held = sum(g.length for c in live for g in c.up.segs.values() if g.sends == 1 and not g.lost)
        worst[0] = max(worst[0], held)

    got, mss = _gated_run(budget, sizes, profile, watch)
    assert got == sizes
    assert worst[0] <= max(budget, mss)


@settings(max_examples=25, deadline=None)
@given(**_GATED)
def test_the_simulated_gate_in_slices_writes_one_once_the_last_has_left(
    budget: int, sizes: list[int], profile: str
) -> None:
    """``gate_slices`` (the station's gate as it writes a body): a gated socket never holds
    more than one slice written and not yet sent, every socket's bytes in flight and unsent
    (SACKed included) stay within the budget but for a slice admitted with nothing
    outstanding, and every byte arrives (a socket waiting for its last slice to leave is woken
    by its own acks)."""
    from onboard.delivery import GATE_SLICE_BYTES

    worst_unsent, worst_held = [0], [0]

    def watch(link: SimLink) -> None:
        live = [c for c in link.conns if not c.closed]
        worst_unsent[0] = max([worst_unsent[0], *(c.up.unsent() for c in live)])
        worst_held[0] = max(worst_held[0], sum(c.up.pipe + c.up.sacked_bytes + c.up.unsent() for c in live))

    got, _ = _gated_run(budget, sizes, profile, watch, slices=True)
    assert got == sizes
    assert worst_unsent[0] <= GATE_SLICE_BYTES
    assert worst_held[0] <= max(budget, GATE_SLICE_BYTES) + GATE_SLICE_BYTES


# -- the simulator: a return on a 2.6 s path --------------------------------------------------

DARK_AT_S, DARK_S = 90.0, 120.0


def _return_trace(monkeypatch: pytest.MonkeyPatch, up_on_connect_rtts: float | None) -> tuple[float, list]:
    """The bytes in the network (BDP) every 0.1 s for 20 s after a 2-minute dark on a 2.6 s
    path with a photo backlog, and the profile's BDP."""
    from simlink import transfer_driver as td
    from simlink.profile import DarkWindow
    from simlink.virtual import run_virtual
    from simlink.workload import load_workload

    monkeypatch.setattr(
        td, "SenderConfig", lambda **kw: SenderConfig(up_on_connect_rtts=up_on_connect_rtts, **kw)
    )
    base = load_profile("fill-rtt2.6-loss1")
    p = dataclasses.replace(
        base,
        cuts_per_hour=0.0,
        orbit_s=92 * 60.0,
        dark=(DarkWindow(start_s=DARK_AT_S, duration_s=DARK_S),),
        cut_after_s=20.0,
    )
    back = DARK_AT_S + DARK_S
    r = run_virtual(
        p, load_workload("photo-backlog"), astronauts=4, duration_s=back + 20, seed=33, trace_s=0.1
    )
    bdp = base.to_ground_bps / 8 * base.rtt_s
    return base.rtt_s, [(t - back, n / bdp) for t, n in r.in_network_trace if t >= back]


def test_after_a_return_data_moves_a_round_trip_sooner_held_under_a_bdp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the rule the first bytes enter the network about a round trip sooner than when
    only the probe's answer calls the link back, and the send gate holds the restart under a
    BDP (0.9 × the BDP measured before the dark)."""
    rtt, before = _return_trace(monkeypatch, None)
    _, now = _return_trace(monkeypatch, 0.5)

    def first(trace: list) -> float:
        return next(t for t, bdp in trace if bdp > 0.05)

    assert first(now) <= first(before) - 0.7 * rtt
    assert max(bdp for t, bdp in now if t <= 12.0) <= 0.95
