"""`onboard sync`: drives the transfer sender over HTTP (aiohttp) until the queue is across.

Each request frame is one ``POST /v1/link``; up to ``window`` run at once on separate
connections so a 1.4 s round trip does not idle the link. The sender machine decides what
to send, when to give up on a request and how long to back off; this module carries bytes,
keeps the queue's tables up to date and fetches receipts.

``sync`` never hangs forever: without ``watch`` it stops with an error once the link has
been down for ``give_up_after_s``; with ``watch`` it keeps probing (every few seconds at
most) until stopped, re-reading the queue so new posts leave at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

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
from protocol.transfer_wire import TransferKind, UploadState

from . import link, link_status, queue
from .errors import OnboardError
from .home import Home
from .receipts import (
    CURSOR_KEY,
    ReceiptsPoll,
    apply_document,
    awaiting_receipts,
    claims,
    cursor,
    verify_document,
)

FRAME_TYPE = "application/x-orbitpost-frame"
RECEIPTS_CURSOR = CURSOR_KEY  # a change seq (docs/PROTOCOL.md §9)
# A post after a quiet spell should not wait a round trip for a TCP handshake (0.6 s through
# a GEO relay), so `sync --watch` keeps one connection to ground open: idle, it costs no bytes.
# aiohttp's default keep-alive is 15 s; an hour stays under ground's keepalive_timeout
# (ground/server.py, so the client, not ground, closes an idle connection). When the connection
# is lost (a cut, loss of signal, that hour), a GET /v1/health (~300 bytes) opens another.
# Attempts are spaced WARM_RETRY_S, doubling to WARM_RETRY_MAX_S, and start again from
# WARM_RETRY_S only once ground has answered a transfer request or a warm connection has lasted
# twice that: a 45-minute lunar gap costs ~10 attempts, not 90, and a proxy that closes every
# connection after one answer gets a GET every 5 minutes, not a loop. A post never waits for it.
KEEPALIVE_S = 3600.0
WARM_TIMEOUT_S = 60.0
WARM_RETRY_S = 30.0
WARM_RETRY_MAX_S = 300.0


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
    refused: list[str] = field(default_factory=list)  # deliveries ground refused, from receipts
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


class _WatchedConnector(aiohttp.TCPConnector):
    """aiohttp's pool, remembering the transports it hands out, so sync can tell whether a
    connection to ground is still open (a response releases its connection before sync sees it)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transports: list[asyncio.BaseTransport] = []

    async def connect(self, *args: Any, **kwargs: Any) -> aiohttp.connector.Connection:
        conn = await super().connect(*args, **kwargs)
        t = conn.transport
        self._transports = [x for x in self._transports if not x.is_closing()]
        if t is not None and t not in self._transports:
            self._transports.append(t)
        return conn

    def open(self) -> bool:
        """Is a connection still open (cut, expired and closed ones are closing)?"""
        self._transports = [x for x in self._transports if not x.is_closing()]
        return bool(self._transports)


def _pending_items(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COUNT(*) FROM items WHERE status IN ('queued', 'sending')").fetchone()
    return int(row[0])


def _unsettled_deliveries(conn: sqlite3.Connection) -> int:
    """Deliveries ground has not settled, and cancels/retracts without an outcome yet (§9)."""
    return awaiting_receipts(conn)


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
    cfg = link.load_link(home)
    home.ensure()
    conn = queue.connect(home.db_path)
    link.ensure_schema(conn)
    link.prune_outbox(home, conn)  # what an earlier run settled but a crash kept
    seen = link_status.Recorder(conn)  # what the compose page shows of the link
    stop = stop or asyncio.Event()
    sender = TransferSender(config or SenderConfig(), time.monotonic())
    status = SyncStatus()
    wake = asyncio.Event()
    tasks: dict[int, asyncio.Task[None]] = {}
    added: set[str] = set()
    sizes: dict[str, int] = {}
    acked: dict[str, int] = {}
    down_since: float | None = None
    next_scan = 0.0
    poll = ReceiptsPoll(every_s=receipts_every_s, max_s=max(receipts_max_s, receipts_every_s))
    receipts_changed = 0  # deliveries moved by the pages of the current receipts exchange
    receipts_pending = False
    receipts_done_once = False
    publish_deadline = time.monotonic() + wait_published_s
    fatal: LinkFatal | None = None
    url = cfg.ground_url + "/v1/link"
    headers = {"Authorization": f"Bearer {cfg.token}", "Content-Type": FRAME_TYPE}

    prep: asyncio.Future[None] | None = None
    preparing: frozenset[bytes] = frozenset()
    warm_task: asyncio.Task[None] | None = None
    warm_at = 0.0  # when the last warm-up started
    warm_ok_at: float | None = None  # when the last one succeeded (None: it failed)
    answered_at = 0.0  # when ground last answered a transfer request
    warm_next = 0.0
    warm_retry_s = WARM_RETRY_S

    async def warm(session: aiohttp.ClientSession) -> None:
        """Open a connection for the next post: GET /v1/health, kept alive by the pool."""
        nonlocal warm_task, warm_next, warm_retry_s, warm_ok_at
        try:
            timeout = aiohttp.ClientTimeout(total=WARM_TIMEOUT_S)
            async with session.get(cfg.ground_url + "/v1/health", timeout=timeout) as resp:
                await resp.read()
            warm_ok_at = time.monotonic()
            seen.contact()
        except (aiohttp.ClientError, TimeoutError, OSError):
            warm_ok_at = None  # link down: the next attempt comes after the backoff
        finally:
            warm_next = time.monotonic() + warm_retry_s
            warm_retry_s = min(warm_retry_s * 2, WARM_RETRY_MAX_S)
            warm_task = None
            wake.set()

    def prepare_all(shas: list[bytes]) -> None:
        for sha in shas:
            link.prepare_photo(home, sha)

    def scan(now: float) -> None:
        nonlocal prep, preparing
        if prep is not None and prep.done():
            prep.result()  # a failure to read a photo is the astronaut's to see
            prep, preparing = None, frozenset()
        if prep is None:
            todo = link.photos_to_prepare(home, conn, cfg.peer)
            if todo:
                # Transcoding takes ~0.5 s a photo: off the event loop, so text and
                # answers keep moving meanwhile.
                preparing = frozenset(todo)
                prep = asyncio.ensure_future(asyncio.to_thread(prepare_all, todo))
                prep.add_done_callback(lambda _f: wake.set())
        link.plan(home, conn, cfg.peer, defer=preparing)
        for p in link.active_transfers(home, conn):
            name = p.spec.key.name
            if name in added:
                continue
            added.add(name)
            sizes[name] = p.spec.size_bytes
            sender.add(p.spec, p.source, now)

    async def carry(session: aiohttp.ClientSession, seq: int, data: bytes, deadline: float) -> None:
        nonlocal answered_at
        try:
            timeout = aiohttp.ClientTimeout(total=max(0.5, deadline - time.monotonic()))
            async with session.post(url, data=data, headers=headers, timeout=timeout) as resp:
                body = await resp.read()
                now = answered_at = time.monotonic()
                seen.contact()
                if resp.status == 200:
                    sender.receive(body, now)
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
            sender.request_failed(seq, time.monotonic(), f"{type(exc).__name__}: {exc}".rstrip(": "))
        finally:
            tasks.pop(seq, None)
            wake.set()

    def handle_events() -> None:
        nonlocal down_since, fatal, receipts_pending, receipts_done_once, receipts_changed, next_scan
        while (ev := sender.next_event()) is not None:
            if isinstance(ev, TransferProgress):
                seen.acked(max(0, ev.acked_bytes - acked.get(ev.key.name, 0)))
                acked[ev.key.name] = ev.acked_bytes
                link.record_progress(conn, ev.key, ev.acked_bytes)
            elif isinstance(ev, TransferDone):
                ok = ev.state is UploadState.COMMITTED
                link.record_done(conn, ev.key, ok, ev.code, ev.message)
                acked[ev.key.name] = sizes.get(ev.key.name, 0) if ok else acked.get(ev.key.name, 0)
                status.committed += ok
                status.rejected += not ok
                if ev.key.kind is TransferKind.BUNDLE:
                    poll.kick()  # ground has new posts: their receipts are worth asking for
                    next_scan = 0.0  # text that waited for this bundle (link.plan) goes now
            elif isinstance(ev, ReceiptsReceived):
                doc = verify_document(conn, ev.document, cfg.ground_key)
                applied = apply_document(conn, doc)
                status.receipts += applied.receipts
                receipts_changed += applied.changed
                status.refused += applied.refused
                link.set_state(conn, RECEIPTS_CURSOR, str(ev.next_since))
                if ev.more:
                    sender.request_receipts(ev.next_since, claims(conn))
                else:
                    receipts_pending = False
                    receipts_done_once = True
                    poll.answered(time.monotonic(), receipts_changed)
            elif isinstance(ev, LinkDown):
                seen.link(False, ev.reason)
                status.link_up, status.reason = False, ev.reason
                if down_since is None:
                    down_since = ev.at
            elif isinstance(ev, LinkUp):
                seen.link(True)
                status.link_up, status.reason = True, ""
                down_since = None
            elif isinstance(ev, LinkFatal):
                fatal = ev

    connector = _WatchedConnector(
        limit=sender.config.window + 2, keepalive_timeout=KEEPALIVE_S, ssl=cfg.ssl()
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            while not stop.is_set():
                now = time.monotonic()
                if prep is not None and prep.done():
                    next_scan = now  # photos are ready: plan them at once
                if now >= next_scan:
                    scan(now)
                    next_scan = now + rescan_s
                if not receipts_pending and poll.due(now):
                    if awaiting_receipts(conn):
                        sender.request_receipts(cursor(conn), claims(conn))
                        receipts_pending, receipts_changed = True, 0
                        poll.next_at = now + poll.interval_s  # if the answer never comes
                    else:
                        poll.idle(now)
                deadline = sender.next_deadline()
                if deadline is not None and deadline <= now:
                    sender.handle_timeout(now)
                for out in sender.data_to_send(now):
                    tasks[out.seq] = asyncio.ensure_future(carry(session, out.seq, out.data, out.deadline))
                handle_events()
                if watch and warm_task is None and not tasks and not connector.open():
                    # The link worked since the last attempt: the connection was lost to a cut.
                    fresh = answered_at > warm_at or (
                        warm_ok_at is not None and now - warm_ok_at > 2 * WARM_RETRY_MAX_S
                    )
                    if fresh or now >= warm_next:
                        if fresh:
                            warm_retry_s = WARM_RETRY_S
                        warm_at = now
                        warm_task = asyncio.ensure_future(warm(session))
                if fatal is not None:
                    raise SyncError(f"ground refused the link: [{fatal.code}] {fatal.message}")
                status.transfers_left = sender.pending
                if not sender.pending:
                    seen.idle()
                seen.flush()
                status.total_bytes = sum(sizes.values())
                status.acked_bytes = sum(acked.values())
                if on_status is not None:
                    on_status(status)
                if not watch:
                    finished = (
                        sender.pending == 0
                        and not tasks
                        and not receipts_pending
                        and (receipts_done_once or not awaiting_receipts(conn))
                    )
                    if finished and _pending_items(conn) == 0:
                        if time.monotonic() >= publish_deadline or _unsettled_deliveries(conn) == 0:
                            break
                        poll.next_at = min(poll.next_at, now + 1.0)  # waiting to see them published
                    if down_since is not None and now - down_since > give_up_after_s:
                        raise SyncError(
                            f"the link to {cfg.ground_url} has been down for {now - down_since:.0f} s "
                            f"({status.reason}); {_pending_items(conn)} item(s) still to send — "
                            "run `onboard sync` again later, or `onboard sync --watch`"
                        )
                # Sleep until something happens: an answer, a deadline, a rescan.
                wake.clear()
                times = [next_scan, poll.next_at]
                d = sender.next_deadline()
                if d is not None:
                    times.append(d)
                delay = max(0.01, min(times) - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), min(delay, 1.0))
        finally:
            if prep is not None:
                # Let a transcode in progress finish writing its file (bounded wait).
                with contextlib.suppress(BaseException):
                    await asyncio.wait([prep], timeout=30)
            if warm_task is not None:
                warm_task.cancel()
                with contextlib.suppress(BaseException):
                    await warm_task
            for t in list(tasks.values()):
                t.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            handle_events()
            seen.flush(force=True)
            left = _pending_items(conn)
            conn.close()
    s = sender.stats
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
        refused=tuple(status.refused),
    )
