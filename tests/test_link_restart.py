"""The link after a return or a start restarts from what it last delivered (issue 14).

A loss of signal clears the delivery-rate filter on purpose (the link after it may not be the
one before it), and a new sync has measured nothing. The gate (onboard/delivery.py) then holds
the station's outstanding bytes while every stream restarts at once; sized only by what the
restart's first round trips delivered, which was what the gate itself let through, it grew
1.25× a round trip from a few KiB and left a 1.4 s link under 0.2 BDP for 10 s after a return
(docs/link.md "After a return"). It now keeps at least ``FIRST_FLIGHT_BDP`` of the link as it
was measured last: before the silence, or the last pass's (protocol/link_memory.py).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from onboard.delivery import DeliveryMeter
from protocol.link_memory import FIRST_FLIGHT_BDP
from protocol.window_clamp import MIN_WINDOW_BYTES, DeliveryRate, WindowRule, restart_budget_bytes

RATES = st.floats(10_000, 10_000_000)
BASES = st.floats(0.1, 3.0)


def _steady(
    meter: DeliveryRate, rate: float, base: float, until: float, now: float = 0.0, at: int = 0
) -> tuple[float, int]:
    """The link delivers ``rate`` from ``now`` until ``until``, read every 50 ms."""
    delivered = at
    while now < until:
        now += 0.05
        delivered += int(rate * 0.05)
        meter.observe(now, delivered, base)
    return now, delivered


@settings(max_examples=60, deadline=None)
@given(rate=RATES, base=BASES, dark_s=st.floats(0.0, 3600.0))
def test_a_silence_keeps_the_rate_the_link_had_before_it(rate: float, base: float, dark_s: float) -> None:
    """The filter measures afresh after a silence, but keeps the rate it read before it
    (``before``): nothing before the first silence, the link's rate after it."""
    f = DeliveryRate()
    now, delivered = _steady(f, rate, base, 5 * base)
    assert f.before is None
    measured = f.rate()
    assert measured is not None
    now += max(dark_s, 1.01 * base, 0.26)
    f.observe(now, delivered + 1400, base)  # the first segment after the silence
    assert f.rate() is None and f.before == measured
    assert abs(measured - rate) <= rate * 0.05 + 2 / (0.5 * base)


@given(rate=st.floats(1.0, 1e9), base=st.floats(1e-3, 10.0))
def test_the_restart_budget_is_under_one_bdp_of_the_link_before(rate: float, base: float) -> None:
    """``FIRST_FLIGHT_BDP`` of the link before, never under the least window: a cut in the
    restart then costs at most what the network held (issue 14's ≤ 1 BDP)."""
    got = restart_budget_bytes(rate, base)
    assert got is not None
    assert got == max(MIN_WINDOW_BYTES, int(FIRST_FLIGHT_BDP * rate * base))
    assert got <= max(MIN_WINDOW_BYTES, rate * base)
    assert restart_budget_bytes(None, base) is None
    assert restart_budget_bytes(0.0, base) is None


@settings(max_examples=80, deadline=None)
@given(
    before=RATES,
    base=BASES,
    busy=st.integers(0, 64),
    restarted=st.floats(0.0, 20_000_000),  # what the restart's first round trips delivered
)
def test_after_a_return_the_gate_restarts_from_the_link_before_it(
    before: float, base: float, busy: int, restarted: float
) -> None:
    """While every stream restarts at once after a silence the gate's budget is never under
    the restart budget of the link before it, and otherwise what it was: before a rate is
    measured, exactly that budget (not the streams' least windows together: 2.1 BDP at 0.6 s);
    once measured, the rule's ``gain`` × rate × base RTT if that is more."""
    meter = DeliveryMeter()
    meter.busy = busy
    now, delivered = _steady(meter.rate, before, base, 5 * base)
    measured_before = meter.rate.rate()
    now += 2 * base + 1.0  # dark
    delivered += 1400
    meter.rate.observe(now, delivered, base)
    floor = restart_budget_bytes(measured_before, base)
    assert meter.restart_rate == measured_before and floor is not None
    meter.gate(MIN_WINDOW_BYTES, now, base)
    assert meter.budget == floor  # nothing measured since the return
    _steady(meter.rate, restarted, base, now + 2 * base, now, delivered)
    w = meter.window(now, base)
    assert w is not None
    meter.gate(w, now, base)
    rate = meter.rate.rate()
    assert rate is not None
    rule = min(w * (busy + 1), max(MIN_WINDOW_BYTES, int(WindowRule().gain * rate * base)))
    assert meter.budget == max(floor, rule)


@settings(max_examples=40, deadline=None)
@given(remembered=RATES, base=BASES, busy=st.integers(0, 64), later=RATES)
def test_a_start_restarts_from_the_last_pass_until_this_one_knows_better(
    remembered: float, base: float, busy: int, later: float
) -> None:
    """A sync's start holds the restart budget of the last pass's link; once a silence in this
    sync has cleared a rate, that newer rate is the one a return restarts from. Without
    either, the gate is as before: the streams' least windows together."""
    plain = DeliveryMeter()
    plain.busy = busy
    plain.gate(MIN_WINDOW_BYTES, 0.0, base)
    assert plain.restart_rate is None and plain.budget == MIN_WINDOW_BYTES * (busy + 1)

    meter = DeliveryMeter(remembered_rate=remembered)
    meter.busy = busy
    meter.gate(MIN_WINDOW_BYTES, 0.0, base)
    assert meter.restart_rate == remembered
    assert meter.budget == restart_budget_bytes(remembered, base)
    now, delivered = _steady(meter.rate, later, base, 5 * base)
    measured = meter.rate.rate()
    meter.rate.observe(now + 2 * base + 1.0, delivered + 1400, base)  # a dark, then its first segment
    assert meter.restart_rate == measured
