"""`onboard sync`: drives the transfer sender over HTTP (aiohttp) until the queue is across.

Each request frame is one ``POST /v1/link``; up to the sender's ``streams`` run at once on
separate connections (parallel TCP streams: more of them while the round trips of its own
small requests show the link has room, docs/link.md) so a 1.4 s round trip and random loss do
not idle the link. The sender machine decides what to send, when to give up on a request and
how long to back off; this module carries bytes, measures each request's round trip, keeps the
queue's tables up to date and fetches receipts.

``sync`` never hangs forever: without ``watch`` it stops with an error once the link has
been down for ``give_up_after_s``; with ``watch`` it keeps probing (every few seconds at
most) until stopped, re-reading the queue so new posts leave at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import errno
import json
import logging
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import aiohappyeyeballs
import aiohttp

from protocol.capabilities import Capabilities
from protocol.link_memory import LinkMemory, first_flight_bytes, start_streams
from protocol.receipts import RECEIPTS_VERSION, RECEIPTS_VERSION_COMPACT, RECEIPTS_VERSIONS
from protocol.transfer import (
    LinkDown,
    LinkFatal,
    LinkUp,
    ReceiptsReceived,
    SenderConfig,
    TransferDone,
    TransferProgress,
    TransferSender,
)
from protocol.transfer_wire import (
    FIRST_FLIGHT_LINK_VERSION,
    OPEN_RECEIPTS_VERSIONS,
    TransferKind,
    UploadState,
)
from protocol.window_clamp import WINDOW_CLAMP_LINK_VERSION, WINDOW_HEADER, carries_window

from . import link, link_status, queue
from .delivery import DeliveryMeter, unacked
from .errors import OnboardError
from .home import Home
from .race import ConnectRace
from .receipts import (
    CURSOR_KEY,
    MissingTemplate,
    ReceiptsPoll,
    apply_document,
    awaiting_receipts,
    claims,
    cursor,
    heal_applied,
    heal_begins,
    verify_document,
    versions_to_ask,
)
from .remembered import LinkRecorder

log = logging.getLogger(__name__)

FRAME_TYPE = "application/x-orbitpost-frame"
RECEIPTS_CURSOR = CURSOR_KEY  # a change seq (docs/PROTOCOL.md §9)
# A post after a quiet spell should not wait a round trip for a TCP handshake (0.6 s through
# a GEO relay), so `sync --watch` keeps one connection to ground open: idle, it carries only the
# sender's heartbeat (a GET /v1/health per 60 s heard nothing; TransferSender.heartbeat_at).
# aiohttp's default keep-alive is 15 s; an hour stays under ground's keepalive_timeout
# (ground/server.py, so the client, not ground, closes an idle connection). When the connection
# is lost (a cut, loss of signal, that hour), a GET /v1/health (~300 bytes) opens another.
# Attempts are spaced WARM_RETRY_S, doubling to WARM_RETRY_MAX_S, and start again from
# WARM_RETRY_S only once ground has answered a transfer request or a warm connection has lasted
# twice that: a 45-minute lunar gap costs ~10 attempts, not 90, and a proxy that closes every
# connection after one answer gets a GET every 5 minutes, not a loop. A post never waits for it.
KEEPALIVE_S = 3600.0
# aiohttp's default request headers ground never reads: ~90 bytes of every request, a third of
# a lone text post's bundle (issue 14). Host and Authorization stay.
LINK_SKIP_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
WARM_TIMEOUT_S = 60.0
# While the link is down new connections race (onboard/race.py); each attempt's socket gives
# up after a SYN and one retry (TCP_SYNCNT=1, ~3 s), so the next attempts carry on probing.
RACE_SYN_RETRIES = 1
WARM_RETRY_S = 30.0
WARM_RETRY_MAX_S = 300.0
# A post written by another process (`onboard post`, the compose page) commits to the queue;
# sync looks for such a commit this often (SQLite's PRAGMA data_version, one cheap read) and
# plans at once, not at its next rescan: at 0.6 s RTT a post written just before a link's
# return waited up to a 1 s rescan, 1.7 RTT, before its race began (issue 14: 2 RTT).
QUEUE_POLL_S = 0.1


# Set in the task carrying a copy of a request (Outgoing.hedge): its connection comes only from
# the race's attempts already under way (ConnectRace.hedge), never from a new attempt.
_COPY: contextvars.ContextVar[bool] = contextvars.ContextVar("orbitpost_link_copy", default=False)


@dataclass(frozen=True, slots=True)
class _Suspect:
    """A request sent while the link is believed up (Outgoing.race_after_s): its new
    connection unanswered ``after_s``, ``unanswered()`` (the sender's ``connect_unanswered``)
    gives the step to join the shared race at, or None."""

    after_s: float
    unanswered: Callable[[], float | None]


# Set in the task carrying such a request (its context only), read where it connects.
_SUSPECT: contextvars.ContextVar[_Suspect | None] = contextvars.ContextVar(
    "orbitpost_link_suspect", default=None
)
# The connection a request got from the pool (set in its task by _WatchedConnector.connect):
# its gated body writes a slice only once the last has left that socket (DeliveryMeter.gated).
_TRANSPORT: contextvars.ContextVar[asyncio.BaseTransport | None] = contextvars.ContextVar(
    "orbitpost_link_transport", default=None
)
# Whether that connection was kept from an earlier request (the pool's), not made for this one:
# a text post on a kept connection is copied if its bytes go unacknowledged (_Requests).
_KEPT: contextvars.ContextVar[bool] = contextvars.ContextVar("orbitpost_link_kept", default=False)


class SyncError(OnboardError):
    """The sync could not finish (link down too long, credential refused)."""


@dataclass(slots=True)
class SyncStatus:
    """What a progress display shows; updated as the sync runs."""

    link_up: bool = True
    reason: str = ""
    total_bytes: int = 0
    acked_bytes: int = 0
    transfers_left: int = 0
    committed: int = 0
    rejected: int = 0
    receipts: int = 0
    items_received: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncResult:
    committed: int
    rejected: int
    receipts: int
    requests: int
    request_bytes: int
    chunk_bytes: int
    max_chunk_bytes: int
    failures: int
    duration_s: float
    pending_items: int
    # "ITEM → account: reason" for each delivery ground refused (per-item rejection, §16).
    refused: tuple[str, ...] = ()
    # Why each JPEG that could have been sent smaller travelled as it is (the encoder's memory
    # bound, photocodec/child.py), one line per photo, for the summary.
    photos_as_is: tuple[str, ...] = ()


def _connector(
    config: SenderConfig, ssl: aiohttp.Fingerprint | bool, meter: DeliveryMeter | None = None
) -> _WatchedConnector:
    """sync's connection pool: one connection per stream (parallel streams, docs/link.md) and
    per request carrying no data (query_streams), plus the warm-up's. Its own connects keep
    the kernel's SYN retries; only the race's attempts give up after one (``_racing_socket``):
    on a long path behind a queue a SYN-ACK takes over 3 s (4.7-6.2 s on a filled 2.6 s link),
    and a plain connect that gave up then would fail its request and call the link down.
    With ``meter`` (link version 4) every socket of both kinds is watched for what it delivers."""
    plain: Callable[[Any], socket.socket] = _plain_socket
    racing: Callable[[Any], socket.socket] = _racing_socket
    if meter is not None:
        plain, racing = meter.watch(plain), meter.watch(racing)
    return _WatchedConnector(
        limit=config.max_window + config.query_streams + 2,
        keepalive_timeout=KEEPALIVE_S,
        ssl=ssl,
        socket_factory=plain,
        race_socket_factory=racing,
    )


def _plain_socket(addr_info: Any) -> socket.socket:
    """A socket for aiohttp's own connects, as aiohttp makes one (the kernel's SYN retries)."""
    family, type_, proto, _, _ = addr_info
    return socket.socket(family=family, type=type_, proto=proto)


class _WatchedConnector(aiohttp.TCPConnector):
    """aiohttp's pool, remembering the transports it hands out, so sync can tell whether a
    connection to ground is still open (a response releases its connection before sync sees it).

    With ``race_every_s`` set (the sender's, while the link is down) a new connection comes
    from one race shared by every request waiting for one (onboard/race.py): an attempt each
    ``race_every_s``, whichever connects serves the next waiting request, a refusal fails them
    all at once. Otherwise aiohttp connects as usual."""

    def __init__(
        self, *, race_socket_factory: Callable[[Any], socket.socket] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self._transports: list[asyncio.BaseTransport] = []
        self._silence: set[asyncio.Future[None]] = set()  # plain connects waiting out after_s
        self.race_every_s: float | None = None
        # The race's attempts only (not aiohttp's own connects): one SYN retry each.
        self.race = ConnectRace(race_socket_factory or _racing_socket)

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: list[Any],
        req: Any,
        timeout: aiohttp.ClientTimeout,
        client_error: type[Exception] = aiohttp.ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, Any]:
        every_s = self.race_every_s
        # A connection the race made as the link returned, if one is left: no handshake.
        sock = self.race.take(addr_infos[0]) if addr_infos else None
        if sock is None and _COPY.get():
            sock = await self.race.hedge(addr_infos[0]) if addr_infos else None
            if sock is None:
                exc = OSError(errno.ECONNABORTED, "no spare connection for the copy")
                raise client_error(req.connection_key, exc)
        if sock is None:
            suspect = _SUSPECT.get()
            if every_s is None and suspect is not None and addr_infos:
                # Believed up: a plain TCP connect, and the race too if it goes unanswered.
                sock = await self._plain_or_raced(addr_infos, suspect, req, client_error)
            elif every_s is None or not addr_infos:
                return await super()._wrap_create_connection(
                    *args,
                    addr_infos=addr_infos,
                    req=req,
                    timeout=timeout,
                    client_error=client_error,
                    **kwargs,
                )
            else:
                try:
                    # Ground's one address (a name with several: the next after a refusal, as aiohttp).
                    sock = await self.race.connect(addr_infos[0], every_s)
                except OSError as exc:
                    raise client_error(req.connection_key, exc) from exc
        try:
            return await self._wrap_existing_connection(
                *args, req=req, timeout=timeout, client_error=client_error, sock=sock, **kwargs
            )
        except BaseException:
            sock.close()
            raise

    async def _plain_or_raced(
        self, addr_infos: list[Any], suspect: _Suspect, req: Any, client_error: type[Exception]
    ) -> socket.socket:
        """A TCP connect as aiohttp makes it, for a request sent while the link is believed
        up; unanswered after ``suspect.after_s`` and if the sender says so (the link may have
        gone dark with nothing in flight to tell), the shared race as well (docs/link.md
        "After a loss of signal"). The first to connect serves the request and the other is
        dropped; a refusal from either, or the plain connect giving up, fails it at once. Only
        TCP is timed: TLS follows on the socket returned (``_wrap_existing_connection``)."""
        plain: asyncio.Future[socket.socket] = asyncio.ensure_future(
            aiohappyeyeballs.start_connection(
                addr_infos=addr_infos,
                local_addr_infos=self._local_addr_infos,
                happy_eyeballs_delay=self._happy_eyeballs_delay,
                interleave=self._interleave,
                loop=self._loop,
                socket_factory=self._socket_factory,
            )
        )
        raced: asyncio.Future[socket.socket] | None = None
        won: asyncio.Future[socket.socket] | None = None
        silence: asyncio.Future[None] = self._loop.create_future()
        self._silence.add(silence)
        try:
            # Unanswered after_s, or the link went silent first (``silenced``): race too.
            either: set[asyncio.Future[Any]] = {plain, silence}
            await asyncio.wait(either, timeout=suspect.after_s, return_when=asyncio.FIRST_COMPLETED)
            self._silence.discard(silence)
            every_s = None if plain.done() else suspect.unanswered()
            if every_s is not None:
                raced = asyncio.ensure_future(self.race.connect(addr_infos[0], every_s))
                await asyncio.wait({plain, raced}, return_when=asyncio.FIRST_COMPLETED)
            # Whatever the plain connect came to counts: connected, refused, or given up (a
            # SYN and one retry unanswered, ~3 s: the request fails and the link is called
            # down as before; the race's attempts go on for the next request, a probe).
            won = plain if raced is None or plain.done() else raced
            try:
                return await won
            except OSError as exc:
                raise client_error(req.connection_key, exc) from exc
        finally:
            self._silence.discard(silence)
            for task in (plain, raced):
                if task is None or task is won:
                    continue
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                elif not task.cancelled() and task.exception() is None:
                    task.result().close()  # both connected at once: the other serves
            if raced is not None and won is plain and plain.done() and plain.exception() is None:
                self.race.settle()  # the link answered: the attempts under way would only load ground

    def silenced(self) -> None:
        """The sender calls the link silent (an ask of ours unanswered): a plain connect still
        waiting out its ``after_s`` joins the race now. Its SYN may be one the dark took, and
        the kernel's next comes a second after it (docs/link.md "A short dark")."""
        waiting, self._silence = self._silence, set()
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)

    async def _get(self, key: Any, *args: Any, **kwargs: Any) -> aiohttp.connector.Connection | None:
        """A pooled connection for the request, unless the link is down: then none, and the
        idle ones are closed (docs/link.md "After a loss of signal").

        A pooled connection lived through what brought the link down. A dark spell drops
        packets without closing connections, so a probe written into one waits out TCP's
        backed-off retransmission timer after the return (seconds to over a minute), while
        the race's new connections are answered within a round trip."""
        if self.race_every_s is not None:
            for proto, _ in self._conns.pop(key, ()):
                proto.close()
            return None
        got: aiohttp.connector.Connection | None = await super()._get(key, *args, **kwargs)
        return got

    def _close(self, *args: Any, **kwargs: Any) -> Any:
        self.race.close()  # (both aiohttp's close() and the session's end come through here)
        return super()._close(*args, **kwargs)

    async def connect(self, *args: Any, **kwargs: Any) -> aiohttp.connector.Connection:
        conn = await super().connect(*args, **kwargs)
        t = conn.transport
        _TRANSPORT.set(t)  # (the request's task: its gated body waits on this connection)
        self._transports = [x for x in self._transports if not x.is_closing()]
        _KEPT.set(t is not None and t in self._transports)
        if t is not None and t not in self._transports:
            self._transports.append(t)
        return conn

    def open(self) -> bool:
        """Is a connection still open (cut, expired and closed ones are closing)?"""
        return bool(self.transports())

    def transports(self) -> list[asyncio.BaseTransport]:
        """The connections still open."""
        self._transports = [x for x in self._transports if not x.is_closing()]
        return list(self._transports)


def _racing_socket(addr_info: Any) -> socket.socket:
    """A connection attempt's socket: one SYN retry (Linux TCP_SYNCNT), so each raced attempt
    ends after 3 s and the next ones carry on probing (ConnectRace's socket factory)."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    syncnt = getattr(socket, "TCP_SYNCNT", None)
    if syncnt is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, syncnt, RACE_SYN_RETRIES)
    return sock


@dataclass(slots=True)
class _Timing:
    """When a request began on an open connection (aiohttp's trace context), and whom to tell."""

    started_at: float | None = None
    on_begin: Callable[[float], None] | None = None


async def _headers_sent(
    _session: aiohttp.ClientSession, ctx: SimpleNamespace, _params: aiohttp.TraceRequestHeadersSentParams
) -> None:
    """A request began on an open connection: its round trip is measured from here, so a TCP
    handshake does not count as path delay (the sender sizes its streams from these)."""
    timing = ctx.trace_request_ctx
    if isinstance(timing, _Timing):
        timing.started_at = time.monotonic()
        if timing.on_begin is not None:
            timing.on_begin(timing.started_at)


def _trace_config() -> aiohttp.TraceConfig:
    tc = aiohttp.TraceConfig()
    tc.on_request_headers_sent.append(_headers_sent)
    return tc


def _pending_items(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COUNT(*) FROM items WHERE status IN ('queued', 'sending')").fetchone()
    return int(row[0])


def awaiting_news(conn: sqlite3.Connection) -> int:
    """What ground may have news of: ``awaiting_receipts`` less the deliveries still 'sending'
    (their bundle is not committed on ground yet, so a receipts request could only come back
    empty: ~400 bytes of a lone text post's downlink, issue 14). Its commit kicks the poll."""
    (sending,) = conn.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'sending'").fetchone()
    return max(0, awaiting_receipts(conn) - int(sending))


def _unsettled_deliveries(conn: sqlite3.Connection) -> int:
    """Deliveries ground has not settled, and cancels/retracts without an outcome yet (§9)."""
    return awaiting_receipts(conn)


class _ConnectionKeeper:
    """Connection keeping for `sync --watch`: one connection to ground stays open so a post
    never waits a TCP handshake; when it is lost, a GET /v1/health opens another, attempts
    spaced as the module docstring's WARM_* constants say. With one open and nothing in
    flight, the same GET is the sender's heartbeat (``TransferSender.heartbeat_at``): either
    unanswered the sender's ``race_after_s`` tells it the link may be dark."""

    def __init__(
        self,
        health_url: str,
        connector: _WatchedConnector,
        wake: asyncio.Event,
        sender: TransferSender,
        on_contact: Callable[[], None] = lambda: None,
    ) -> None:
        self._health_url = health_url
        self._on_contact = on_contact  # ground answered (the compose page's link status)
        self._connector = connector
        self._wake = wake
        self._sender = sender
        self._task: asyncio.Task[None] | None = None
        self._started_at = 0.0  # when the last warm-up started
        self._ok_at: float | None = None  # when the last one succeeded (None: it failed)
        self._next_at = 0.0
        self._retry_s = WARM_RETRY_S

    def step(
        self, session: aiohttp.ClientSession, now: float, *, requests_open: bool, answered_at: float
    ) -> None:
        """Start a warm-up if no request and no connection is open and one is due, or the
        heartbeat if a connection is open and the sender says it is due.

        ``answered_at``: when ground last answered a transfer request."""
        if self._task is not None or requests_open:
            return
        if self._connector.open():
            due = self._sender.heartbeat_at
            if due is not None and now >= due:
                self._task = asyncio.ensure_future(self._warm(session, beat=True))
            return
        # The link worked since the last attempt: the connection was lost to a cut.
        fresh = answered_at > self._started_at or (
            self._ok_at is not None and now - self._ok_at > 2 * WARM_RETRY_MAX_S
        )
        if fresh or now >= self._next_at:
            if fresh:
                self._retry_s = WARM_RETRY_S
            self._started_at = now
            self._task = asyncio.ensure_future(self._warm(session, beat=False))

    async def _warm(self, session: aiohttp.ClientSession, *, beat: bool) -> None:
        """GET /v1/health: a warm-up opens a connection for the next post (kept alive by the
        pool); a heartbeat asks on the one open. Unanswered ``race_after_s``, the sender is told."""
        late = self._sender.race_after_s
        timer = None if late is None else asyncio.get_running_loop().call_later(late, self._late)
        self._sender.ground_asked(time.monotonic())
        heard = False
        try:
            timeout = aiohttp.ClientTimeout(total=WARM_TIMEOUT_S)
            async with session.get(self._health_url, timeout=timeout) as resp:
                await resp.read()
            self._ok_at = time.monotonic()
            self._sender.ground_heard(self._ok_at)
            heard = True
            self._on_contact()
        except (aiohttp.ClientError, TimeoutError, OSError):
            self._ok_at = None  # link down: the next attempt comes after the backoff
        finally:
            if not heard:
                self._sender.ground_ask_ended(time.monotonic())
            if timer is not None:
                timer.cancel()
            if not beat:  # a heartbeat leaves the warm-ups' backoff as it was
                self._next_at = time.monotonic() + self._retry_s
                self._retry_s = min(self._retry_s * 2, WARM_RETRY_MAX_S)
            self._task = None
            self._wake.set()

    def _late(self) -> None:
        """The GET is unanswered the sender's ``race_after_s``: the link may be dark."""
        if self._sender.ground_unanswered(time.monotonic()) is not None:
            self._connector.silenced()
            self._wake.set()  # a post held by Nagle's rule may race now

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


@dataclass(slots=True)
class _Copies:
    """The copies of one hedged request (Outgoing.hedge) under way: the first answer goes to
    the sender, a failure only once no copy is left."""

    left: int = 0
    answered: bool = False
    waiting: dict[asyncio.Task[None], _Timing] = field(default_factory=dict)

    def answer(self) -> bool:
        """A copy was answered: True for the first (a copy still without a connection is
        withdrawn; one on a connection finishes, its answer ignored)."""
        if self.answered:
            return False
        self.answered = True
        me = asyncio.current_task()
        for task, timing in self.waiting.items():
            if task is not me and timing.started_at is None:
                task.cancel()
        return True

    def failed(self) -> bool:
        """A copy failed: True if the sender should hear of it (no other copy is left)."""
        self.left -= 1
        return not self.answered and self.left <= 0


class _Requests:
    """The request loop's I/O: each frame the sender emits is one ``POST /v1/link`` on its own
    task; answers, errors and failures go back into the sender. A hedged frame (a text post
    written in the dark) goes a second time, on a connection the race makes anyway."""

    def __init__(
        self,
        sender: TransferSender,
        url: str,
        token: str,
        wake: asyncio.Event,
        on_contact: Callable[[], None] = lambda: None,
        window: Callable[[int], dict[str, str]] = lambda payload_bytes: {},
        body: Callable[[bytes, dict[str, str]], bytes | AsyncIterator[bytes]] = lambda data, headers: data,
        link_back: Callable[[float], None] = lambda now: None,
    ) -> None:
        self._sender = sender
        self._link_back = link_back  # a probe's connection called the link back (request_began)
        self._on_contact = on_contact  # ground answered (the compose page's link status)
        self._window = window  # the window header for a request with this many upload bytes
        self._body = body  # a request's body as written (the send gate may pace it)
        self._url = url
        # Only what ground reads (no Content-Type: a frame says what it is): see LINK_SKIP_HEADERS.
        self._headers = {"Authorization": f"Bearer {token}"}
        self._wake = wake
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.copy_tasks: set[asyncio.Task[None]] = set()  # the second copies of hedged frames
        self.answered_at = 0.0  # when ground last answered a transfer request

    def send_due(self, session: aiohttp.ClientSession, now: float) -> None:
        """Start a request for every frame the sender has ready."""
        for out in self._sender.data_to_send(now):
            connector = session.connector
            racing = isinstance(connector, _WatchedConnector) and out.race_every_s is not None
            if isinstance(connector, _WatchedConnector):
                connector.race_every_s = out.race_every_s
            hedged = out.hedge is not None and racing
            kept_copy = None if racing else out.copy_if_unacked
            # A kept connection's post starts alone: its copy joins only if that connection is silent.
            copies = _Copies(left=2) if hedged else _Copies(left=1) if kept_copy is not None else None
            timing = _Timing()
            headers = {**self._headers, **self._window(out.payload_bytes)}
            task = asyncio.ensure_future(
                self._carry(
                    session,
                    out.seq,
                    self._body(out.data, headers),
                    out.deadline,
                    timing,
                    copies,
                    headers=headers,
                    race_after_s=out.race_after_s,
                    kept_copy=kept_copy,
                )
            )
            self.tasks[out.seq] = task
            if copies is not None:
                copies.waiting[task] = timing
            if hedged and copies is not None:
                copy_timing = _Timing()
                copy = asyncio.ensure_future(
                    self._carry(
                        session, out.seq, out.hedge or b"", out.deadline, copy_timing, copies, copy=True
                    )
                )
                self.copy_tasks.add(copy)
                copy.add_done_callback(self.copy_tasks.discard)
                copies.waiting[copy] = copy_timing

    async def _carry(
        self,
        session: aiohttp.ClientSession,
        seq: int,
        data: bytes | AsyncIterator[bytes],
        deadline: float,
        timing: _Timing,
        copies: _Copies | None = None,
        *,
        copy: bool = False,
        headers: dict[str, str] | None = None,
        race_after_s: float | None = None,
        kept_copy: bytes | None = None,
        own_race: bool = False,
    ) -> None:
        sender = self._sender
        loop = asyncio.get_running_loop()
        if copy and not own_race:
            _COPY.set(True)  # (this task's context only) a connection the race makes anyway
        if race_after_s is not None:  # (likewise) a new connection unanswered that long races
            _SUSPECT.set(_Suspect(race_after_s, lambda: sender.connect_unanswered(seq, time.monotonic())))
        # The deadline, as a timeout the sender may push back once the request is on a
        # connection (a probe that raced for most of it: TransferSender.request_began).
        limit = asyncio.timeout(max(0.5, deadline - time.monotonic()))

        def began(at: float) -> None:
            was_up = sender.link_up
            later = sender.request_began(seq, at)
            if later is not None:
                limit.reschedule(loop.time() + max(0.5, later - time.monotonic()))
            if sender.link_up and not was_up:
                # A probe's raced connection called the link back: the streams go now, their
                # windows and the gate measuring afresh as after the first bytes of a return.
                self._link_back(at)
                self._wake.set()
            if kept_copy is not None and copies is not None and _KEPT.get():
                self._watch_kept(session, seq, kept_copy, deadline, copies, _TRANSPORT.get())

        timing.on_begin = began
        try:
            async with (
                limit,
                session.post(
                    self._url,
                    data=data,
                    headers=headers or self._headers,
                    timeout=aiohttp.ClientTimeout(total=None),
                    trace_request_ctx=timing,
                ) as resp,
            ):
                body = await resp.read()
                now = self.answered_at = time.monotonic()
                self._on_contact()
                if copies is not None and not copies.answer():
                    return  # the other copy was answered first
                if resp.status == 200:
                    sender.receive(body, now, started_at=timing.started_at)
                elif resp.content_type == "application/json":
                    try:
                        j = json.loads(body)
                        sender.receive_error(
                            seq,
                            str(j["error"]),
                            str(j.get("message", "")),
                            bool(j.get("retryable", True)),
                            now,
                        )
                    except (ValueError, KeyError, TypeError):
                        sender.request_failed(seq, now, f"HTTP {resp.status} with an unreadable body")
                else:
                    sender.request_failed(seq, now, f"HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if copies is None or copies.failed():
                sender.request_failed(seq, time.monotonic(), f"{type(exc).__name__}: {exc}".rstrip(": "))
        finally:
            if not copy:
                self.tasks.pop(seq, None)
            self._wake.set()

    def _watch_kept(
        self,
        session: aiohttp.ClientSession,
        seq: int,
        data: bytes,
        deadline: float,
        copies: _Copies,
        transport: asyncio.BaseTransport | None,
    ) -> None:
        """A text post began on a kept connection: if ground's TCP has not acknowledged its
        bytes after the sender's ``race_after_s``, the link may have gone dark unnoticed, and
        a copy races on a new connection (TransferSender.kept_unacked; docs/link.md "A short
        dark"). Where TCP_INFO cannot tell, the post waits on its connection as before."""
        after_s = self._sender.race_after_s
        if transport is None or after_s is None:
            return

        def late() -> None:
            if copies.answered or seq not in self.tasks or not unacked(transport):
                return
            step = self._sender.kept_unacked(seq, time.monotonic())
            if step is None:
                return
            connector = session.connector
            if isinstance(connector, _WatchedConnector):
                connector.race_every_s = step  # silent: no kept connection, the race's instead
                connector.silenced()
            timing = _Timing()
            coro = self._carry(session, seq, data, deadline, timing, copies, copy=True, own_race=True)
            # A fresh context: the copy is no suspect and no copy of the race's (_SUSPECT, _COPY).
            task = asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
            copies.left += 1
            copies.waiting[task] = timing
            self.copy_tasks.add(task)
            task.add_done_callback(self.copy_tasks.discard)
            self._wake.set()  # a post held by Nagle's rule may race now

        asyncio.get_running_loop().call_later(after_s, late)

    async def close(self) -> None:
        every = [*self.tasks.values(), *self.copy_tasks]
        for t in every:
            t.cancel()
        await asyncio.gather(*every, return_exceptions=True)


def receipt_versions(ground: Capabilities) -> tuple[int, ...]:
    """The receipts versions to ask ``ground`` for (docs/PROTOCOL.md §9.3): those both sides know,
    when its token lists any beyond 2; () otherwise, so an older ground gets the frame it reads."""
    both = sorted(ground.receipts & RECEIPTS_VERSIONS)
    return tuple(both) if any(v != RECEIPTS_VERSION for v in both) else ()


def open_receipt_versions(ground: Capabilities) -> tuple[int, ...]:
    """The receipts versions a bundle's OPEN lists (docs/PROTOCOL.md §9.5) to this ground."""
    return _open_listing(receipt_versions(ground))


def _open_listing(versions: tuple[int, ...]) -> tuple[int, ...]:
    """``versions`` when they go beyond what link version 2 implies (2 and 3); () otherwise, so
    a ground that does not list version 4 gets the OPEN it reads."""
    return versions if set(versions) - set(OPEN_RECEIPTS_VERSIONS) else ()


class _ReceiptsExchange:
    """Receipts polling: asks ground only while deliveries await receipts (``ReceiptsPoll``
    says when), follows ``more`` pages, applies each verified document to the queue."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        sender: TransferSender,
        poll: ReceiptsPoll,
        ground_key: bytes,
        versions: tuple[int, ...] = (),
        *,
        with_open: bool = False,
    ) -> None:
        self._conn = conn
        self._sender = sender
        self._ground_key = ground_key
        # Receipts versions to ask for (docs/PROTOCOL.md §9.3): () keeps the frame of before;
        # less version 4 while a heal is due (§9.5, ``versions_to_ask``).
        self._all_versions = versions
        self._versions = versions_to_ask(conn, versions)
        self._asked = versions  # what the last RECEIPTS request listed
        # Ground speaks link version 2: a bundle's OPEN brings its receipts back (issue 14).
        self._with_open = with_open
        self.poll = poll
        self.pending = False  # a request (or its further pages) is on its way
        self.done_once = False  # one exchange has finished in this sync
        self._changed = 0  # deliveries moved by the pages of the current exchange
        self.refused: list[str] = []  # "ITEM → account: reason" ground refused, for the summary

    def step(self, now: float) -> None:
        """Ask for receipts if due and something awaits them; let a bundle's OPEN ask for
        them too (link version 2) unless a RECEIPTS exchange is under way."""
        with_open = self._with_open and not self.pending
        since = int(link.get_state(self._conn, RECEIPTS_CURSOR, "0") or 0) if with_open else None
        self._sender.open_receipts_since = since
        # What a bundle's OPEN lists beside its cursor: () when that is link 2's own (2, 3).
        self._sender.open_receipts_versions = _open_listing(self._versions)
        if self.pending or not self.poll.due(now):
            return
        if awaiting_news(self._conn):
            self._request(cursor(self._conn))
            self.pending, self._changed = True, 0
            self.poll.next_at = now + self.poll.interval_s  # if the answer never comes
        else:
            self.poll.idle(now)

    def _request(self, since: int) -> None:
        self._asked = self._versions
        self._sender.request_receipts(since, claims(self._conn), self._versions)

    def received(self, ev: ReceiptsReceived) -> int:
        """Apply one page; returns how many receipts it held."""
        try:
            doc = verify_document(self._conn, ev.document, self._ground_key)
        except MissingTemplate as exc:
            return self._heal(ev, exc)
        applied = apply_document(self._conn, doc)
        heal_applied(self._conn, doc.version)
        self._versions = versions_to_ask(self._conn, self._all_versions)
        self._changed += applied.changed
        self.refused += applied.refused
        # Never backwards: a bundle's OPEN and a RECEIPTS request may both bring documents,
        # each covering everything up to its own next_since from a cursor at most this one.
        link.set_state(self._conn, RECEIPTS_CURSOR, str(max(cursor(self._conn), ev.next_since)))
        if ev.with_open and self.pending:
            return applied.receipts  # the exchange under way finishes as it would have
        if ev.more:
            self._request(ev.next_since)
            self.pending = True
        else:
            self.pending = False
            self.done_once = True
            self.poll.answered(time.monotonic(), self._changed)
            self._changed = 0
        return applied.receipts

    def _heal(self, ev: ReceiptsReceived, exc: MissingTemplate) -> int:
        """A document named a URL template this laptop lacks (§9.5): not applied, the cursor
        stays; ask again at once without version 4, unless an exchange under way will."""
        if not ev.with_open and RECEIPTS_VERSION_COMPACT not in self._asked:
            raise SyncError(
                f"ground answered a receipts request that left version 4 out with version 4 ({exc}); "
                "this ground does not follow docs/PROTOCOL.md §9.3: upgrade it, or link again with a token "
                "file from it (`onboard link add`)"
            )
        log.info("%s", heal_begins(self._conn, exc))
        self._versions = versions_to_ask(self._conn, self._all_versions)
        if ev.with_open and self.pending:
            return 0  # the exchange under way asks its next page without version 4
        self._request(cursor(self._conn))
        self.pending = True
        return 0

    def settled(self) -> bool:
        """Nothing more to ask ground for now (the one-shot sync may stop)."""
        return not self.pending and (self.done_once or not awaiting_receipts(self._conn))


class _Progress:
    """Progress: bytes acknowledged per transfer, summed into the ``SyncStatus`` shown."""

    def __init__(self, status: SyncStatus) -> None:
        self.status = status
        self._sizes: dict[str, int] = {}
        self._acked: dict[str, int] = {}

    def added(self, name: str, size_bytes: int) -> None:
        self._sizes[name] = size_bytes

    def acked(self, name: str, acked_bytes: int) -> int:
        """Record a transfer's acked bytes; returns how many more than before."""
        more = max(0, acked_bytes - self._acked.get(name, 0))
        self._acked[name] = acked_bytes
        return more

    def done(self, name: str, ok: bool) -> None:
        self._acked[name] = self._sizes.get(name, 0) if ok else self._acked.get(name, 0)
        self.status.committed += ok
        self.status.rejected += not ok

    def link(self, up: bool, reason: str) -> None:
        self.status.link_up, self.status.reason = up, reason

    def update(self, transfers_left: int) -> SyncStatus:
        s = self.status
        s.transfers_left = transfers_left
        s.total_bytes = sum(self._sizes.values())
        s.acked_bytes = sum(self._acked.values())
        return s


class _Planner:
    """What to send: transcodes photos off the event loop, plans transfers (link.plan) and
    hands new ones to the sender."""

    def __init__(
        self,
        home: Home,
        conn: sqlite3.Connection,
        peer: Capabilities,
        sender: TransferSender,
        progress: _Progress,
        wake: asyncio.Event,
    ) -> None:
        self._home, self._conn, self._peer = home, conn, peer
        self._sender, self._progress, self._wake = sender, progress, wake
        self._added: set[str] = set()
        self.prep: asyncio.Future[None] | None = None
        self._preparing: frozenset[bytes] = frozenset()
        self.as_is: list[str] = []  # "photo <sha> travels as-is: <why>", for the summary

    def photos_ready(self) -> bool:
        return self.prep is not None and self.prep.done()

    def _prepare_all(self, shas: list[bytes]) -> None:
        for sha in shas:
            # Only JPEG XL forms count (a photo that travels as-is costs no second copy).
            if link.prepared_waiting(self._home) >= link.PREPARE_AHEAD:
                break
            why = link.prepare_photo(self._home, sha, self._peer)
            if why is not None:
                self.as_is.append(f"photo {sha.hex()[:12]}: {why}")

    def scan(self, now: float) -> None:
        if self.prep is not None and self.prep.done():
            self.prep.result()  # a failure to read a photo is the astronaut's to see
            self.prep, self._preparing = None, frozenset()
        if self.prep is None:
            todo = link.photos_to_prepare(self._home, self._conn, self._peer)
            # Every photo not prepared yet waits (plan must not transcode on the loop), and
            # only a few are prepared ahead of the sender (link.PREPARE_AHEAD, issue 18).
            self._preparing = frozenset(todo)
            room = link.PREPARE_AHEAD - link.prepared_waiting(self._home)
            if todo and room > 0:
                # Transcoding takes ~0.5 s a photo: off the event loop, so text and
                # answers keep moving meanwhile.
                self.prep = asyncio.ensure_future(asyncio.to_thread(self._prepare_all, todo))
                self.prep.add_done_callback(lambda _f: self._wake.set())
        # Text is held behind a text bundle in flight only while the link is believed up and
        # no connect is suspect (a bundle stuck in a dark would hold it past the return).
        hold = self._sender.link_up and not self._sender.link_suspect
        link.plan(self._home, self._conn, self._peer, defer=self._preparing, hold_text=hold)
        for p in link.active_transfers(self._home, self._conn):
            name = p.spec.key.name
            if name in self._added:
                continue
            self._added.add(name)
            self._progress.added(name, p.spec.size_bytes)
            self._sender.add(p.spec, p.source, now)

    async def close(self) -> None:
        if self.prep is not None:
            # Let a transcode in progress finish writing its file (bounded wait).
            with contextlib.suppress(BaseException):
                await asyncio.wait([self.prep], timeout=30)


def sized_by_memory(config: SenderConfig, memory: LinkMemory | None) -> SenderConfig:
    """``config`` started on the last pass's link (protocol/link_memory.py): as many streams as
    its bandwidth-delay product gives (never fewer than ``initial_streams``), its rate as the
    one chunks are sized by until one is measured, and first flights
    of about one BDP together, unless it sets their size itself; as is if nothing is remembered."""
    if memory is None:
        return config
    streams = start_streams(memory, config.stream_share_bytes, config.start_streams, config.max_window)
    config = dataclasses.replace(config, initial_streams=streams, initial_rate_bytes_s=memory.rate_bytes_s)
    if config.first_flight_bytes is not None:
        return config
    each = first_flight_bytes(
        memory, config.start_streams, config.min_chunk_bytes, config.initial_chunk_bytes
    )
    return dataclasses.replace(config, first_flight_bytes=each)


@dataclass(frozen=True, slots=True, kw_only=True)
class _StopRules:
    """When a one-shot sync (no ``watch``) stops: done, or the link down too long."""

    give_up_after_s: float
    publish_deadline: float


class _Sync:
    """One run of ``sync``: the request loop tying the parts above to the sender machine."""

    def __init__(
        self,
        home: Home,
        *,
        watch: bool,
        stop: asyncio.Event,
        config: SenderConfig,
        give_up_after_s: float,
        wait_published_s: float,
        rescan_s: float,
        receipts_every_s: float,
        receipts_max_s: float,
        on_status: Callable[[SyncStatus], None] | None,
    ) -> None:
        self.cfg = link.load_link(home)
        home.ensure()
        self.conn = queue.connect(home.db_path)
        link.ensure_schema(self.conn)
        link.prune_outbox(home, self.conn)  # what an earlier run settled but a crash kept
        self.seen = link_status.Recorder(self.conn)  # what the compose page shows of the link
        self.watch, self.stop, self.rescan_s, self.on_status = watch, stop, rescan_s, on_status
        self.stop_rules = _StopRules(
            give_up_after_s=give_up_after_s, publish_deadline=time.monotonic() + wait_published_s
        )
        self.recorder = LinkRecorder(self.conn, time.time(), time.monotonic())
        memory = self.recorder.start  # the last pass's link, the one expected, or the reference
        self.sender = TransferSender(sized_by_memory(config, memory), time.monotonic())
        # Ground speaks link version 3: a new upload's OPEN carries its first chunk (issue 14).
        self.sender.first_flight = self.cfg.peer.speaks_link(FIRST_FLIGHT_LINK_VERSION)
        self.wake = asyncio.Event()
        self.progress = _Progress(SyncStatus())
        # Link version 4: each request carrying upload bytes asks ground to clamp its connection's
        # receive window (protocol/window_clamp.py), from what the sockets deliver (TCP_INFO).
        self.meter = (
            DeliveryMeter(remembered_rate=memory.rate_bytes_s, guessed=self.recorder.guessed)
            if self.cfg.peer.speaks_link(WINDOW_CLAMP_LINK_VERSION)
            else None
        )
        self.requests = _Requests(
            self.sender,
            self.cfg.ground_url + "/v1/link",
            self.cfg.token,
            self.wake,
            self.seen.contact,
            window=self._window,
            body=self._gated,
            link_back=self._link_back,
        )
        poll = ReceiptsPoll(every_s=receipts_every_s, max_s=max(receipts_max_s, receipts_every_s))
        self.receipts = _ReceiptsExchange(
            self.conn,
            self.sender,
            poll,
            self.cfg.ground_key,
            receipt_versions(self.cfg.peer),
            with_open=self.cfg.peer.speaks_link(2),
        )
        self.planner = _Planner(home, self.conn, self.cfg.peer, self.sender, self.progress, self.wake)
        self.connector = _connector(self.sender.config, self.cfg.ssl(), self.meter)
        self.keeper = _ConnectionKeeper(
            self.cfg.ground_url + "/v1/health", self.connector, self.wake, self.sender, self.seen.contact
        )
        self.down_since: float | None = None
        self.next_scan = 0.0
        self.fatal: LinkFatal | None = None
        self._queue_version = self._read_queue_version()

    async def run(self) -> SyncResult:
        async with aiohttp.ClientSession(
            connector=self.connector, skip_auto_headers=LINK_SKIP_HEADERS, trace_configs=[_trace_config()]
        ) as session:
            metering = (
                asyncio.ensure_future(self.meter.run(lambda: self.sender.base_rtt_s)) if self.meter else None
            )
            watching = asyncio.ensure_future(self._watch_queue())
            try:
                while not self.stop.is_set():
                    if self._step(session):
                        break
                    await self._sleep()
            finally:
                watching.cancel()
                if metering is not None:
                    metering.cancel()
                await self.planner.close()
                await self.keeper.close()
                await self.requests.close()
                self._handle_events()
                self.seen.flush(force=True)
                self._remember(force=True)
                left = _pending_items(self.conn)
                self.conn.close()
        s = self.sender.stats
        status = self.progress.status
        return SyncResult(
            committed=status.committed,
            rejected=status.rejected,
            receipts=status.receipts,
            requests=s.requests,
            request_bytes=s.request_bytes,
            chunk_bytes=s.chunk_bytes,
            max_chunk_bytes=s.max_chunk_bytes,
            failures=s.failures,
            duration_s=time.monotonic() - status.started,
            pending_items=left,
            refused=tuple(self.receipts.refused),
            photos_as_is=tuple(self.planner.as_is),
        )

    def _read_queue_version(self) -> int:
        """SQLite's data_version: it changes when another connection commits to the queue."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    async def _watch_queue(self) -> None:
        """Wake the loop to plan as soon as another process commits to the queue (a post
        written), instead of at the next rescan (``QUEUE_POLL_S``)."""
        while True:
            await asyncio.sleep(QUEUE_POLL_S)
            version = self._read_queue_version()
            if version != self._queue_version:
                self._queue_version = version
                self.next_scan = 0.0
                self.wake.set()

    def _window(self, payload_bytes: int) -> dict[str, str]:
        """The window header for a request with ``payload_bytes`` upload bytes (link version 4)."""
        if self.meter is None or not carries_window(
            payload_bytes, self.sender.config, self.sender.bulk_in_flight
        ):
            return {}
        now = time.monotonic()
        path = self.sender.path_rtt_s  # not the base: a standing queue may have become that
        w = self.meter.window(now, path, self.sender.queue_recent(now), self.sender.queue_now)
        # Every stream just started at once: held to the start's budget until the start ends,
        # then grown gradually to the rule's total, with or without another request
        # (DeliveryMeter.gate; docs/link.md "What ships" 8).
        burst = self.sender.burst_recent(now)
        self.meter.gate(w if burst else None, now, path, self.sender.burst_ends_at)
        return {} if w is None else {WINDOW_HEADER: str(w)}

    def _link_back(self, now: float) -> None:
        """The link is back before any byte crossed (a probe's raced connection): the windows
        and the gate measure afresh now, not from the rate before the dark."""
        base = self.sender.base_rtt_s
        if self.meter is not None and base is not None:
            self.meter.rate.link_back(now, base)

    def _gated(self, data: bytes, headers: dict[str, str]) -> bytes | AsyncIterator[bytes]:
        """The body of a request carrying a window, written only as the station's budget allows
        (DeliveryMeter.gated): a receive window clamped by ground binds a real connection only
        once it has used the window already offered, seconds into a start (docs/link.md "A
        cut in real time"). Its length is sent as for any body (no chunked encoding)."""
        if self.meter is None or self.meter.budget is None or WINDOW_HEADER not in headers:
            return data
        headers["Content-Length"] = str(len(data))
        return self.meter.gated(data, transport=_TRANSPORT.get)

    def _step(self, session: aiohttp.ClientSession) -> bool:
        """One turn of the request loop; True when a one-shot sync is finished."""
        now = time.monotonic()
        if self.planner.photos_ready():
            self.next_scan = now  # photos are ready: plan them at once
        if now >= self.next_scan:
            self.planner.scan(now)
            self.next_scan = now + self.rescan_s
        self.receipts.step(now)
        deadline = self.sender.next_deadline()
        if deadline is not None and deadline <= now:
            self.sender.handle_timeout(now)
        self.requests.send_due(session, now)
        self._handle_events()
        if self.watch:
            self.keeper.step(
                session, now, requests_open=bool(self.requests.tasks), answered_at=self.requests.answered_at
            )
        if self.fatal is not None:
            raise SyncError(f"ground refused the link: [{self.fatal.code}] {self.fatal.message}")
        status = self.progress.update(self.sender.pending)
        if not self.sender.pending:
            self.seen.idle()
        self.seen.flush()
        self._remember()
        if self.on_status is not None:
            self.on_status(status)
        return not self.watch and self._one_shot_done(now)

    def _remember(self, force: bool = False) -> None:
        """Keep the link as last measured for the next start (onboard/remembered.py): noted
        whenever a delivery rate and a base RTT are known (the rate filter forgets itself after
        a silence, as at a sync's quiet end), the link the limit only while a backlog moves
        past its start."""
        now = time.monotonic()
        self.recorder.note(
            None if self.meter is None else self.meter.rate.rate(),
            self.sender.base_rtt_s,
            wall_now=time.time(),
            link_limited=self.sender.bulk_in_flight and not self.sender.burst_recent(now),
        )
        self.recorder.flush(now, force=force)

    def _one_shot_done(self, now: float) -> bool:
        """Stopping a sync without ``watch``: True once everything is across (and, within
        ``wait_published_s``, settled); SyncError once the link is down too long."""
        finished = self.sender.pending == 0 and not self.requests.tasks and self.receipts.settled()
        if finished and _pending_items(self.conn) == 0:
            if time.monotonic() >= self.stop_rules.publish_deadline or _unsettled_deliveries(self.conn) == 0:
                return True
            poll = self.receipts.poll
            poll.next_at = min(poll.next_at, now + 1.0)  # waiting to see them published
        if self.down_since is not None and now - self.down_since > self.stop_rules.give_up_after_s:
            raise SyncError(
                f"the link to {self.cfg.ground_url} has been down for {now - self.down_since:.0f} s "
                f"({self.progress.status.reason}); {_pending_items(self.conn)} item(s) still to send — "
                "run `onboard sync` again later, or `onboard sync --watch`"
            )
        return False

    async def _sleep(self) -> None:
        """Sleep until something happens: an answer, a deadline, a rescan."""
        self.wake.clear()
        times = [self.next_scan, self.receipts.poll.next_at]
        for d in (self.sender.next_deadline(), self.sender.heartbeat_at if self.watch else None):
            if d is not None:
                times.append(d)
        delay = max(0.01, min(times) - time.monotonic())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), min(delay, 1.0))

    def _handle_events(self) -> None:
        while (ev := self.sender.next_event()) is not None:
            if isinstance(ev, TransferProgress):
                self.seen.acked(self.progress.acked(ev.key.name, ev.acked_bytes))
                link.record_progress(self.conn, ev.key, ev.acked_bytes)
            elif isinstance(ev, TransferDone):
                ok = ev.state is UploadState.COMMITTED
                link.record_done(self.conn, ev.key, ok, ev.code, ev.message)
                self.progress.done(ev.key.name, ok)
                if ev.key.kind is TransferKind.BUNDLE and not ev.with_receipts:
                    self.receipts.poll.kick()  # ground has new posts: their receipts are worth asking for
                if ev.key.kind is TransferKind.BUNDLE:
                    self.next_scan = 0.0  # text that waited for this bundle (link.plan) goes now
                elif ev.key.kind is TransferKind.CODED_BLOB:
                    self.next_scan = 0.0  # room to prepare the next photo (link.PREPARE_AHEAD)
            elif isinstance(ev, ReceiptsReceived):
                self.progress.status.receipts += self.receipts.received(ev)
            elif isinstance(ev, LinkDown):
                self.seen.link(False, ev.reason)
                self.progress.link(False, ev.reason)
                if self.down_since is None:
                    self.down_since = ev.at
            elif isinstance(ev, LinkUp):
                self.seen.link(True)
                self.progress.link(True, "")
                self.down_since = None
            elif isinstance(ev, LinkFatal):
                self.fatal = ev


async def sync(
    home: Home,
    *,
    watch: bool = False,
    stop: asyncio.Event | None = None,
    config: SenderConfig | None = None,
    give_up_after_s: float = 120.0,
    wait_published_s: float = 0.0,
    rescan_s: float = 1.0,
    receipts_every_s: float = 20.0,
    receipts_max_s: float = 320.0,
    on_status: Callable[[SyncStatus], None] | None = None,
) -> SyncResult:
    """Send everything queued, resume what was cut, and bring receipts back.

    Receipts are asked for only while this station has deliveries ground has not settled
    (``ReceiptsPoll``): every ``receipts_every_s`` while they change, backing off to
    ``receipts_max_s`` while they do not, and not at all on a quiet day.
    """
    run = _Sync(
        home,
        watch=watch,
        stop=stop or asyncio.Event(),
        config=config or SenderConfig(),
        give_up_after_s=give_up_after_s,
        wait_published_s=wait_published_s,
        rescan_s=rescan_s,
        receipts_every_s=receipts_every_s,
        receipts_max_s=receipts_max_s,
        on_status=on_status,
    )
    return await run.run()
