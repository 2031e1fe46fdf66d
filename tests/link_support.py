"""Helpers for live-link tests: a ground server in the test's event loop, station setup."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli

from ground.home import GroundHome
from ground.platforms.archive import ArchivedPost, archived_posts
from onboard import link, queue
from protocol import transfer_receiver
from protocol.link_memory import FIRST_FLIGHT_BDP, REFERENCE_RATE_BYTES_S, REFERENCE_RTT_S
from protocol.rangeset import RangeSet
from protocol.transfer import SenderConfig, TransferSender, TransferSpec
from protocol.transfer_wire import (
    Request,
    Status,
    TransferKey,
    TransferKind,
    UploadState,
    encode_response,
)

# Each first flight of a station that neither remembers nor was told its link: 16 streams
# together 0.9 of the reference link's BDP (protocol/link_memory.py ``reference_link``).
REFERENCE_EACH = int(
    FIRST_FLIGHT_BDP * REFERENCE_RATE_BYTES_S * REFERENCE_RTT_S / SenderConfig().start_streams
)


async def until(check, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``check()`` every 50 ms without blocking the loop (ground may run in it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return bool(check())


def station_db(tmp_path: Path) -> sqlite3.Connection:
    """A station's queue database on a real SQLite file, with the link's tables."""
    conn = queue.connect(tmp_path / "q.sqlite")
    link.ensure_schema(conn)
    return conn


def link_requests(ground_home: Path, station: str = "iss") -> int:
    """Link requests ground has counted from ``station`` (its link_contacts row)."""
    conn = sqlite3.connect(ground_home / "ground.db")
    try:
        row = conn.execute("SELECT requests FROM link_contacts WHERE station = ?", (station,)).fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def archive_posts(ground_home: Path) -> list[ArchivedPost]:
    """Every post in ground's archive platform (text posts packed, photo posts in folders), in order."""
    return archived_posts(ground_home / "archive") if (ground_home / "archive").is_dir() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def running_ground(home: Path, *, publish_interval_s: float = 0.2) -> AsyncIterator[str]:
    """`ground serve` in this event loop on a free loopback port; yields its URL."""
    from ground.server import serve

    port = free_port()
    stop, ready = asyncio.Event(), asyncio.Event()
    gh = GroundHome(home)
    task = asyncio.ensure_future(
        serve(gh, "127.0.0.1", port, stop=stop, ready=ready, publish_interval_s=publish_interval_s)
    )
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        gh.close()


def setup_station(cli: Cli, tmp_path: Path, *, astronauts: tuple[str, ...] = ("alice",)) -> Path:
    """Keys onboard, enrolment on ground, a station token; returns the token file."""
    for name in astronauts:
        cli.onboard("keys", "new", name)
        line = cli.onboard("keys", "show", name).output.strip()
        cli.ground("enroll", name, "--key", line, "--account", f"archive:{name}")
    token = tmp_path / "T"
    cli.ground("station", "add", "iss", "--token-out", str(token))
    return token


def link_to(cli: Cli, url: str, token: Path) -> None:
    cli.onboard("link", "add", "--ground", url, "--token-file", str(token))


def spy_link_requests(monkeypatch: pytest.MonkeyPatch) -> list[Request]:
    """Every link request frame the real ground decodes from now on, in order."""
    seen: list[Request] = []
    decode = transfer_receiver.decode_request

    def spy(data: bytes) -> Request:
        req = decode(data)
        seen.append(req)
        return req

    monkeypatch.setattr(transfer_receiver, "decode_request", spy)
    return seen


# -- a sender on its own (sans-IO) -----------------------------------------------------------


def text_post(s: TransferSender, i: int, now: float = 0.0) -> TransferKey:
    """Add a small bundle (a text post) of ``i`` to ``s``."""
    body = f"post {i}".encode()
    key = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(body).digest())
    s.add(
        TransferSpec(key=key, size_bytes=len(body), owner="a", priority=0),
        lambda o, n, b=body: b[o : o + n],
        now,
    )
    return key


def committed_answer(seq: int, key: TransferKey, size: int) -> bytes:
    """Ground's answer to request ``seq``: the upload ``key`` committed whole."""
    return encode_response(
        Status(seq=seq, key=key, state=UploadState.COMMITTED, size_bytes=size, ranges=RangeSet([(0, size)]))
    )


def live_sender(rtt_s: float, cfg: SenderConfig | None = None) -> TransferSender:
    """A sender that has measured one small request's round trip of ``rtt_s`` on a live link."""
    s = TransferSender(cfg or SenderConfig(), 0.0)
    key = text_post(s, -1)
    (o,) = s.data_to_send(0.0)
    s.receive(committed_answer(o.seq, key, len(b"post -1")), rtt_s, started_at=0.0)
    while s.next_event() is not None:
        pass
    assert s.link_up
    return s


# -- the simulator: posts around a dark window --------------------------------------------


def run_posts_around_a_dark(
    at_s: list[float],
    monkeypatch: pytest.MonkeyPatch,
    *,
    cut_after_s: float | None = None,
    dark_s: float | None = None,
    first_at_s: float = 60.0,
    **config: float | bool | None,
) -> tuple[Any, float]:
    """iss-ku without random loss or cuts (0.6 s RTT; a dark window 1,500–1,860 s), one post
    at ``first_at_s`` (the sender learns the round trip; the heartbeats follow it every 60 s)
    and one at each of ``at_s``; the run and its dark window's end. ``cut_after_s``: when the
    dark drops the connections (None: the profile's 20 s; 1e6: never, as a real link).
    ``dark_s``: the window lasts this long instead. ``config``: SenderConfig fields."""
    import simlink.transfer_driver as td
    import simlink.virtual as virtual
    from simlink.profile import load_profile
    from simlink.workload import PlannedPost, accounts_for, load_workload

    prof = dataclasses.replace(load_profile("iss-ku"), loss=0.0, cuts_per_hour=0.0)
    if cut_after_s is not None:
        prof = dataclasses.replace(prof, cut_after_s=cut_after_s)
    if dark_s is not None:
        first = prof.dark[0]
        prof = dataclasses.replace(prof, dark=(dataclasses.replace(first, duration_s=dark_s), *prof.dark[1:]))
    wl = dataclasses.replace(load_workload("burst"), photo_post_fraction=0.0, backlog_posts_per_astronaut=0)
    plan = [
        PlannedPost(at_s=t, author="alice", text=f"post at {t}", photos=(), targets=accounts_for("alice", 1))
        for t in [first_at_s, *at_s]
    ]
    monkeypatch.setattr(virtual, "plan_posts", lambda *a: plan)
    if config:
        monkeypatch.setattr(td, "SenderConfig", lambda **kw: SenderConfig(**config, **kw))
    r = virtual.run_virtual(prof, wl, astronauts=1, duration_s=2000.0, seed=7)
    (end,) = [e for s, e in r.dark_windows if s <= 1500.0 < e]
    return r, end


def rtts_after_the_return(r: Any, end: float, rtt_s: float = 0.6) -> dict[float, float]:
    """For ``run_posts_around_a_dark``: each post written after the first (past 1,000 s) and
    published, by when it was written: its publication in RTTs after the dark's ``end``."""
    return {p.queued_s: (p.published_s - end) / rtt_s for p in r.posts if p.published_s and p.queued_s > 1000}


def record_races(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each request joined the connection race (``ConnectRace.connect``), appended as it joins."""
    from onboard.race import ConnectRace

    joined: list[float] = []
    race_connect = ConnectRace.connect

    async def racing(self: Any, addr_info: Any, every_s: float) -> socket.socket:
        joined.append(time.monotonic())
        return await race_connect(self, addr_info, every_s)

    monkeypatch.setattr(ConnectRace, "connect", racing)
    return joined


def record_link_downs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Why each request failed (``TransferSender._fail``: what calls the link down)."""
    import protocol.transfer_sender as ts

    downs: list[str] = []
    on_fail = ts.TransferSender._fail
    monkeypatch.setattr(
        ts.TransferSender,
        "_fail",
        lambda self, req, now, why: downs.append(why) or on_fail(self, req, now, why),
    )
    return downs


# -- a relay to ground that goes dark (onboard sync --watch on loopback) -------------------


def fill_accept_queue(port: int) -> list[socket.socket]:
    """Connections filling the accept queue of a loopback listener on ``port`` that listens
    with a backlog of 0: the kernel then drops further SYNs, as a dark link does. Close them
    (and empty the queue) to let SYNs in again."""
    held = []
    for _ in range(2):
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", port))
        held.append(s)
    return held


class DarkRelay:
    """A TCP relay to ground that can go dark: while dark its listener's accept queue is full
    (the kernel drops SYNs, as across a dark link) and the connections it piped are cut, or
    with ``darken(cut=False)`` kept open with nothing crossing them until the light returns
    (a dark that closes nothing, as a real link's). ``answer_delay_s`` holds ground's bytes
    back that long (a long path)."""

    def __init__(self, ground_port: int, *, answer_delay_s: float = 0.0) -> None:
        self.ground_port = ground_port
        self.answer_delay_s = answer_delay_s
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.lst: socket.socket | None = None
        self.server: asyncio.AbstractServer | None = None
        self._held: list[socket.socket] = []
        self._lit = asyncio.Event()
        self._queued_pipes: set[asyncio.Task[None]] = set()
        self.accepted = 0
        # Every piped connection's writers: Python 3.11's server.close() leaves accepted
        # connections open, and one still piping when the test's loop closed leaked its
        # socket into a later test's collection (CI, test_mastodon.py).
        self._pipes: list[asyncio.StreamWriter] = []

    def _listener(self) -> socket.socket:
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("127.0.0.1", self.port))
        return lst

    @property
    def dark(self) -> bool:
        """Is the relay dark (nothing crosses)?"""
        return not self._lit.is_set()

    async def light(self) -> None:
        """The link is up: every connection is piped to ground, those the kernel queued in the
        dark too (a SYN that slipped in before the queue was full was answered by the kernel,
        so the station holds it as connected: closing it would be a reset no dark sends)."""
        self._lit.set()
        queued: list[socket.socket] = []
        if self.lst is not None:
            fillers = {s.getsockname() for s in self._held}
            self.lst.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    conn, peer = self.lst.accept()
                    if peer in fillers:
                        conn.close()
                    else:
                        queued.append(conn)
            for s in self._held:
                s.close()
            self._held.clear()
        else:
            self.lst = self._listener()
        self.lst.listen(64)
        self.server = await asyncio.start_server(self._pipe, sock=self.lst)
        for conn in queued:
            conn.setblocking(False)
            r, w = await asyncio.open_connection(sock=conn)
            task = asyncio.ensure_future(self._pipe(r, w))
            self._queued_pipes.add(task)
            task.add_done_callback(self._queued_pipes.discard)

    async def darken(self, *, cut: bool = True) -> None:
        """Loss of signal: new SYNs are dropped, and the piped connections cut (or, not
        ``cut``, stalled: what is sent on them waits for the light)."""
        self._lit.clear()
        if self.server is not None:
            self.server.close()
            self.server = None
        if cut:
            for w in self._pipes:
                w.transport.abort()
            self._pipes.clear()
        self.lst = self._listener()  # (the server closed the old one)
        self.lst.listen(0)
        self._held.extend(fill_accept_queue(self.port))
        await asyncio.sleep(0.1)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._pipes.append(w)
        gr, gw = await asyncio.open_connection("127.0.0.1", self.ground_port)
        self._pipes.append(gw)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay_s: float = 0.0) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    await asyncio.sleep(delay_s)
                    await self._lit.wait()
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                dst.close()

        await asyncio.gather(copy(r, gw), copy(gr, w, self.answer_delay_s))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2.0)
        for w in self._pipes:
            w.transport.abort()
        self._pipes.clear()
        await asyncio.sleep(0)  # the aborted transports close on the loop's next turn
        if self.lst is not None:
            self.lst.close()
        for s in self._held:
            s.close()


@dataclasses.dataclass
class WatchRun:
    """`onboard sync --watch` running in the test's loop, to ground through ``relay``."""

    relay: DarkRelay
    stop: asyncio.Event
    task: asyncio.Future[Any]

    async def post_in_the_dark(
        self, cli: Cli, text: str, *, published: int, dark_for_s: float = 2.0
    ) -> float:
        """Post ``text`` while the relay is dark, check it stays unpublished ``dark_for_s``
        (``published`` before it), light the relay and wait until it is published. Returns
        when the light came back (monotonic)."""
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", text)
        await asyncio.sleep(dark_for_s)
        assert len(archive_posts(cli.ground_home)) == published
        await self.relay.light()
        back = time.monotonic()
        assert await until(lambda: len(archive_posts(cli.ground_home)) > published, 15.0)
        return back

    async def finish(self) -> Any:
        """Stop the sync and return its SyncResult."""
        self.stop.set()
        return await asyncio.wait_for(self.task, 15)


@contextlib.asynccontextmanager
async def watching_via_relay(
    cli: Cli, tmp_path: Path, *, config: Any = None, rescan_s: float = 0.2
) -> AsyncIterator[WatchRun]:
    """A station linked to a real ground through a lit DarkRelay, `sync --watch` running
    (rescanning every ``rescan_s``; ``config``: its SenderConfig). Stopped and closed on the
    way out."""
    from onboard.home import Home
    from onboard.sync import sync

    token = setup_station(cli, tmp_path)
    stop = asyncio.Event()
    async with running_ground(cli.ground_home, publish_interval_s=0.1) as url:
        relay = DarkRelay(int(url.rsplit(":", 1)[1]))
        await relay.light()
        try:
            link_to(cli, f"http://127.0.0.1:{relay.port}", token)
            task = asyncio.ensure_future(
                sync(Home(cli.onboard_home), watch=True, stop=stop, rescan_s=rescan_s, config=config)
            )
            yield WatchRun(relay, stop, task)
        finally:
            stop.set()
            await relay.close()
