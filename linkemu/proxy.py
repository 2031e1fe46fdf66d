"""A link-emulating TCP proxy for loopback tests: rate, delay, random cuts, loss of signal.

    client ──► [token bucket up] ──► [delay line] ──► server
    client ◄── [delay line] ◄── [token bucket down] ◄── server

- **Rate**: one token bucket per direction, *shared by every connection* (the station has
  one link, not one per TCP connection). Bytes are read from a socket only in pieces the
  bucket can pay for, so what sits in a socket buffer has not "crossed the link" yet.
- **Delay**: every piece is delivered ``delay_s`` after it crossed (one-way latency).
- **Random cuts**: with ``cut_every_bytes=(lo, hi)`` the proxy aborts (RST) the connection
  that carries the n-th byte of a direction, n drawn uniformly from [lo, hi] after each cut
  from a seeded RNG, so runs are repeatable. Bytes still in the delay line are lost.
- **Loss of signal**: ``start_loss()`` stalls both directions of every connection (new ones
  too); ``end_loss()`` aborts every connection alive and lets traffic flow again: a stall
  then a cut, as when the station leaves relay coverage. ``schedule_loss(windows)`` scripts
  windows relative to now.

``stats`` counts bytes that crossed the link each way; that is what tests call "bytes on
the wire". Loopback only: the proxy refuses to listen on or forward to anything else.

Run by hand: ``python -m linkemu.proxy --target 127.0.0.1:8470 --listen-port 8471 --rate-kbps 64 --delay-ms 300``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# Piece size bounds: small enough that one connection cannot hog the bucket for long on a
# 10 kbit/s link, big enough to keep syscall counts sane on a fast one.
MIN_PIECE_BYTES = 256
MAX_PIECE_BYTES = 16 * 1024


class ProxyError(Exception):
    """Misconfiguration of the proxy (e.g. a non-loopback address)."""


def _check_loopback(host: str) -> None:
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok:
        raise ProxyError(f"linkemu only runs on loopback; {host!r} is not 127.0.0.1/::1")


@dataclass(frozen=True, slots=True, kw_only=True)
class Direction:
    """One way of the link: rate in bits/s (None = unlimited) and one-way delay."""

    rate_bps: float | None = None
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LossWindow:
    """A loss-of-signal window ``start_s`` after scheduling, lasting ``duration_s``.

    ``cut_after_s`` (simulate.py's profiles): cut every connection that long into the window
    instead of at its end, as a real link's state is lost while the station is still dark;
    connections opened later in the window stall and are cut when it ends.
    """

    start_s: float
    duration_s: float
    cut_after_s: float | None = None


@dataclass(slots=True)
class ProxyStats:
    bytes_up: int = 0  # client → server, crossed the link
    bytes_down: int = 0  # server → client
    connections: int = 0
    random_cuts: int = 0
    loss_cuts: int = 0  # connections aborted at the end of a loss-of-signal window
    # ... of which the last bytes had gone server → client: a keep-alive connection between
    # requests (or one whose answer was under way), where an HTTP client has no request to fail.
    loss_cuts_idle: int = 0
    cut_offsets: list[int] = field(default_factory=list)  # wire offsets of the random cuts

    @property
    def cuts(self) -> int:
        return self.random_cuts + self.loss_cuts


class TokenBucket:
    """A FIFO token bucket: ``await take(n)`` returns once ``n`` bytes may cross."""

    def __init__(self, rate_bytes_s: float | None, burst_bytes: int, clock: Callable[[], float]) -> None:
        self.rate = rate_bytes_s
        self.burst = burst_bytes
        self.tokens = float(burst_bytes)
        self.clock = clock
        self.updated = clock()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        if self.rate is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def take(self, n: int) -> None:
        if self.rate is None:
            return
        async with self.lock:
            self._refill()
            if self.tokens < n:
                await asyncio.sleep((n - self.tokens) / self.rate)
                self._refill()
            self.tokens -= n


class _Conn:
    def __init__(self, proxy: LinkProxy, cid: int) -> None:
        self.proxy = proxy
        self.cid = cid
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.cut = False
        # "up" once the client sent bytes (read by the proxy, even in the dark), "down" once an
        # answer's bytes reached the client after them: "down" = idle between requests.
        self.last_way: str | None = None

    def abort(self) -> None:
        """Cut the connection both ways (RST); whatever is still in flight is lost."""
        if self.cut:
            return
        self.cut = True
        for w in self.writers:
            w.transport.abort()
        for t in self.tasks:
            t.cancel()


class LinkProxy:
    """Forward ``listen_host:listen_port`` to ``target_host:target_port`` through an emulated link."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        up: Direction = Direction(),
        down: Direction = Direction(),
        cut_every_bytes: tuple[int, int] | None = None,
        cut_direction: str = "up",
        max_cuts: int | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_loopback(listen_host)
        _check_loopback(target_host)
        if cut_direction not in ("up", "down", "both"):
            raise ProxyError("cut_direction must be 'up', 'down' or 'both'")
        if cut_every_bytes is not None and not 0 < cut_every_bytes[0] <= cut_every_bytes[1]:
            raise ProxyError("cut_every_bytes must be (lo, hi) with 0 < lo <= hi")
        self.target = (target_host, target_port)
        self.listen = (listen_host, listen_port)
        self.up = up
        self.down = down
        self.cut_every_bytes = cut_every_bytes
        self.cut_direction = cut_direction
        self.max_cuts = max_cuts
        self.rng = random.Random(seed)
        self.clock = clock
        self.stats = ProxyStats()
        self._buckets = {
            "up": TokenBucket(*self._bucket_args(up), clock),
            "down": TokenBucket(*self._bucket_args(down), clock),
        }
        self._cut_counted = 0  # bytes counted toward the next random cut
        self._next_cut = self._draw_cut()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._conns: dict[int, _Conn] = {}
        self._next_cid = 0
        self._server: asyncio.Server | None = None
        self._scheduled: list[asyncio.Task[None]] = []

    @staticmethod
    def _bucket_args(d: Direction) -> tuple[float | None, int]:
        if d.rate_bps is None:
            return None, MAX_PIECE_BYTES
        rate = d.rate_bps / 8
        # About 50 ms of traffic per piece keeps pacing smooth at every rate.
        return rate, max(MIN_PIECE_BYTES, min(MAX_PIECE_BYTES, int(rate * 0.05)))

    def _draw_cut(self) -> int | None:
        if self.cut_every_bytes is None:
            return None
        if self.max_cuts is not None and self.stats.random_cuts >= self.max_cuts:
            return None
        return self.rng.randint(*self.cut_every_bytes)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> LinkProxy:
        self._server = await asyncio.start_server(self._handle, *self.listen)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the proxy first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://{self.listen[0]}:{self.port}"

    async def close(self) -> None:
        for t in self._scheduled:
            t.cancel()
        if self._server is not None:
            self._server.close()
        for c in list(self._conns.values()):
            c.abort()
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.sleep(0)

    async def __aenter__(self) -> LinkProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- loss of signal --------------------------------------------------------------

    @property
    def dark(self) -> bool:
        return not self._flowing.is_set()

    def start_loss(self) -> None:
        """The station leaves coverage: nothing crosses, in either direction, until end_loss()."""
        self._flowing.clear()

    def end_loss(self) -> None:
        """Coverage is back: every connection that lived through the dark is cut, traffic flows."""
        for c in list(self._conns.values()):
            if not c.cut:
                self.stats.loss_cuts += 1
                self.stats.loss_cuts_idle += c.last_way == "down"
                c.abort()
        self._flowing.set()

    def schedule_loss(self, windows: Iterable[LossWindow]) -> None:
        """Script loss-of-signal windows relative to now (bounded: they end on their own)."""
        for w in windows:
            self._scheduled.append(asyncio.ensure_future(self._run_window(w)))

    async def _run_window(self, w: LossWindow) -> None:
        await asyncio.sleep(w.start_s)
        self.start_loss()
        try:
            if w.cut_after_s is not None and w.cut_after_s < w.duration_s:
                await asyncio.sleep(w.cut_after_s)
                self.cut_in_loss()
                await asyncio.sleep(w.duration_s - w.cut_after_s)
            else:
                await asyncio.sleep(w.duration_s)
        finally:
            self.end_loss()

    def cut_in_loss(self) -> None:
        """Abort every live connection while still dark (counted as loss-of-signal cuts)."""
        for c in list(self._conns.values()):
            if not c.cut:
                self.stats.loss_cuts += 1
                self.stats.loss_cuts_idle += c.last_way == "down"
                c.abort()

    def cut_all(self) -> None:
        """Abort every live connection now (counted as random cuts)."""
        for c in list(self._conns.values()):
            if not c.cut:
                self.stats.random_cuts += 1
                c.abort()

    # -- forwarding ------------------------------------------------------------------

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        cid = self._next_cid
        self._next_cid += 1
        self.stats.connections += 1
        conn = _Conn(self, cid)
        self._conns[cid] = conn
        conn.writers.append(c_writer)
        try:
            try:
                s_reader, s_writer = await asyncio.open_connection(*self.target)
            except OSError:
                c_writer.transport.abort()
                return
            conn.writers.append(s_writer)
            conn.tasks = [
                asyncio.ensure_future(self._pipe(conn, "up", c_reader, s_writer)),
                asyncio.ensure_future(self._pipe(conn, "down", s_reader, c_writer)),
            ]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self._conns.pop(cid, None)
            for w in conn.writers:
                w.close()

    async def _pipe(
        self, conn: _Conn, way: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        d = self.up if way == "up" else self.down
        bucket = self._buckets[way]
        line: asyncio.Queue[tuple[float, bytes | None]] = asyncio.Queue()
        deliver = asyncio.ensure_future(self._deliver(conn, way, line, writer))
        conn.tasks.append(deliver)
        try:
            while True:
                # Read even while dark (what was read crosses only once the link is back), so
                # a request sent into the dark marks its connection busy (loss_cuts_idle).
                try:
                    data = await reader.read(bucket.burst)
                except (ConnectionError, OSError):
                    data = b""
                if data and way == "up":
                    conn.last_way = "up"
                if not data:
                    line.put_nowait((self.clock() + d.delay_s, None))
                    break
                view = memoryview(data)
                while view:
                    await self._flowing.wait()
                    piece = view[: bucket.burst]
                    await bucket.take(len(piece))
                    await self._flowing.wait()  # the dark may have fallen while we waited
                    if conn.cut:
                        return
                    n = self._cut_point(way, len(piece))
                    self._count(way, len(piece) if n is None else n)
                    if n is not None:
                        self.stats.cut_offsets.append(self.stats.bytes_up + self.stats.bytes_down)
                        conn.abort()
                        return
                    line.put_nowait((self.clock() + d.delay_s, bytes(piece)))
                    view = view[len(piece) :]
            await deliver
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError):
            conn.abort()

    def _cut_point(self, way: str, n: int) -> int | None:
        """If the random cut falls inside these ``n`` bytes, how many cross before it."""
        if self._next_cut is None or (self.cut_direction != "both" and way != self.cut_direction):
            return None
        if self._cut_counted + n < self._next_cut:
            self._cut_counted += n
            return None
        k = self._next_cut - self._cut_counted
        self._cut_counted = 0
        self.stats.random_cuts += 1
        self._next_cut = self._draw_cut()
        return k

    def _count(self, way: str, n: int) -> None:
        if way == "up":
            self.stats.bytes_up += n
        else:
            self.stats.bytes_down += n

    async def _deliver(
        self,
        conn: _Conn,
        way: str,
        line: asyncio.Queue[tuple[float, bytes | None]],
        writer: asyncio.StreamWriter,
    ) -> None:
        try:
            while True:
                at, data = await line.get()
                wait = at - self.clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                if conn.cut:
                    return
                if data is None:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                if way == "down":
                    conn.last_way = "down"
                await writer.drain()
        except asyncio.CancelledError:
            pass
        except (ConnectionError, OSError):
            conn.abort()


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


async def _amain(args: argparse.Namespace) -> None:
    rate = args.rate_kbps * 1000 if args.rate_kbps else None
    d = Direction(rate_bps=rate, delay_s=args.delay_ms / 1000)
    lo_hi = tuple(int(x) for x in args.cut_every.split(":")) if args.cut_every else None
    host, port = _hostport(args.target)
    proxy = LinkProxy(
        host,
        port,
        listen_port=args.listen_port,
        up=d,
        down=d,
        cut_every_bytes=lo_hi,  # type: ignore[arg-type]
        seed=args.seed,
    )
    await proxy.start()
    windows = []
    for spec in args.los or []:
        start, dur = (float(x) for x in spec.split(":"))
        windows.append(LossWindow(start_s=start, duration_s=dur))
    proxy.schedule_loss(windows)
    print(f"linkemu: {proxy.url} → {host}:{port}", flush=True)
    try:
        while True:
            await asyncio.sleep(5)
            s = proxy.stats
            print(
                f"up {s.bytes_up:,} B, down {s.bytes_down:,} B, conns {s.connections}, cuts {s.cuts}",
                flush=True,
            )
    finally:
        await proxy.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m linkemu.proxy", description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="host:port of the server, e.g. 127.0.0.1:8470")
    p.add_argument("--listen-port", type=int, default=0)
    p.add_argument("--rate-kbps", type=float, default=0, help="each way; 0 = unlimited")
    p.add_argument("--delay-ms", type=float, default=0, help="one-way delay")
    p.add_argument("--cut-every", help="lo:hi bytes between random cuts of the upstream")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--los", action="append", help="start_s:duration_s loss-of-signal window; repeat")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_amain(p.parse_args(argv)))


if __name__ == "__main__":
    main()
