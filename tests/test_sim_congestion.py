"""The simulator's congestion control (simlink/congestion.py) is Linux's CUBIC, as its kernel and
RFC 9438 state it; a modelled flow carries what CUBIC's (and Reno's) response function says."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simlink.congestion import BETA, C, Cubic, Reno, congestion_control
from simlink.errors import SimError
from simlink.profile import load_profile
from simlink.realtime_link import packet_mode_problem

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from bench_tcp_flow import KERNEL_MSS, run_virtual_flows  # noqa: E402

PACKET_PROBLEM = packet_mode_problem()


def _grow(
    cc: Cubic | Reno, cwnd: float, rtt: float, seconds: float, t0: float = 0.0
) -> list[tuple[float, float]]:
    """A flow held by its window alone: each round trip, a window of acks in ten bursts."""
    path = []
    t = t0
    while t < t0 + seconds:
        for _ in range(10):
            t += rtt / 10
            cwnd += cc.increase(cwnd, cwnd / 10, t)
        path.append((t, cwnd))
    return path


def test_a_loss_keeps_seven_tenths_and_the_curve_returns_to_it_in_k_seconds() -> None:
    cc = Cubic()
    w = 100.0
    ss = cc.ssthresh(w)
    assert ss == pytest.approx(w * BETA) and cc.last_max == w
    k = ((w - ss) / C) ** (1 / 3)  # RFC 9438 eq. 2: 4.2 s here
    path = _grow(cc, ss, rtt=0.1, seconds=2 * k, t0=10.0)
    at_k = min(path, key=lambda p: abs(p[0] - 10.0 - k))[1]
    assert at_k == pytest.approx(w, rel=0.03)
    # Concave below W_max (slowing as it nears), convex past it (speeding up again).
    steps = [b[1] - a[1] for a, b in zip(path, path[1:], strict=False)]
    n = len(steps)
    assert steps[2] > steps[n // 2 - 3] and steps[-1] > steps[n // 2 + 3]


def test_fast_convergence_gives_way_below_the_last_peak() -> None:
    cc = Cubic()
    cc.ssthresh(100.0)
    cc.ssthresh(80.0)  # lost again below the last peak
    assert cc.last_max == pytest.approx(80.0 * (1 + BETA) / 2)


def test_a_timeout_forgets_the_peak_and_slow_growth_starts_at_five_percent() -> None:
    cc = Cubic()
    cc.ssthresh(100.0)
    cc.on_timeout()
    assert cc.last_max == 0 and cc.epoch_start is None
    # With no peak known, at least a twentieth of the window each round trip (Linux's cnt 20).
    path = _grow(cc, 50.0, rtt=0.05, seconds=0.05, t0=1.0)
    assert path[-1][1] >= 50.0 * 1.05 * 0.999


def test_short_round_trips_grow_at_least_as_reno_with_beta_0_7() -> None:
    """The Reno-friendly region (RFC 9438 §4.3): 3(1 − β)/(1 + β) ≈ 0.53 segments a round trip."""
    cc = Cubic()
    cc.ssthresh(20.0)
    path = _grow(cc, 14.0, rtt=0.01, seconds=1.0)  # 100 round trips, where the curve barely moves
    per_rtt = (path[-1][1] - 14.0) / len(path)
    assert per_rtt == pytest.approx(3 * (1 - BETA) / (1 + BETA), rel=0.1)


def test_idle_time_is_not_time_on_the_curve() -> None:
    cc = Cubic()
    cc.ssthresh(100.0)
    cc.increase(70.0, 1.0, 5.0)  # the epoch begins
    assert cc.epoch_start == 5.0
    cc.tx_start(3.0, 9.0)
    assert cc.epoch_start == 8.0
    cc.tx_start(30.0, 10.0)
    assert cc.epoch_start == 10.0  # never past now


@settings(max_examples=300, deadline=None)
@given(
    cwnd=st.floats(2.0, 5000.0),
    last_max=st.floats(0.0, 5000.0),
    acked=st.floats(0.01, 50.0),
    gaps=st.lists(st.floats(0.0, 30.0), min_size=1, max_size=20),
    delay=st.floats(0.001, 5.0),
)
def test_cubic_never_shrinks_the_window_nor_grows_it_past_one_and_a_half(
    cwnd: float, last_max: float, acked: float, gaps: list[float], delay: float
) -> None:
    """Whatever the peak, the time and the acks: growth ≥ 0 and ≤ half the acked (Linux's cnt ≥ 2)."""
    cc = Cubic()
    cc.last_max = last_max
    cc.rtt_sample(delay, 0.0)
    t = 0.0
    for g in gaps:
        t += g
        inc = cc.increase(cwnd, acked, t)
        assert 0.0 <= inc <= acked / 2 + 1e-9
        cwnd += inc


@given(cwnd=st.floats(0.5, 1e6))
def test_ssthresh_is_beta_of_the_window_and_never_under_two(cwnd: float) -> None:
    assert Cubic().ssthresh(cwnd) == max(cwnd * BETA, 2.0)
    assert Reno().ssthresh(cwnd) == max(cwnd / 2, 2.0)


def test_hystart_leaves_slow_start_when_a_round_reads_a_queue() -> None:
    cc = Cubic()
    for i in range(9):  # a first round at the path's 1.4 s: nothing to see
        cc.rtt_sample(1.4, 0.0)
        assert not cc.slow_start_over(1.4, una=1 + i, nxt=100, cwnd=16)
    # The next round reads 1.42 s (+20 ms, past the 16 ms cap): the queue is growing.
    over = []
    for i in range(9):
        cc.rtt_sample(1.42, 0.0)
        over.append(cc.slow_start_over(1.42, una=101 + i, nxt=300, cwnd=32))
    assert over[-1] and not any(over[:8])
    # Below 16 segments, or with Reno (Linux's has no HyStart), never.
    assert not Cubic().slow_start_over(9.0, una=5, nxt=10, cwnd=10)
    assert not Reno().slow_start_over(9.0, una=5, nxt=10, cwnd=100)


def test_an_unknown_congestion_control_is_refused_by_name() -> None:
    with pytest.raises(SimError, match="'cubic' or 'reno', not 'vegas'"):
        congestion_control("vegas")


def _response(cc: str, rtt: float, p: float) -> float:
    """Segments a round trip that one flow averages: Mathis et al. for Reno, RFC 9438 §5.1 for CUBIC."""
    if cc == "reno":
        return 1.22 / math.sqrt(p)
    return (C * (3 + BETA) / (4 * (1 - BETA))) ** 0.25 * rtt**0.75 / p**0.75


@pytest.mark.parametrize(("cc", "rtt"), [("cubic", 1.4), ("cubic", 2.6), ("reno", 1.4), ("reno", 2.6)])
def test_one_modelled_flow_carries_what_its_response_function_says(cc: str, rtt: float) -> None:
    """One bulk flow at 1 % loss for 10 min, five seeds: within a quarter of the formula (which
    ignores slow start, timeouts and the queue). CUBIC carries ~4× Reno on these paths."""
    prof = load_profile(f"fill-rtt{rtt:g}-loss1")
    prof = dataclasses.replace(prof, to_ground_bps=20e6)  # the flow, not the link, is the limit
    expect = _response(cc, rtt, 0.01) * KERNEL_MSS * 8 / rtt / prof.to_ground_bps
    got = [run_virtual_flows(prof, 1, 600.0, seed, cc)["goodput"] for seed in range(1, 6)]
    mean = sum(got) / len(got)
    assert mean == pytest.approx(expect, rel=0.25), (got, expect)


@pytest.mark.slow
@pytest.mark.skipif(PACKET_PROBLEM is not None, reason=PACKET_PROBLEM or "")
def test_one_modelled_flow_carries_what_the_kernels_does() -> None:
    """Differential, against the kernel (bench_tcp_flow.py): one bulk flow at 1.4 s and 1 % for
    3 min, four seeds of each, real CUBIC through the packet link and the model's. Measured 5
    Dec: 12 real seeds 0.270 of the rate, 20 modelled 0.258; the model before (Reno) 0.082."""
    import asyncio

    from bench_tcp_flow import run_real_flows

    prof = load_profile("fill-rtt1.4-loss1")

    async def real() -> list[dict[str, object]]:
        return list(await asyncio.gather(*(run_real_flows(prof, 1, 180.0, s, "cubic") for s in range(1, 5))))

    kernel = sum(float(r["goodput"]) for r in asyncio.run(real())) / 4  # type: ignore[arg-type]
    model = sum(run_virtual_flows(prof, 1, 180.0, s, "cubic")["goodput"] for s in range(1, 9)) / 8
    reno = sum(run_virtual_flows(prof, 1, 180.0, s, "reno")["goodput"] for s in range(1, 9)) / 8
    assert model == pytest.approx(kernel, rel=0.25), (model, kernel)
    assert reno < kernel / 2  # what the model was: the kernel's CUBIC carries 3× and more
