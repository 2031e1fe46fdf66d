"""The edge of `ground serve`: what a connection may cost ground before aiohttp sees a request.

aiohttp has no deadline for a request head that never completes, no cap on connections per
address, and inflates a ``Content-Encoding: gzip`` body as it arrives, before any handler has
looked at the token (issue 16, items 2 and 5: slowloris exhausted ground's file descriptors; a
1 MB gzip of 1 GiB of zeros held the event loop 2.5 s per request). This module sits between
the listening socket (or TLS) and aiohttp's protocol:

- **Connection caps**: at most ``max_conns_per_addr`` open connections from one address and
  ``max_conns`` in all (below the process's descriptor limit, raised to its hard limit at
  start). At the global cap a new connection evicts a connection from the address holding the
  most that is waiting for a request head, so a flood from many addresses cannot starve a
  station of its one connection; if none can be evicted the newcomer gets 503 and is closed.
- **Head deadline**: a request head must be complete ``header_timeout_s`` after its first byte
  (after the connection opened, for the first request), else 408 and close. Idle keep-alive
  connections between requests are aiohttp's (``keepalive_timeout``).
- **Body idle deadline**: a declared body must keep moving (a byte every ``body_idle_s``), except
  while ground itself has paused reading (flow control is not the client's fault).
- **Refused before a byte of the body is read**: any ``Content-Encoding`` but identity (415),
  ``Transfer-Encoding`` (411: ground's clients send Content-Length), protocol upgrades (501),
  a head over ``max_head_bytes`` (431) or a ``Content-Length`` over the path's limit (413).

aiohttp's own refusals — its HTTP parser's 400 for a bad request line, header bytes, an
oversized line or a NUL, and the 500 for anything a handler let escape — are JSON too: each
connection's request handler is a :class:`JsonErrorHandler` (:func:`json_errors`), whose
``handle_error`` keeps aiohttp's logging (redacted by ground/logs.py like every line) and answers
``{"error": "bad_request" | "internal", "message", "retryable": false}`` with no credential
and no traceback in it.

Refusals travel through aiohttp as a synthetic request on the same connection (its path holds
a per-connection secret, answered by :func:`refusal_middleware`), so they come out in order
after any earlier pipelined response, as JSON ``{"error", "message", "retryable"}``, and the
connection closes. Counters are in ``Edge.stats`` (tests and the log read them).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import resource
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

from protocol.transfer_wire import MAX_FRAME_BYTES
from termtext import visible

from .logs import redact

log = logging.getLogger(__name__)

REFUSAL_PREFIX = "/.edge-refusal/"


def default_max_body_bytes(path: bytes) -> int:
    """Largest body a path may declare: one link frame on /v1/link, 64 KiB anywhere else."""
    if path.split(b"?", 1)[0] == b"/v1/link":
        return MAX_FRAME_BYTES + 1024
    return 64 * 1024  # the API's bodies are a login (4 KiB) or empty


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeLimits:
    # Whole request head, from its first byte. A station's head is ~300 bytes: 0.3 s at 10 kbit/s
    # and a 1.4 s round trip; a loss of signal mid-head costs one retried request.
    header_timeout_s: float = 30.0
    # A body that stops moving this long is abandoned (the station resends that chunk).
    body_idle_s: float = 60.0
    # aiohttp refuses a line over 8 KiB; the whole head is bounded too.
    max_head_bytes: int = 16 * 1024
    # A station keeps up to 178 (160 streams + 16 requests carrying no data + 2, issue 14,
    # docs/link.md); a NAT of operators a few dozen.
    max_conns_per_addr: int = 192
    # None: from the descriptor limit (see fd_budget).
    max_conns: int | None = None
    # How long a refused or timed-out connection may take to receive its answer.
    close_grace_s: float = 5.0
    max_body_bytes: Callable[[bytes], int] = default_max_body_bytes


# asyncio accepts up to `backlog` sockets per wakeup before any connection_made runs, and an
# evicted connection's descriptor is freed only on the loop's next turn: a kernel queue of 1,024
# (a flood that piled up while ground was busy) took 1,024 descriptors at once and hit EMFILE
# (measured at 512 descriptors: "socket.accept() out of system resource" hundreds of times). The
# queue, and so the burst, stays well inside the reserve fd_budget keeps; connections beyond it
# wait in their SYN retries instead.
ACCEPT_BURST = 64


def fd_budget(reserve: int = 256) -> int:
    """Raise the soft descriptor limit to the hard one; return the connections that leave room for.

    ``reserve`` descriptors stay for the database, staged uploads, the blob store and logs.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):  # not allowed here: live with the soft limit
            pass
    return max(16, int(soft) - reserve)


@dataclass(slots=True)
class EdgeStats:
    accepted: int = 0
    refused_addr_cap: int = 0
    refused_total_cap: int = 0
    evicted: int = 0
    head_timeouts: int = 0
    body_timeouts: int = 0
    refused_requests: int = 0


@dataclass(slots=True)
class Edge:
    """The shared state of every connection on one listening socket."""

    limits: EdgeLimits = field(default_factory=EdgeLimits)
    max_conns: int = 0
    stats: EdgeStats = field(default_factory=EdgeStats)
    by_addr: dict[str, set[EdgeProtocol]] = field(default_factory=dict)
    total: int = 0
    _last_warned: float = 0.0

    def __post_init__(self) -> None:
        if not self.max_conns:
            self.max_conns = self.limits.max_conns or fd_budget()

    def factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` wrapping aiohttp's ``runner.server``."""
        return lambda: EdgeProtocol(self, inner)

    def admit(self, conn: EdgeProtocol) -> str | None:
        """Register a new connection, or say why it is refused."""
        addr = conn.addr
        mine = self.by_addr.get(addr, set())
        if len(mine) >= self.limits.max_conns_per_addr:
            self.stats.refused_addr_cap += 1
            self._warn(f"connections from {addr} over {self.limits.max_conns_per_addr}: refusing")
            return f"too many connections from {addr}; close some and retry"
        if self.total >= self.max_conns and not self._evict():
            self.stats.refused_total_cap += 1
            self._warn(f"{self.total} connections open (cap {self.max_conns}): refusing")
            return "ground is at its connection limit; retry shortly"
        self.by_addr.setdefault(addr, set()).add(conn)
        self.total += 1
        self.stats.accepted += 1
        return None

    def release(self, conn: EdgeProtocol) -> None:
        mine = self.by_addr.get(conn.addr)
        if mine is not None and conn in mine:
            mine.discard(conn)
            self.total -= 1
            if not mine:
                del self.by_addr[conn.addr]

    def _evict(self) -> bool:
        """Close the oldest connection waiting for a head from the address holding the most."""
        for addr in heapq.nlargest(8, self.by_addr, key=lambda a: len(self.by_addr[a])):
            idle = [c for c in self.by_addr[addr] if c.evictable]
            if idle:
                victim = min(idle, key=lambda c: c.opened)
                self.release(victim)
                victim.abort()
                self.stats.evicted += 1
                self._warn(f"at {self.max_conns} connections: dropped an idle one from {addr}")
                return True
        return False

    def _warn(self, message: str) -> None:
        # One line a minute at most: a flood must not become a flood of log lines.
        now = time.monotonic()
        if now - self._last_warned >= 60.0:
            self._last_warned = now
            log.warning("edge: %s", message)


class _Transport(asyncio.Transport):
    """The real transport as aiohttp sees it: notes when aiohttp pauses reading."""

    @property
    def _sendfile_compatible(self) -> Any:
        # loop.sendfile reads this first; NotImplementedError makes aiohttp's FileResponse copy
        # the file through write() (its own fallback), as asyncio's fallback needs the real
        # transport class and the native path would bypass this wrapper.
        raise NotImplementedError("sendfile through the edge")

    def __init__(self, real: asyncio.Transport, owner: EdgeProtocol) -> None:
        super().__init__()
        self._real, self._owner = real, owner
        self.refusal: tuple[str, int, str, str] | None = None  # (path, status, code, message)

    def pause_reading(self) -> None:
        self._owner.paused = True
        self._owner.rearm()
        self._real.pause_reading()

    def resume_reading(self) -> None:
        self._owner.paused = False
        self._owner.rearm()
        self._real.resume_reading()

    def is_reading(self) -> bool:
        return self._real.is_reading()

    def write(self, data: Any) -> None:
        self._owner.last_write = time.monotonic()
        self._real.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self._owner.last_write = time.monotonic()
        self._real.writelines(list_of_data)

    def write_eof(self) -> None:
        self._real.write_eof()

    def can_write_eof(self) -> bool:
        return self._real.can_write_eof()

    def close(self) -> None:
        self._real.close()

    def abort(self) -> None:
        self._real.abort()

    def is_closing(self) -> bool:
        return self._real.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._real.get_extra_info(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._real.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._real.get_write_buffer_size()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:  # pragma: no cover - unused
        self._real.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:  # pragma: no cover - unused
        return self._real.get_protocol()


_HEAD, _BODY, _CLOSING = "head", "body", "closing"


class EdgeProtocol(asyncio.Protocol):
    """One connection: holds each request head until it is whole and acceptable, then passes it on."""

    def __init__(self, edge: Edge, inner_factory: Callable[[], asyncio.Protocol]) -> None:
        self.edge = edge
        self._inner_factory = inner_factory
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.proxy: _Transport | None = None
        self.addr = "?"
        self.opened = time.monotonic()
        self.state = _HEAD
        self.head = bytearray()
        self.head_started: float = 0.0
        self.body_left = 0
        self.paused = False
        self.forwarded = 0  # requests passed to aiohttp on this connection
        self.last_write = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def evictable(self) -> bool:
        """Waiting for a request head (slow, or idle with nothing written for a while).

        Never a connection inside a body, nor one whose answer (or event stream) is being written.
        """
        if self.state != _HEAD:
            return False
        if self.head or self.forwarded == 0:
            return True
        return time.monotonic() - self.last_write > 5.0

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.addr = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        why = self.edge.admit(self)
        if why is not None:
            self.state = _CLOSING
            transport.write(_raw_response(503, "busy", why, retryable=True))
            transport.close()
            return
        self.head_started = self._loop.time()
        self.proxy = _Transport(transport, self)
        self.inner = self._inner_factory()
        self.inner.connection_made(self.proxy)
        self.rearm()

    def data_received(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.inner is not None:
            if self.state == _CLOSING:
                return
            if self.state == _BODY:
                n = min(len(view), self.body_left)
                self.inner.data_received(bytes(view[:n]))
                view, self.body_left = view[n:], self.body_left - n
                if self.body_left == 0:
                    self.state = _HEAD
                    self.head_started = 0.0
                self.rearm()
                continue
            view = self._take_head(view)

    def eof_received(self) -> bool | None:
        if self.inner is not None:
            return self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.edge.release(self)
        if self.inner is not None:
            inner, self.inner = self.inner, None
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # -- heads ----------------------------------------------------------------------------

    def _take_head(self, view: memoryview) -> memoryview:
        """Collect head bytes; pass a whole, acceptable head on. Returns what follows it."""
        if not self.head:
            if not self.head_started:
                self.head_started = self._loop.time()
                self.rearm()
            # Blank lines between requests are allowed (RFC 9112 §2.2) and pass through.
            stripped = bytes(view).lstrip(b"\r\n")
            view = view[len(view) - len(stripped) :]
            if not view:
                return view
        prev = len(self.head)
        room = self.edge.limits.max_head_bytes + 4 - prev
        self.head += view[:room]
        end = self.head.find(b"\r\n\r\n", max(0, prev - 3))
        if end < 0:
            if len(self.head) > self.edge.limits.max_head_bytes:
                self.refuse(
                    431, "header_too_large", f"request head over {self.edge.limits.max_head_bytes} bytes"
                )
            return view[len(view) :]
        used = end + 4 - prev
        head = bytes(self.head[: end + 4])
        self.head.clear()
        verdict = self._check(head)
        if verdict is not None:
            self.refuse(*verdict)
            return view[len(view) :]
        assert self.inner is not None
        self.forwarded += 1
        self.inner.data_received(head)
        if self.body_left:
            self.state = _BODY
        else:
            self.head_started = 0.0
        self.rearm()
        return view[used:]

    def _check(self, head: bytes) -> tuple[int, str, str] | None:
        """Why this head is refused at the edge (status, code, message), or None."""
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            return None  # malformed: aiohttp answers 400 itself
        fields: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                fields.setdefault(name.strip().lower(), []).append(value.strip())
        coding = b",".join(fields.get(b"content-encoding", [])).strip().lower()
        if coding not in (b"", b"identity"):
            return (
                415,
                "content_encoding_refused",
                "ground takes no Content-Encoding: link frames are already compressed; send the body as is",
            )
        if b"transfer-encoding" in fields:
            return 411, "length_required", "send a Content-Length, not Transfer-Encoding"
        if b"upgrade" in fields:
            return 501, "upgrade_refused", "ground offers no protocol upgrade"
        lengths = set(fields.get(b"content-length", []))
        if len(lengths) > 1:
            return 400, "bad_request", "conflicting Content-Length headers"
        n = 0
        if lengths:
            raw = lengths.pop()
            if not raw.isdigit() or len(raw) > 15:
                return 400, "bad_request", "Content-Length is not a number"
            n = int(raw)
        target = parts[1]
        if target[:7].lower() in (b"http://", b"https:/"):  # absolute form (RFC 9112 §3.2.2)
            target = b"/" + target.split(b"/", 3)[-1] if target.count(b"/") >= 3 else b"/"
        limit = self.edge.limits.max_body_bytes(target)
        if n > limit:
            return 413, "body_too_large", f"request body of {n} bytes; this path takes at most {limit}"
        self.body_left = n
        return None

    # -- refusals, deadlines --------------------------------------------------------------

    def refuse(self, status: int, code: str, message: str) -> None:
        """Answer through aiohttp, after anything already passed on, then close the connection."""
        if self.state == _CLOSING or self.inner is None or self.proxy is None:
            return
        self.edge.stats.refused_requests += 1
        self.state = _CLOSING
        self.head.clear()
        path = REFUSAL_PREFIX + secrets.token_hex(16)
        self.proxy.refusal = (path, status, code, message)
        self.inner.data_received(
            f"GET {path} HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n".encode("ascii")
        )
        self.paused = False
        self.rearm()

    def rearm(self) -> None:
        """Set the one deadline this connection's state calls for."""
        self._cancel_timer()
        lim = self.edge.limits
        if self.state == _CLOSING:
            self._timer = self._loop.call_later(lim.close_grace_s, self.abort)
        elif self.state == _BODY and not self.paused:
            self._timer = self._loop.call_later(lim.body_idle_s, self._body_timeout)
        elif self.state == _HEAD and self.head_started:
            at = self.head_started + lim.header_timeout_s
            self._timer = self._loop.call_at(at, self._head_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self.edge.stats.head_timeouts += 1
        self.refuse(
            408,
            "request_timeout",
            f"request head not complete within {self.edge.limits.header_timeout_s:g} s",
        )

    def _body_timeout(self) -> None:
        # Mid-body, aiohttp is reading it: no answer can follow on this connection.
        self.edge.stats.body_timeouts += 1
        self.abort()

    def abort(self) -> None:
        self._cancel_timer()
        self.state = _CLOSING
        if self.transport is not None:
            self.transport.abort()


def _raw_response(status: int, code: str, message: str, *, retryable: bool = False) -> bytes:
    body = json.dumps({"error": code, "message": message, "retryable": retryable}).encode()
    reason = {503: "Service Unavailable"}.get(status, "Error")
    extra = "Retry-After: 1\r\n" if retryable else ""
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    ).encode("ascii") + body


@web.middleware
async def refusal_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Answer the edge's synthetic request for a refused one (its path is this connection's secret)."""
    if request.path.startswith(REFUSAL_PREFIX):
        refusal = getattr(request.transport, "refusal", None)
        if refusal is not None and secrets.compare_digest(refusal[0], request.path):
            _, status, code, message = refusal
            refused = web.json_response(
                {"error": code, "message": message, "retryable": status in (408, 503)},
                status=status,
                headers={"Cache-Control": "no-store"},
            )
            refused.force_close()
            return refused
    resp: web.StreamResponse = await handler(request)
    return resp


# Enough of a parser's complaint to act on; the offending line can be 8 KiB.
MAX_ERROR_MESSAGE_CHARS = 200


def json_errors(server: Callable[[], web.RequestHandler]) -> Callable[[], web.RequestHandler]:
    """``server`` (aiohttp's protocol factory) with JSON instead of aiohttp's plain-text errors.

    aiohttp answers a request its parser refused, and a handler's escaped exception, through
    the connection's ``handle_error``. web.Server builds its handlers itself (with the
    runner's settings), so each new one is given :class:`JsonErrorHandler`'s class: a subclass
    that adds no state and overrides only that method.
    """

    def make() -> web.RequestHandler:
        handler = server()
        handler.__class__ = JsonErrorHandler
        return handler

    return make


class JsonErrorHandler(web.RequestHandler):
    """aiohttp's request handler, answering its error responses as ground's JSON."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own method logs the error (through ground's redacting handler) and raises
        # ConnectionError when a response has already begun; its text body is dropped.
        super().handle_error(request, status, exc, message)
        if status >= 500:
            code, text = "internal", "ground failed to answer this request; the failure is in ground's log"
        else:
            code = "bad_request" if status == 400 else HTTPStatus(status).phrase.lower().replace(" ", "_")
            said = visible(redact(message or HTTPStatus(status).phrase))
            if len(said) > MAX_ERROR_MESSAGE_CHARS:
                said = said[:MAX_ERROR_MESSAGE_CHARS] + "…"
            text = f"malformed HTTP request: {said}"
        resp = web.json_response(
            {"error": code, "message": text, "retryable": False},
            status=status,
            headers={"Cache-Control": "no-store"},
        )
        resp.force_close()
        return resp


class EdgeSite(web.BaseSite):
    """A TCP site whose connections go through an :class:`Edge` (optionally over TLS)."""

    __slots__ = ("_host", "_port", "_edge", "_bound_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        edge: Edge,
        ssl_context: Any = None,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host, self._port, self._edge = host, port, edge
        self._bound_port: int | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        return self._bound_port if self._bound_port is not None else self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        kw: dict[str, Any] = {}
        if self._ssl_context is not None:
            # A TLS handshake that never finishes is a slowloris too.
            kw["ssl_handshake_timeout"] = self._edge.limits.header_timeout_s
        self._server = await loop.create_server(
            self._edge.factory(json_errors(server)),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=min(self._backlog, ACCEPT_BURST),
            reuse_address=True,
            **kw,
        )
        sockets = self._server.sockets
        self._bound_port = int(sockets[0].getsockname()[1]) if sockets else self._port
