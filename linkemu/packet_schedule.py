"""What a space link does to IP packets, without I/O: rate, delay, a bounded queue, loss, the dark.

    offer(packet, now) ──► [dark? drop] ──► [drop-tail queue, ≤ queue bytes] ──► [serialise at
    rate] ──► [random loss: the packet took link time, then died in the air] ──► [delay] ──►
    due(now)

The packet-level twin of simlink/link.py's ``Way`` (same default queue, same rule that a lost
packet still took link time), driven by linkemu/packet.py's TUN forwarder in real time and
by tests with a hand-advanced clock: like protocol/, it takes time as ``now`` and randomness
as a seeded ``random.Random`` per direction, so a run's drops repeat for the same traffic.

Dark (loss of signal): a packet offered while dark is dropped, and when the dark falls every
packet not yet delivered (queued, being serialised or in the air) is dropped: its flight
overlaps the dark, and neither end hears the other. What was due before the dark fell is
still delivered.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from dataclasses import dataclass

from .errors import ScheduleError

MTU_BYTES = 1500  # the TUN devices' MTU: no IP packet on the emulated link is larger
# Default bottleneck queue, as simlink/link.py's Way: two bandwidth-delay products, at least 64
# full packets (a modem's queue; four connections' initial windows must fit in it).
MIN_QUEUE_PACKETS = 64
MIN_BDP_RTT_S = 0.05  # a floor on the RTT used for the BDP, so a zero-delay link still queues


class Verdict(enum.Enum):
    """What became of an offered packet: queued for delivery, or dropped and why."""

    QUEUED = "queued"
    LOSS = "loss"  # random loss: it took link time, then was lost in the air
    QUEUE_FULL = "queue_full"  # drop-tail: the bottleneck queue had no room for it
    DARK = "dark"  # offered during a loss of signal


def default_queue_bytes(rate_bps: float, delay_s: float, mtu_bytes: int = MTU_BYTES) -> int:
    """simlink's default bottleneck queue: 2 × rate × RTT (RTT ≥ 50 ms), at least 64 full packets."""
    bdp = rate_bps / 8 * max(2 * delay_s, MIN_BDP_RTT_S)
    return int(max(MIN_QUEUE_PACKETS * mtu_bytes, 2 * bdp))


@dataclass(frozen=True, slots=True, kw_only=True)
class WayConfig:
    """One direction of the link.

    ``rate_bps``: bits/s at the bottleneck, the whole IP packet counts (None = no limit, and
    then nothing ever queues). ``delay_s``: one-way propagation delay. ``loss``: chance, 0–1,
    that each packet is lost. ``queue_bytes``: the bottleneck queue's bound in bytes of IP
    packets not yet fully serialised (None = :func:`default_queue_bytes`).
    """

    rate_bps: float | None = None
    delay_s: float = 0.0
    loss: float = 0.0
    queue_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.rate_bps is not None and not (math.isfinite(self.rate_bps) and self.rate_bps > 0):
            raise ScheduleError(
                f"rate_bps must be a positive number of bits/s or None, not {self.rate_bps!r}"
            )
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ScheduleError(f"delay_s must be ≥ 0 seconds, not {self.delay_s!r}")
        if not 0.0 <= self.loss <= 1.0:
            raise ScheduleError(f"loss is a probability in [0, 1], not {self.loss!r} (1 % is 0.01)")
        if self.queue_bytes is not None and self.queue_bytes < MTU_BYTES:
            raise ScheduleError(
                f"queue_bytes must hold at least one {MTU_BYTES}-byte packet, not {self.queue_bytes!r}"
            )

    @property
    def queue_limit_bytes(self) -> int | None:
        """The queue's bound in bytes (None: no rate limit, so no queue)."""
        if self.queue_bytes is not None:
            return self.queue_bytes
        if self.rate_bps is None:
            return None
        return default_queue_bytes(self.rate_bps, self.delay_s)


@dataclass(slots=True)
class WayCounters:
    """Packets and bytes (whole IP packets) of one direction, by fate."""

    offered_packets: int = 0
    offered_bytes: int = 0
    sent_packets: int = 0  # took link time: queued, including those then lost at random
    sent_bytes: int = 0
    delivered_packets: int = 0  # handed out by due(): these crossed the link
    delivered_bytes: int = 0
    loss_packets: int = 0
    loss_bytes: int = 0
    queue_full_packets: int = 0
    queue_full_bytes: int = 0
    dark_packets: int = 0  # offered in the dark, or in the network when the dark fell
    dark_bytes: int = 0

    @property
    def dropped_packets(self) -> int:
        return self.loss_packets + self.queue_full_packets + self.dark_packets

    def _drop(self, why: Verdict, n: int) -> None:
        if why is Verdict.LOSS:
            self.loss_packets += 1
            self.loss_bytes += n
        elif why is Verdict.QUEUE_FULL:
            self.queue_full_packets += 1
            self.queue_full_bytes += n
        else:
            self.dark_packets += 1
            self.dark_bytes += n


class WaySchedule:
    """One direction: ``offer`` packets, collect them from ``due`` once they have crossed.

    Times are seconds on any monotonic clock; they must never go backwards.
    """

    def __init__(self, config: WayConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.limit_bytes = config.queue_limit_bytes
        self.counters = WayCounters()
        self.dark = False
        self._busy_until = -math.inf  # when the bottleneck finishes serialising what it holds
        self._tx: deque[tuple[float, int]] = deque()  # (serialised_at, size) not yet serialised
        self._tx_bytes = 0
        self._line: deque[tuple[float, bytes]] = deque()  # (due_at, packet), due_at ascending
        self._now = -math.inf

    def _advance(self, now: float) -> None:
        if now < self._now:
            raise ScheduleError(f"time went backwards: {now!r} after {self._now!r}")
        self._now = now
        while self._tx and self._tx[0][0] <= now:
            self._tx_bytes -= self._tx.popleft()[1]

    def queued_bytes(self, now: float) -> int:
        """Bytes of packets the bottleneck holds at ``now`` (waiting or being serialised)."""
        self._advance(now)
        return self._tx_bytes

    def in_network_bytes(self, now: float) -> int:
        """Bytes of packets sent and not yet due at ``now`` (queued at the bottleneck or on
        the line): what a dark spell falling now would throw away (``set_dark``)."""
        self._advance(now)
        return sum(len(p) for due, p in self._line if due > now)

    def offer(self, packet: bytes, now: float) -> Verdict:
        """A packet enters the link at ``now``; the verdict says whether it will come out of due()."""
        self._advance(now)
        n = len(packet)
        c = self.counters
        c.offered_packets += 1
        c.offered_bytes += n
        if self.dark:
            c._drop(Verdict.DARK, n)
            return Verdict.DARK
        if self.limit_bytes is not None and self._tx_bytes + n > self.limit_bytes:
            c._drop(Verdict.QUEUE_FULL, n)
            return Verdict.QUEUE_FULL
        rate = self.config.rate_bps
        serialised_at = max(now, self._busy_until) + (n * 8 / rate if rate is not None else 0.0)
        self._busy_until = serialised_at
        if serialised_at > now:
            self._tx.append((serialised_at, n))
            self._tx_bytes += n
        c.sent_packets += 1
        c.sent_bytes += n
        # One draw per packet sent, whatever the loss, so the stream of draws (and so which
        # packets die) depends only on the seed and the traffic.
        if self.rng.random() < self.config.loss:
            c._drop(Verdict.LOSS, n)
            return Verdict.LOSS
        self._line.append((serialised_at + self.config.delay_s, packet))
        return Verdict.QUEUED

    def due(self, now: float) -> list[bytes]:
        """The packets whose delivery time has come by ``now``, in the order they were offered."""
        self._advance(now)
        out: list[bytes] = []
        while self._line and self._line[0][0] <= now:
            out.append(self._line.popleft()[1])
        self.counters.delivered_packets += len(out)
        self.counters.delivered_bytes += sum(map(len, out))
        return out

    def next_due_time(self) -> float | None:
        """When the next packet is due out of due() (None: nothing in the network)."""
        return self._line[0][0] if self._line else None

    def set_dark(self, dark: bool, now: float) -> int:
        """Loss of signal begins (``True``) or ends at ``now``; returns the bytes it threw away.

        When it begins, every packet not due by ``now`` is dropped (counted as dark) and the
        bottleneck is emptied; call due(now) first to hand out what was due before. Those
        bytes, queued or on the line, are what the fall cost: what was in the network.
        """
        self._advance(now)
        lost = 0
        if dark and not self.dark:
            while self._line and self._line[-1][0] > now:
                n = len(self._line.pop()[1])
                self.counters._drop(Verdict.DARK, n)
                lost += n
            self._tx.clear()
            self._tx_bytes = 0
            self._busy_until = now
        self.dark = dark
        return lost


class LinkSchedule:
    """Both directions of one link: ``up`` (station → ground) and ``down`` (ground → station),
    one random stream each from ``seed``, and one sky: the dark falls on both at once."""

    def __init__(self, up: WayConfig, down: WayConfig, seed: int = 0) -> None:
        self.up = WaySchedule(up, random.Random(f"{seed}:up"))
        self.down = WaySchedule(down, random.Random(f"{seed}:down"))

    @property
    def dark(self) -> bool:
        return self.up.dark

    def set_dark(self, dark: bool, now: float) -> tuple[int, int]:
        """Loss of signal begins or ends on both directions (see WaySchedule.set_dark); the
        bytes thrown away (up, down)."""
        return self.up.set_dark(dark, now), self.down.set_dark(dark, now)
