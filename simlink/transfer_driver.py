"""The live link in virtual time: the project's transfer machines, driven like `onboard sync
--watch` and `ground serve` drive them, over simulated HTTP connections.

Station side: ``onboard.link.plan``/``active_transfers`` turn the queue into transfers, the
sans-IO ``TransferSender`` decides every request, deadline and backoff, and each request
frame is one ``POST /v1/link`` on a pool of keep-alive connections (as aiohttp does);
receipts are fetched on onboard's schedule (``ReceiptsPoll``: only while deliveries await
ground's word, backing off while nothing changes), verified and applied with onboard's code;
like sync, it keeps one idle connection open (``GET /v1/health`` when the last one was lost)
so a post after a quiet spell does not wait for a TCP handshake.
Ground side: the ``TransferReceiver`` and ground's own ``LinkService`` drain (fsynced chunk
writes, ``ingest_bytes`` on commit, signed receipt documents). This module carries bytes and
the clock; it decides nothing the real drivers would not.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from ground.receipts import ground_key_line
from ground.server import FRAME_TYPE, LinkService
from ground.stations import add_station, authenticate, write_token_file
from onboard import link as onboard_link
from onboard.delivery import GATE_RTT_FLOOR_S
from onboard.receipts import ReceiptsPoll, apply_document, verify_document
from onboard.remembered import LinkRecorder
from onboard.sync import (
    KEEPALIVE_S,
    QUEUE_POLL_S,
    RECEIPTS_CURSOR,
    WARM_RETRY_MAX_S,
    WARM_RETRY_S,
    WARM_TIMEOUT_S,
    awaiting_news,
    open_receipt_versions,
    receipt_versions,
    sized_by_memory,
)
from protocol.bundle import FORMATS
from protocol.capabilities import Capabilities
from protocol.codecs import Codec
from protocol.dictionary import shipped_ids
from protocol.rangeset import RangeSet
from protocol.receipts import RECEIPTS_VERSIONS
from protocol.send_gate import SendGate
from protocol.transfer import (
    LinkDown,
    LinkFatal,
    ReceiptsReceived,
    SenderConfig,
    TransferDone,
    TransferProgress,
    TransferSender,
)
from protocol.transfer_wire import (
    FIRST_FLIGHT_LINK_VERSION,
    HTTP_STATUS,
    LINK_VERSIONS,
    Chunk,
    ErrorFrame,
    Open,
    TransferKey,
    TransferKind,
    decode_request,
    decode_response,
    encode_request,
    salvage_chunk,
)
from protocol.window_clamp import (
    WINDOW_CLAMP_LINK_VERSION,
    WINDOW_HEADER,
    DeliveryRate,
    WindowAsk,
    carries_window,
)

from .clock import EventLoop, Timer
from .link import SimLink
from .system import EPOCH_MS, Ground, Station, Tracker
from .vhttp import (
    LINK_CLIENT_HEADERS,
    LINK_SERVER_HEADERS,
    SERVER_HEADERS,
    HttpClient,
    HttpResponse,
    ServerConn,
    SimRace,
)

STATION = "iss"
GROUND_URL = "http://127.0.0.1:8470"
# onboard/sync.py's defaults for `onboard sync --watch`.
RESCAN_S = 1.0
RECEIPTS_EVERY_S = 20.0
RECEIPTS_MAX_S = 320.0
# Sync notices a lost connection on its next turn (its loop wakes at least every second).
NOTICE_S = 1.0
# The transfer as it was before issue 14 (a fixed window of 4, each chunk 2 s of the whole
# link's rate, ground dropping what arrived of a cut chunk), kept to measure the new one against.
V1_CONFIG = SenderConfig(
    window=4,
    max_window=4,
    initial_streams=4,
    chunk_time_s=8.0,
    initial_chunk_bytes=16 * 1024,
    query_streams=0,
)
# The transfer before query streams (docs/link.md): an OPEN or a commit poll takes one of the
# streams for its round trip, and up to 64 streams; kept to measure today's against.
SHARED_CONFIG = SenderConfig(max_window=64, query_streams=0, initial_streams=8)
HEALTH = b'{"ok": true}'  # ground's GET /v1/health answer, byte for byte (web.json_response)


def simulated_ground_decodes(*, v1: bool = False, link: frozenset[int] = LINK_VERSIONS) -> Capabilities:
    """What the simulated ground decodes (its token to the station; simlink/realtime.py gives
    the real processes the same): bundle formats up to 3 and the text dictionaries, as a real
    ground does; not JPEG XL (transcoding costs real seconds a photo, and virtual time would
    hide them; the photo codec is measured in benchmarks/bench_bandwidth.py)."""
    return Capabilities(
        codecs=frozenset({Codec.IDENTITY, Codec.ZSTD, Codec.ZSTD_DICT}),
        dictionaries=shipped_ids(),
        formats=FORMATS,
        # A bundle's OPEN brings its receipts back (issue 14); not in the transfer before it.
        link=frozenset({1}) if v1 else link,
        # Compact receipts (version 4, docs/PROTOCOL.md §9.5) as a ground of this release lists.
        receipts=frozenset({2}) if v1 else RECEIPTS_VERSIONS,
    )


class TransferDriver:
    """`onboard sync --watch` on the station and `ground serve`'s link endpoint, in virtual time."""

    name = "transfer"
    description = "protocol/transfer.py sender and receiver, one POST /v1/link per frame (resumable)"

    def __init__(
        self,
        loop: EventLoop,
        link: SimLink,
        station: Station,
        ground: Ground,
        tracker: Tracker,
        schedule_publish: Callable[[], None],
        workdir: Path,
        *,
        v1: bool = False,
        shared: bool = False,
    ) -> None:
        self.loop = loop
        self.v1 = v1
        if v1:
            self.name = "transfer-v1"
            self.description = (
                "the transfer before issue 14: 4 streams, chunks of 2 s, partial chunks dropped"
            )
        elif shared:
            self.name = "transfer-shared"
            self.description = "the transfer before query streams: OPENs and commit polls take a stream"
        self.link = link
        self.station = station
        self.ground = ground
        self.tracker = tracker
        self.schedule_publish = schedule_publish
        # -- the real setup path: `ground station add` then `onboard link add` --
        token = add_station(ground.home.conn, STATION, EPOCH_MS)
        token_file = workdir / "station.token"
        decodes = simulated_ground_decodes(v1=v1)
        write_token_file(
            token_file,
            station=STATION,
            token=token,
            ground_key_line=ground_key_line(ground.home),
            ground_decodes=decodes.to_token(),
        )
        self.cfg = onboard_link.add_link(station.home, GROUND_URL, token_file)
        onboard_link.ensure_schema(station.conn)
        self.headers = [("Authorization", f"Bearer {self.cfg.token}")]
        if v1:
            self.headers.append(("Content-Type", FRAME_TYPE))
        # -- station side --
        # onboard/sync.py: the link the last pass measured sizes the first flights and the send
        # gate's restart (a run's ``remembered``); this run's is kept for the next. Not in the
        # transfers before link memory.
        self.recorder = None if v1 or shared else LinkRecorder(station.conn, time.time(), loop.now)
        config = V1_CONFIG if v1 else SHARED_CONFIG if shared else SenderConfig()
        self.sender = TransferSender(
            sized_by_memory(config, None if self.recorder is None else self.recorder.start), 0.0
        )
        # onboard/sync.py: a new upload's OPEN carries its first chunk (link version 3); not in
        # the transfers before it.
        self.sender.first_flight = not (v1 or shared) and self.cfg.peer.speaks_link(FIRST_FLIGHT_LINK_VERSION)
        # Link version 4: ground clamps each connection's receive window to what the station asks.
        self.clamps = not (v1 or shared) and self.cfg.peer.speaks_link(WINDOW_CLAMP_LINK_VERSION)
        self.delivery = DeliveryRate()
        self.window_ask = WindowAsk()  # onboard/delivery.py DeliveryMeter's
        # onboard/delivery.py's send gate: bodies carrying a window leave within its budget.
        start = None if self.recorder is None else self.recorder.start
        self.gate = SendGate(
            self.delivery,
            rtt_floor_s=GATE_RTT_FLOOR_S,
            remembered_rate=None if start is None else start.rate_bytes_s,
            guessed=self.recorder is not None and self.recorder.guessed,
        )
        link.on_delivered = self._on_delivered
        if self.clamps:
            link.send_budget = lambda: self.gate.budget(self.loop.now)
        self.pool: list[HttpClient] = []
        # onboard/race.py: while the link is down, new connections come from one shared race.
        self.race = SimRace(loop, link, self._server)
        c = self.sender.config  # onboard/sync.py's TCPConnector(limit=max_window + query_streams + 2)
        self.limit = c.max_window + c.query_streams + 2
        self.added: set[str] = set()
        self.dirty = True
        self.next_scan = 0.0
        self.poll = ReceiptsPoll(every_s=RECEIPTS_EVERY_S, max_s=RECEIPTS_MAX_S)
        self.receipts_changed = 0
        self.receipts_pending = False
        self.wake: Timer | None = None
        self.fatal: str | None = None
        self.requests = 0
        self.inflight: dict[int, HttpClient] = {}
        # Hedged requests (Outgoing.hedge): the copies of each seq still under way, and the
        # seqs already answered (a later copy's answer is only counted).
        self.copies: dict[int, list[HttpClient]] = {}
        self.hedges_answered: set[int] = set()
        self.warming = False
        self.warm_next = 0.0
        self.warm_retry_s = WARM_RETRY_S
        self.warm_at = 0.0
        self.warm_ok_at: float | None = None
        self.warm_beat = False  # the GET under way is a heartbeat on the kept connection
        self.warm_timer: Timer | None = None  # its answer is late (the sender's race_after_s)
        self.answered_at = 0.0
        self.warm_request_bytes = 0
        self.sent: dict[str, RangeSet] = {}
        # HTTP bytes by request kind (open / chunk / receipts / health), requests handed to the link.
        self.traffic: dict[str, dict[str, int]] = {}
        self.bundle_opens: list[tuple[int, int, int]] = []  # RunResult.bundle_opens
        self._open_sizes: dict[int, tuple[int, int]] = {}  # seq → (bundle bytes, request bytes)
        self.resent_bytes = 0
        # -- ground side --
        self.service = LinkService(ground.home)
        self.aio: asyncio.AbstractEventLoop = ground.aio
        self.seen_items = 0
        self.kept_partial_bytes = 0
        self.keys: dict[str, TransferKey] = {}  # transfers under way, by name
        self.sizes: dict[str, int] = {}
        self.committed_bytes = 0

    # ------------------------------------------------------------------ station side
    def kick(self) -> None:
        """A post was queued: sync plans it at its next look at the queue (``_watch_queue``,
        every QUEUE_POLL_S), not at its next rescan."""
        self.dirty = True
        self.next_scan = min(self.next_scan, math.ceil(self.loop.now / QUEUE_POLL_S) * QUEUE_POLL_S)
        self._schedule(max(self.loop.now, self.next_scan))

    def _rescan(self) -> None:
        """Something the plan depends on changed: the next rescan (within RESCAN_S) sees it."""
        self.dirty = True
        self._schedule(max(self.loop.now, self.next_scan))

    def _schedule(self, when: float) -> None:
        if self.wake is not None and self.wake.when <= when and not self.wake.cancelled:
            return
        if self.wake is not None:
            self.wake.cancel()
        self.wake = self.loop.at(when, self._wake)

    def _wake(self) -> None:
        self.wake = None
        self.step()

    def step(self) -> None:
        """One turn of onboard/sync.py's loop, at the virtual now."""
        now = self.loop.now
        if self.dirty and now >= self.next_scan:
            # Scanning is event-driven here (sync rescans every second whether or not a post
            # arrived); the result is the same, minus 86,400 empty scans a day.
            self.dirty = False
            self.next_scan = now + RESCAN_S
            hold = self.sender.link_up and not self.sender.link_suspect  # as onboard/sync.py
            onboard_link.plan(self.station.home, self.station.conn, self.cfg.peer, hold_text=hold)
            for p in onboard_link.active_transfers(self.station.home, self.station.conn):
                if p.spec.key.name not in self.added:
                    self.added.add(p.spec.key.name)
                    self.keys[p.spec.key.name] = p.spec.key
                    self.sizes[p.spec.key.name] = p.spec.size_bytes
                    self.sender.add(p.spec, p.source, now)
        # onboard/sync.py _ReceiptsExchange.step: a bundle's OPEN asks for receipts too.
        with_open = self.cfg.peer.speaks_link(2) and not self.receipts_pending
        since = int(onboard_link.get_state(self.station.conn, RECEIPTS_CURSOR, "0")) if with_open else None
        self.sender.open_receipts_since = since
        self.sender.open_receipts_versions = open_receipt_versions(self.cfg.peer)
        if not self.receipts_pending and self.poll.due(now):
            if awaiting_news(self.station.conn):
                cursor = int(onboard_link.get_state(self.station.conn, RECEIPTS_CURSOR, "0"))
                self.sender.request_receipts(cursor, versions=receipt_versions(self.cfg.peer))
                self.receipts_pending, self.receipts_changed = True, 0
                self.poll.next_at = now + self.poll.interval_s
            else:
                # Sync re-checks every second; only a bundle commit (a kick) can make something
                # await receipts, so virtual time need not wake for it.
                self.poll.idle(now, math.inf)
        d = self.sender.next_deadline()
        if d is not None and d <= now:
            self.sender.handle_timeout(now)
        for out in self.sender.data_to_send(now):
            self._carry(
                out.seq,
                out.data,
                out.deadline,
                out.race_every_s,
                out.hedge,
                out.race_after_s,
                out.payload_bytes,
                out.copy_if_unacked,
            )
        self._events()
        self._remember(now)
        self._warm(now)
        times = [self.poll.next_at]
        if self.dirty:
            times.append(self.next_scan)
        if not self.warming and self.warm_next > now:
            times.append(self.warm_next)
        beat = self.sender.heartbeat_at
        if beat is not None and not self.warming:
            times.append(beat)
        d = self.sender.next_deadline()
        if d is not None:
            times.append(d)
        when = max(now + 0.01, min(times))
        if math.isfinite(when):  # nothing to wait for: the next post or answer wakes it
            self._schedule(when)

    def _client(self) -> HttpClient | None:
        for c in self.pool:
            if not c.busy and c.conn is not None and not c.conn.closed:
                return c  # a live keep-alive connection first, as aiohttp's pool does
        for c in self.pool:
            if not c.busy:
                return c
        if len(self.pool) < self.limit:
            c = HttpClient(self.loop, self.link, self._server)
            c.idle_timeout_s = None  # sync sets only ClientTimeout(total=deadline - now)
            if not self.v1:
                c.auto_headers = LINK_CLIENT_HEADERS  # sync's skip_auto_headers
            c.keepalive_s = KEEPALIVE_S  # sync's TCPConnector(keepalive_timeout=KEEPALIVE_S)
            c.on_idle_lost = self._idle_lost
            self.pool.append(c)
            return c
        return None  # pragma: no cover - the sender's window is below the pool limit

    def _server(self) -> ServerConn:
        """Ground's end of a new connection."""
        return ServerConn(
            self.handle,
            None if self.v1 else self.keep_partial,
            SERVER_HEADERS if self.v1 else LINK_SERVER_HEADERS,
        )

    def _connected(self) -> bool:
        return any(c.conn is not None and not c.conn.closed for c in self.pool)

    def _idle_lost(self) -> None:
        """A pooled connection went while idle: sync's next turn may open another."""
        self._schedule(self.loop.now + NOTICE_S)

    def _warm(self, now: float) -> None:
        """onboard/sync.py's ``_ConnectionKeeper``: nothing in flight and no connection open, so
        open one with ``GET /v1/health`` (the next post's OPEN then skips the TCP handshake);
        with one open, the same GET as the sender's heartbeat (``heartbeat_at``)."""
        if self.warming or self.inflight:
            return
        beat = self._connected()
        if beat:
            due = self.sender.heartbeat_at
            if due is None or now < due:
                return
        else:
            # The link worked since the last attempt: the connection was lost to a cut.
            fresh = self.answered_at > self.warm_at or (
                self.warm_ok_at is not None and now - self.warm_ok_at > 2 * WARM_RETRY_MAX_S
            )
            if not fresh and now < self.warm_next:
                return
            if fresh:
                self.warm_retry_s = WARM_RETRY_S
            self.warm_at = now
        c = self._client()
        if c is None:  # pragma: no cover - nothing is in flight, so the pool has room
            return
        self.warming, self.warm_beat = True, beat
        self.sender.ground_asked(now)
        late = self.sender.race_after_s
        if late is not None:
            self.warm_timer = self.loop.after(late, self._warm_late)
        c.request(
            "GET", "/v1/health", b"", [], self._warmed, self._warm_failed, total_timeout_s=WARM_TIMEOUT_S
        )
        t = self.traffic.setdefault(
            self._warm_kind(), {"requests": 0, "answered": 0, "request_bytes": 0, "response_bytes": 0}
        )
        t["requests"] += 1
        self.warm_request_bytes = c.request_wire_bytes

    def _warm_kind(self) -> str:
        """The traffic kind of the GET under way: a warm-up's, or the heartbeat's."""
        return "heartbeat" if self.warm_beat else "health"

    def _warm_late(self) -> None:
        """The GET is unanswered the sender's ``race_after_s``: the link may be dark."""
        self.warm_timer = None
        if self.warming and self.sender.ground_unanswered(self.loop.now) is not None:
            self._silenced()
            self._schedule(self.loop.now)  # a post held by Nagle's rule may race now

    def _silenced(self) -> None:
        """The link went silent: plain connects under way join the race now, not once their
        own ``race_after_s`` is up (onboard/sync.py ``_WatchedConnector.silenced``)."""
        for c in list(self.pool):
            c.suspect_now()

    def _warmed(self, resp: HttpResponse) -> None:
        self.warm_ok_at = self.loop.now
        self.sender.ground_heard(self.loop.now)
        self._warm_done()
        self._schedule(self.loop.now)  # the next heartbeat's time moved
        t = self.traffic[self._warm_kind()]
        t["answered"] += 1
        # Bytes counted once answered: an attempt into a dark sky sends SYNs, not the request.
        t["request_bytes"] += self.warm_request_bytes
        t["response_bytes"] += resp.wire_bytes

    def _warm_failed(self, reason: str) -> None:
        self.warm_ok_at = None
        self.sender.ground_ask_ended(self.loop.now)
        self._warm_done()
        self._schedule(max(self.loop.now, self.warm_next))

    def _warm_done(self) -> None:
        self.warming = False
        if self.warm_timer is not None:
            self.warm_timer.cancel()
            self.warm_timer = None
        if self.warm_beat:
            return  # a heartbeat: the warm-up's backoff is its own
        self.warm_next = self.loop.now + self.warm_retry_s
        self.warm_retry_s = min(self.warm_retry_s * 2, WARM_RETRY_MAX_S)

    def _carry(
        self,
        seq: int,
        data: bytes,
        deadline: float,
        race_every_s: float | None = None,
        hedge: bytes | None = None,
        race_after_s: float | None = None,
        payload_bytes: int = 0,
        copy_if_unacked: bytes | None = None,
    ) -> None:
        req = decode_request(data)
        kind = "chunk" if isinstance(req, Chunk) else "open" if isinstance(req, Open) else "receipts"
        if isinstance(req, Chunk | Open) and req.data:
            # Upload bytes handed to the link a second time (after a cut or a timeout; an OPEN
            # carries some too, link version 3). End-game copies are counted apart (stats()).
            offset = req.offset if isinstance(req, Chunk) else 0
            sent = self.sent.setdefault(req.key.name, RangeSet())
            end = offset + len(req.data)
            self.resent_bytes += len(req.data) - sum(b - a for a, b in sent.gaps(offset, end))
            sent.add(offset, end)
        if race_every_s is not None and not self.v1:
            self._drop_pooled()
        c = self._client()
        if c is None:
            self.sender.request_failed(seq, self.loop.now, "no connection available")
            return
        self.requests += 1
        self.inflight[seq] = c
        kept = c.conn is not None and not c.conn.closed and c.conn.established
        window = self._window_header(payload_bytes)
        c.request(
            "POST",
            "/v1/link",
            data,
            self.headers + window,
            lambda resp: self._first_answered(seq, c, resp, kind),
            lambda reason: self._first_failed(seq, c, reason),
            total_timeout_s=max(0.5, deadline - self.loop.now),
            race_every_s=None if self.v1 else race_every_s,
            race=self.race,
            on_begin=None if self.v1 else (lambda now: self._began(seq, now)),
            # onboard/sync.py: a plain connect unanswered race_after_s joins the race if suspect.
            race_after_s=None if self.v1 else race_after_s,
            on_unanswered=lambda: self._unanswered(seq),
            gated=bool(window),  # onboard/sync.py gates the bodies carrying a window
        )
        t = self.traffic.setdefault(
            kind, {"requests": 0, "answered": 0, "request_bytes": 0, "response_bytes": 0}
        )
        t["requests"] += 1
        t["request_bytes"] += c.request_wire_bytes
        if isinstance(req, Open) and req.key.kind is TransferKind.BUNDLE:
            self._open_sizes[seq] = (req.size_bytes, c.request_wire_bytes)
        if hedge is not None and race_every_s is not None and not self.v1:
            self._hedge(seq, hedge, deadline, c)
        after_s = self.sender.race_after_s
        if copy_if_unacked is not None and race_every_s is None and kept and after_s is not None:
            self.loop.after(after_s, self._kept_late, seq, c, copy_if_unacked, deadline)

    def _remember(self, now: float, *, force: bool = False) -> None:
        """onboard/sync.py ``_remember``: the link as measured, kept for the next start."""
        if self.recorder is None:
            return
        self.recorder.note(
            self.delivery.rate(),
            self.sender.base_rtt_s,
            wall_now=time.time(),
            link_limited=self.sender.bulk_in_flight and not self.sender.burst_recent(now),
        )
        self.recorder.flush(now, force=force)

    def finish(self) -> None:
        """The run is over: keep what was measured, as sync does when it stops."""
        self._remember(self.loop.now, force=True)

    def _on_delivered(self, now: float, delivered: int) -> None:
        base = self.sender.base_rtt_s
        if base is not None:
            self.delivery.observe(now, delivered, base)

    def _window_header(self, payload_bytes: int) -> list[tuple[str, str]]:
        """onboard/sync.py's window for a request carrying upload bytes (link version 4)."""
        if not self.clamps or not carries_window(
            payload_bytes, self.sender.config, self.sender.bulk_in_flight
        ):
            return []
        rate, base = self.delivery.rate(), self.sender.path_rtt_s  # as sync's: not the base
        if base is None:
            return []
        now = self.loop.now
        busy = self.link.busy_count()
        if self.sender.queue_now:
            self.gate.link_queued()  # as DeliveryMeter.window does
        restart = self.gate.restart_budget(base)
        queue = self.sender.queue_recent(now)
        self.link.gate_counts_held = queue  # as DeliveryMeter.window notes it
        w = self.window_ask.ask(now, rate, base, busy + 1, queue, restart)  # (+1: its own)
        # onboard/sync.py ``_window``: held to the start's budget while the burst lasts, then
        # opening gradually to the rule's total (DeliveryMeter.gate).
        burst = self.sender.burst_recent(now)
        self.gate.hold(w if burst else None, busy, now, base, self.sender.burst_ends_at)
        return [(WINDOW_HEADER, str(w))]

    def _unanswered(self, seq: int) -> float | None:
        """A plain connect unanswered ``race_after_s``: the sender's step, if it is suspect;
        text held behind a bundle is planned again at the next rescan (sync's, within 1 s)."""
        step = self.sender.connect_unanswered(seq, self.loop.now)
        if step is not None:
            self._rescan()
        return step

    def _drop_pooled(self) -> None:
        """While a request races (the link down, or silent) sync takes no pooled connection
        and closes the idle ones (``_WatchedConnector._get``)."""
        for idle in self.pool:
            idle.drop_idle()

    def _kept_late(self, seq: int, c: HttpClient, data: bytes, deadline: float) -> None:
        """onboard/sync.py ``_Requests._watch_kept``: a text post on a kept connection whose
        bytes ground's TCP has not acknowledged after ``race_after_s`` gets a copy that races
        on a new connection, the link silent (TransferSender.kept_unacked)."""
        if self.inflight.get(seq) is not c or not c.busy or c.conn is None or c.conn.closed:
            return
        if c.conn.up.una >= c.conn.up.end:
            return  # acknowledged: ground has it, and holds the answer while it publishes
        step = self.sender.kept_unacked(seq, self.loop.now)
        if step is None:
            return
        self._drop_pooled()
        self._silenced()
        self._hedge(seq, data, deadline, c, race_every_s=step)
        self._rescan()  # text held behind it is planned again at sync's next rescan

    def _hedge(
        self, seq: int, data: bytes, deadline: float, first: HttpClient, *, race_every_s: float | None = None
    ) -> None:
        """onboard/sync.py's copy of a post written in the dark: the same request on a spare
        connection the race makes at the link's return (never a new attempt); with
        ``race_every_s``, a kept connection's post: on the race's own attempts."""
        c = self._client()
        if c is None:  # pragma: no cover - the pool has room beyond the window
            return
        self.copies[seq] = [first, c]
        t = self.traffic.setdefault(
            "hedge", {"requests": 0, "answered": 0, "request_bytes": 0, "response_bytes": 0}
        )

        def began(now: float) -> float | None:
            t["requests"] += 1  # a copy that found a connection: its bytes cross
            t["request_bytes"] += c.request_wire_bytes
            return self._began(seq, now)

        c.request(
            "POST",
            "/v1/link",
            data,
            self.headers,
            lambda resp: self._copy_answered(seq, c, resp, "open"),
            lambda reason: self._copy_failed(seq, c, reason),
            total_timeout_s=max(0.5, deadline - self.loop.now),
            race=self.race,
            race_every_s=race_every_s,
            on_begin=began,
            hedge=race_every_s is None,
        )

    def _began(self, seq: int, now: float) -> float | None:
        """A request began on a connection; a probe's raced connection may call the link back
        (TransferSender.request_began), and the streams then start at once, as sync's loop wakes."""
        was_up = self.sender.link_up
        later = self.sender.request_began(seq, now)
        base = self.sender.base_rtt_s
        if self.sender.link_up and not was_up:
            if base is not None:
                self.delivery.link_back(now, base)  # the windows measure afresh, as after the first bytes
            self._schedule(now)
        return later

    def _first_answered(self, seq: int, c: HttpClient, resp: HttpResponse, kind: str) -> None:
        if seq in self.copies or seq in self.hedges_answered:
            self._copy_answered(seq, c, resp, kind)
        else:
            self._answered(seq, resp, kind)

    def _first_failed(self, seq: int, c: HttpClient, reason: str) -> None:
        if seq in self.copies or seq in self.hedges_answered:
            self._copy_failed(seq, c, reason)
        else:
            self._failed(seq, reason)

    def _copy_answered(self, seq: int, c: HttpClient, resp: HttpResponse, kind: str) -> None:
        """A hedged request (or its copy) was answered: the first answer goes to the sender and
        a copy still waiting for a connection leaves the race; a later one is only counted
        (the cost of hedging)."""
        if seq in self.hedges_answered:
            self.hedges_answered.discard(seq)
            self.traffic["hedge"]["response_bytes"] += resp.wire_bytes
            return
        left = self.copies.pop(seq, [])
        for other in left:
            if other is c:
                continue
            if other.racing is not None:
                other._fail("the other copy was answered")  # (copies is popped: not told)
            elif other.busy:
                self.hedges_answered.add(seq)  # it is on a connection: its answer will come
        if left and c is not left[0]:
            self.traffic["hedge"]["answered"] += 1  # the copy, not the request, was answered
        self._answered(seq, resp, kind)

    def _copy_failed(self, seq: int, c: HttpClient, reason: str) -> None:
        """A copy failed: the sender hears of it only once no copy is left."""
        if seq in self.hedges_answered:
            self.hedges_answered.discard(seq)
            return
        left = self.copies.get(seq)
        if left is None:
            return  # answered already (by the other copy)
        if c in left:
            left.remove(c)
        if not left:
            del self.copies[seq]
            self._failed(seq, reason)

    def _answered(self, seq: int, resp: HttpResponse, kind: str) -> None:
        self.inflight.pop(seq, None)
        sizes = self._open_sizes.pop(seq, None)
        if sizes is not None and resp.status == 200:
            self.bundle_opens.append((*sizes, resp.wire_bytes))
        self.traffic[kind]["answered"] += 1
        self.traffic[kind]["response_bytes"] += resp.wire_bytes
        now = self.answered_at = self.loop.now
        ctype = dict((k.lower(), v) for k, v in resp.headers).get("content-type", "")
        if resp.status == 200:
            self.sender.receive(resp.body, now, started_at=resp.started_at)
        elif ctype.startswith("application/json"):
            try:
                j = json.loads(resp.body)
                self.sender.receive_error(
                    seq, str(j["error"]), str(j.get("message", "")), bool(j.get("retryable", True)), now
                )
            except (ValueError, KeyError, TypeError):
                self.sender.request_failed(seq, now, f"HTTP {resp.status} with an unreadable body")
        else:
            self.sender.request_failed(seq, now, f"HTTP {resp.status}")
        self.step()

    def _failed(self, seq: int, reason: str) -> None:
        self.inflight.pop(seq, None)
        self._open_sizes.pop(seq, None)
        self.sender.request_failed(seq, self.loop.now, reason)
        self.step()

    def _events(self) -> None:
        conn = self.station.conn
        while (ev := self.sender.next_event()) is not None:
            if isinstance(ev, TransferProgress):
                onboard_link.record_progress(conn, ev.key, ev.acked_bytes)
            elif isinstance(ev, TransferDone):
                onboard_link.record_done(conn, ev.key, ev.state.name == "COMMITTED", ev.code, ev.message)
                self.keys.pop(ev.key.name, None)
                if ev.state.name == "COMMITTED":
                    self.committed_bytes += self.sizes.get(ev.key.name, 0)
                if ev.state.name != "COMMITTED":
                    self.tracker.rejected.append(f"{ev.key.name}: [{ev.code}] {ev.message}")
                if ev.key.kind.name == "BUNDLE" and not ev.with_receipts:
                    self.poll.kick()  # new posts on ground: ask for their receipts
                if ev.key.kind.name == "BUNDLE":
                    # Text that waited for this bundle (onboard link.plan) goes at once, as in sync.
                    self.dirty, self.next_scan = True, self.loop.now
            elif isinstance(ev, ReceiptsReceived):
                doc = verify_document(conn, ev.document, self.cfg.ground_key)
                self.receipts_changed += apply_document(conn, doc).changed
                was = int(onboard_link.get_state(conn, RECEIPTS_CURSOR, "0"))
                onboard_link.set_state(conn, RECEIPTS_CURSOR, str(max(was, ev.next_since)))
                if ev.with_open and self.receipts_pending:
                    continue  # the exchange under way finishes as it would have
                if ev.more:
                    self.sender.request_receipts(ev.next_since)
                    self.receipts_pending = True
                else:
                    self.receipts_pending = False
                    self.poll.answered(self.loop.now, self.receipts_changed)
                    self.receipts_changed = 0
            elif isinstance(ev, LinkDown):
                # sync rescans every second: text held behind a bundle (Nagle's rule, only
                # while the link is up) is planned on its own now, and races for the return.
                self.dirty = True
            elif isinstance(ev, LinkFatal):
                self.fatal = f"[{ev.code}] {ev.message}"

    # ------------------------------------------------------------------ ground side
    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        """`ground serve`'s POST /v1/link (and GET /v1/health), as ground/server.py answers them."""
        if method == "GET" and target == "/v1/health":
            return 200, "application/json; charset=utf-8", HEALTH
        if method != "POST" or target != "/v1/link":
            return 404, "application/json", json.dumps({"error": "http_404", "message": "Not Found"}).encode()
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        station = authenticate(self.ground.home.conn, token)
        if station is None:
            return (
                401,
                "application/json",
                b'{"error": "unauthorized", "message": "bad token", "retryable": false}',
            )
        now = EPOCH_MS / 1000 + self.loop.now
        rid = self.service.receiver.receive(body, now, station=station.name)
        self.aio.run_until_complete(self._drain(now))
        resp = self.service.receiver.response_for(rid)
        wanted = self.service.deferred.pop(rid, None)
        if resp is None and wanted is not None:
            # ground/server.py holds an OPEN's answer with receipts until its publisher has
            # tried the bundle's posts: here publishing takes no virtual time (PUBLISH_WAKE_S).
            self._note_new_items()
            self.ground.publish(self.loop.now)
            self.service.finish_receipts(wanted, round(now * 1000))
            resp = self.service.receiver.response_for(rid)
        if resp is None:  # pragma: no cover - the receiver always answers once drained
            return 503, "application/json", b'{"error": "busy", "message": "no answer", "retryable": true}'
        self.service._record_traffic(station.name, SimpleNamespace(remote="sim"), len(body), len(resp))  # type: ignore[arg-type,unused-ignore]
        self._note_new_items()
        frame = decode_response(resp)
        if isinstance(frame, ErrorFrame):
            err = {"error": frame.code, "message": frame.message, "retryable": frame.retryable}
            return HTTP_STATUS.get(frame.code, 400), "application/json", json.dumps(err).encode()
        return 200, "" if not self.v1 else FRAME_TYPE, resp  # ground sends a frame untyped

    def keep_partial(self, prefix: bytes) -> None:
        """ground/server.py ``_keep_partial``: store what arrived of a CHUNK cut short. The
        station's token was checked when the request began (ground reads headers first)."""
        chunk = salvage_chunk(prefix)
        if chunk is None:
            return
        now = EPOCH_MS / 1000 + self.loop.now
        rid = self.service.receiver.receive(encode_request(chunk), now, station=STATION)
        self.aio.run_until_complete(self._drain(now))
        self.service.receiver.response_for(rid)
        self.kept_partial_bytes += len(chunk.data)

    async def _drain(self, now: float) -> None:
        async with self.service.lock:
            await self.service._drain(now)

    def _note_new_items(self) -> None:
        rows = self.ground.home.conn.execute(
            "SELECT rowid, id FROM items WHERE rowid > ? ORDER BY rowid", (self.seen_items,)
        ).fetchall()
        if rows:
            self.seen_items = rows[-1][0]
            self.tracker.received(tuple(r[1] for r in rows), self.loop.now)
            self.schedule_publish()

    def stats(self) -> dict[str, int]:
        acked = self.committed_bytes
        for key in self.keys.values():
            got = self.sender.progress(key)
            acked += got[0] if got is not None else 0
        copies = self.sender.stats.end_game_bytes
        return {
            "requests": self.requests,
            "app_resent_bytes": self.resent_bytes - copies,
            "acked_bytes": acked,
        }
