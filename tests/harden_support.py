"""Helpers for the issue 16 hardening tests: `ground serve` in this loop, raw sockets, a latency probe."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from link_support import free_port

from ground.edge import Edge, EdgeLimits
from ground.home import GroundHome

FAST = EdgeLimits(header_timeout_s=1.0, body_idle_s=1.0, max_conns_per_addr=20, close_grace_s=1.0)


@contextlib.asynccontextmanager
async def ground(home: Path, limits: EdgeLimits = FAST, **serve_kw: Any) -> AsyncIterator[tuple[str, Edge]]:
    from ground.server import serve

    port = free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    gh = GroundHome(home)
    edges: list[Edge] = []
    task = asyncio.ensure_future(
        serve(gh, "127.0.0.1", port, stop=stop, ready=ready, edge_limits=limits, edge_out=edges, **serve_kw)
    )
    await asyncio.wait_for(ready.wait(), 10)
    try:
        scheme = "https" if serve_kw.get("ssl_context") else "http"
        yield f"{scheme}://127.0.0.1:{port}", edges[0]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        gh.close()


async def raw(port: int, data: bytes, *, src: str = "127.0.0.2", wait_s: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection from ``src``; everything ground answers until it closes.

    Ground may answer and close before the whole of ``data`` is written (a refused head with a
    body behind it): the write then fails with a broken pipe, and the answer is still what came.
    """
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        sock.bind((src, 0))
        await loop.sock_connect(sock, ("127.0.0.1", port))
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(loop.sock_sendall(sock, data), wait_s)
        return await asyncio.wait_for(_recv_all(loop, sock), wait_s)


async def _recv_all(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    # Linux hands over what was received before a reset, then reports the reset.
    out = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await loop.sock_recv(sock, 65536):
            out += chunk
    return out


def raw_blocking(port: int, request: bytes) -> bytes:
    """Send ``request`` to 127.0.0.1:``port`` from a plain socket; all it answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


async def read_all(r: asyncio.StreamReader) -> bytes:
    """What arrives until the connection closes (a write to a closed socket may end it early)."""
    out = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await r.read(65536):
            out += chunk
    return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) else 0


def json_of(answer: bytes) -> dict[str, object]:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]


class Probe:
    """Times /v1/health from 127.0.0.1 every 50 ms while an attack runs."""

    def __init__(self, url: str) -> None:
        self.url, self.worst, self.failures, self.n = url, 0.0, 0, 0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        conn = aiohttp.TCPConnector(force_close=True)  # a new connection each time, like a newcomer
        async with aiohttp.ClientSession(connector=conn) as s:
            while not self._stop.is_set():
                t0 = time.perf_counter()
                try:
                    async with s.get(self.url + "/v1/health", timeout=aiohttp.ClientTimeout(total=10)) as r:
                        ok = r.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                self.worst = max(self.worst, time.perf_counter() - t0)
                self.failures += not ok
                self.n += 1
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])
