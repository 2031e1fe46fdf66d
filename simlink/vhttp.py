"""HTTP/1.1 in virtual time: real request and response bytes over a simulated connection.

h11 is a sans-IO HTTP/1.1 implementation, so the bytes counted on the simulated wire are the
bytes an HTTP client and server would exchange (request line, headers, body), not an estimate.
The headers copy what aiohttp sends and answers (see ``CLIENT_HEADERS``/``SERVER_HEADERS``),
which keeps virtual-time byte counts within a few percent of the real processes'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import h11

from onboard.race import SPARE_KEEP_S as RACE_SPARE_KEEP_S
from onboard.race import SPARE_MAX as RACE_SPARE_MAX
from protocol.errors import RemoteProtocolError
from protocol.window_clamp import WINDOW_HEADER, parse_window

from .clock import EventLoop, Timer
from .link import SimConnection, SimLink

AIOHTTP_VERSION = "3.13"
try:  # the real version string aiohttp puts in User-Agent / Server, when installed
    import aiohttp

    AIOHTTP_VERSION = aiohttp.__version__
except ImportError:  # pragma: no cover
    pass

CLIENT_HEADERS = [
    ("Host", "127.0.0.1:8470"),
    ("Accept", "*/*"),
    ("Accept-Encoding", "gzip, deflate"),
    ("User-Agent", f"Python/3.11 aiohttp/{AIOHTTP_VERSION}"),
]
# onboard/sync.py's session skips aiohttp's other defaults (LINK_SKIP_HEADERS).
LINK_CLIENT_HEADERS = CLIENT_HEADERS[:1]
SERVER_HEADERS = [
    ("Date", "Tue, 01 Dec 2026 00:00:00 GMT"),
    ("Server", f"Python/3.11 aiohttp/{AIOHTTP_VERSION}"),
]
# ground/server.py's answers on the link (/v1/link, /v1/health): no Server header.
LINK_SERVER_HEADERS = SERVER_HEADERS[:1]


# onboard/race.py's race: each attempt gives up after 2 SYNs (TCP_SYNCNT=1: a SYN and one
# retry, 3 s); a connection no request took is kept as long and as many as there.
RACE_SYNS = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    wire_bytes: int = 0  # the whole response as it crossed: status line, headers, body
    # When the request began on an open connection (aiohttp's on_request_headers_sent).
    started_at: float | None = None


class HttpClient:
    """One request at a time over a keep-alive connection, reconnecting as needed.

    ``request`` calls ``on_done(response)`` or ``on_error(reason)``. A request times out when
    nothing arrives for ``idle_timeout_s`` (aiohttp's ``sock_read``) or it takes longer than
    ``total_timeout_s``; the connection is then dropped, as aiohttp does.
    """

    def __init__(self, loop: EventLoop, link: SimLink, server_factory: Callable[[], ServerConn]) -> None:
        self.loop = loop
        self.link = link
        self.server_factory = server_factory
        self.conn: SimConnection | None = None
        self.h: h11.Connection | None = None
        self.pending: tuple[bytes, Callable[[HttpResponse], None], Callable[[str], None]] | None = None
        self.resp: h11.Response | None = None
        self.body = bytearray()
        self.idle_timer: Timer | None = None
        self.total_timer: Timer | None = None
        self.idle_timeout_s: float | None = 60.0
        self.total_timeout_s = 600.0
        self.bytes_sent = 0
        self.request_wire_bytes = 0
        self.rx = 0
        self.started_at: float | None = None
        self.racing: SimRace | None = None  # waiting on the shared race for a connection
        self.suspect_timer: Timer | None = None  # a plain connect joins the race after this
        self.on_begin: Callable[[float], float | None] | None = None
        self.gated = False  # the request carries a window: the station's send gate paces it
        self.close_timer: Timer | None = None
        # aiohttp's connector closes a keep-alive connection idle this long (keepalive_timeout).
        self.keepalive_s = 15.0
        self.auto_headers = CLIENT_HEADERS  # what aiohttp adds to every request
        # Told when an idle connection goes (cut, keep-alive expiry): a driver that keeps one open.
        self.on_idle_lost: Callable[[], None] | None = None

    @property
    def busy(self) -> bool:
        return self.pending is not None

    def request(
        self,
        method: str,
        target: str,
        body: bytes,
        headers: list[tuple[str, str]],
        on_done: Callable[[HttpResponse], None],
        on_error: Callable[[str], None],
        *,
        total_timeout_s: float | None = None,
        race_every_s: float | None = None,
        race: SimRace | None = None,
        on_begin: Callable[[float], float | None] | None = None,
        hedge: bool = False,
        race_after_s: float | None = None,
        on_unanswered: Callable[[], float | None] | None = None,
        gated: bool = False,
    ) -> None:
        """Send one request; with ``race_every_s`` and ``race`` a new connection comes from the
        shared race (onboard/race.py) instead of one connect with the kernel's SYN retries.
        ``on_begin(now)``, told when the request begins on a connection, may return a later
        deadline (onboard/sync.py reschedules its timeout alike). ``hedge`` (with ``race``): a
        copy of a request that only takes a connection the race makes anyway, never a new
        attempt; it fails at once when the race has none coming. ``race_after_s`` (with
        ``race``): a plain connect unanswered that long asks ``on_unanswered()`` for a race
        step and joins the race too, the first to connect serving (onboard/sync.py).
        ``gated``: the station's send gate paces it (SimLink.gate_holds; onboard/sync.py gates
        the bodies of requests carrying a window)."""
        assert self.pending is None, "one request at a time"
        self.gated = gated
        h = h11.Connection(h11.CLIENT)
        hdrs = [*self.auto_headers, *headers]
        if body or method != "GET":  # aiohttp sends no Content-Length on a bodiless GET
            hdrs.append(("Content-Length", str(len(body))))
        raw = h.send(h11.Request(method=method, target=target, headers=hdrs)) or b""
        raw += (h.send(h11.Data(data=body)) or b"") + (h.send(h11.EndOfMessage()) or b"")
        self.pending = (raw, on_done, on_error)
        self.on_begin = on_begin
        self.request_wire_bytes = len(raw)
        self.rx = 0
        self.h = h
        self.resp = None
        self.body = bytearray()
        self.total_timer = self.loop.after(
            total_timeout_s or self.total_timeout_s, self._fail, "request timed out"
        )
        if self.close_timer:
            self.close_timer.cancel()
            self.close_timer = None
        if self.conn is None or self.conn.closed:
            self._arm_idle(None if self.idle_timeout_s is None else max(self.idle_timeout_s, 70.0))
            spare = race.take() if race is not None else None
            if spare is not None:
                self.adopt(spare)  # the race made it as the link returned: no handshake
            elif hedge and race is not None:
                self.conn = None
                if race.join_hedge(self):
                    self.racing = race
                else:
                    self._fail("no spare connection for the copy")
            elif race_every_s is not None and race is not None:
                self.conn = None
                self.racing = race
                race.join(self, race_every_s)
            else:
                self.conn = self.link.connect(self, self.server_factory())
                if race_after_s is not None and race is not None and on_unanswered is not None:
                    self.suspect_timer = self.loop.after(race_after_s, self._suspect, race, on_unanswered)
        elif self.conn.established:
            self._write()

    def _suspect(self, race: SimRace, on_unanswered: Callable[[], float | None]) -> None:
        """The plain connect is unanswered after ``race_after_s``: join the race if told to."""
        self.suspect_timer = None
        if self.pending is None or self.racing is not None or self.conn is None or self.conn.established:
            return
        every_s = on_unanswered()
        if every_s is not None:
            self.racing = race
            race.join(self, every_s)

    def suspect_now(self) -> None:
        """The link went silent: a plain connect still waiting out ``race_after_s`` asks to
        join the race now (onboard/sync.py ``_WatchedConnector.silenced``)."""
        timer = self.suspect_timer
        if timer is not None and not timer.cancelled:
            timer.cancel()
            timer.fn(*timer.args)

    def adopt(self, conn: SimConnection) -> None:
        """The race's connection carries this client's request from now on (a plain connect
        still under way is dropped)."""
        self.racing = None
        plain, self.conn = self.conn, conn
        conn.adopt(self)
        if plain is not None and plain is not conn and not plain.closed:
            plain.abort("the race connected first")
        if self.pending:
            self._write()

    def _leave_race(self) -> None:
        if self.racing is not None:
            self.racing.leave(self)
            self.racing = None

    def _write(self) -> None:
        assert self.pending and self.conn
        raw = self.pending[0]
        self.started_at = self.loop.now
        if self.on_begin is not None:
            later = self.on_begin(self.loop.now)
            if later is not None and self.total_timer is not None and later > self.total_timer.when:
                self.total_timer.cancel()
                self.total_timer = self.loop.at(later, self._fail, "request timed out")
        self.bytes_sent += len(raw)
        self._arm_idle(self.idle_timeout_s)
        self.conn.gated = self.gated
        self.conn.send(True, raw)

    def _arm_idle(self, s: float | None) -> None:
        if self.idle_timer:
            self.idle_timer.cancel()
            self.idle_timer = None
        if s is not None:
            self.idle_timer = self.loop.after(s, self._fail, "no response (read timeout)")

    def _close_idle(self) -> None:
        self.close_timer = None
        if self.pending is None and self.conn is not None and not self.conn.closed:
            self.conn.abort("keep-alive timeout")  # connection_lost tells on_idle_lost
        self.conn = None

    def drop_idle(self) -> None:
        """Close this client's idle keep-alive connection (onboard/sync.py closes the pooled
        ones when a request is made while the link is down), without telling on_idle_lost."""
        if self.pending is not None or self.conn is None:
            return
        if self.close_timer:
            self.close_timer.cancel()
            self.close_timer = None
        conn, self.conn = self.conn, None
        if not conn.closed:
            conn.abort("pooled connection dropped while the link is down")

    def _finish(self) -> tuple[Callable[[HttpResponse], None], Callable[[str], None]] | None:
        for t in (self.idle_timer, self.total_timer, self.suspect_timer):
            if t:
                t.cancel()
        self.idle_timer = self.total_timer = self.suspect_timer = None
        if self.pending is None:
            return None
        _, ok, err = self.pending
        self.pending = None
        return ok, err

    def _fail(self, reason: str) -> None:
        cbs = self._finish()
        conn, self.conn = self.conn, None  # (so connection_lost does not report it as idle)
        self._leave_race()  # its attempts race on for the next request (onboard/race.py)
        if conn and not conn.closed:
            conn.abort(reason)  # aiohttp drops a connection whose request failed
        if cbs:
            cbs[1](reason)

    # Endpoint interface -------------------------------------------------------------
    def connection_made(self, conn: SimConnection) -> None:
        if conn is self.conn and self.pending:
            if self.suspect_timer is not None:
                self.suspect_timer.cancel()
                self.suspect_timer = None
            if self.racing is not None:  # the plain connect answered first: the link works
                race = self.racing
                self._leave_race()
                race.settle()
            self._write()

    def data_received(self, conn: SimConnection, data: bytes) -> None:
        if conn is not self.conn or self.h is None:
            return
        self._arm_idle(self.idle_timeout_s)
        self.rx += len(data)
        self.h.receive_data(data)
        while True:
            try:
                ev = self.h.next_event()
            except h11.RemoteProtocolError as exc:
                self._fail(f"bad HTTP response: {exc}")
                return
            if ev is h11.NEED_DATA or ev is h11.PAUSED:
                return
            if isinstance(ev, h11.Response):
                self.resp = ev
            elif isinstance(ev, h11.Data):
                self.body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                resp = self.resp
                cbs = self._finish()
                self.close_timer = self.loop.after(self.keepalive_s, self._close_idle)
                if cbs and resp is not None:
                    hdrs = tuple((k.decode(), v.decode()) for k, v in resp.headers)
                    cbs[0](
                        HttpResponse(
                            status=resp.status_code,
                            headers=hdrs,
                            body=bytes(self.body),
                            wire_bytes=self.rx,
                            started_at=self.started_at,
                        )
                    )
                return

    def connection_lost(self, conn: SimConnection, reason: str) -> None:
        if conn is not self.conn:
            return
        self.conn = None
        self._leave_race()  # the plain connect gave up: the request fails (onboard/sync.py)
        cbs = self._finish()
        if cbs:
            cbs[1](reason)
        elif self.on_idle_lost is not None:
            self.on_idle_lost()


class SimRace:
    """onboard/race.py in virtual time: one connection race shared by every request waiting
    for a new connection while the link is down. An attempt starts every ``every_s`` while
    a request waits (a failed one does not bring the next forward); whichever connects serves
    the first waiting request, and one no request waits for is kept ``RACE_SPARE_KEEP_S``
    for the next (a probe that reached its deadline is followed at once and takes it). A copy
    of a request (``join_hedge``: a post written in the dark, sent twice) takes a connection
    only once every waiting request has one, and starts no attempt; once every waiting
    request and copy is served, the attempts under way are abandoned."""

    def __init__(self, loop: EventLoop, link: SimLink, server_factory: Callable[[], ServerConn]) -> None:
        self.loop = loop
        self.link = link
        self.server_factory = server_factory
        self.waiting: list[HttpClient] = []
        # Copies of requests (hedges) waiting for a connection the race makes after every
        # request above has one; they start no attempt of their own.
        self.hedges: list[HttpClient] = []
        self.attempts: set[SimConnection] = set()
        self.spare: list[SimConnection] = []
        self.every_s = 1.0
        self.next_at = 0.0
        self.timer: Timer | None = None
        self.started = 0  # attempts, for the tests

    def take(self) -> SimConnection | None:
        """A connection the race made that no request took yet."""
        while self.spare:
            conn = self.spare.pop(0)
            if not conn.closed:
                return conn
        return None

    def join(self, client: HttpClient, every_s: float) -> None:
        self.every_s = every_s
        self.waiting.append(client)
        if self.timer is None:
            self.timer = self.loop.at(max(self.loop.now, self.next_at), self._attempt)

    def join_hedge(self, client: HttpClient) -> bool:
        """Wait for a connection from attempts already under way (False: none is)."""
        if not self.attempts and not self.waiting:
            return False
        self.hedges.append(client)
        return True

    def settle(self) -> None:
        """A request's own connect was answered (the link works): unless a request or a copy
        still waits, abandon the attempts under way (connections already made stay spare)."""
        if self.waiting or self.hedges:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for c in list(self.attempts):
            c.abort("the race is over")
        self.attempts.clear()

    def leave(self, client: HttpClient) -> None:
        if client in self.waiting:
            self.waiting.remove(client)
        if client in self.hedges:
            self.hedges.remove(client)

    def _attempt(self) -> None:
        self.timer = None
        if not self.waiting:
            return
        self.started += 1
        self.attempts.add(self.link.connect(self, self.server_factory(), syns=RACE_SYNS))
        self.next_at = self.loop.now + self.every_s
        self.timer = self.loop.at(self.next_at, self._attempt)

    # Endpoint interface, while connecting -------------------------------------------
    def connection_made(self, conn: SimConnection) -> None:
        self.attempts.discard(conn)
        if self.waiting or self.hedges:
            (self.waiting or self.hedges).pop(0).adopt(conn)
            if not self.waiting and not self.hedges:
                # Every request and copy served: abandon the rest, as onboard does.
                for c in list(self.attempts):
                    c.abort("the race is over")
                self.attempts.clear()
        elif len(self.spare) < RACE_SPARE_MAX:
            self.spare.append(conn)
            self.loop.after(RACE_SPARE_KEEP_S, self._expire, conn)
        else:
            conn.abort("no request took the raced connection")

    def _expire(self, conn: SimConnection) -> None:
        if conn in self.spare:
            self.spare.remove(conn)
            conn.abort("no request took the raced connection")

    def data_received(self, conn: SimConnection, data: bytes) -> None:
        pass

    def connection_lost(self, conn: SimConnection, reason: str) -> None:
        self.attempts.discard(conn)
        if conn in self.spare:
            self.spare.remove(conn)
        if not self.attempts and not self.waiting:
            for c in list(self.hedges):  # no connection is coming for them
                c._fail("no spare connection for the copy")


Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, str, bytes]]


def _clamp_window(conn: SimConnection, req: h11.Request) -> None:
    """ground/server.py's TCP_WINDOW_CLAMP on every open connection of the station (link
    version 4; ground/window.py StationWindows): the simulator runs one station."""
    name = WINDOW_HEADER.lower().encode()
    for k, v in req.headers:
        if k == name:
            with contextlib.suppress(RemoteProtocolError):
                n = float(parse_window(v.decode("latin-1")))
                for c in conn.link.conns:
                    if not c.closed:
                        c.up.rwnd = n


class ServerConn:
    """Ground's side of one connection: parses requests with h11 and answers with ``handler``."""

    def __init__(
        self,
        handler: Handler,
        on_cut_body: Callable[[bytes], None] | None = None,
        server_headers: list[tuple[str, str]] = SERVER_HEADERS,
    ) -> None:
        self.handler = handler
        # Given what arrived of a request body cut short (aiohttp's ConnectionResetError while
        # ground/server.py reads it), as ground keeps the bytes of a cut chunk.
        self.on_cut_body = on_cut_body
        self.server_headers = server_headers
        self.h = h11.Connection(h11.SERVER)
        self.req: h11.Request | None = None
        self.body = bytearray()

    def connection_made(self, conn: SimConnection) -> None:
        pass

    def connection_lost(self, conn: SimConnection, reason: str) -> None:
        if self.req is not None and self.on_cut_body is not None and self.h.their_state is h11.SEND_BODY:
            self.on_cut_body(bytes(self.body))
        self.req = None
        self.h = h11.Connection(h11.SERVER)

    def data_received(self, conn: SimConnection, data: bytes) -> None:
        self.h.receive_data(data)
        while True:
            try:
                ev = self.h.next_event()
            except h11.RemoteProtocolError:
                conn.abort("bad request")
                return
            if ev is h11.NEED_DATA:
                return
            if ev is h11.PAUSED:
                self.h.start_next_cycle()
                continue
            if isinstance(ev, h11.Request):
                self.req = ev
                self.body = bytearray()
                _clamp_window(conn, ev)
            elif isinstance(ev, h11.Data):
                self.body += ev.data
            elif isinstance(ev, h11.EndOfMessage):
                assert self.req is not None
                req, self.req = self.req, None
                headers = {k.decode().lower(): v.decode() for k, v in req.headers}
                status, ctype, body = self.handler(
                    req.method.decode(), req.target.decode(), headers, bytes(self.body)
                )
                # An empty ctype: ground sends none (a frame on /v1/link, _trim_link_headers).
                typed = [("Content-Type", ctype)] if ctype else []
                hdrs = [*typed, ("Content-Length", str(len(body))), *self.server_headers]
                raw = self.h.send(h11.Response(status_code=status, headers=hdrs)) or b""
                raw += (self.h.send(h11.Data(data=body)) or b"") + (self.h.send(h11.EndOfMessage()) or b"")
                conn.send(False, raw)
