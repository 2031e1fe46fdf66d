"""The packet schedule (linkemu/packet_schedule.py) driven by a hand-advanced clock.

The driver below does what linkemu/packet.py's event loop does: between scripted events it
calls due() exactly at next_due_time(), so a packet's delivery time is its due time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkemu.errors import ScheduleError
from linkemu.packet_schedule import (
    MTU_BYTES,
    LinkSchedule,
    Verdict,
    WayConfig,
    WaySchedule,
    default_queue_bytes,
)


@dataclass(frozen=True, slots=True)
class Offer:
    at: float
    size: int


@dataclass(frozen=True, slots=True)
class Dark:
    at: float
    dark: bool


@dataclass
class Run:
    verdicts: list[Verdict] = field(default_factory=list)
    offered_at: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    delivered: list[tuple[float, int]] = field(default_factory=list)  # (time, packet index)
    queued_before: list[int] = field(default_factory=list)  # queue bytes just before each offer
    queue_peak: int = 0
    offered_in_dark: list[bool] = field(default_factory=list)
    dark: list[tuple[float, float]] = field(default_factory=list)  # [start, end) windows


def _packet(i: int, size: int) -> bytes:
    return i.to_bytes(4, "big") + bytes(size - 4)


def drive(way: WaySchedule, events: list[Offer | Dark]) -> Run:
    run = Run()
    dark_since: float | None = None

    def deliver_until(t: float) -> None:
        while (due := way.next_due_time()) is not None and due <= t:
            for p in way.due(due):
                run.delivered.append((due, int.from_bytes(p[:4], "big")))

    for ev in sorted(events, key=lambda e: e.at):
        deliver_until(ev.at)
        if isinstance(ev, Dark):
            if ev.dark and dark_since is None:
                dark_since = ev.at
            elif not ev.dark and dark_since is not None:
                run.dark.append((dark_since, ev.at))
                dark_since = None
            way.set_dark(ev.dark, ev.at)
            continue
        i = len(run.verdicts)
        run.queued_before.append(way.queued_bytes(ev.at))
        run.offered_at.append(ev.at)
        run.offered_in_dark.append(dark_since is not None)
        run.sizes.append(ev.size)
        run.verdicts.append(way.offer(_packet(i, ev.size), ev.at))
        run.queue_peak = max(run.queue_peak, way.queued_bytes(ev.at))
    if dark_since is not None:
        run.dark.append((dark_since, math.inf))
    deliver_until(math.inf)
    return run


configs = st.builds(
    WayConfig,
    rate_bps=st.one_of(st.none(), st.floats(8_000, 10_000_000)),
    delay_s=st.floats(0, 2),
    loss=st.one_of(st.just(0.0), st.floats(0, 0.5)),
    queue_bytes=st.one_of(st.none(), st.integers(MTU_BYTES, 200_000)),
)


@st.composite
def scripts(draw: st.DrawFn, with_dark: bool = True) -> list[Offer | Dark]:
    n = draw(st.integers(0, 120))
    t = 0.0
    out: list[Offer | Dark] = []
    for _ in range(n):
        t += draw(st.one_of(st.just(0.0), st.floats(0, 0.5)))
        if with_dark and draw(st.integers(0, 15)) == 0:
            out.append(Dark(t, draw(st.booleans())))
        else:
            out.append(Offer(t, draw(st.integers(20, MTU_BYTES))))
    return out


def _way(cfg: WayConfig, seed: int) -> WaySchedule:
    return WaySchedule(cfg, random.Random(seed))


@settings(max_examples=150, deadline=None)
@given(configs, scripts(), st.integers(0, 2**32))
def test_order_delay_rate_and_queue_bound(cfg: WayConfig, events: list[Offer | Dark], seed: int) -> None:
    way = _way(cfg, seed)
    run = drive(way, events)
    idx = [i for _, i in run.delivered]
    assert idx == sorted(idx), "order within a direction is kept"
    assert set(idx) <= {i for i, v in enumerate(run.verdicts) if v is Verdict.QUEUED}
    for t, i in run.delivered:
        assert t >= run.offered_at[i] + cfg.delay_s, "nothing arrives before its delay"
    if cfg.rate_bps is not None:
        for a in range(len(run.delivered)):
            total = 0
            for b in range(a, len(run.delivered)):
                total += run.sizes[run.delivered[b][1]]
                span = run.delivered[b][0] - run.delivered[a][0]
                limit = cfg.rate_bps / 8 * span + max(run.sizes)
                assert total <= limit * (1 + 1e-9) + 1e-6, "delivered bytes ≤ rate × interval + one packet"
    limit_bytes = cfg.queue_limit_bytes
    if limit_bytes is not None:
        assert run.queue_peak <= limit_bytes
    for i, v in enumerate(run.verdicts):
        if v is Verdict.QUEUE_FULL:
            assert limit_bytes is not None and run.queued_before[i] + run.sizes[i] > limit_bytes
    # Every packet accounted for once: delivered or dropped for one reason.
    c = way.counters
    assert c.offered_packets == len(run.verdicts)
    assert c.delivered_packets == len(run.delivered)
    assert c.delivered_packets + c.dropped_packets == c.offered_packets
    assert c.offered_bytes == sum(run.sizes)


@settings(max_examples=150, deadline=None)
@given(configs, scripts(with_dark=False), st.integers(0, 2**32))
def test_no_loss_no_dark_drops_only_when_the_queue_is_full(
    cfg: WayConfig, events: list[Offer | Dark], seed: int
) -> None:
    cfg = WayConfig(rate_bps=cfg.rate_bps, delay_s=cfg.delay_s, queue_bytes=cfg.queue_bytes)
    run = drive(_way(cfg, seed), events)
    assert set(run.verdicts) <= {Verdict.QUEUED, Verdict.QUEUE_FULL}
    assert len(run.delivered) == run.verdicts.count(Verdict.QUEUED)


@settings(max_examples=100, deadline=None)
@given(configs, scripts(), st.integers(0, 2**32))
def test_nothing_crosses_while_dark(cfg: WayConfig, events: list[Offer | Dark], seed: int) -> None:
    run = drive(_way(cfg, seed), events)
    for t, i in run.delivered:
        for s, e in run.dark:
            assert e <= run.offered_at[i] or t <= s, "a delivered packet's flight never overlaps the dark"
    for v, in_dark in zip(run.verdicts, run.offered_in_dark, strict=True):
        assert (v is Verdict.DARK) == in_dark


@settings(max_examples=100, deadline=None)
@given(configs, scripts(), st.integers(0, 2**32))
def test_same_seed_same_fate(cfg: WayConfig, events: list[Offer | Dark], seed: int) -> None:
    a, b = drive(_way(cfg, seed), events), drive(_way(cfg, seed), events)
    assert a.verdicts == b.verdicts
    assert a.delivered == b.delivered


@settings(max_examples=30, deadline=None)
@given(st.floats(0.001, 0.5), st.integers(0, 2**32))
def test_loss_rate_within_binomial_bounds(p: float, seed: int) -> None:
    n = 4000
    way = _way(WayConfig(loss=p), seed)
    lost = sum(way.offer(b"\0" * 40, 0.0) is Verdict.LOSS for _ in range(n))
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(lost - n * p) <= 6 * sigma + 1


def test_directions_draw_from_their_own_streams() -> None:
    link = LinkSchedule(WayConfig(loss=0.5), WayConfig(loss=0.5), seed=3)
    up = [link.up.offer(b"\0" * 40, 0.0) for _ in range(64)]
    down = [link.down.offer(b"\0" * 40, 0.0) for _ in range(64)]
    assert up != down
    again = LinkSchedule(WayConfig(loss=0.5), WayConfig(loss=0.5), seed=3)
    assert [again.up.offer(b"\0" * 40, 0.0) for _ in range(64)] == up


def test_default_queue_matches_the_simulator() -> None:
    # simlink/link.py's Way: max(64 × (1460 + 40), 2 × rate/8 × max(2 × delay, 0.05)).
    assert default_queue_bytes(1_500_000, 0.7) == int(2 * 1_500_000 / 8 * 1.4)
    assert default_queue_bytes(64_000, 0.01) == 64 * 1500
    assert WayConfig(rate_bps=1_500_000, delay_s=0.7).queue_limit_bytes == 525_000
    assert WayConfig().queue_limit_bytes is None


def test_dark_keeps_what_was_already_due_and_drops_the_rest() -> None:
    way = _way(WayConfig(rate_bps=8_000, delay_s=1.0), 0)  # 1000 B/s
    assert way.offer(bytes(100), 0.0) is Verdict.QUEUED  # due at 0.1 + 1.0
    assert way.offer(bytes(100), 0.0) is Verdict.QUEUED  # due at 0.2 + 1.0
    assert way.set_dark(True, 1.15) == 100, "the fall throws away what was in the network"
    assert way.set_dark(True, 1.16) == 0, "already dark"
    assert way.offer(bytes(100), 1.2) is Verdict.DARK
    assert way.due(5.0) == [bytes(100)]
    assert (way.counters.dark_packets, way.counters.delivered_packets) == (2, 1)
    way.set_dark(False, 5.0)
    assert way.offer(bytes(100), 5.0) is Verdict.QUEUED
    assert way.next_due_time() == pytest.approx(6.1)  # the bottleneck was emptied by the dark


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rate_bps": 0},
        {"rate_bps": -1.0},
        {"rate_bps": math.inf},
        {"delay_s": -0.1},
        {"delay_s": math.nan},
        {"loss": 1.5},
        {"loss": -0.01},
        {"queue_bytes": 100},
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ScheduleError):
        WayConfig(**kwargs)  # type: ignore[arg-type]


def test_time_must_not_go_backwards() -> None:
    way = _way(WayConfig(), 0)
    way.offer(bytes(40), 1.0)
    with pytest.raises(ScheduleError, match="backwards"):
        way.offer(bytes(40), 0.5)
    assert way.counters.offered_packets == 1


@settings(max_examples=100, deadline=None)
@given(configs, scripts(), st.integers(0, 2**32))
def test_a_fall_returns_exactly_the_bytes_it_threw_away_in_the_network(
    cfg: WayConfig, events: list[Offer | Dark], seed: int
) -> None:
    # What a cut cost in real time (bench_cut_timing --realtime) is this figure: it must be
    # every byte queued or on the line and not due, no more (offers in the dark cost no link time).
    way = _way(cfg, seed)
    for ev in sorted(events, key=lambda e: e.at):
        while (due := way.next_due_time()) is not None and due <= ev.at:
            way.due(due)
        if isinstance(ev, Offer):
            way.offer(bytes(ev.size), ev.at)
            continue
        was_dark = way.dark
        before = way.counters.dark_bytes
        held = sum(len(p) for t, p in way._line if t > ev.at)
        # The trace of a run (bench_cut_timing --trace) reads the same figure without a fall.
        assert way.in_network_bytes(ev.at) == held
        lost = way.set_dark(ev.dark, ev.at)
        assert lost == way.counters.dark_bytes - before
        assert lost == (held if ev.dark and not was_dark else 0)
