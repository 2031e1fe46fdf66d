"""The connection race `onboard sync` runs while the link is down (docs/link.md "After a loss
of signal"): one race shared by every request waiting for a new connection to ground.

Happy Eyeballs' staggered attempts (RFC 8305 §5) over ground's one address: another attempt
each ``every_s`` while any request waits, so a SYN leaves within one step of the link's return
instead of at the kernel's next SYN retry (1, 2, 4 s … after the first). Unlike aiohttp's race
(aiohappyeyeballs), which starts the next attempt at once when one fails:

- a failed attempt does not bring the next one forward, and attempts are at least
  ``MIN_STEP_S`` apart whatever the caller asks: at most 20 a second, whatever happens;
- a refusal (ECONNREFUSED, or a reset) means ground's host is reachable but not listening
  (port closed, ground restarting): racing cannot help, so every waiting request fails at
  once and the sender backs off as after any refused probe;
- whichever attempt connects serves the first request still waiting; once none waits, the
  attempts still under way are abandoned (as Happy Eyeballs closes the losers). One that
  connects after its request gave up (a probe's deadline) is kept ``SPARE_KEEP_S`` for the
  next request, which the sender sends at once: a deadline no longer restarts the race.
- a copy of a request (``hedge``: a text post written in the dark, sent twice) takes a
  connection only from attempts already under way, once every request waiting on ``connect``
  has one; it starts no attempt of its own, and gets None at once when none is under way.
- a request sent while the link is believed up joins the race only once its own connect has
  gone unanswered longer than the path makes plausible (onboard/sync.py; the sender's
  ``connect_unanswered``); if that connect answers first, ``settle`` stops the attempts.

simlink/vhttp.py ``SimRace`` models this race in virtual time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Callable
from typing import Any

MIN_STEP_S = 0.05
# A connection no request took is closed after this long (ground's edge closes one without a
# request after 30 s, and keeps at most 96 a station; the sender's next probe comes at once).
SPARE_KEEP_S = 2.0
SPARE_MAX = 8
# Attempts open at once, at most (each ends after a SYN and one retry, ~3 s: TCP_SYNCNT=1).
MAX_OPEN = 64
REFUSALS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET})

SocketFactory = Callable[[Any], socket.socket]
AddrInfo = tuple[Any, ...]  # (family, type, proto, canonname, sockaddr), as getaddrinfo gives


class ConnectRace:
    """One connection race to one address, shared by every request that waits on ``connect``."""

    def __init__(self, socket_factory: SocketFactory, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._factory = socket_factory
        self._clock = clock
        self._waiting: list[asyncio.Future[socket.socket]] = []
        self._hedges: list[asyncio.Future[socket.socket | None]] = []  # copies (``hedge``)
        self._attempts: set[asyncio.Task[None]] = set()
        self._spare: list[tuple[socket.socket, float]] = []
        self._addr: AddrInfo | None = None
        self._every_s = 1.0
        self._next_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self.started = 0  # attempts started (tests count them)

    async def connect(self, addr_info: AddrInfo, every_s: float) -> socket.socket:
        """A connected socket to ``addr_info``: a spare one, or the next the race connects.

        Raises the refusal (ConnectionRefusedError, ConnectionResetError) when an attempt is
        refused; cancelling leaves the attempts under way racing for the next request."""
        loop = asyncio.get_running_loop()
        if addr_info != self._addr:
            self._drop_spares()
            self._addr = addr_info
        self._every_s = max(MIN_STEP_S, every_s)
        sock = self.take(addr_info)
        if sock is not None:
            return sock
        fut: asyncio.Future[socket.socket] = loop.create_future()
        self._waiting.append(fut)
        if self._timer is None:
            self._timer = loop.call_at(max(loop.time(), self._next_at), self._attempt)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._keep(fut.result())  # it connected as the request gave up: the next takes it
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(fut)

    async def hedge(self, addr_info: AddrInfo) -> socket.socket | None:
        """A connection for a copy of a request: a spare one, or one the attempts already under
        way make after every request waiting on ``connect`` has its own. None when none is
        under way (or the race ends without one): the copy is not sent."""
        sock = self.take(addr_info)
        if sock is not None or addr_info != self._addr or not (self._attempts or self._waiting):
            return sock
        fut: asyncio.Future[socket.socket | None] = asyncio.get_running_loop().create_future()
        self._hedges.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and (got := fut.result()) is not None:
                self._keep(got)  # it connected as the copy was withdrawn: the next takes it
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._hedges.remove(fut)

    def take(self, addr_info: AddrInfo) -> socket.socket | None:
        """A connection the race made that no request took yet (None: none left open)."""
        if addr_info != self._addr:
            return None
        while self._spare:
            sock, _ = self._spare.pop(0)
            if _alive(sock):
                return sock
            sock.close()
        return None

    def settle(self) -> None:
        """A request's own connect was answered (the link works): unless a request or a copy
        still waits, stop the attempts under way (connections already made stay spare)."""
        if self._waiting or self._hedges:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._abandon()

    def close(self) -> None:
        """Stop racing; close the attempts under way and the spare connections (and any handed
        back later, by a request cancelled as the session ends)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for t in list(self._attempts):
            t.cancel()
        self._release_hedges()
        self._drop_spares()

    # -- the race --------------------------------------------------------------------------

    def _attempt(self) -> None:
        self._timer = None
        if not self._waiting or self._addr is None:
            return
        loop = asyncio.get_running_loop()
        if len(self._attempts) < MAX_OPEN:
            task = loop.create_task(self._try(self._addr))
            self._attempts.add(task)
            task.add_done_callback(self._attempt_ended)
            self.started += 1
        self._next_at = loop.time() + self._every_s
        self._timer = loop.call_at(self._next_at, self._attempt)

    async def _try(self, addr_info: AddrInfo) -> None:
        """One attempt: connect a socket; hand it over, or stop the race on a refusal."""
        loop = asyncio.get_running_loop()
        sock: socket.socket | None = None
        try:
            sock = self._factory(addr_info)
            sock.setblocking(False)
            await loop.sock_connect(sock, addr_info[-1])
        except OSError as exc:
            if sock is not None:
                sock.close()
            if exc.errno in REFUSALS or isinstance(exc, ConnectionRefusedError | ConnectionResetError):
                self._refused(exc)
            return  # no answer (the link is dark): the next attempt comes at its step
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        self._connected(sock)

    def _attempt_ended(self, task: asyncio.Task[None]) -> None:
        self._attempts.discard(task)
        if not self._attempts and not self._waiting:
            self._release_hedges()  # no connection is coming for the copies

    def _connected(self, sock: socket.socket) -> None:
        """A request waiting on ``connect`` takes ``sock``, else a copy (``hedge``), else it is
        kept for the next request; once none waits, the attempts under way are abandoned."""
        if not self._serve(self._waiting, sock) and not self._serve(self._hedges, sock):
            self._keep(sock)
            return
        if not self._waiting and not self._hedges:
            self._abandon()  # every request and copy served: the rest would only load ground

    @staticmethod
    def _serve(queue: list[Any], sock: socket.socket) -> bool:
        while queue:
            fut = queue.pop(0)
            if not fut.done():
                fut.set_result(sock)
                return True
        return False

    def _release_hedges(self) -> None:
        hedges, self._hedges = self._hedges, []
        for fut in hedges:
            if not fut.done():
                fut.set_result(None)

    def _abandon(self) -> None:
        for t in list(self._attempts):
            if t is not asyncio.current_task():
                t.cancel()

    def _refused(self, exc: OSError) -> None:
        """Ground's host answered with a refusal: every waiting request fails with it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        for fut in waiting:
            if not fut.done():
                fut.set_exception(type(exc)(exc.errno, exc.strerror))
        self._release_hedges()
        self._abandon()

    # -- spare connections -----------------------------------------------------------------

    def _keep(self, sock: socket.socket) -> None:
        # Closed: no request will take it, and no loop may be left to run the expiry.
        if self._closed or len(self._spare) >= SPARE_MAX:
            sock.close()
            return
        self._spare.append((sock, self._clock()))
        asyncio.get_running_loop().call_later(SPARE_KEEP_S, self._expire)

    def _expire(self) -> None:
        now = self._clock()
        keep = []
        for sock, at in self._spare:
            if now - at >= SPARE_KEEP_S - 1e-3:
                sock.close()
            else:
                keep.append((sock, at))
        self._spare = keep

    def _drop_spares(self) -> None:
        for sock, _ in self._spare:
            sock.close()
        self._spare = []


def _alive(sock: socket.socket) -> bool:
    """Is a connected socket still open at the other end (nothing read, nothing closed)?"""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True  # open, nothing to read
    except OSError:
        return False
