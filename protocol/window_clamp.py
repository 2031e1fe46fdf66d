"""How much of a station's upload may be in the network at once (link version 4, issue 14).

A cut throws away what was in the network: the link's queue and pipe, and what reached ground
out of order behind a lost segment. Many loss-limited TCP streams together let the link's
queue swing up to a BDP and more between two reads of the standing RTT, so a cut cost up to
~2 BDP. The station measures the rate the link delivers (the most delivered over any half
round trip of the last ten), and while the link has lately held a queue (the sender's
``queue_recent``: a standing RTT above 1.1 × the base in the last interval, or within ten
base RTTs of a return of the link or a backlog's start, when every stream starts at once)
asks ground to clamp each of its busy connections' receive window to a share of ``gain`` ×
that rate × the base RTT: Linux then keeps each stream's unacknowledged bytes under it
(``TCP_WINDOW_CLAMP``), whatever its congestion window says. The shares add up to ``share``
× that budget, since a stream recovering from a loss leaves part of its share unused. At a
start with nothing measured yet (a silence clears the measurement) the window is the least,
or, on a link the station knows from before, a share of the send gate's restart budget, and
it grows with what the link delivers. Without a queue the streams are held by random
loss, not the link, and a clamp would only slow them (3 % loss: 2–5 points of goodput): the
window asked is then lifted, at most ``release`` × per base RTT (``WindowAsk``).
docs/link.md "A window per connection" has the measurements.

Sans-IO: delivered byte counts and times in, a window in bytes out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .errors import ErrorCode, RemoteProtocolError
from .link_memory import FIRST_FLIGHT_BDP
from .sender_config import SenderConfig

# The request header carrying the window a connection should be clamped to (link version 4).
WINDOW_HEADER = "Orbitpost-Window"
# Ground clamps to no less (a stream must carry a few segments to recover from a loss by
# duplicate acks, not timeouts) and no more (a clamp that never binds is none).
MIN_WINDOW_BYTES = 8 * 1024
MAX_WINDOW_BYTES = 4 * 1024 * 1024
WINDOW_CLAMP_LINK_VERSION = 4


@dataclass(frozen=True, slots=True)
class WindowRule:
    """The constants of the rule (tuned on seeds 7 and 9 only; docs/link.md)."""

    gain: float = 1.25  # budget = gain × delivery rate × base RTT
    share: float = 1.5  # each of n streams may hold share × budget / n
    sample_every_s: float = 0.05  # at most one delivery sample this often
    rate_window_rtts: float = 0.5  # a rate sample spans at least this many base RTTs
    max_over_rtts: float = 10.0  # the rate is the most seen over this many base RTTs
    # Nothing delivered for this many base RTTs (and this long: the meter polls every 50 ms)
    # is a silence (the link dark or idle), not a slow link: the rate is measured afresh.
    silence_rtts: float = 1.0
    silence_min_s: float = 0.25
    # A filter that ran under this many base RTTs before a silence saw a restart's first round
    # trips (its first sample spans the one before anything was acknowledged), not the link:
    # it may raise the rate known from before, not lower it (``DeliveryRate._keep_before``).
    brief_rtts: float = 2.0
    # After a clamp a window grows at most this much per base RTT (× 2, slow start's pace,
    # still let 3.6 BDP in at 0.6 s; chosen on cuts timed after starts, seeds 31-36).
    release: float = 1.25
    # After the start the station's send gate (protocol/send_gate.py) holds its outstanding
    # bytes, all its connections together, to this × ``gain`` × rate × base RTT (1.375 × the
    # rate × base RTT). Not ``share``: the gate holds a sum, so no stream's unused share needs
    # covering. A cut loses what is outstanding less what has reached ground in order and
    # waits for its ack (about half a round trip of the rate on a full link), so at 1.5 × a
    # gate-bound link's cut cost a BDP with no margin: 10 of 27 seeds' costliest cut went over
    # it, what ground held in order reading 0.42-0.59 BDP at those cuts. 1.375 × leaves an
    # eighth of a BDP for that spread (docs/link.md "A cut's margin", 6 Dec, fifteenth
    # session). At ``share`` (1.875 ×) a real 0.6 s / 1 % link held up to 1.24 BDP in the
    # network; 1.0 (1.25 ×) starved it (docs/link.md "A slice once the last has left").
    gate_share: float = 1.1


class DeliveryRate:
    """The most bytes per second the link delivered over any ``rate_window_rtts`` of the
    last ``max_over_rtts`` base RTTs (BBR's bottleneck bandwidth filter)."""

    def __init__(self, rule: WindowRule | None = None) -> None:
        self.rule = rule or WindowRule()
        self._samples: deque[tuple[float, int]] = deque()  # (time, delivered so far)
        self._best: deque[tuple[float, float]] = deque()  # (time, rate), rates falling
        # The rate measured when a silence last cleared the filter (None: none yet): what the
        # link delivered before a loss of signal, for the gate to restart from and the
        # windows to share until they measure afresh (``restart_budget_bytes``).
        self.before: float | None = None
        # ``before`` came from a filter that ran under ``brief_rtts``: a restart's first
        # samples, not the link (SendGate.restart_rate then keeps a remembered rate).
        self.before_brief = False
        self._since = 0.0  # the filter's first sample since it was last cleared

    def observe(self, now: float, delivered: int, base_rtt_s: float) -> None:
        """``delivered``: bytes the station's connections have had acknowledged (SACKed
        included) since it began counting; it only grows."""
        r = self.rule
        q = self._samples
        if q and now - q[-1][0] < r.sample_every_s:
            return
        span = r.rate_window_rtts * base_rtt_s
        self.link_back(now, base_rtt_s)
        if not q:
            self._since = now
        q.append((now, delivered))
        while len(q) > 1 and now - q[1][0] >= span:
            q.popleft()
        t0, d0 = q[0]
        if now - t0 >= span and now > t0:
            rate = (delivered - d0) / (now - t0)
            best = self._best
            while best and best[-1][1] <= rate:
                best.pop()
            best.append((now, rate))
        horizon = r.max_over_rtts * base_rtt_s
        while self._best and now - self._best[0][0] > horizon:
            self._best.popleft()

    def link_back(self, now: float, base_rtt_s: float) -> None:
        """Nothing delivered for a while (a loss of signal, an idle link): measure afresh.

        A sample across the silence measures the silence, not the link, and the link after a
        dark may not be the one before it (another relay, another rate). Until a new sample
        the window is the floor (``window_bytes``), then it grows with what the link delivers
        (BBR's start-up from nothing), so the burst of every stream restarting at once meets a
        clamp at once. Called at each sample, and by the drivers when a raced connection calls
        the link back before any byte crossed (TransferSender.request_began)."""
        r = self.rule
        q = self._samples
        if not q or now - q[-1][0] <= max(r.silence_rtts * base_rtt_s, r.silence_min_s):
            return
        if self._best and self._best[0][1] > 0:
            # (A filter that saw nothing delivered measured no link: the rate before stays.)
            self._keep_before(self._best[0][1], q[-1][0] - self._since < r.brief_rtts * base_rtt_s)
        self._best.clear()
        q.clear()

    def _keep_before(self, best: float, brief: bool) -> None:
        """What a silence leaves of the link. A filter that ran under ``brief_rtts`` saw a
        restart, whose first sample spans the round trip before anything was acknowledged: it
        may raise the rate known from before, not lower it. (Cut again seconds after a cut,
        the cuts profile's seed 36 restarted from 0.2 kB/s of a 184 kB/s link, its gate at
        8 KiB for 35 s; docs/link.md "A restart's first samples".)"""
        if brief and self.before is not None:
            self.before = max(self.before, best)
            return
        self.before, self.before_brief = best, brief

    def rate(self) -> float | None:
        """Bytes per second, or None before a whole sample."""
        return self._best[0][1] if self._best else None


def restart_budget_bytes(rate_before_bytes_s: float | None, base_rtt_s: float) -> int | None:
    """What the station may hold outstanding while every stream restarts at once, before it
    has measured the link again: ``FIRST_FLIGHT_BDP`` of the link as last measured (before a
    loss of signal, or the last pass's); None if nothing was. From the delivery rate alone the
    gate restarted at a few KiB and grew 1.25× a round trip: under 0.2 BDP in the network for
    10 s after a return at 1.4 s RTT (docs/link.md "After a return")."""
    if rate_before_bytes_s is None or rate_before_bytes_s <= 0 or base_rtt_s <= 0:
        return None
    return max(MIN_WINDOW_BYTES, int(FIRST_FLIGHT_BDP * rate_before_bytes_s * base_rtt_s))


def window_bytes(
    rate_bytes_s: float | None,
    base_rtt_s: float,
    streams: int,
    rule: WindowRule | None = None,
    *,
    queue: bool = True,
    restart_bytes: int | None = None,
) -> int:
    """The receive window each of ``streams`` busy connections should be clamped to; the
    largest (no clamp) without a ``queue`` lately (TransferSender.queue_recent). Before a
    rate is measured, the least, or a share of ``restart_bytes`` (``restart_budget_bytes``:
    the link as last measured) if that is more."""
    r = rule or WindowRule()
    if not queue:
        return MAX_WINDOW_BYTES
    if rate_bytes_s is None:
        if restart_bytes is None:
            return MIN_WINDOW_BYTES  # every stream starting at once, nothing measured yet
        budget = float(restart_bytes)
    else:
        budget = r.gain * rate_bytes_s * base_rtt_s
    w = int(r.share * budget / max(1, streams))
    return max(MIN_WINDOW_BYTES, min(MAX_WINDOW_BYTES, w))


class WindowAsk:
    """The window each request asks for (``window_bytes``), released gradually: after a clamp a
    window grows at most ``release`` × per base RTT, however far the rule lifts it. A
    clamped stream's congestion window stays where it was while the clamp held it (Linux
    grows it only while it limits), so a lift to the largest window at once let every stream
    send its whole congestion window together: 4.7 BDP in the network at 0.6 s RTT, 14 s
    after a return (docs/link.md)."""

    def __init__(self, rule: WindowRule | None = None) -> None:
        self.rule = rule or WindowRule()
        self._last: tuple[float, int] | None = None  # (when, window) of the last clamp asked

    def ask(
        self,
        now: float,
        rate_bytes_s: float | None,
        base_rtt_s: float,
        streams: int,
        queue: bool,
        restart_bytes: int | None = None,
    ) -> int:
        """The window for a request sent at ``now`` (see ``window_bytes``)."""
        w = window_bytes(
            rate_bytes_s, base_rtt_s, streams, self.rule, queue=queue, restart_bytes=restart_bytes
        )
        if self._last is not None:
            t, last = self._last
            rtts = min(100.0, max(0.0, now - t) / max(base_rtt_s, 1e-3))  # 1.25 ** 100: no clamp
            released = last * self.rule.release**rtts
            w = min(w, max(last, int(min(released, MAX_WINDOW_BYTES))))
        self._last = None if w >= MAX_WINDOW_BYTES else (now, w)
        return w


def carries_window(payload_bytes: int, config: SenderConfig, bulk_in_flight: bool) -> bool:
    """Does a request carry the window header? One with upload bytes beyond a small request's,
    and any request while such bytes are in flight (ground clamps every connection of the
    station at once, so the first request after a rate is measured should carry it). A lone
    text post's OPEN pays for no header (issue 14's 2 × bound)."""
    return bulk_in_flight or payload_bytes > config.small_request_bytes


def parse_window(value: str) -> int:
    """A request's window header, checked: a decimal byte count within ground's bounds."""
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"{WINDOW_HEADER} must be a decimal byte count, got {value[:40]!r}"
        )
    n = int(text)
    if not MIN_WINDOW_BYTES <= n <= MAX_WINDOW_BYTES:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED,
            f"{WINDOW_HEADER} {n} is outside {MIN_WINDOW_BYTES}..{MAX_WINDOW_BYTES} bytes",
        )
    return n
