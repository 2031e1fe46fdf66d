"""Issue 14: a text post written during a loss of signal is published within 2 RTT of the
link's return (virtual time: the simulator drives the shipped sender, planner and ground).

Why it holds: while the link is down every request needing a connection waits on one shared
race (onboard/race.py; simlink's SimRace): an attempt each 0.2 RTT divided among them, so
each gets a connection within ~0.2 RTT of the return, a lost SYN costing one step; the text
bundle rides inside its OPEN (again after a probe into the dark); and posts written in the dark
are not held behind a bundle stuck there. Handshake (1 RTT) plus the request's way up
(0.5 RTT) leave 0.5 RTT for the race, serialisation and ground.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from link_support import fill_accept_queue, free_port

from benchmarks.bench_link_return import run_dark_posts
from simlink.virtual import transfer_available

pytestmark = pytest.mark.skipif(not transfer_available(), reason="needs the transfer machines")


def _after_return_rtts(profile_name: str, hours: float, seed: int, **change: float) -> list[float]:
    """For each text post queued inside a dark window: (published − window end) / RTT."""
    return run_dark_posts(profile_name, hours, seed, **change)[0]


def test_text_written_in_the_dark_is_published_within_2_rtt_of_the_return() -> None:
    """iss-ku (0.6 s RTT, 0.5 % loss), three hours: every post written in its gaps."""
    lat = _after_return_rtts("iss-ku", 3.0, 7)
    print(f"\nafter the link's return, in RTTs: {[round(x, 2) for x in lat]}")
    assert len(lat) >= 4
    assert max(lat) <= 2.0


def test_also_when_the_loss_of_signal_cuts_no_connection() -> None:
    """A real dark spell drops packets and closes nothing (linkemu's packet link; a path with no
    middlebox to reset connections). Connections pooled before it live through it, and a probe
    written into one waited out TCP's backed-off retransmission timer after the return: 26, 32
    and 172 RTT on this run. While the link is down sync takes no pooled connection
    (onboard/sync.py ``_WatchedConnector._get``): the probes race new ones."""
    lat = _after_return_rtts("iss-ku", 3.0, 7, cut_after_s=1e6)
    print(f"\nafter the link's return, in RTTs: {[round(x, 2) for x in lat]}")
    assert len(lat) >= 4
    assert max(lat) <= 2.0


def test_a_photo_backlog_fills_the_minute_after_a_return_that_cut_no_connection() -> None:
    """Photos waiting through a 3-minute dark spell that closed no connection: the minute after
    the return carries ≥ 0.8 of the link rate (0.955 measured; 0.467 while a probe could take a
    connection pooled before the dark, which stalled until its retransmission timer fired)."""
    import simlink.profile as sp
    from simlink.virtual import run_virtual
    from simlink.workload import load_workload

    base = sp.load_profile("iss-ku")
    dark = (sp.DarkWindow(start_s=120.0, duration_s=180.0),)
    p = dataclasses.replace(base, cuts_per_hour=0.0, orbit_s=92 * 60.0, dark=dark, cut_after_s=1e6)
    r = run_virtual(p, load_workload("photo-backlog"), astronauts=4, duration_s=361, seed=1)
    after = next(s.to_ground_bytes for s in r.samples if s.t_s == 360.0)
    per_minute = base.to_ground_bps / 8 * 60
    print(f"\nthe minute after the return: {after / per_minute:.3f} of the link rate")
    assert after >= 0.8 * per_minute


async def test_while_the_link_is_down_no_request_takes_a_pooled_connection() -> None:
    """sync's connector: with the sender's race step set (the link is down) a request gets a new
    connection and the pooled ones are closed; with it cleared the pool serves again."""
    import aiohttp
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from onboard.sync import _connector
    from protocol.transfer import SenderConfig

    peers: list[Any] = []

    async def health(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/v1/health", health)
    connector = _connector(SenderConfig(), False)
    async with (
        TestServer(app, host="127.0.0.1") as server,
        aiohttp.ClientSession(connector=connector) as session,
    ):

        async def get() -> None:
            async with session.get(server.make_url("/v1/health")) as resp:
                assert await resp.text() == "ok"

        await get()
        await get()
        assert peers[0] == peers[1]  # believed up: the pooled connection serves
        before = connector.transports()
        assert len(before) == 1
        connector.race_every_s = 0.05
        await get()
        assert peers[2] != peers[1], "a request made while down took a connection pooled before"
        assert before[0].is_closing(), "the pooled connection is closed, not kept for later"
        connector.race_every_s = None
        await get()
        assert peers[3] == peers[2]  # up again: the race's connection is pooled and serves


@pytest.mark.slow
def test_on_the_lunar_link_too() -> None:
    """lunar (2.6 s RTT, a 45-minute gap every 2 h), loss left out: random loss costs a lost
    segment its retransmission, which no scheduling removes. Every post makes 2 RTT, a
    return just after a probe's 300 s deadline too (its attempts race on for the next probe)."""
    lat = _after_return_rtts("lunar", 6.0, 7, loss=0.0)
    print(f"\nafter the link's return, in RTTs: {[round(x, 2) for x in lat]}")
    assert len(lat) >= 10
    assert max(lat) <= 2.0


@pytest.mark.slow
def test_with_random_loss_the_late_posts_are_the_ones_physics_makes_late() -> None:
    """lunar with its 1 % loss, a held-out seed (docs/link.md states the bound): a lost SYN or
    SYN-ACK costs one race step, a lost request or answer segment TCP's RTO (≥ 3 s, 1.14 RTT
    here). Most posts still make 2 RTT; none takes longer than the race, the exchange and
    one RTO."""
    lat = _after_return_rtts("lunar", 12.0, 11)
    print(f"\nafter the link's return, in RTTs: {[round(x, 2) for x in lat]}")
    assert len(lat) >= 30
    assert sum(x <= 2.0 for x in lat) >= 0.9 * len(lat)
    assert max(lat) <= 1.5 + 0.4 + 3.0 / 2.64 + 0.1  # ≈ 3.1 RTT


def _dark_listener() -> tuple[socket.socket, tuple[Any, ...]]:
    """A loopback listener whose accept queue is full: the kernel drops further SYNs, so a
    connect to it waits as across a dark link, until the queue is emptied (the link returns)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    _held.extend(fill_accept_queue(port))
    return lst, (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))


_held: list[socket.socket] = []


def _return(lst: socket.socket) -> None:
    """The dark listener's queue emptied: the next SYN (a raced attempt's retry) connects."""
    lst.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            lst.accept()[0].close()
    lst.listen(64)


async def test_the_race_steps_while_dark_and_keeps_its_attempts_past_a_deadline() -> None:
    """onboard/race.py: while no attempt connects, one starts each step (never faster than
    MIN_STEP_S, whatever it is asked); a request that gives up (its deadline) leaves the
    attempts racing, and the next request takes the one that connects, without a new race."""
    from onboard.race import MIN_STEP_S, ConnectRace
    from onboard.sync import _racing_socket

    lst, info = _dark_listener()
    race = ConnectRace(_racing_socket)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(race.connect(info, 0.1), 1.0)
        assert 8 <= race.started <= 11  # a step of 0.1 s for 1 s
        n = race.started
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(race.connect(info, 0.0001), 0.5)  # asked for 10,000 a second
        assert race.started - n <= 0.5 / MIN_STEP_S + 1
        _return(lst)
        await asyncio.sleep(1.2)  # the attempts' SYN retries (1 s) connect, no request waiting
        n = race.started
        sock = await asyncio.wait_for(race.connect(info, 0.1), 1.0)
        with sock:
            assert sock.getpeername() == info[-1] and race.started == n  # a kept one, at once
    finally:
        race.close()
        lst.close()
        for s in _held:
            s.close()
        _held.clear()


async def test_a_connection_handed_back_after_the_race_closed_is_closed_not_kept() -> None:
    """The session ends the moment an attempt connects: the race is closed and the request
    cancelled before it resumes, so the connection comes back to the race. It must be closed
    then, not kept as a spare whose expiry no loop will run (a leaked socket; a
    ResourceWarning in whichever later test the garbage collector happens to run)."""
    from onboard.race import ConnectRace
    from onboard.sync import _racing_socket

    made: list[socket.socket] = []

    def factory(addr_info: Any) -> socket.socket:
        made.append(_racing_socket(addr_info))
        return made[-1]

    request: asyncio.Future[socket.socket] | None = None

    class EndsAsItConnects(ConnectRace):
        def _connected(self, sock: socket.socket) -> None:
            super()._connected(sock)
            self.close()
            assert request is not None
            request.cancel()

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", lst.getsockname())
    race = EndsAsItConnects(factory)
    try:
        request = asyncio.ensure_future(race.connect(info, 0.05))
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(request, 2.0)
        assert made and all(s.fileno() == -1 for s in made), "every connection the race made is closed"
        assert race.take(info) is None
    finally:
        race.close()
        lst.close()
        for s in made:
            s.close()


async def test_a_refusal_stops_the_race_for_every_waiting_request() -> None:
    """A closed port answers a SYN with a reset: ground's host is reachable, racing cannot
    help. One attempt, and every request waiting on the race fails with the refusal at once."""
    from onboard.race import ConnectRace
    from onboard.sync import _racing_socket

    info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", free_port()))
    race = ConnectRace(_racing_socket)
    t0 = time.monotonic()
    try:
        results = await asyncio.gather(*(race.connect(info, 0.5) for _ in range(5)), return_exceptions=True)
    finally:
        race.close()
    assert all(isinstance(r, ConnectionRefusedError) for r in results), results
    assert race.started == 1 and time.monotonic() - t0 < 0.4


async def test_sync_watch_against_a_closed_port_stays_calm(
    enrolled: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`onboard sync --watch` while ground's port is closed (ground restarting): every request
    is refused at once, so the race stops and the sender backs off (≤ 4 s): a few connection
    attempts a second at first, never a busy loop; and it stops cleanly when told."""
    import onboard.sync as sync_mod
    from onboard.home import Home
    from onboard.race import ConnectRace

    enrolled.ground("station", "add", "iss", "--token-out", str(tmp_path / "T"))
    enrolled.onboard(
        "link", "add", "--ground", f"http://127.0.0.1:{free_port()}", "--token-file", str(tmp_path / "T")
    )
    for i in range(3):  # three posts: three requests probe at once while the link is down
        enrolled.onboard("post", "--as", "alice", "--to", "archive:alice", f"written in the dark {i}")
    attempts: list[float] = []
    made = sync_mod._racing_socket

    def counted(addr_info: Any) -> socket.socket:
        attempts.append(time.monotonic())
        return made(addr_info)

    monkeypatch.setattr(sync_mod, "_racing_socket", counted)
    raced: list[float] = []
    race_connect = ConnectRace.connect

    async def racing(self: Any, addr_info: Any, every_s: float) -> socket.socket:
        raced.append(every_s)
        return await race_connect(self, addr_info, every_s)

    monkeypatch.setattr(ConnectRace, "connect", racing)
    stop = asyncio.Event()
    run = asyncio.ensure_future(sync_mod.sync(Home(enrolled.onboard_home), watch=True, stop=stop))
    await asyncio.sleep(6.0)
    stop.set()
    result = await asyncio.wait_for(run, 10)
    assert result.pending_items >= 1 and result.failures >= 1
    assert raced, "the link was down, yet no request raced"
    span = attempts[-1] - attempts[0] if len(attempts) > 1 else 1.0
    print(f"\n{len(attempts)} connection attempts in {span:.1f} s")
    # Backoff 0.5, 1, 2, 4 s: ~5 rounds of refused requests in 6 s, each a few attempts
    # (the request, the warm-up); racing through a refusal made hundreds.
    assert len(attempts) <= 30


@pytest.mark.parametrize("posts", [1, 2, 5, 8, 12, 16, 30])
def test_the_race_step_is_shared_among_the_racing_requests(posts: int) -> None:
    """While down, the sender's race step is 0.2 RTT divided among the requests racing (every
    small upload probes, ≤ 16), at most 40 attempts a RTT and 20 a second: the last of several
    waiting posts still gets its connection within ~0.2 RTT of the return (docs/link.md)."""
    from protocol.transfer import SenderConfig, TransferSender, TransferSpec
    from protocol.transfer_wire import TransferKey, TransferKind

    s = TransferSender(SenderConfig(), 0.0)
    for i in range(posts):
        body = f"post {i}".encode()
        key = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(body).digest())
        s.add(
            TransferSpec(key=key, size_bytes=len(body), owner="a", priority=0),
            lambda o, n, b=body: b[o : o + n],
            0.0,
        )
    first = s.data_to_send(0.0)
    for o in first:
        s.request_failed(o.seq, 0.0, "connect: no answer")
    assert not s.link_up
    at = s.next_deadline()
    assert at is not None
    probes = s.data_to_send(at)
    racing = min(posts, 1 + s.config.down_small_probes)
    assert len(probes) == racing
    step = max(0.05, s.srtt_s * max(0.2 / racing, 1 / 40))
    assert all(p.race_every_s == pytest.approx(step) for p in probes)
