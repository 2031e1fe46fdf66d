"""`ground serve`: the aiohttp service — the station link endpoint, the dashboard, the publisher.

Routes (docs/PROTOCOL.md §8.5):

    POST /v1/link     one transfer request frame in the body (Authorization: Bearer <token>);
                      200 with the response frame, or a 4xx JSON error
                      ``{"error": code, "message": ..., "retryable": bool}`` — never a 500.
    GET  /v1/health   ``{"ok": true}`` (no auth; lets a station tell "ground down" from "link down")

The transfer receiver (protocol/transfer_receiver.py) decides; this module only does its I/O:
fsynced chunk writes, the ``transfers``/``link_contacts``/``link_traffic`` tables
(ground/db.py) and commits through ``ingest_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import signal
import sqlite3
import ssl
import time
from typing import Any

from aiohttp import web

from protocol import RemoteProtocolError
from protocol.transfer import (
    BadRequest,
    CommitUpload,
    ReceiptsWanted,
    ReceiverConfig,
    TransferReceiver,
    UploadChanged,
    UploadExpired,
    UploadRecord,
    WriteChunk,
)
from protocol.transfer_wire import (
    HTTP_STATUS,
    MAX_FRAME_BYTES,
    ErrorFrame,
    LinkErrorCode,
    TransferKey,
    TransferKind,
    UploadState,
    decode_response,
    encode_request,
    salvage_chunk,
)
from protocol.window_clamp import WINDOW_HEADER, parse_window

from . import logs, public, publish, window
from .body_limits import BodyGate
from .db import audit, transaction
from .edge import Edge, EdgeLimits, EdgeSite, refusal_middleware
from .home import GroundHome
from .ratelimit import AuthFailureLimiter
from .receipts import build_document
from .stations import authenticate
from .uploads import UploadStore

FRAME_TYPE = "application/x-orbitpost-frame"
# How often abandoned partial uploads are looked for.
EXPIRY_CHECK_S = 60.0
# How often a commit that failed for a local reason (disk full, database locked) is tried
# again without waiting for the station's next request.
COMMIT_RETRY_S = 5.0
# An OPEN asking for receipts (link version 2, docs/PROTOCOL.md §8.2) that commits a bundle is
# answered once ground's publisher has made its first attempt at each of its posts due now, at
# most this long after the commit: the answer then says where the post went, and a lone text
# post needs no RECEIPTS request after it (issue 14). Posts still unsettled come by RECEIPTS.
OPEN_RECEIPTS_HOLD_S = 2.0
# How often the hold looks at the publications (one indexed query).
OPEN_RECEIPTS_POLL_S = 0.05
# The receipts in an OPEN's answer carry ground's log checkpoint (§15, ~230 B: as much again as
# a short post's bundle) at most this often per station: a station keeps a head a day to check
# the public log against, and a lone post's answer stays within 2 × its bundle (issue 14).
# Receipts asked for by RECEIPTS carry it every time, as before.
OPEN_CHECKPOINT_EVERY_S = 24 * 3600.0

# Ground's own storage failing: the disk (OSError) or the database (full, locked, I/O error:
# sqlite3.Error, which is not an OSError). The station's bytes are not at fault: 503 storage,
# retryable (docs/PROTOCOL.md §8.5).
STORAGE_ERRORS = (OSError, sqlite3.Error)

log = logging.getLogger(__name__)


def _now_ms() -> int:
    return int(time.time() * 1000)


def storage_error(exc: BaseException) -> web.Response:
    """503 storage: ground could not read or write its own disk or database; retry later."""
    return json_error(
        503, LinkErrorCode.STORAGE, f"ground storage trouble, retry later: {_describe(exc)}", True
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def json_error(
    status: int, code: str, message: str, retryable: bool = False, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": code, "message": message, "retryable": retryable}),
        content_type="application/json",
        headers=headers,
    )


class LinkService:
    """One receiver for the whole ground, its storage, and the link activity records."""

    def __init__(
        self,
        home: GroundHome,
        config: ReceiverConfig | None = None,
        limiter: AuthFailureLimiter | None = None,
    ) -> None:
        self.home = home
        self.limiter = limiter or AuthFailureLimiter()
        self.store = UploadStore(home)
        self.bodies = BodyGate()
        self.windows = window.StationWindows()  # link version 4: each station's connections
        self.receiver = TransferReceiver(
            config, have=self.store.have, quota_for=self._quota, uploads=self.store.load_records()
        )
        # Set when a bundle is committed: `ground serve`'s publisher runs at once instead of at
        # its next tick (publish.run_forever), which is most of a text post's time on ground.
        self.bundle_committed = asyncio.Event()
        # One request at a time through the receiver: chunk writes are fsync-bound and the
        # link is far slower than the disk, so serialising costs nothing and keeps the
        # receiver's events unambiguous.
        self.lock = asyncio.Lock()
        # Upload records a storage failure kept from the database; written before the next request.
        self._dirty: dict[tuple[str, TransferKey], UploadRecord] = {}
        # Receipts an OPEN's answer waits for (ReceiptsWanted with a key), built outside the lock.
        self.deferred: dict[int, ReceiptsWanted] = {}
        # How long such an answer waits for publishing: `serve` sets OPEN_RECEIPTS_HOLD_S when
        # it runs the publisher; without one (an app in a test), nothing would publish: 0.
        self.receipts_hold_s = 0.0
        # When each station was last given a log checkpoint (time.monotonic(); since this start).
        self._checkpoint_at: dict[str, float] = {}

    def _quota(self, station: str) -> int | None:
        row = self.home.conn.execute("SELECT quota_bytes FROM stations WHERE name = ?", (station,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    async def handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        try:
            station = authenticate(self.home.conn, token)
        except STORAGE_ERRORS as exc:
            return storage_error(exc)
        if station is None:
            return self._refuse(request)
        if request.content_length is not None and request.content_length > MAX_FRAME_BYTES:
            return json_error(
                413, LinkErrorCode.CHUNK_TOO_LARGE, f"request body over {MAX_FRAME_BYTES} bytes"
            )
        asked = request.headers.get(WINDOW_HEADER)
        try:
            wanted = None if asked is None else parse_window(asked)
        except RemoteProtocolError as exc:
            return json_error(400, LinkErrorCode.BAD_FRAME, exc.message)
        self.windows.request(station.name, request.transport, wanted)
        with self.bodies.slot(station.name, request.content_length) as admitted:
            if not admitted:
                return json_error(
                    503,
                    LinkErrorCode.BUSY,
                    "ground is holding as many request bodies as it allows; retry shortly",
                    True,
                    headers={"Retry-After": "1", "Connection": "close"},
                )
            return await self._handle_body(request, station.name)

    async def _handle_body(self, request: web.Request, station_name: str) -> web.Response:
        """Read and process one admitted request body (a BodyGate slot is held)."""
        buf = bytearray()
        try:
            async for piece in request.content.iter_any():
                buf += piece
                if len(buf) > MAX_FRAME_BYTES:
                    return json_error(
                        413, LinkErrorCode.CHUNK_TOO_LARGE, f"request body over {MAX_FRAME_BYTES} bytes"
                    )
        except ConnectionError:
            # The link was cut mid-request: keep what arrived of a chunk (issue 14, like tus),
            # so the station resends only what was still in the network. Nobody is left to answer.
            await self._keep_partial(bytes(buf), station_name)
            return json_error(400, LinkErrorCode.BAD_FRAME, "connection lost before the request was whole")
        body = bytes(buf)
        now = time.time()
        async with self.lock:
            rid = self.receiver.receive(body, now, station=station_name)
            await self._drain(now)
            resp = self.receiver.response_for(rid)
        if resp is None and (wanted := self.deferred.pop(rid, None)) is not None:
            resp = await self._answer_with_receipts(wanted)
        if resp is None:  # pragma: no cover - the receiver always answers once drained
            return json_error(503, LinkErrorCode.BUSY, "no answer from the receiver; retry", True)
        self._record_traffic(station_name, request, len(body), len(resp))
        try:
            frame = decode_response(resp)
        except RemoteProtocolError:  # our own reply: send it as is rather than a 500
            frame = None
        if isinstance(frame, ErrorFrame):
            return json_error(HTTP_STATUS.get(frame.code, 400), frame.code, frame.message, frame.retryable)
        return web.Response(body=resp, content_type=FRAME_TYPE)

    async def _keep_partial(self, prefix: bytes, station: str) -> None:
        """Store the data bytes of a CHUNK request cut short (protocol salvage_chunk)."""
        chunk = salvage_chunk(prefix)
        if chunk is None:
            return
        now = time.time()
        async with self.lock:
            rid = self.receiver.receive(encode_request(chunk), now, station=station)
            await self._drain(now)
            self.receiver.response_for(rid)  # its answer has nobody to go to

    async def _drain(self, now: float) -> None:
        """Carry out the receiver's events. Never raises for storage trouble: a request whose
        write, commit or receipts failed that way gets ``503 storage`` (retryable), and the
        receiver stays consistent (a failed commit is retried; see ``_commit``)."""
        r = self.receiver
        self._persist_dirty()
        while True:
            written: dict[int, str | None] = {}
            while (ev := r.next_event()) is not None:
                if isinstance(ev, WriteChunk):
                    if written.get(ev.rid, None) is not None:
                        continue
                    try:
                        await asyncio.to_thread(self.store.write, ev.station, ev.key, ev.offset, ev.data)
                        written.setdefault(ev.rid, None)
                    except OSError as exc:
                        written[ev.rid] = exc.strerror or str(exc)
                elif isinstance(ev, UploadChanged):
                    self._persist(ev.record)
                elif isinstance(ev, CommitUpload):
                    await self._commit(ev, now)
                elif isinstance(ev, ReceiptsWanted) and ev.key is not None:
                    self.deferred[ev.rid] = ev  # after the lock: it may wait for publishing
                elif isinstance(ev, ReceiptsWanted):
                    try:
                        # A station hears only of what it uploaded itself (docs §9).
                        doc, nxt, more = build_document(
                            self.home,
                            ev.since,
                            _now_ms(),
                            ev.limit,
                            station=ev.station,
                            claims=ev.claims,
                            versions=ev.versions,
                        )
                        self._checkpoint_at[ev.station] = time.monotonic()
                    except STORAGE_ERRORS as exc:
                        r.store_failed(ev.rid, f"receipts unavailable: {_describe(exc)}")
                    else:
                        r.receipts_ready(ev.rid, doc, nxt, more)
                elif isinstance(ev, UploadExpired):
                    try:
                        self.store.expire(ev.station, ev.key)
                    except STORAGE_ERRORS as exc:
                        # Its record stays in the database: the next start expires it again.
                        log.warning("could not drop expired upload %s: %s", ev.key.name, _describe(exc))
                elif isinstance(ev, BadRequest):
                    if ev.code == LinkErrorCode.BAD_FRAME:
                        self._audit("link-bad-request", f"{ev.station}: {ev.code}: {ev.message}")
            if not written:
                return
            for rid, err in written.items():
                if err is None:
                    r.chunk_stored(rid, now)
                else:
                    r.store_failed(rid, err)

    async def _answer_with_receipts(self, ev: ReceiptsWanted) -> bytes | None:
        """An OPEN's STATUS with the receipts it asked for (link version 2), once ground has
        tried to publish the bundle's posts due now (at most ``receipts_hold_s``)."""
        began = time.monotonic()
        try:
            if ev.key is not None and ev.key.kind is TransferKind.BUNDLE and self.receipts_hold_s > 0:
                while time.monotonic() - began < self.receipts_hold_s:
                    try:
                        if not first_attempts_due(self.home.conn, ev.key.sha256.hex(), _now_ms()):
                            break
                    except STORAGE_ERRORS:
                        break  # the answer goes without waiting; building may fail too (below)
                    await asyncio.sleep(OPEN_RECEIPTS_POLL_S)
        finally:
            # Also when the wait is cancelled: the receiver forgets the held answer.
            self.finish_receipts(ev, _now_ms(), held_ms=round((time.monotonic() - began) * 1000))
        return self.receiver.response_for(ev.rid)

    def finish_receipts(self, ev: ReceiptsWanted, now_ms: int, *, held_ms: int = 0) -> None:
        """Build a deferred ReceiptsWanted's document and hand it to the receiver (the
        simulator calls this after its own publishing pass)."""
        last = self._checkpoint_at.get(ev.station)
        head = last is None or time.monotonic() - last >= OPEN_CHECKPOINT_EVERY_S
        try:
            doc, nxt, more = build_document(
                self.home,
                ev.since,
                now_ms,
                ev.limit,
                station=ev.station,
                versions=ev.versions,
                checkpoint=head,
            )
            if head:
                self._checkpoint_at[ev.station] = time.monotonic()
        except STORAGE_ERRORS as exc:
            self.receiver.store_failed(ev.rid, f"receipts unavailable: {_describe(exc)}")
        else:
            self.receiver.receipts_ready(ev.rid, doc, nxt, more, held_ms=held_ms)

    async def _commit(self, ev: CommitUpload, now: float) -> None:
        """Verify and accept a whole upload off the event loop (decoding, JPEG XL rebuilds,
        ingest), still inside the link lock, so requests keep their order.

        Any storage failure (disk full, database locked or full) leaves the upload RECEIVING
        and out of the committing set: the next request for it, or ``retry_commits`` within
        COMMIT_RETRY_S, commits it again. Commit is idempotent (uploads.py), so a failure after
        the bundle was accepted is harmless.
        """
        r = self.receiver
        try:
            state, code, msg = await asyncio.to_thread(
                self.store.commit, ev.station, ev.key, ev.size_bytes, int(now * 1000)
            )
        except STORAGE_ERRORS as exc:
            # Disk or database trouble is ours, not the station's: stay RECEIVING, retry later.
            log.warning(
                "commit of %s from %s failed, will retry: %s", ev.key.name, ev.station, _describe(exc)
            )
            r.commit_done(
                ev.rid,
                now,
                state=UploadState.RECEIVING,
                message=f"commit failed: {_describe(exc)}",
                retry=True,
            )
        else:
            r.commit_done(ev.rid, now, state=state, code=code, message=msg)
            _log_commit(ev.station, ev.key.kind, ev.key.sha256.hex(), ev.size_bytes, state, code, msg)
            if state is UploadState.COMMITTED and ev.key.kind is TransferKind.BUNDLE:
                self.bundle_committed.set()

    def _persist(self, record: UploadRecord) -> None:
        """Record an upload's state; on storage trouble keep it to write again before the next request.

        The chunk bytes themselves are already fsynced, so a record that lags only means a
        station re-sends those bytes if ground also restarts before the record is written.
        """
        k = (record.station, record.key)
        try:
            self.store.persist(record)
        except STORAGE_ERRORS as exc:
            self._dirty[k] = record
            log.warning("could not record upload %s: %s", record.key.name, _describe(exc))
        else:
            self._dirty.pop(k, None)

    def _persist_dirty(self) -> None:
        for rec in list(self._dirty.values()):
            self._persist(rec)

    async def retry_commits(self, now: float) -> None:
        """Commit again every whole upload whose commit failed (the timer half of the retry)."""
        async with self.lock:
            rids = self.receiver.retry_commits(now)
            if rids:
                await self._drain(now)
            for rid in rids:
                self.receiver.response_for(rid)  # nobody is waiting for this answer

    def _refuse(self, request: web.Request) -> web.Response:
        """A bad or missing token: 401, or 429 once its address has failed too often (ground/ratelimit.py).

        Only failures are limited: a valid token always gets through, so a station never
        loses its link to a neighbour behind the same address that keeps getting it wrong.
        """
        addr, now = request.remote or "?", time.monotonic()
        lim = self.limiter
        verdict = lim.blocked(addr, now)
        if verdict is not None:
            if verdict.log:  # 1st, 2nd, 4th, 8th... refusal: a flood adds log2(n) rows, not n
                logs.event(
                    "credential_refused",
                    f"station token refused from {addr}: rate-limited ({verdict.refused} in this block)",
                    level=logging.WARNING,
                    credential="station_token",
                    addr=addr,
                )
                self._security(
                    request,
                    "link-rate-limited",
                    f"bad station token refused ({verdict.refused} in this block)",
                )
            wait = math.ceil(verdict.retry_after_s)
            return json_error(
                429,
                LinkErrorCode.RATE_LIMITED,
                f"too many bad station tokens from this address; try again in {wait} s",
                True,
                headers={"Retry-After": str(wait)},
            )
        self._security(request, "link-unauthorized", "bad or missing station token")
        logs.event(
            "credential_refused",
            f"station token refused from {request.remote or '?'}",
            level=logging.WARNING,
            credential="station_token",
            addr=request.remote or "?",
        )
        if lim.failed(addr, now):
            self._security(
                request,
                "link-rate-limited",
                f"{lim.max_failures} bad station tokens within {lim.window_s:.0f} s: "
                f"refused for {lim.block_s:.0f} s",
            )
        return json_error(
            401, LinkErrorCode.UNAUTHORIZED, "missing or unknown station token (Authorization: Bearer …)"
        )

    def _audit(self, kind: str, detail: str) -> None:
        conn = self.home.conn
        try:
            with transaction(conn):
                audit(conn, _now_ms(), "link", kind, detail)
        except STORAGE_ERRORS as exc:
            # The answer to the request matters more than its audit line (disk full, locked).
            log.warning("could not audit %s (%s): %s", kind, detail, _describe(exc))

    def _security(self, request: web.Request, kind: str, detail: str) -> None:
        self._audit(kind, f"{request.remote or '?'}: {detail}")

    def _record_traffic(self, station: str, request: web.Request, n_in: int, n_out: int) -> None:
        """Count the request for the dashboard: best-effort bookkeeping, never why a request fails."""
        try:
            self._count_traffic(station, request.remote, n_in, n_out)
        except STORAGE_ERRORS as exc:
            log.warning("link traffic of %s not counted: %s", station, _describe(exc))

    def _count_traffic(self, station: str, remote: str | None, n_in: int, n_out: int) -> None:
        now_ms = _now_ms()
        minute = now_ms - now_ms % 60_000
        conn = self.home.conn
        with transaction(conn):
            conn.execute(
                "INSERT INTO link_contacts (station, first_seen_ms, last_seen_ms, requests, bytes_in, bytes_out, "
                "last_addr) VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT(station) DO UPDATE SET "
                "last_seen_ms = excluded.last_seen_ms, requests = requests + 1, "
                "bytes_in = bytes_in + excluded.bytes_in, bytes_out = bytes_out + excluded.bytes_out, "
                "last_addr = excluded.last_addr",
                (station, now_ms, now_ms, n_in, n_out, remote),
            )
            conn.execute(
                "INSERT INTO link_traffic (station, minute_ms, bytes_in, bytes_out, requests) VALUES (?, ?, ?, ?, 1) "
                "ON CONFLICT(station, minute_ms) DO UPDATE SET bytes_in = bytes_in + excluded.bytes_in, "
                "bytes_out = bytes_out + excluded.bytes_out, requests = requests + 1",
                (station, minute, n_in, n_out),
            )

    async def expire_loop(self, stop: asyncio.Event) -> None:
        """Expire abandoned uploads every EXPIRY_CHECK_S; retry failed commits every COMMIT_RETRY_S."""
        next_expiry = 0.0
        while not stop.is_set():
            now = time.time()
            if now >= next_expiry:
                next_expiry = now + EXPIRY_CHECK_S
                async with self.lock:
                    self.receiver.handle_timeout(now)
                    await self._drain(now)
            await self.retry_commits(now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), COMMIT_RETRY_S)

    def close(self) -> None:
        self.store.close()


def first_attempts_due(conn: sqlite3.Connection, bundle_sha256_hex: str, now_ms: int) -> int:
    """Posts of this bundle whose first publishing attempt is due now and not made yet, or
    under way: what an OPEN's answer with receipts waits for (link version 2)."""
    (n,) = conn.execute(
        "SELECT COUNT(*) FROM publications p JOIN items i ON i.id = p.item_id "
        "JOIN bundles b ON b.bundle_id = i.bundle_id WHERE b.sha256 = ? "
        "AND (p.state = 'publishing' OR (p.state = 'pending' AND p.attempts = 0 "
        "AND (i.publish_at_ms IS NULL OR i.publish_at_ms <= ?)))",
        (bundle_sha256_hex, now_ms),
    ).fetchone()
    return int(n)


def _log_commit(
    station: str, kind: TransferKind, sha_hex: str, size: int, state: UploadState, code: str, msg: str
) -> None:
    what = "bundle" if kind is TransferKind.BUNDLE else "photo"
    if state is UploadState.COMMITTED:
        if kind is TransferKind.BUNDLE:
            logs.event(
                "bundle_accepted",
                f"bundle {sha_hex[:12]} from station {station} accepted ({size:,} bytes)",
                station=station,
                sha256=sha_hex,
                size_bytes=size,
            )
        return
    logs.event(
        f"{what}_rejected",
        f"{what} {sha_hex[:12]} from station {station} rejected: [{code}] {msg}",
        level=logging.WARNING,
        station=station,
        sha256=sha_hex,
        size_bytes=size,
        code=code,
        reason=msg,
    )


LINK_KEY: web.AppKey[LinkService] = web.AppKey("link", LinkService)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


LINK_PATHS = frozenset({"/v1/link", "/v1/health"})


async def _trim_link_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The station pays for every byte of the link (issue 14): its answers carry no Server
    header, and a frame (200 on /v1/link) no Content-Type: the station reads the frame, which
    says what it is. Date stays (RFC 9110 §6.6.1: an origin server with a clock sends it)."""
    if request.path in LINK_PATHS:
        response.headers.popall("Server", None)
        if request.path == "/v1/link" and response.status == 200:
            response.headers.popall("Content-Type", None)


@web.middleware
async def _no_content_coding(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse any content coding before a byte of the body is read (issue 16 items 2, 3).

    Link frames are already compressed and the API's bodies are tiny: inflating what an
    unauthenticated client sends would only be CPU for an attacker. The edge (ground/edge.py)
    refuses these before aiohttp sees them; this covers an app run without it.
    """
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding not in ("", "identity"):
        return web.json_response(
            {
                "error": "content_encoding_refused",
                "message": "ground takes no Content-Encoding; send the body as is",
                "retryable": False,
            },
            status=415,
            headers={"Connection": "close"},
        )
    resp: web.StreamResponse = await handler(request)
    return resp


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error answer on /v1/ is JSON naming the problem; nothing escapes as a bare 500."""
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except web.HTTPException as exc:
        if not request.path.startswith("/v1/") or exc.status < 400:
            raise
        return json_error(exc.status, "http_" + str(exc.status), exc.reason)


def create_app(
    home: GroundHome,
    *,
    receiver_config: ReceiverConfig | None = None,
    auth_limiter: AuthFailureLimiter | None = None,
    session_idle_ms: int | None = None,
) -> web.Application:
    """The ground web application: link endpoint, health, and the dashboard when installed.

    ``session_idle_ms``: operators' browser sessions end after this long unused (None: the default).
    """
    app = web.Application(
        client_max_size=MAX_FRAME_BYTES + 1024,
        middlewares=[refusal_middleware, _no_content_coding, _json_errors],
    )
    app[LINK_KEY] = LinkService(home, receiver_config, auth_limiter)
    app.router.add_post("/v1/link", app[LINK_KEY].handle)
    app.router.add_get("/v1/health", _health)
    app.on_response_prepare.append(_trim_link_headers)
    from . import public_media  # photos Instagram/Threads fetch (issue 13)

    public_media.setup(app, home)
    try:
        from . import dashboard
    except ImportError:
        dashboard = None  # type: ignore[assignment]
    public.setup(app, home)
    if dashboard is not None:
        if session_idle_ms is None:
            dashboard.setup(app, home)
        else:
            dashboard.setup(app, home, session_idle_ms=session_idle_ms)
    return app


async def serve(
    home: GroundHome,
    host: str,
    port: int,
    *,
    stop: asyncio.Event | None = None,
    ready: asyncio.Event | None = None,
    publish_interval_s: float = 1.0,
    session_idle_ms: int | None = None,
    edge_limits: EdgeLimits | None = None,
    ssl_context: ssl.SSLContext | None = None,
    edge_out: list[Edge] | None = None,
) -> None:
    """Run the HTTP service and the publisher until ``stop`` is set (or SIGINT/SIGTERM).

    Every connection goes through ground/edge.py (caps, deadlines, refusals before a body is
    read); ``ssl_context`` serves HTTPS (ground/tls.py). ``edge_out`` receives the Edge (tests).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    stopped_by: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        stopped_by.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
    app = create_app(home, session_idle_ms=session_idle_ms)
    # Idle keep-alive connections are held an hour, pinned rather than left to the aiohttp
    # release (older ones closed after 75 s): `onboard sync --watch` keeps one connection open
    # (onboard/sync.py KEEPALIVE_S, below this, so the client closes first and never races us).
    # auto_decompress off: nothing compressed is ever inflated, whatever gets past the edge.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=3630.0, auto_decompress=False)
    await runner.setup()
    edge = Edge(limits=edge_limits or EdgeLimits())
    if edge_out is not None:
        edge_out.append(edge)
    site = EdgeSite(runner, host, port, edge=edge, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    # Only now, after the bind succeeded (a failed bind must never read "serving on").
    bound = runner.addresses[0] if runner.addresses else (host, port)
    url = f"{'https' if ssl_context is not None else 'http'}://{host}:{bound[1]}"
    logs.event("listening", f"serving on {url} (dashboard {url}/, station link {url}/v1/link)", url=url)
    if ready is not None:
        ready.set()
    app[LINK_KEY].receipts_hold_s = OPEN_RECEIPTS_HOLD_S  # the publisher below runs
    tasks = [
        asyncio.ensure_future(
            publish.run_forever(
                home, stop, interval_s=publish_interval_s, wake=app[LINK_KEY].bundle_committed
            )
        ),
        asyncio.ensure_future(app[LINK_KEY].expire_loop(stop)),
    ]
    try:
        await stop.wait()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        app[LINK_KEY].close()
        why = stopped_by[0] if stopped_by else "stop requested"
        logs.event("shutdown", f"stopped ({why}); everything accepted is on disk", reason=why)
