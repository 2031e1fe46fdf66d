"""Congestion avoidance for the simulator's TCP (simlink/link.py), sans-IO: windows in segments,
time passed in. ``Cubic`` is Linux's CUBIC (net/ipv4/tcp_cubic.c; RFC 9438), what a station's
and ground's kernels run; ``Reno`` is Linux's reno, the growth the model ran before (until 5 Dec),
kept to compare with.

Slow start, the RTO's collapse to one segment and loss recovery stay in link.py: they are the
same for both (when slow start ends early is not: ``slow_start_over``, CUBIC's HyStart). What differs is how far a loss cuts the window (``ssthresh``) and how the window
grows past it (``increase``): CUBIC cuts to 0.7 and grows on a cubic curve of the time since
the cut, so on a long round trip it regains a loss's cut in seconds where Reno needs a round
trip per segment.
"""

from __future__ import annotations

import math
from typing import Protocol

from .errors import SimError

BETA = 717 / 1024  # Linux's beta: the window kept after a loss
C = 410 / 1024  # Linux's bic_scale × 10 / 1024: the curve's scale, segments per second³
# Reno's growth as CUBIC emulates it (tcp_friendliness): one segment per FRIENDLY_ACKS × cwnd
# acked, i.e. 3(1 − β)/(1 + β) segments a round trip; Linux computes it in integers.
FRIENDLY_ACKS = (8 * (1024 + 717) // 3 // (1024 - 717)) / 8
FIRST_GROWTH_CNT = 20  # with no loss seen yet, at least 1/20 of cwnd a round trip (5 %)
MIN_CNT = 2  # at most one segment per two acked: 1.5 × a round trip
# HyStart's delay test (Linux's hystart_update): from a window of 16, the least of a round's
# samples past its eighth against the least ever, by an eighth of it within 4–16 ms.
HYSTART_LOW_WINDOW = 16
HYSTART_MIN_SAMPLES = 8
HYSTART_DELAY_S = (0.004, 0.016)


class CongestionAvoidance(Protocol):
    """What link.py's TCP asks of its congestion control (Linux's tcp_congestion_ops)."""

    name: str

    def ssthresh(self, cwnd: float) -> float:
        """The window to keep after a loss of a window of ``cwnd`` segments."""
        ...

    def on_timeout(self) -> None:
        """A retransmission timeout: the connection starts over (Linux's TCP_CA_Loss)."""
        ...

    def increase(self, cwnd: float, acked: float, now: float) -> float:
        """Segments to add for ``acked`` more acknowledged above ssthresh."""
        ...

    def rtt_sample(self, r: float, now: float) -> None:
        """One round-trip sample of a data segment, in seconds."""
        ...

    def slow_start_over(self, r: float, una: int, nxt: int, cwnd: float) -> bool:
        """In slow start, after ``rtt_sample(r)``: should it end now (HyStart)?"""
        ...

    def tx_start(self, idle_s: float, now: float) -> None:
        """Data leaves with nothing in flight, ``idle_s`` after the last send."""
        ...


class Reno:
    """Linux's reno: halve on loss, one segment a round trip (RFC 5681), no HyStart. (The model
    before 5 Dec, thirteenth session, ran this growth with CUBIC's HyStart.)"""

    name = "reno"

    def ssthresh(self, cwnd: float) -> float:
        return max(cwnd / 2, 2.0)

    def on_timeout(self) -> None:
        pass

    def increase(self, cwnd: float, acked: float, now: float) -> float:
        return acked / cwnd

    def rtt_sample(self, r: float, now: float) -> None:
        pass

    def slow_start_over(self, r: float, una: int, nxt: int, cwnd: float) -> bool:
        return False

    def tx_start(self, idle_s: float, now: float) -> None:
        pass


class Cubic:
    """Linux's CUBIC: fast convergence, the Reno-friendly region and HyStart's delay test."""

    name = "cubic"

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.last_max = 0.0  # W_max: the window the last loss cut (0: none yet)
        self.epoch_start: float | None = None  # when the curve began (None: at the next ack)
        self.k = 0.0  # seconds from the epoch until the curve is back at W_max
        self.origin = 0.0
        self.tcp_cwnd = 0.0  # the window Reno would have now (the friendly region)
        self.ack_cnt = 0.0
        self.delay_min = math.inf
        self.found = False  # HyStart has ended slow start (until a timeout)
        self.round_end = 0  # HyStart's round: until una passes this
        self.round_min = math.inf
        self.round_samples = 0

    def ssthresh(self, cwnd: float) -> float:
        self.epoch_start = None
        # Fast convergence: a flow that lost below its last peak gives way to newer flows.
        self.last_max = cwnd * (1 + BETA) / 2 if cwnd < self.last_max else cwnd
        return max(cwnd * BETA, 2.0)

    def on_timeout(self) -> None:
        self._reset()  # Linux's cubictcp_state(TCP_CA_Loss): bictcp_reset, W_max included

    def increase(self, cwnd: float, acked: float, now: float) -> float:
        self.ack_cnt += acked
        if self.epoch_start is None:
            self.epoch_start, self.ack_cnt, self.tcp_cwnd = now, acked, cwnd
            if self.last_max <= cwnd:
                self.k, self.origin = 0.0, cwnd
            else:
                self.k, self.origin = ((self.last_max - cwnd) / C) ** (1 / 3), self.last_max
        t = now - self.epoch_start + (self.delay_min if math.isfinite(self.delay_min) else 0.0)
        target = self.origin + C * (t - self.k) ** 3
        cnt = cwnd / (target - cwnd) if target > cwnd else 100 * cwnd
        if self.last_max == 0 and cnt > FIRST_GROWTH_CNT:
            cnt = FIRST_GROWTH_CNT
        cnt = min(cnt, self._friendly_cnt(cwnd))
        return acked / max(cnt, MIN_CNT)

    def _friendly_cnt(self, cwnd: float) -> float:
        """The cnt at which CUBIC grows at least as fast as Reno with β = 0.7 would (RFC 9438 §4.3)."""
        per = cwnd * FRIENDLY_ACKS
        if self.ack_cnt > per:
            n = math.ceil(self.ack_cnt / per) - 1
            self.ack_cnt -= n * per
            self.tcp_cwnd += n
        return cwnd / (self.tcp_cwnd - cwnd) if self.tcp_cwnd > cwnd else math.inf

    def rtt_sample(self, r: float, now: float) -> None:
        # Linux skips the first second of an epoch: a cut's queue still drains then.
        if self.epoch_start is not None and now - self.epoch_start < 1.0:
            return
        self.delay_min = min(self.delay_min, r)

    def slow_start_over(self, r: float, una: int, nxt: int, cwnd: float) -> bool:
        if self.found or cwnd < HYSTART_LOW_WINDOW:
            return False
        if una > self.round_end:  # a new round of the window begins
            self.round_end, self.round_min, self.round_samples = nxt, math.inf, 0
        self.round_min = min(self.round_min, r)
        if self.round_samples < HYSTART_MIN_SAMPLES:
            self.round_samples += 1
            return False
        lo, hi = HYSTART_DELAY_S
        self.found = self.round_min > self.delay_min + min(max(self.delay_min / 8, lo), hi)
        return self.found

    def tx_start(self, idle_s: float, now: float) -> None:
        # An application-limited pause does not count as time on the curve.
        if self.epoch_start is not None and idle_s > 0:
            self.epoch_start = min(self.epoch_start + idle_s, now)


_MODELS: dict[str, type[Cubic] | type[Reno]] = {"cubic": Cubic, "reno": Reno}
MODELLED = tuple(_MODELS)


def congestion_control(name: str) -> CongestionAvoidance:
    """The model of Linux's congestion control ``name`` (one of MODELLED)."""
    model = _MODELS.get(name)
    if model is None:
        raise SimError(f"the simulator models TCP congestion control 'cubic' or 'reno', not {name!r}")
    return model()
