"""Issue 16 items 2, 3, 5 and 9 against the real `ground serve` on loopback (ground/edge.py).

Attackers connect from other loopback addresses (127.0.0.2, .3, ...) than the station and the
health probe (127.0.0.1), as they would from elsewhere. Every loop is bounded in count and
time; latency bounds are generous regression guards (the probe's figures were 0.9-3.6 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from conftest import Cli
from harden_support import Probe, ground, json_of, port_of, raw, read_all, status_of
from link_support import free_port, setup_station

from ground.demo import end_process
from ground.edge import EdgeLimits
from protocol.transfer_wire import ReceiptsRequest, encode_request


async def test_slowloris_heads_time_out_and_one_address_cannot_hold_more_than_its_cap(tmp_path: Path) -> None:
    async with ground(tmp_path / "G") as (url, edge):
        port = port_of(url)
        probe = Probe(url)
        ptask = asyncio.ensure_future(probe.run())
        conns, readers = [], []
        # 60 slow clients from one address, a header byte every 0.2 s (probe: 1,000 stayed a minute).
        for _ in range(60):
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
            conns.append((r, w))
            readers.append(asyncio.ensure_future(read_all(r)))
        head = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
        t0 = time.monotonic()
        for i in range(10):
            for _, w in conns:
                if not w.is_closing():
                    with contextlib.suppress(ConnectionError):
                        w.write(head[i : i + 1])
            await asyncio.sleep(0.2)
        answers = await asyncio.wait_for(asyncio.gather(*readers), 5)
        for _, w in conns:
            w.close()
        elapsed = time.monotonic() - t0
        probe.stop()
        await ptask
    print(f"\nslowloris: /v1/health worst {probe.worst * 1000:.0f} ms over {probe.n} probes")
    statuses = [status_of(a) for a in answers]
    assert statuses.count(503) == 40 and statuses.count(408) == 20, statuses
    assert all(json_of(a)["error"] in ("busy", "request_timeout") for a in answers)
    assert edge.stats.refused_addr_cap == 40 and edge.stats.head_timeouts == 20
    assert elapsed < 5.0  # every slow head was cut at its 1 s deadline, not held
    assert probe.failures == 0 and probe.n > 10
    assert probe.worst < 1.5, probe.worst


async def test_at_the_connection_budget_idle_connections_make_room_for_newcomers(tmp_path: Path) -> None:
    limits = EdgeLimits(header_timeout_s=30.0, max_conns_per_addr=30, max_conns=50)
    async with ground(tmp_path / "G", limits) as (url, edge):
        port = port_of(url)
        held = []
        for n in range(2, 5):  # 3 addresses × 30 idle connections: over the budget of 50
            for _ in range(30):
                held.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{n}", 0)))
        await asyncio.sleep(0.2)
        assert edge.total <= 50
        async with aiohttp.ClientSession() as s:
            for _ in range(5):
                async with s.get(url + "/v1/health") as r:
                    assert r.status == 200
        assert edge.stats.evicted >= 40
        for _, w in held:
            w.close()


def test_the_descriptor_limit_is_raised_and_leaves_room() -> None:
    from ground.edge import fd_budget

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        budget = fd_budget(reserve=256)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert soft == hard or hard == resource.RLIM_INFINITY
        assert budget == max(16, soft - 256)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


async def test_compressed_bodies_are_refused_before_a_byte_is_inflated(cli: Cli, tmp_path: Path) -> None:
    token = json.loads(setup_station(cli, tmp_path).read_text())["token"]
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)  # 64 MiB of zeros in ~64 kB
    async with ground(cli.ground_home) as (url, edge), aiohttp.ClientSession(auto_decompress=False) as s:
        probe = Probe(url)
        ptask = asyncio.ensure_future(probe.run())

        async def post(
            path: str, body: bytes, coding: str, auth: str | None
        ) -> tuple[int, dict[str, object]]:
            h = {"Content-Encoding": coding, "Content-Type": "application/octet-stream"}
            if auth:
                h["Authorization"] = f"Bearer {auth}"
            async with s.post(url + path, data=body, headers=h) as r:
                return r.status, await r.json()

        t0 = time.perf_counter()
        results = await asyncio.gather(*(post("/v1/link", bomb, "gzip", None) for _ in range(10)))
        took = time.perf_counter() - t0
        # Item 3: a valid token with a gzip header and a body that is not gzip.
        results.append(await post("/v1/link", encode_request(ReceiptsRequest(seq=1, since=0)), "gzip", token))
        for coding in ("deflate", "br", "zstd", "gzip, identity", "x-unknown"):
            results.append(await post("/v1/link", b"not compressed", coding, token))
        results.append(await post("/api/login", bomb, "gzip", None))
        probe.stop()
        await ptask
    assert all(st == 415 and body["error"] == "content_encoding_refused" for st, body in results), results
    print(f"\n10 gzip bombs refused in {took:.2f} s; /v1/health worst {probe.worst * 1000:.0f} ms")
    assert edge.stats.refused_requests == len(results)  # refused at the edge, before aiohttp parsed them
    assert took < 5.0, took  # 10 bombs refused, none inflated (the probe: 12.6 s for 5 of 1 GiB)
    assert probe.worst < 1.5 and probe.failures == 0, (probe.worst, probe.failures)


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"POST /v1/link HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", 413, "body_too_large"),
        (b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n", 413, "body_too_large"),
        (b"POST /v1/link HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "length_required"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            501,
            "upgrade_refused",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431, "header_too_large"),
        (b"POST /v1/link HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "bad_request"),
        (b"POST /v1/link HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
    ],
)
async def test_oversized_and_unsupported_requests_are_refused_at_the_edge(
    tmp_path: Path, request_bytes: bytes, status: int, code: str
) -> None:
    async with ground(tmp_path / "G") as (url, _):
        answer = await raw(port_of(url), request_bytes)
    assert status_of(answer) == status, answer[:200]
    assert json_of(answer)["error"] == code
    assert b"connection: close" in answer.lower()


async def test_a_stalled_body_is_dropped(tmp_path: Path) -> None:
    async with ground(tmp_path / "G") as (url, edge):
        port = port_of(url)
        r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        w.write(
            b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        t0 = time.monotonic()
        await asyncio.wait_for(r.read(), 5)  # closed by ground
        assert 0.8 < time.monotonic() - t0 < 4.0
        w.close()
        assert edge.stats.body_timeouts == 1


async def test_pipelined_split_and_keepalive_requests_still_work(tmp_path: Path) -> None:
    async with ground(tmp_path / "G") as (url, _):
        port = port_of(url)
        two = b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answer = await raw(port, two)
        assert answer.count(b"HTTP/1.1 200") == 2
        # Byte by byte, well inside the head deadline.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for b in b"\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n":
            w.write(bytes([b]))
            await asyncio.sleep(0.005)
        assert (await asyncio.wait_for(r.read(), 5)).startswith(b"HTTP/1.1 200")
        w.close()
        # An absolute-form target is the same path: a 100 kB link frame is not "too large".
        big = b"POST http://x/v1/link HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100000\r\n\r\n"
        assert status_of(await raw(port, big + b"\0" * 100_000)) == 401
        async with aiohttp.ClientSession() as s:
            for _ in range(5):  # one kept-alive connection, several requests
                async with s.get(url + "/v1/health") as resp:
                    assert resp.status == 200


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _start_serve(home: Path, port: int, env: dict[str, str], **kw: object) -> subprocess.Popen[bytes]:
    if not home.exists():  # only `init` (or enroll) makes a home: serve refuses a missing one
        subprocess.run([sys.executable, "-m", "ground", "--home", str(home), "init"], env=env, check=True)
    # Its log goes to a file, not a pipe nobody reads until the end: a flood's log lines would
    # fill a pipe's 64 KiB and freeze ground on a write to stderr, which looks like a hang.
    log_path = home.parent / f"serve-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ground", "--home", str(home), "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            **kw,  # type: ignore[arg-type]
        )
    _LOGS[proc.pid] = log_path
    return proc


_LOGS: dict[int, Path] = {}


def _stop(proc: subprocess.Popen[bytes]) -> str:
    end_process(proc)
    return _LOGS.pop(proc.pid).read_text(errors="replace")


async def _until_healthy(url: str) -> None:
    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            with contextlib.suppress(aiohttp.ClientError):
                async with s.get(url + "/v1/health") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError("ground serve did not start")


async def test_concurrent_link_bodies_are_capped_per_station(
    cli: Cli, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    token = json.loads(setup_station(cli, tmp_path).read_text())["token"]
    frame_bytes = 4 * 1024 * 1024 - 64
    port = free_port()
    proc = _start_serve(cli.ground_home, port, subprocess_env)  # its own process: its own RSS
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        await _until_healthy(f"http://127.0.0.1:{port}")
        before = _rss_mib(proc.pid)
        head = (
            f"POST /v1/link HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/x-orbitpost-frame\r\nContent-Length: {frame_bytes}\r\n\r\n"
        ).encode()
        # 40 requests with a valid token, each sending all but the last byte of a 4 MiB frame
        # and holding it (the probe: 200 of these took ground from 202 to 1,248 MiB).
        for i in range(40):
            r, w = await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.1.{i % 8 + 1}", 0))
            w.write(head)
            w.write(b"\0" * (frame_bytes - 1))
            conns.append((r, w))
        await asyncio.sleep(3.0)
        grown = _rss_mib(proc.pid) - before
        busy = 0
        for r, _ in conns:
            with contextlib.suppress(TimeoutError, ConnectionError):
                line = await asyncio.wait_for(r.readline(), 0.5)
                busy += b" 503 " in line
    finally:
        for _, w in conns:
            w.close()
        _stop(proc)
    print(f"\n40 held 4 MiB bodies: {busy} refused busy, ground's RSS grew {grown:.0f} MiB")
    assert busy >= 40 - 8, busy  # past the station's 8 slots: 503 busy without reading the body
    assert grown < 100, grown  # 8 bodies of 4 MiB, not 40 (160 MiB); generous for the allocator


@dataclass
class _Fenced:
    """A `ground serve` held to 512 descriptors, the connections a test holds to it, and (once
    the block has ended) its log."""

    proc: subprocess.Popen[bytes]
    port: int
    held: list[asyncio.StreamWriter] = field(default_factory=list)
    log: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def _ground_at_512_descriptors(home: Path, env: dict[str, str]) -> AsyncIterator[_Fenced]:
    """Start ground with 512 descriptors (this process may open 4,096 to flood it) and wait until
    it answers; at the end close what the test held, stop ground and keep its log."""
    port = free_port()

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))

    g = _Fenced(proc=_start_serve(home, port, env, preexec_fn=low_limit), port=port)
    mine = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(mine[0], min(mine[1], 4096)), mine[1]))
    try:
        await _until_healthy(g.url)
        yield g
    finally:
        for w in g.held:
            w.close()
        g.log = _stop(g.proc)
        resource.setrlimit(resource.RLIMIT_NOFILE, mine)


async def test_a_connection_flood_never_exhausts_descriptors_at_a_low_limit(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """The probe's 20,000 idle connections, scaled to a 512-descriptor `ground serve`: 1,000 from
    20 addresses. Ground stays inside its budget, never fails an accept(), and still answers."""
    async with _ground_at_512_descriptors(tmp_path / "G", subprocess_env) as g:
        for i in range(1000):
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection(
                    "127.0.0.1", g.port, local_addr=(f"127.0.3.{i % 20 + 1}", 0)
                )
                g.held.append(w)
        # Ground first works through the flood's backlog (dropping idle connections to stay in
        # budget); on a loaded machine that takes seconds. Then every newcomer must be answered.
        # Latency is reported, not asserted: speed belongs to benchmarks, not to this test.
        # "Worked through" = three answers in a row: one early answer can slip in while ground
        # is still closing the flood's connections (seen once in a fresh-clone CI run).
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            in_a_row = 0
            for _ in range(60):
                ok = False
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with s.get(g.url + "/v1/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
                        ok = r.status == 200
                in_a_row = in_a_row + 1 if ok else 0
                if in_a_row >= 3:
                    break
        probe = Probe(g.url)
        ptask = asyncio.ensure_future(probe.run())
        await asyncio.sleep(1.5)
        probe.stop()
        await ptask
        print(f"\n1,000 idle connections at 512 fds: /v1/health worst {probe.worst * 1000:.0f} ms")
    log = g.log
    print(f"ground's log: {len(log.splitlines())} lines")
    assert probe.failures == 0 and probe.n >= 2, (probe.failures, probe.n, log[-2000:])
    assert "accept(" not in log and "Too many open files" not in log, log[-2000:]  # no accept() failure
    assert "edge: at 256 connections: dropped an idle one" in log


async def test_a_flood_that_piled_up_while_ground_was_busy_never_fails_an_accept(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """Ground stopped (SIGSTOP: what heavy load looks like from outside) while 700 connections
    arrive, then resumed: whatever the kernel queued is accepted in bursts its 512 descriptors
    hold (once, 1,024 at a time hit EMFILE hundreds of times), and ground still answers."""
    async with _ground_at_512_descriptors(tmp_path / "G", subprocess_env) as g:

        async def connect(i: int) -> None:
            with contextlib.suppress(OSError, TimeoutError):
                conn = asyncio.open_connection("127.0.0.1", g.port, local_addr=(f"127.0.4.{i % 20 + 1}", 0))
                g.held.append((await asyncio.wait_for(conn, 1.0))[1])

        os.kill(g.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.gather(*(connect(i) for i in range(700)))
        finally:
            os.kill(g.proc.pid, signal.SIGCONT)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.get(g.url + "/v1/health", timeout=aiohttp.ClientTimeout(total=30)) as r:
                assert r.status == 200
    assert "accept(" not in g.log and "Too many open files" not in g.log, g.log[-2000:]
