"""The station side of the live link: ``TransferSender`` (sans-IO). Its config is in
protocol/sender_config.py, the values it takes and the events it gives in protocol/sender_events.py.

What it decides: which transfer goes next (priority, then fair bytes per owner), how many
requests fly at once (the window), how big a chunk is (rate × chunk time, shrunk after cuts),
how a transfer resumes after a cut (OPEN again and send only ground's gaps), how long to back
off while the link is down, and when to ask for receipts. Frames are in
protocol/transfer_wire.py; the ground side is protocol/transfer_receiver.py (docs/PROTOCOL.md §8).

Sender (station side), one per link::

    s = TransferSender(SenderConfig(), now)
    s.add(spec, source, now)              # source(offset, length) -> bytes, read lazily
    s.request_receipts(since, claims)
    s.open_receipts_since = since         # link version 2: a bundle's OPEN asks for them too
    s.first_flight = True                 # link version 3: a new upload's OPEN carries its first chunk
    for out in s.data_to_send(now):       # Outgoing(seq, data, deadline, ...)
        ...carry out.data; later either
        s.receive(response_bytes, now)    # a response frame (it names its seq)
        s.request_failed(out.seq, now, reason)   # connection cut / timeout / HTTP error
        s.connect_unanswered(out.seq, now)       # its new connection unanswered out.race_after_s
        s.kept_unacked(out.seq, now)      # on a kept connection, unacknowledged race_after_s
    s.heartbeat_at                        # idle: when to ask ground (GET /v1/health) if it is there;
    s.ground_heard(now) / s.ground_unanswered(now)   # that ask answered / unanswered race_after_s
    s.next_event()                        # TransferProgress, TransferDone, ReceiptsReceived,
                                          # LinkUp, LinkDown, LinkFatal
    s.next_deadline(); s.handle_timeout(now)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum

from .errors import RemoteProtocolError
from .rangeset import RangeSet
from .sender_config import SenderConfig
from .sender_events import (
    LinkDown,
    LinkFatal,
    LinkUp,
    Outgoing,
    ReceiptsReceived,
    SenderEvent,
    TransferDone,
    TransferProgress,
    TransferSpec,
)
from .transfer_wire import (
    Chunk,
    ErrorFrame,
    LinkErrorCode,
    Open,
    ReceiptsBatch,
    ReceiptsRequest,
    Request,
    Status,
    TransferKey,
    TransferKind,
    UploadState,
    decode_response,
    encode_request,
)

ChunkSource = Callable[[int, int], bytes]

# The sender's rate estimate falls by at most this much a round trip (``_rate_sample``).
RATE_FALL_PER_RTT = 0.7

# Codes after which retrying cannot help the whole link (the driver should stop and say so).
FATAL_CODES = frozenset({LinkErrorCode.UNAUTHORIZED})
# Codes that end one transfer but leave the link usable.
TRANSFER_FATAL_CODES = frozenset(
    {LinkErrorCode.UPLOAD_TOO_LARGE, LinkErrorCode.SIZE_CONFLICT, LinkErrorCode.BAD_OFFSET}
)


class TState(Enum):
    """A transfer's state; every transition is in ``TransferSender._on_status``/``_fail``."""

    BLOCKED = "blocked"  # waits for depends_on
    OPENING = "opening"  # must (re)learn what ground has before sending
    SENDING = "sending"  # gaps remain; chunks flow
    SETTLING = "settling"  # every byte acked; waiting for ground to commit
    DONE = "done"


@dataclass(slots=True)
class _Transfer:
    spec: TransferSpec
    source: ChunkSource
    order: int
    state: TState = TState.OPENING
    acked: RangeSet = field(default_factory=RangeSet)
    inflight: dict[int, tuple[int, int]] = field(default_factory=dict)
    open_seq: int | None = None
    poll_at: float = 0.0
    opened: bool = False  # an OPEN was sent at least once
    # Ground has answered that it holds this upload (RECEIVING): bytes never sent may go
    # while a new OPEN asks what it stored of the rest.
    known: bool = False
    # Ranges of requests that failed (a cut): ground may hold any part of them, so they wait
    # for the next OPEN's answer; every other gap was never sent and cannot be there.
    unsure: RangeSet = field(default_factory=RangeSet)
    unsure_after: int = 0  # the last request sent before the latest failure


@dataclass(slots=True)
class _Req:
    seq: int
    sent_at: float
    deadline: float
    key: TransferKey | None
    span: tuple[int, int] | None  # chunk range
    delivered_at_send: int
    is_receipts: bool = False
    ahead: int = 0  # requests already in flight when this one was handed out
    asks_receipts: bool = False  # an OPEN asking for receipts with its answer (link version 2)
    probe: bool = False  # handed out while the link was down (its connection raced)
    first_flight: bool = False  # an OPEN carrying its upload's first chunk (link version 3)
    chunk: bool = False  # a CHUNK frame (the end game may send its range again)
    copied_to: int = 0  # the end game has sent again this chunk's bytes up to here
    copy: bool = False  # an end-game copy of bytes already in flight
    suspect: bool = False  # racing while the link is believed up, not yet on a connection
    first_sample: bool = False  # a bare OPEN sent ahead of the first flight to measure by


@dataclass(slots=True)
class SenderStats:
    requests: int = 0
    request_bytes: int = 0  # frame bytes handed to the driver
    chunk_bytes: int = 0  # payload bytes inside CHUNK frames
    failures: int = 0
    max_chunk_bytes: int = 0
    chunks_resent_bytes: int = 0
    end_game_bytes: int = 0  # bytes sent again by the end game (duplicates of bytes in flight)


class TransferSender:
    """Moves every added transfer to ground, resuming from what ground has stored."""

    def __init__(self, config: SenderConfig | None = None, now: float = 0.0) -> None:
        self.config = config or SenderConfig()
        self._transfers: dict[TransferKey, _Transfer] = {}
        self._requests: dict[int, _Req] = {}
        self._events: deque[SenderEvent] = deque()
        self._next_seq = 1
        self._order = 0
        self._served: dict[str, int] = {}  # bytes sent per owner: fair queueing
        self._receipts_since: int | None = None
        self._receipts_claims: tuple[bytes, ...] = ()
        self._receipts_versions: tuple[int, ...] = ()
        self._up = True
        self._fatal = False
        self._backoff_s = 0.0
        self._retry_at = now
        self._last_fail_at = -1e18
        self._now = now
        self._heard_at = now  # ground last answered anything (a request, the driver's asks)
        self._down_heard_at = now  # ``_heard_at`` when the link was last called down
        self._silent = False  # an ask of the driver's went unanswered (``ground_unanswered``)
        self._asking = False  # one of the driver's asks is out, unanswered (``ground_asked``)
        self.srtt_s = self.config.initial_rtt_s
        self.rate_bytes_s = self.config.initial_rate_bytes_s
        self._rate_round = (now, self.rate_bytes_s)  # (began, the rate then): ``_rate_sample``
        self._delivered = 0  # chunk bytes acked so far (delivery-rate samples)
        self._rate_samples = 0
        self._cut_scale = 1.0
        self.stats = SenderStats()
        self._done: dict[TransferKey, UploadState] = {}
        c = self.config
        # Requests in flight at once while the link is up (``_size_streams`` moves it).
        self.streams = c.start_streams
        self._epoch_at = now  # the stream rule's measuring interval began here
        self._epoch_delivered = 0  # ``_delivered`` when it began
        self._interval_rate_bytes_s = c.initial_rate_bytes_s  # what the last interval delivered a second
        self._window_limited = False  # the window, not the queue, held requests back
        self._rtts: deque[tuple[float, float]] = deque()  # (when, a small request's round trip)
        # The least small-request round trip ever seen: the path's own, which sets the race
        # step while the link is down (the window's least may be one stale, slow sample then).
        self._least_rtt_s: float | None = None
        self._path_rtt_s: float | None = None  # the least since the link last came back
        self._last_rtt_s: float | None = None  # the latest (with the queue it found)
        self._standing_rtt: float | None = None  # least small-request round trip this interval
        self._found_queue = False  # the stream count has once filled the link's queue
        # Did the last interval's standing RTT show a queue (the link's rate, not random loss,
        # the limit)? And when did every stream last start at once (the link came back, or a
        # backlog began with no upload bytes in flight: slow start in every stream, a burst)?
        # Link version 4 clamps windows only then (``queue_recent``).
        self._queue_now = False
        self._burst_at = -math.inf
        self._busy_cap = self.config.max_window  # requests ground last held when it said busy
        self._busy_until = now  # ... a cap kept until then
        # Link version 2 (ground's capability token lists link=2): the driver sets this to its
        # receipts cursor and every bundle's OPEN asks ground to answer with the receipts after
        # it, so a lone text post costs one request (docs/PROTOCOL.md §8.2). None: never ask.
        self.open_receipts_since: int | None = None
        # ... and the receipts versions those OPENs list (§9.5): only to a ground whose token
        # lists a version beyond link version 2's own (2, 3); () otherwise.
        self.open_receipts_versions: tuple[int, ...] = ()
        self._open_receipts_refused = False  # ground refused such an OPEN: an older ground
        # Link version 3 (the token lists link=3): the driver sets this and a new upload's first
        # OPEN carries its first chunk when it takes a data stream, so its data leaves in the
        # first flight instead of a round trip after the OPEN (docs/PROTOCOL.md §8.2).
        self.first_flight = False
        self._first_flight_refused = False  # ground refused such an OPEN: an older ground

    # -- what the driver asks ----------------------------------------------------------

    def add(self, spec: TransferSpec, source: ChunkSource, now: float) -> None:
        """Start moving ``spec``; adding a key already known does nothing."""
        if spec.key in self._transfers or spec.key in self._done:
            return
        if spec.size_bytes <= 0:
            raise ValueError("a transfer has at least one byte")
        # An owner returning from idle starts level with the others, not with saved credit.
        floor = min((self._served.get(o, 0) for o in self._active_owners()), default=0)
        self._served[spec.owner] = max(self._served.get(spec.owner, 0), floor)
        t = _Transfer(spec=spec, source=source, order=self._order)
        self._order += 1
        t.state = TState.BLOCKED if self._blocked(spec) else TState.OPENING
        self._transfers[spec.key] = t

    def request_receipts(
        self, since: int, claims: tuple[bytes, ...] = (), versions: tuple[int, ...] = ()
    ) -> None:
        """Ask ground for signed receipts of every change after seq ``since`` (§9), claiming the
        bundles with these sha256 (handed off as files) as this station's. ``versions``: the
        receipts versions to ask for (§9.3); only to a ground whose token lists them."""
        self._receipts_since = since
        self._receipts_claims = claims
        self._receipts_versions = versions

    def done_state(self, key: TransferKey) -> UploadState | None:
        return self._done.get(key)

    @property
    def pending(self) -> int:
        """Transfers not finished yet."""
        return len(self._transfers)

    @property
    def idle(self) -> bool:
        """Nothing to send and nothing in flight."""
        return not self._transfers and not self._requests and self._receipts_since is None

    @property
    def link_up(self) -> bool:
        return self._up

    @property
    def link_suspect(self) -> bool:
        """Believed up, but a request's new connection went unanswered too long and it races
        (``connect_unanswered``) until ground answers: text is not held behind a bundle that
        may be stuck in the dark (onboard/link.py ``plan``), as while down."""
        return self._up and self._suspects() > 0

    @property
    def chunk_bytes(self) -> int:
        """The chunk size the next CHUNK will use: rate × chunk_time shared by the streams,
        shrunk after cuts. Shared, so each of many loss-limited streams carries a small chunk
        and a transfer's tail spreads over them instead of crawling along one stream."""
        c = self.config
        base = (
            self.rate_bytes_s * self._chunk_time_s() / self.streams
            if self._rate_samples
            else c.initial_chunk_bytes
        )
        top = min(c.max_chunk_bytes, self._inflight_budget() // self.streams)
        return int(max(c.min_chunk_bytes, min(top, base * self._cut_scale)))

    def _inflight_budget(self) -> int:
        """The most chunk bytes all streams may hold at once: ``max_inflight_bytes``, or
        ``inflight_bdps`` round trips of the last interval's delivery rate if more."""
        c = self.config
        bdp = self._interval_rate_bytes_s * (self.base_rtt_s or 0.0)
        return max(c.max_inflight_bytes, min(c.inflight_ceiling_bytes, int(c.inflight_bdps * bdp)))

    def _chunk_time_s(self) -> float:
        """``chunk_time_s``, or 4 base RTTs if longer: a stream idles a round trip between its
        requests, so on a long path a chunk must last longer to keep it busy."""
        base = self.base_rtt_s or 0.0
        return max(self.config.chunk_time_s, 4 * base)

    def progress(self, key: TransferKey) -> tuple[int, int] | None:
        t = self._transfers.get(key)
        return None if t is None else (t.acked.total, t.spec.size_bytes)

    # -- outgoing ----------------------------------------------------------------------

    def data_to_send(self, now: float) -> list[Outgoing]:
        """Requests to carry now (possibly none: window full, backing off or nothing to do)."""
        self._now = max(self._now, now)
        if self._fatal or now < self._retry_at:
            return []
        window = self.streams if self._up else 1 + self._small_probes()
        queries = self.config.query_streams if self._up else 0
        out: list[Outgoing] = []
        while len(self._requests) < window + queries:
            o = self._next_request(now, data_ok=self._data_requests() < window)
            if o is None:
                break
            out.append(o)
        if self._least_rtt_s is None:
            out.sort(key=self._measured_first)
        if self._up and (len(self._requests) >= window + queries or self._data_requests() >= window):
            # Something could go now but the window holds it back (an OPEN counts: a backlog of
            # photos smaller than a chunk is all OPENs and single chunks).
            self._window_limited = self._window_limited or any(
                t.open_seq is None
                and (t.state is TState.OPENING or (t.state is TState.SENDING and self._gaps(t)))
                for t in self._transfers.values()
            )
        return out

    def _measured_first(self, o: Outgoing) -> int:
        """Until a round trip has been measured, the small requests (the samples the stream
        count is sized by) leave first, ahead of the first flight: behind 16 initial TCP windows
        the first sample took their queue (1.1 s at 1.5 Mbit/s) for the path's base RTT, and
        while the streams kept that queue the base stayed 1.8 x too long for minutes (61
        streams at 1.4 s RTT instead of 34; docs/link.md). Only the order changes."""
        return 0 if o.payload_bytes <= self.config.small_request_bytes else 1

    def _small_probes(self) -> int:
        """While down, one probe at a time, plus one for each small upload waiting to open
        (text bundles, each whole inside its OPEN): posts written during a loss of signal all
        race for the link's return instead of queueing behind one another (≤ down_small_probes)."""
        n = sum(
            1
            for t in self._transfers.values()
            if t.state is TState.OPENING and t.spec.size_bytes <= self.config.inline_bytes
        )
        return min(self.config.down_small_probes, max(0, n - 1))

    @property
    def race_every_s(self) -> float | None:
        """How far apart the shared race's connection attempts start while the link is down,
        or believed up with a request suspect (``connect_unanswered``); None: no race."""
        if self._up:
            racing = self._suspects()  # the requests racing while believed up (none: no race)
            if not racing:
                return None
        else:
            racing = 1 + self._small_probes()  # the requests racing while down (the window)
        c = self.config
        step = max(c.race_down_rtts / racing, 1 / c.race_attempts_per_rtt)
        return max(c.race_min_s, (self._least_rtt_s or self.srtt_s) * step)

    @property
    def queue_now(self) -> bool:
        """Did the last interval's standing RTT show a queue (``clamp_queue_ratio`` × the base)?"""
        return self._queue_now

    def queue_recent(self, now: float) -> bool:
        """Does the link hold a queue, or has it just come back? (Link version 4 clamps
        connections' windows only then.)"""
        base = self.base_rtt_s
        if base is None:
            return False
        return self._queue_now or self.burst_recent(now)

    def burst_recent(self, now: float) -> bool:
        """Did every stream start at once lately (a backlog began, or the link came back)?
        Within ``clamp_hold_rtts`` base RTTs of it (onboard/sync.py gates uploads then)."""
        ends = self.burst_ends_at
        return ends is not None and now <= ends

    @property
    def burst_ends_at(self) -> float | None:
        """When the last burst stops being recent (``burst_recent``); None before a base RTT."""
        base = self.base_rtt_s
        return None if base is None else self._burst_at + self.config.clamp_hold_rtts * base

    @property
    def bulk_in_flight(self) -> bool:
        """Is a request carrying more than ``small_request_bytes`` of upload in flight (a
        backlog moving, not a lone text post)?"""
        small = self.config.small_request_bytes
        return any(r.span and r.span[1] - r.span[0] > small for r in self._requests.values())

    def _moving(self) -> bool:
        """Are more than ``small_request_bytes`` of upload in flight in all? Many chunks each
        under it (a cut's halved chunks over 80 streams) are a backlog moving all the same: a
        larger one among them is no new start."""
        small = self.config.small_request_bytes
        return sum(r.span[1] - r.span[0] for r in self._requests.values() if r.span) > small

    def _suspects(self) -> int:
        """Requests racing while the link is believed up, and the silence as one more."""
        return sum(1 for r in self._requests.values() if r.suspect) + self._silent

    @property
    def heartbeat_at(self) -> float | None:
        """When the driver should ask an idle ground whether the link is still there, unless
        ground answers something first (``heartbeat_s`` after it last did). None: not now (the
        link down or already silent, requests in flight, or no round trip measured yet)."""
        every_s = self.config.heartbeat_s
        if every_s is None or not self._up or self._silent or self._requests or self.race_after_s is None:
            return None
        return self._heard_at + every_s

    def ground_asked(self, now: float) -> None:
        """The driver sent one of its own asks (the warm-up, the heartbeat): until it is
        answered or ends, a text post's new connection races early (``race_beside_ask_rtts``)."""
        self._now = max(self._now, now)
        self._asking = True

    def ground_ask_ended(self, now: float) -> None:
        """The driver's ask ended without an answer (failed, or given up)."""
        self._now = max(self._now, now)
        self._asking = False

    def ground_heard(self, now: float) -> None:
        """Ground answered one of the driver's own asks (the warm-up, the heartbeat)."""
        self._now = max(self._now, now)
        self._asking = False
        self._heard(now)

    def ground_unanswered(self, now: float) -> float | None:
        """One of the driver's own asks has had no answer for ``race_after_s``: while the link
        is believed up it is *silent* (it may have gone dark with nothing in flight), and every
        request needing a connection races until ground answers anything. Returns the race step
        (None: the link is known down, its probes race already, or ``heartbeat_s`` is None).
        Not called down: as before, only a request's failure does that."""
        self._now = max(self._now, now)
        if not self._up or self.config.heartbeat_s is None:
            return None
        self._silent = True
        return self.race_every_s

    def _heard(self, now: float) -> None:
        self._heard_at = max(self._heard_at, now)
        self._silent = False

    @property
    def race_after_s(self) -> float | None:
        """How long a new connection for a request sent while the link is believed up may go
        unanswered before the request is suspect: ``suspect_after_rtts`` × the path's least
        small-request round trip, or the last one's if longer (a SYN waits behind the same
        queue at the link as a small request: on a filled 2.6 s link that was 4.7–6.2 s),
        at least ``suspect_min_s``. None before any round trip was measured: nothing is
        implausible yet, and a request's deadline calls the link down as before."""
        if self._least_rtt_s is None:
            return None
        c = self.config
        rtt = max(self._least_rtt_s, self._last_rtt_s or 0.0)
        return max(c.suspect_min_s, c.suspect_after_rtts * rtt)

    @property
    def base_rtt_s(self) -> float | None:
        """The least round trip of a small request in ``rtt_window_s`` (None before one)."""
        return min((r for _, r in self._rtts), default=None)

    @property
    def path_rtt_s(self) -> float | None:
        """The round trip the windows, the gate and the stream caps are sized by: the least
        since the link last came back, or ``base_rtt_s`` if less. A queue standing longer than
        ``rtt_window_s`` becomes the base; sized by it, the budget grew with the queue it made
        (1.4 s path, base crept to 1.56 s: 1.19 BDP in the network at a cut; docs/link.md "The
        base RTT a queue makes"). A return after a silence longer than the path's round trip
        may bring a longer path (a relay's handover): learnt afresh from then."""
        base = self.base_rtt_s
        if base is None or self._path_rtt_s is None:
            return base
        return min(base, self._path_rtt_s)

    def _observe_rtt(self, req: _Req, now: float, started_at: float | None) -> None:
        """Take a small request's round trip as a sample of the path's RTT plus its queue.

        Measured end to end from the station's own requests, not from the kernel's view of
        its first hop (TCP_INFO behind a proxy or a VPN sees only the local hop). From
        ``started_at`` when the driver gives it (the request began on an open connection, so
        a TCP handshake is left out), else from when ``data_to_send`` handed it out."""
        payload = 0 if req.span is None else req.span[1] - req.span[0]
        if payload > self.config.small_request_bytes:
            return  # its own bytes, not the path, set how long it took
        begun = req.sent_at if started_at is None else max(req.sent_at, started_at)
        rtt = now - begun
        if rtt <= 0:
            return
        self._rtts.append((now, rtt))
        self._least_rtt_s = rtt if self._least_rtt_s is None else min(self._least_rtt_s, rtt)
        self._path_rtt_s = rtt if self._path_rtt_s is None else min(self._path_rtt_s, rtt)
        self._last_rtt_s = rtt
        while self._rtts[0][0] < now - self.config.rtt_window_s:
            self._rtts.popleft()
        self._standing_rtt = rtt if self._standing_rtt is None else min(self._standing_rtt, rtt)
        self._size_streams(now)

    def _size_streams(self, now: float) -> None:
        """Set ``streams`` (within ``window``..``max_window``) once per interval of 2 base RTTs.

        One TCP connection carries at most MSS/RTT · 1.22/√p (Mathis et al. 1997): at 1 % loss
        and 1.4 s, ~12 kB/s, so a lossy link needs many. Loss alone cannot say how many (the
        link rate is unknown here, and a stream's own congestion losses look like random
        ones); the queue can. The standing RTT (the least small-request round trip of the
        interval, as Copa's: a retransmitted or slow sample does not move it) against the
        base: while the window holds requests back and the standing RTT stays near the base,
        the link has room the streams do not use: add half (an eighth once the queue has been
        seen, so the count does not swing about where it fills the link). Once it rises ``queue_rtt_ratio``
        × the base, the link's queue is filling: the link is the limit, so shed an eighth.
        Streams beyond the nominal count per RTT are kept only while no queue shows at all
        (``_stream_caps``).
        The count settles where the queue holds about half a bandwidth-delay product
        (docs/link.md has the measurements). An interval without a sample decides nothing."""
        c = self.config
        base = self.base_rtt_s
        standing = self._standing_rtt
        if base is None or standing is None or now - self._epoch_at < max(1.0, 2 * base):
            return
        rate = (self._delivered - self._epoch_delivered) / (now - self._epoch_at)
        nominal, most = self._stream_caps(now, base, rate)
        if rate > 0:
            self._interval_rate_bytes_s = rate
        else:
            # Nothing answered yet (a start's first interval): no measure of what the streams
            # carry, so the caps cannot take back a count remembered from the last pass (at
            # 6 Mbit/s and 2.6 s a start's 160 streams fell to 83 here, and took 12 s back).
            nominal, most = max(nominal, self.streams), max(most, self.streams)
        queue_shows = standing >= c.lossy_queue_ratio * base
        if self._window_limited:
            if standing > c.queue_rtt_ratio * base:
                self.streams = max(min(c.window, nominal), self.streams - max(1, self.streams // 8))
                self._found_queue = True
            elif queue_shows and self.streams > nominal:
                # Beyond the nominal count only while the link shows no queue at all.
                self.streams = max(nominal, self.streams - max(1, self.streams // 8))
            else:
                # Until the queue is first seen (as slow start) ``start_growth`` more, then an eighth.
                grow = self.streams // 8 if self._found_queue else int(self.streams * c.start_growth)
                top = nominal if queue_shows else most
                self.streams = min(top, self.streams + max(1, grow))
        self._epoch_at = now
        self._epoch_delivered = self._delivered
        self._window_limited = False
        self._queue_now = standing >= c.clamp_queue_ratio * base
        self._standing_rtt = None

    def _stream_caps(self, now: float, base: float, rate: float) -> tuple[int, int]:
        """The most streams while the link holds any queue, and while it holds none, given the
        bytes a second the interval just ended delivered (``rate``).

        Both follow the least round trip since the link last came back, or the base if less: a
        queue standing past the base's window becomes the base, and a cap following it grew
        with the queue its own streams made (2.6 s / 1 %: 83 -> 93 streams as the base crept to
        2.9 s); a return (a relay's handover) may bring a longer path, learnt as the base. Streams
        beyond the nominal count are for links whose every stream is held by random loss
        (3 %: the link idle at 62 streams, 2.6 s); where a queue forms they cost goodput."""
        c = self.config
        least = self.path_rtt_s or base

        # The interval's average, not ``rate_bytes_s``: that rises fast on bunched answers.
        delivered = rate * least

        def per_rtt(n: float, share: int) -> int:
            top = min(c.max_window, max(c.streams_floor_max, round(n * least), int(delivered / share)))
            return top if now >= self._busy_until else min(top, self._busy_cap)

        lossy = max(c.streams_per_rtt_s, c.lossy_streams_per_rtt_s)
        return (
            per_rtt(c.streams_per_rtt_s, c.stream_share_bytes),
            per_rtt(lossy, min(c.stream_share_bytes, c.lossy_stream_share_bytes)),
        )

    def _data_requests(self) -> int:
        """Requests in flight that carry upload bytes (chunks, small uploads inside an OPEN)."""
        return sum(1 for r in self._requests.values() if r.span is not None)

    def _next_request(self, now: float, *, data_ok: bool = True) -> Outgoing | None:
        """The next request by priority and fairness; only one carrying no data unless ``data_ok``."""
        if self._receipts_since is not None and not any(r.is_receipts for r in self._requests.values()):
            seq = self._seq()
            return self._emit(
                ReceiptsRequest(
                    seq=seq,
                    since=self._receipts_since,
                    claims=self._receipts_claims,
                    versions=self._receipts_versions,
                ),
                now,
                None,
                None,
            )
        best: tuple[tuple[int, int, int], _Transfer] | None = None
        owners = max(1, len(self._active_owners()))
        ready: dict[str, bool] = {}
        sample = self._needs_sample()
        if sample and not any(self._opens_ahead(t) for t in self._transfers.values()):
            probe = self._sample_open(now)
            if probe is not None:
                return probe
        elif self._least_rtt_s is None and (sample or self._first_samples_short()):
            probe = self._first_sample(now)
            if probe is not None:
                return probe
        for t in self._transfers.values():
            if not self._sendable(t, now) or not (data_ok or self._query_next(t)):
                continue
            if self._opens_ahead(t):
                o = t.spec.owner
                if o not in ready:
                    ready[o] = self._ready_enough(o, owners)
                if ready[o] and not sample:
                    continue  # enough of this owner is open: opening more now only costs state
            rank = self._rank(t)
            if best is None or rank < best[0]:
                best = (rank, t)
        if best is None:
            return self._end_game_copy(now) if data_ok and self._up else None
        t = best[1]
        seq = self._seq()
        if t.open_seq is None and t.state in (TState.OPENING, TState.SETTLING):
            t.open_seq = seq
            size = t.spec.size_bytes
            if t.state is TState.OPENING and t.acked.total == 0 and size <= self.config.inline_bytes:
                # A small upload rides inside its OPEN: one round trip instead of two. Again
                # after a cut or a probe into the dark (ground said nothing of it yet), so a
                # text post leaves in the first request after a loss of signal.
                t.opened = True
                data = self._take_data(t, seq, 0, size)
                req_: Request = Open(
                    seq=seq,
                    key=t.spec.key,
                    size_bytes=size,
                    owner=t.spec.owner,
                    data=data,
                    receipts_since=self._receipts_with(t),
                    receipts_versions=self._versions_with(t),
                )
                return self._emit(req_, now, t.spec.key, (0, size))
            if data_ok and self._first_flight_for(t):
                return self._first_flight_open(t, seq, now)
            return self._bare_open(t, seq, now)
        start, stop = self._next_gap(t)
        data = self._take_data(t, seq, start, stop)
        return self._emit(
            Chunk(seq=seq, key=t.spec.key, offset=start, data=data), now, t.spec.key, (start, stop)
        )

    def _rank(self, t: _Transfer) -> tuple[int, int, int]:
        """Who goes first: the lowest (priority, bytes already sent for its owner, age)."""
        return (t.spec.priority, self._served.get(t.spec.owner, 0), t.order)

    def _bare_open(self, t: _Transfer, seq: int, now: float) -> Outgoing:
        """``t``'s OPEN without data: ground says what it holds, and the round trip is a sample."""
        t.opened = True
        req = Open(
            seq=seq,
            key=t.spec.key,
            size_bytes=t.spec.size_bytes,
            owner=t.spec.owner,
            receipts_since=self._receipts_with(t),
            receipts_versions=self._versions_with(t),
        )
        return self._emit(req, now, t.spec.key, None)

    def _first_samples_short(self) -> bool:
        """Are some first samples in flight, but fewer than ``first_samples``?"""
        n = sum(1 for r in self._requests.values() if r.first_sample)
        return 0 < n < self.config.first_samples

    def _first_sample(self, now: float) -> Outgoing | None:
        """Before any round trip is measured, if every upload to open would take a stream with
        its first chunk (and none is a text post), the last in line opens bare instead, ahead of
        the first flights, so the stream count has a base RTT by the first answer; then the next
        (up to ``first_samples``), as long as one upload keeps its first flight.
        With every photo's OPEN carrying its first chunk (a backlog of a few large photos) the
        first sample was the first answer after the sampling rule could run: 13 s into a 2.6 s
        start, and the count sat at 16 streams until then."""
        if not self.first_flight or self._first_flight_refused:
            return None  # every OPEN ahead is bare, and a sample, already
        inline = self.config.inline_bytes
        if any(
            t.state is TState.OPENING and t.spec.size_bytes <= inline and self._sendable(t, now)
            for t in self._transfers.values()
        ):
            return None  # a text post's OPEN (small, inline) goes first and is the sample
        ahead = [t for t in self._transfers.values() if self._opens_ahead(t) and self._sendable(t, now)]
        if len(ahead) < 2:
            return None  # a lone upload's first flight matters more than the count
        if len(ahead) > self.streams - self._data_requests():
            return None  # more to open than streams: the rest open bare ahead, each a sample
        t = max(ahead, key=self._rank)
        t.open_seq = seq = self._seq()
        out = self._bare_open(t, seq, now)
        self._requests[seq].first_sample = True
        return out

    def _take_data(self, t: _Transfer, seq: int, start: int, stop: int) -> bytes:
        """Bytes ``start``–``stop`` of ``t`` for request ``seq``: read, counted in flight, served
        to its owner and in the stats (every first sending of data: inline, first flight, CHUNK)."""
        data = t.source(start, stop - start)
        if len(data) != stop - start:
            raise ValueError(f"source for {t.spec.key.name} gave {len(data)} bytes, wanted {stop - start}")
        t.inflight[seq] = (start, stop)
        self._served[t.spec.owner] = self._served.get(t.spec.owner, 0) + (stop - start)
        self.stats.chunk_bytes += stop - start
        self.stats.max_chunk_bytes = max(self.stats.max_chunk_bytes, stop - start)
        return data

    def _end_game_copy(self, now: float) -> Outgoing | None:
        """Nothing is left to send: a piece of the oldest chunk still crawling after
        ``end_game_after_rtts``, sent again on this free stream (None if none is due or the
        duplicates in flight are at their bound)."""
        c = self.config
        base = self.base_rtt_s
        if base is None or not c.end_game:
            return None
        flying = sum(r.span[1] - r.span[0] for r in self._requests.values() if r.copy and r.span)
        if flying >= max(c.end_game_piece_bytes, self.rate_bytes_s * base * c.end_game_max_rtts):
            return None
        if self.stats.end_game_bytes + c.end_game_piece_bytes > c.end_game_budget * self.stats.chunk_bytes:
            return None  # the end of a large backlog pays for copies; a trickle of posts does not
        # Late, not queued: a chunk is crawling once it has taken longer than a round trip and a
        # half plus what every data request in flight needs of the link at the estimated rate
        # (behind a full link's queue each waits its turn; a copy would only add to the queue).
        ahead_s = sum(r.span[1] - r.span[0] for r in self._requests.values() if r.span and not r.copy) / max(
            self.rate_bytes_s, 1.0
        )
        due = [
            r
            for r in self._requests.values()
            if r.chunk
            and r.span is not None
            and r.copied_to < r.span[1]
            and now - r.sent_at >= c.end_game_after_rtts * base + ahead_s
            and r.key in self._transfers
            and self._transfers[r.key].state is TState.SENDING
        ]
        if not due:
            return None
        r = min(due, key=lambda q: q.sent_at)
        assert r.span is not None and r.key is not None
        t = self._transfers[r.key]
        start = max(r.copied_to, r.span[0])
        # Bytes ground already acknowledged (another copy landed) are not sent again.
        gaps = t.acked.gaps(start, r.span[1])
        if not gaps:
            r.copied_to = r.span[1]
            return self._end_game_copy(now)
        start = gaps[0][0]
        stop = min(gaps[0][1], start + c.end_game_piece_bytes)
        if gaps[0][1] - stop < c.end_game_piece_bytes // 4:
            stop = gaps[0][1]  # a short rest rides with this piece rather than costing a request
        r.copied_to = stop
        data = t.source(start, stop - start)
        seq = self._seq()
        t.inflight[seq] = (start, stop)
        self.stats.end_game_bytes += stop - start
        out = self._emit(
            Chunk(seq=seq, key=t.spec.key, offset=start, data=data), now, t.spec.key, (start, stop)
        )
        self._requests[seq].copy = True
        return out

    def _first_flight_for(self, t: _Transfer) -> bool:
        """May ``t``'s OPEN carry its first chunk (link version 3)? Only its first OPEN: after a
        cut ground may hold part of that chunk already, so the next OPEN asks first."""
        return (
            self.first_flight
            and not self._first_flight_refused
            and t.state is TState.OPENING
            and not t.opened
            and t.acked.total == 0
        )

    def _first_flight_open(self, t: _Transfer, seq: int, now: float) -> Outgoing:
        """A new upload's OPEN carrying its first chunk: it takes a data stream, and the chunk
        crosses in the OPEN's round trip instead of one after it."""
        t.opened = True
        start, stop = self._next_gap(t, self.config.first_flight_bytes)
        if start != 0:
            raise ValueError(f"{t.spec.key.name}: a first flight starts at 0, not {start}")
        data = self._take_data(t, seq, start, stop)
        req = Open(
            seq=seq,
            key=t.spec.key,
            size_bytes=t.spec.size_bytes,
            owner=t.spec.owner,
            data=data,
            receipts_since=self._receipts_with(t),
            receipts_versions=self._versions_with(t),
        )
        return self._emit(req, now, t.spec.key, (start, stop))

    def _opens_ahead(self, t: _Transfer) -> bool:
        """Would ``t``'s next request open it for the first time, without data (not inline)?"""
        return (
            t.state is TState.OPENING
            and not t.opened
            and t.open_seq is None
            and t.spec.size_bytes > self.config.inline_bytes
        )

    def _needs_sample(self) -> bool:
        """Is no small request in flight? Then one photo more is opened ahead (a bare OPEN, a
        small request), so the stream count always has a round trip to measure by within the
        next interval (``_size_streams``): when every stream carries a chunk (at the start
        link version 3 sends the first ones inside their OPENs) the count held at 8 streams
        for ~15 s at 2.6 s RTT for want of one."""
        if not self._up:
            return False
        small = self.config.small_request_bytes
        flying = sum(1 for r in self._requests.values() if r.span is None or r.span[1] - r.span[0] <= small)
        return flying < self.config.sample_requests

    def _sample_open(self, now: float) -> Outgoing | None:
        """An OPEN of an upload already sending, asked only for its round trip: with every
        photo open (a backlog of a few large ones) no small request was left to size the
        streams by, the count froze and a standing queue became the base RTT (1.86 s on a
        1.4 s path, ~1.7 BDP in the network). Its chunks keep flowing meanwhile."""
        sending = [
            t
            for t in self._transfers.values()
            if t.state is TState.SENDING and t.known and t.open_seq is None and self._gaps(t)
        ]
        if not sending:
            return None
        t = max(sending, key=lambda x: x.spec.size_bytes - x.acked.total)
        seq = self._seq()
        t.open_seq = seq
        req = Open(seq=seq, key=t.spec.key, size_bytes=t.spec.size_bytes, owner=t.spec.owner)
        return self._emit(req, now, t.spec.key, None)

    def _ready_enough(self, owner: str, owners: int) -> bool:
        """Does ``owner`` have its share of ``open_ahead_rounds`` chunks for every stream open (bytes not yet
        sent, or behind an OPEN on its way)? Then nothing more of its is opened ahead: the
        queue of ready chunks is full, and the OPENs still to come keep sampling the path's
        round trip (``_size_streams``), as they did when each took a stream."""
        want = int(self.config.open_ahead_rounds * self.streams * self.chunk_bytes) // owners
        have = 0
        for t in self._transfers.values():
            if t.spec.owner != owner:
                continue
            if t.state is TState.SENDING and t.open_seq is None:
                have += sum(b - a for a, b in self._gaps(t))
            elif t.state is TState.OPENING and t.open_seq is not None and t.acked.total == 0:
                # Not an OPEN carrying its first chunk (it took a data stream): at the start
                # every open photo is one, and the bare OPENs opened ahead beside them are
                # the small requests the stream count is sized by (``_size_streams``).
                # Nor the start's sample: it measures, and the first flights still go.
                r = self._requests.get(t.open_seq)
                have += 0 if r is not None and (r.first_flight or r.first_sample) else t.spec.size_bytes
            if have >= want:
                return True
        return False

    def _query_next(self, t: _Transfer) -> bool:
        """Does ``t``'s next request carry no data (an OPEN that asks, a commit poll)?"""
        if t.state is TState.SETTLING:
            return True
        inline = t.acked.total == 0 and t.spec.size_bytes <= self.config.inline_bytes
        return t.state is TState.OPENING and t.open_seq is None and not inline

    def _receipts_with(self, t: _Transfer) -> int | None:
        """The receipts cursor a bundle's OPEN carries (link version 2), or None."""
        if t.spec.key.kind is not TransferKind.BUNDLE or self._open_receipts_refused:
            return None
        return self.open_receipts_since

    def _versions_with(self, t: _Transfer) -> tuple[int, ...]:
        """The receipts versions that OPEN lists: only beside a receipts cursor."""
        return self.open_receipts_versions if self._receipts_with(t) is not None else ()

    def _sendable(self, t: _Transfer, now: float) -> bool:
        if t.state is TState.BLOCKED:
            if self._blocked(t.spec):
                return False
            t.state = TState.OPENING
        if t.open_seq is not None:
            return self._sure_sendable(t)
        if t.state is TState.OPENING:
            return True
        if t.state is TState.SETTLING:
            return now >= t.poll_at and not t.inflight
        return t.state is TState.SENDING and bool(self._gaps(t))

    def _sure_sendable(self, t: _Transfer) -> bool:
        """While ``t``'s OPEN asks what ground stored after a cut, may bytes it never sent go?
        Only of an upload ground holds, on a live link: the OPEN's round trip is no longer
        idle for every stream after a cut or a return (the re-OPEN waited for it before)."""
        return self._up and t.known and t.state in (TState.OPENING, TState.SENDING) and bool(self._gaps(t))

    def _gaps(self, t: _Transfer) -> list[tuple[int, int]]:
        """What of ``t`` may be sent now: neither acknowledged, nor in flight, nor perhaps on
        ground already (a failed request's range, until the next OPEN's answer)."""
        busy = RangeSet(t.inflight.values()).union(t.acked).union(t.unsure)
        return busy.gaps(0, t.spec.size_bytes)

    def _next_gap(self, t: _Transfer, most: int | None = None) -> tuple[int, int]:
        start, stop = self._gaps(t)[0]
        if most is not None:  # a first flight: no tail rides along (it must fit a first window)
            return start, min(stop, start + max(1, min(most, self.chunk_bytes)))
        n = self.chunk_bytes
        # A tail under a quarter chunk rides with this chunk rather than costing a request.
        if stop - start <= n + n // 4:
            return start, stop
        return start, start + n

    def _blocked(self, spec: TransferSpec) -> bool:
        return any(d not in self._done for d in spec.depends_on)

    def _active_owners(self) -> set[str]:
        return {t.spec.owner for t in self._transfers.values()}

    def _seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    def _timeout_s(self, payload: int) -> float:
        c = self.config
        ahead = sum((r.span[1] - r.span[0]) for r in self._requests.values() if r.span) + payload
        t = 4 * self.srtt_s + 3 * ahead / max(self.rate_bytes_s, 100.0)
        return max(c.min_timeout_s, min(c.max_timeout_s, t))

    def _emit(
        self, req: Request, now: float, key: TransferKey | None, span: tuple[int, int] | None
    ) -> Outgoing:
        data = encode_request(req)
        payload = 0 if span is None else span[1] - span[0]
        timeout = self._timeout_s(payload)
        deadline = now + (timeout if self._up else max(timeout, self.config.down_probe_timeout_s))
        # A request after one suspect races at once (a connect of its own would wait as long).
        suspect = self._up and self._suspects() > 0
        if self._up and payload > self.config.small_request_bytes and not self._moving():
            self._burst_at = now  # a backlog begins: its streams start together, in slow start
        self._requests[req.seq] = _Req(
            seq=req.seq,
            sent_at=now,
            deadline=deadline,
            key=key,
            span=span,
            delivered_at_send=self._delivered,
            is_receipts=isinstance(req, ReceiptsRequest),
            ahead=len(self._requests),
            asks_receipts=isinstance(req, Open) and req.receipts_since is not None,
            probe=not self._up or suspect,
            suspect=suspect,
            first_flight=isinstance(req, Open) and 0 < len(req.data) < req.size_bytes,
            chunk=isinstance(req, Chunk),
            copied_to=span[0] if span else 0,
        )
        self.stats.requests += 1
        self.stats.request_bytes += len(data)
        race_every_s = self.race_every_s
        c = self.config
        wanted = c.hedge_kept_posts if self._up else c.hedge_dark_posts
        post = self._copy_of_post(req, len(data))  # a text post's copy (None: not a text post)
        copy = post if wanted else None
        return Outgoing(
            seq=req.seq,
            data=data,
            deadline=deadline,
            key=key,
            payload_bytes=payload,
            race_every_s=race_every_s,
            race_after_s=None if race_every_s is not None else self._race_after_for(post is not None),
            hedge=None if self._up else copy,
            copy_if_unacked=copy if self._up else None,
        )

    def _race_after_for(self, text_post: bool) -> float | None:
        """``race_after_s`` for a request's new connection; for a text post while one of the
        driver's asks is out, ``race_beside_ask_rtts`` least round trips if that is sooner."""
        after, beside, least = self.race_after_s, self.config.race_beside_ask_rtts, self._least_rtt_s
        if after is None or least is None or beside is None or not (text_post and self._asking):
            return after
        return min(after, max(self.config.race_min_s, beside * least))

    def _copy_of_post(self, req: Request, frame_bytes: int) -> bytes | None:
        """The copy of ``req`` if it is a text post: a bundle whole inside its OPEN, small
        enough to send twice; the copy asks for no receipts. None otherwise."""
        if (
            isinstance(req, Open)
            and req.key.kind is TransferKind.BUNDLE
            and len(req.data) == req.size_bytes
            and frame_bytes <= self.config.small_request_bytes
        ):
            return encode_request(replace(req, receipts_since=None, receipts_versions=()))
        return None

    def connect_unanswered(self, seq: int, now: float) -> float | None:
        """Request ``seq``'s new connection has had no answer for its ``race_after_s``: while
        the link is believed up, it is *suspect* (the link may have gone dark unnoticed) and
        joins the shared race. Returns the race step (None: no race; it was answered or given
        up, or the link is known down and its probes race already). The link is not called
        down: only a request's failure does that, as before."""
        self._now = max(self._now, now)
        req = self._requests.get(seq)
        if req is None or not self._up:
            return None
        req.suspect = True
        req.probe = True  # once on a connection it gets its own timeout (``request_began``)
        return self.race_every_s

    def kept_unacked(self, seq: int, now: float) -> float | None:
        """Request ``seq`` (a text post) went on a kept connection, and ground's TCP has not
        acknowledged its bytes ``race_after_s`` after they were written: the link may have gone
        dark with nothing in flight to tell. While believed up the link is then *silent* (as
        ``ground_unanswered``) and the request's ``copy_if_unacked`` races on a new connection.
        Returns the race step (None: no copy; answered or given up, or the link known down)."""
        self._now = max(self._now, now)
        req = self._requests.get(seq)
        if req is None or not self._up or not self.config.hedge_kept_posts:
            return None
        self._silent = True
        req.probe = True  # the copy's connection gets its own timeout (``request_began``)
        return self.race_every_s

    def request_began(self, seq: int, now: float) -> float | None:
        """The request began on an open connection (the driver says when): one sent while the
        link was down may have raced for most of its 300 s deadline, and giving up now would
        throw away the connection the link's return just gave it (docs/link.md). It gets at
        least a request's own timeout from now. Returns its deadline (None: not a probe)."""
        req = self._requests.get(seq)
        if req is None or not req.probe:
            return None
        req.suspect = False  # it has a connection
        self._silent = False  # (a new one: while silent no request takes a kept connection)
        if not self._up and self._connected_across(req, now):
            self._link_back(now)
        payload = 0 if req.span is None else req.span[1] - req.span[0]
        req.deadline = max(req.deadline, now + self._timeout_s(payload))
        return req.deadline

    # -- incoming ----------------------------------------------------------------------

    def receive(self, data: bytes, now: float, *, started_at: float | None = None) -> None:
        """Feed one response frame. A frame that cannot be decoded counts as a failed request
        only if it names a known seq; otherwise it is ignored (it cannot be attributed).

        ``started_at``: when the request began on an open connection (the driver's measure:
        its round trip then leaves out a TCP handshake); None: when it was handed out."""
        self._now = max(self._now, now)
        try:
            resp = decode_response(data)
        except RemoteProtocolError:
            return
        req = self._requests.pop(resp.seq, None)
        if req is None:
            return  # late answer to a request already given up on
        self._heard(now)
        if isinstance(resp, ErrorFrame):
            self._on_error(req, resp, now)
            return
        self._on_success(req, now)
        held_s = resp.held_ms / 1000 if isinstance(resp, Status) else 0.0
        self._observe_rtt(req, now - held_s, started_at)
        if isinstance(resp, ReceiptsBatch):
            self._receipts_since = None
            self._events.append(
                ReceiptsReceived(document=resp.document, next_since=resp.next_since, more=resp.more)
            )
            return
        t = self._transfers.get(resp.key) if req.key == resp.key else None
        if req.key is not None and req.key != resp.key:
            self._fail(req, now, f"ground answered about {resp.key.name}, not {req.key.name}")
            return
        if t is not None:
            self._on_status(t, req, resp, now, held_s)
        if resp.receipts is not None and req.asks_receipts:
            # After the transfer's own events: its TransferDone says with_receipts, so the driver
            # does not ask again; the bundle's outcome is recorded before its receipts apply.
            r = resp.receipts
            self._events.append(
                ReceiptsReceived(document=r.document, next_since=r.next_since, more=r.more, with_open=True)
            )

    def receive_error(self, seq: int, code: str, message: str, retryable: bool, now: float) -> None:
        """An error the driver learned outside a frame (e.g. an HTTP 4xx with a JSON body)."""
        req = self._requests.pop(seq, None)
        if req is not None:
            self._on_error(req, ErrorFrame(seq=seq, code=code, message=message, retryable=retryable), now)

    def request_failed(self, seq: int, now: float, reason: str) -> None:
        """The request got no answer: connection cut, refused or timed out."""
        self._now = max(self._now, now)
        req = self._requests.pop(seq, None)
        if req is not None:
            self._fail(req, now, reason)

    def _rate_sample(self, sample: float, now: float) -> None:
        """Fold one delivery-rate sample into ``rate_bytes_s``: rise fast (at most doubling per
        sample), fall smoothly, and by at most ``RATE_FALL_PER_RTT`` a round trip. A link that
        got faster is used at once, one slow sample does not shrink every chunk, and a burst
        of answers to requests sent together (a start's first flights: each saw only the
        answers ahead of it) is one round's fall, not one per answer (160 of them took a
        remembered 729 kB/s to 63 kB/s in half a second at 6 Mbit/s and 2.6 s)."""
        if not self._rate_samples:
            self.rate_bytes_s = max(sample, self.rate_bytes_s)
        else:
            smooth = 0.7 * self.rate_bytes_s + 0.3 * sample
            since, then = self._rate_round
            if now - since >= (self.base_rtt_s or self.srtt_s):
                self._rate_round = since, then = now, self.rate_bytes_s
            floor = RATE_FALL_PER_RTT * then
            self.rate_bytes_s = max(smooth, floor, min(sample, 2 * self.rate_bytes_s))
        self._rate_samples += 1

    def _on_status(self, t: _Transfer, req: _Req, resp: Status, now: float, held_s: float = 0.0) -> None:
        if req.span is not None and req.copy:
            t.inflight.pop(req.seq, None)  # a duplicate: the delivery rate counts the first copy
        elif req.span is not None:
            t.inflight.pop(req.seq, None)
            self._delivered += req.span[1] - req.span[0]
            dt = now - held_s - req.sent_at
            if dt > 0:
                self._rate_sample((self._delivered - req.delivered_at_send) / dt, now)
        elif now - held_s > req.sent_at:
            self.srtt_s = 0.8 * self.srtt_s + 0.2 * (now - held_s - req.sent_at)
        if t.open_seq == req.seq:
            t.open_seq = None
        if resp.size_bytes != t.spec.size_bytes:
            self._finish(t, UploadState.REJECTED, "size_conflict", "ground reports a different size")
            return
        if resp.state is not UploadState.RECEIVING:
            with_receipts = resp.receipts is not None and req.asks_receipts
            self._finish(t, resp.state, resp.code, resp.message, with_receipts=with_receipts)
            return
        # Ground's durable ranges only grow; answers may arrive out of order, so merge.
        t.acked = t.acked.union(resp.ranges)
        t.known = True
        if req.seq > t.unsure_after:
            t.unsure = RangeSet()  # sent after the failures: ground said what it kept of them
        self._events.append(
            TransferProgress(key=t.spec.key, acked_bytes=t.acked.total, size_bytes=t.spec.size_bytes)
        )
        if t.acked.covers(0, t.spec.size_bytes):
            t.state = TState.SETTLING
            t.poll_at = now + self.config.commit_poll_s
        elif t.unsure and t.open_seq is None:
            t.state = TState.OPENING  # an answer from before a failure: ask what ground kept
        elif t.state is not TState.SETTLING or req.span is None:
            t.state = TState.SENDING

    def _finish(
        self, t: _Transfer, state: UploadState, code: str, message: str, *, with_receipts: bool = False
    ) -> None:
        t.state = TState.DONE
        del self._transfers[t.spec.key]
        self._done[t.spec.key] = state
        if state is UploadState.COMMITTED:
            self._events.append(
                TransferProgress(key=t.spec.key, acked_bytes=t.spec.size_bytes, size_bytes=t.spec.size_bytes)
            )
        self._events.append(
            TransferDone(key=t.spec.key, state=state, code=code, message=message, with_receipts=with_receipts)
        )

    def _reopen_plainly(self, t: _Transfer, req: _Req, now: float) -> None:
        """An older ground refused a newer OPEN (the flag set by the caller says which): the
        upload is opened again the old way; the refusal says nothing of the link."""
        self._on_success(req, now)
        t.inflight.pop(req.seq, None)
        if t.open_seq == req.seq:
            t.open_seq = None
        t.state = TState.OPENING

    def _on_error(self, req: _Req, err: ErrorFrame, now: float) -> None:
        t = self._transfers.get(req.key) if req.key else None
        if err.code in FATAL_CODES:
            self._fatal = True
            self._events.append(LinkFatal(code=err.code, message=err.message))
            return
        if t is not None and req.asks_receipts and err.code == LinkErrorCode.BAD_FRAME and not err.retryable:
            # A ground older than link version 2 refuses an OPEN with a receipts cursor
            # (its token did not list link=2, or it was downgraded): open the old way.
            self._open_receipts_refused = True
            self._reopen_plainly(t, req, now)
            return
        if (
            t is not None
            and req.first_flight
            and err.code in (LinkErrorCode.BAD_OFFSET, LinkErrorCode.BAD_FRAME)
            and not err.retryable
        ):
            # A ground before link version 3 refuses an OPEN carrying less than the whole
            # upload (``bad_offset``): open the old way, and never send one again this sync.
            self._first_flight_refused = True
            self._reopen_plainly(t, req, now)
            t.opened = False
            return
        if t is not None and err.code in TRANSFER_FATAL_CODES:
            self._finish(t, UploadState.REJECTED, err.code, err.message)
            return
        if err.code == LinkErrorCode.UNKNOWN_UPLOAD and t is not None:
            # Ground forgot a partial upload (expired): reopen and start over from its ranges.
            self._on_success(req, now)
            t.inflight.pop(req.seq, None)
            t.acked = RangeSet()
            t.unsure = RangeSet()
            t.known = False
            t.state = TState.OPENING
            return
        if not err.retryable and t is not None:
            self._finish(t, UploadState.REJECTED, err.code, err.message)
            return
        if err.code == LinkErrorCode.BUSY:
            self._ground_busy(req, now)
            return
        if req.is_receipts and not err.retryable:
            self._receipts_since = None
            self._events.append(LinkFatal(code=err.code, message=err.message))
            return
        self._fail(req, now, f"{err.code}: {err.message}")

    def _ground_busy(self, req: _Req, now: float) -> None:
        """Ground holds as many of this station's requests as it allows (503 busy): the link
        works, ground is the limit. Hold ``streams`` to what ground took (for ``rtt_window_s``)
        and send the request again after a short pause, without declaring the link down."""
        self._on_success(req, now)
        t = self._transfers.get(req.key) if req.key else None
        if t is not None:
            self._unsure(t, req)
            if t.open_seq == req.seq:
                t.open_seq = None
            if t.state in (TState.SENDING, TState.SETTLING):
                t.state = TState.OPENING  # ask what ground stored before sending more of it
        # Ground held those when this one found it full (the least of a burst of refusals).
        held = max(1, req.ahead)
        self._busy_cap = min(self._busy_cap, held) if now < self._busy_until else held
        self._busy_until = now + self.config.rtt_window_s
        self.streams = min(self.streams, self._busy_cap)
        self._retry_at = max(self._retry_at, now + self.config.backoff_initial_s)

    def _on_success(self, req: _Req, now: float) -> None:
        for r in self._requests.values():
            r.suspect = False  # ground answered: the link works; new connections connect plainly
        if not self._up:
            self._link_back(now)
        self._backoff_s = 0.0
        self._cut_scale = min(1.0, self._cut_scale * 1.1)

    def _connected_across(self, req: _Req, now: float) -> bool:
        """Did a probe's connection take long enough to have crossed the path (``up_on_connect_rtts``)?"""
        k = self.config.up_on_connect_rtts
        least = self._least_rtt_s
        return k is not None and least is not None and now - req.sent_at >= k * least

    def _link_back(self, now: float) -> None:
        self._up = True
        path = self.path_rtt_s
        if path is None or now - self._down_heard_at > path:
            # The path after a dark may not be the one before (a relay's handover).
            self._path_rtt_s = None
            self._burst_at = now  # every stream starts again at once: a burst
        # Else ground went unheard for less than the path's round trip: one request's
        # deadline called the link down while ground answered the others (a dark that has
        # just begun looks the same then). The link was never dark and its streams never
        # stopped: no burst (taken for one, the send gate restarted as after a start), and
        # the path is kept (forgotten, it became the base a standing queue had made; 1.09 ×
        # the path sized the gate in the cuts profile's seed 33; docs/link.md "A lone deadline").
        self._heard(now)
        self._backoff_s = 0.0
        self._events.append(LinkUp(at=now))

    def _unsure(self, t: _Transfer, req: _Req) -> None:
        """``req`` of ``t`` failed: its range waits for the answer to an OPEN sent after now."""
        span = t.inflight.pop(req.seq, None)
        if span is not None:
            t.unsure.add(*span)
        t.unsure_after = self._next_seq - 1

    def _fail(self, req: _Req, now: float, reason: str) -> None:
        self.stats.failures += 1
        t = self._transfers.get(req.key) if req.key else None
        if t is not None:
            self._unsure(t, req)
            if t.open_seq == req.seq:
                t.open_seq = None
            # What ground stored of a cut chunk is unknown: ask before sending it again.
            if t.state in (TState.SENDING, TState.SETTLING):
                t.state = TState.OPENING
        # Frequent cuts → smaller chunks, so each cut wastes less (floor: min_chunk_bytes).
        # A cut is the link going down: the requests dying with it and the probes failing in
        # a dark after it are the same cut. Halved per failure, one loss of signal took the
        # chunks to the floor (1 KiB) and the link refilled ~4 s late at 1.4 s RTT.
        if self._up:
            self._cut_scale = max(1 / 64, self._cut_scale / 2)
        c = self.config
        # Several requests die together in one cut: only a request sent after the previous
        # failure says the link is still bad, so only that escalates the backoff.
        if req.sent_at >= self._last_fail_at or self._backoff_s == 0:
            self._backoff_s = min(c.backoff_max_s, max(c.backoff_initial_s, self._backoff_s * 2))
        self._last_fail_at = now
        # The backoff counts from when the failed request left: one that waited out its
        # deadline in the dark (its connection racing all along) is followed at once, so the
        # link is never left unprobed; one refused at once waits the backoff.
        self._retry_at = max(self._retry_at, min(now, req.sent_at) + self._backoff_s)
        if self._up:
            self._up = False
            self._down_heard_at = self._heard_at
            self._events.append(LinkDown(at=now, reason=reason, retry_at=self._retry_at))

    # -- events and time ---------------------------------------------------------------

    def next_event(self) -> SenderEvent | None:
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """When to call handle_timeout/data_to_send next: a request deadline, the end of a
        backoff or a commit poll. Times already passed are left out (nothing would change)."""
        times = [r.deadline for r in self._requests.values()]
        times += [t.poll_at for t in self._transfers.values() if t.state is TState.SETTLING]
        times.append(self._retry_at)
        future = [x for x in times if x > self._now]
        return min(future) if future else None

    def handle_timeout(self, now: float) -> None:
        """Give up on requests past their deadline (the driver should abandon them too)."""
        self._now = max(self._now, now)
        for seq in [s for s, r in self._requests.items() if r.deadline <= now]:
            self.request_failed(seq, now, "no answer before the deadline")
