"""Helpers for live-link tests: a ground server in the test's event loop, station setup."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import Cli

from ground.home import GroundHome
from ground.platforms.archive import ArchivedPost, archived_posts
from protocol import transfer_receiver
from protocol.transfer_wire import Request


async def until(check, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``check()`` every 50 ms without blocking the loop (ground may run in it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.05)
    return bool(check())


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
