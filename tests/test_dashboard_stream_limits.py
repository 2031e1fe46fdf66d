"""Live-dashboard streams are limited per operator, per address and overall, with room kept for
admins (issue 19 §3): one read-only viewer can no longer hold every stream. Real HTTP on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from dashboard_support import ADMIN, READER, make_app, make_home

from ground.dashboard import api
from ground.home import GroundHome
from protocol import SigningKey


@pytest.fixture
async def server(tmp_path: Path, alice_key: SigningKey) -> AsyncIterator[TestServer]:
    home: GroundHome = make_home(tmp_path / "G", alice_key)
    async with TestServer(make_app(home)) as s:
        yield s
    home.close()


@contextlib.asynccontextmanager
async def session_of(server: TestServer, who: tuple[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    jar = aiohttp.CookieJar(unsafe=True)  # the server is an IP address (127.0.0.1)
    async with aiohttp.ClientSession(base_url=str(server.make_url("")), cookie_jar=jar) as s:
        r = await s.post("/api/login", json={"name": who[0], "password": who[1]})
        assert r.status == 200, await r.text()
        yield s


async def open_stream(s: aiohttp.ClientSession, held: list[aiohttp.ClientResponse]) -> tuple[int, str]:
    """Open one stream; keep it open (in ``held``) when it was accepted."""
    r = await s.get("/api/stream")
    if r.status == 200:
        assert (await r.content.readline()).startswith(b"retry:")  # it is really streaming
        held.append(r)
        return 200, ""
    body = await r.json()
    r.release()
    return r.status, body["error"]


async def test_one_read_only_operator_cannot_hold_every_stream(server: TestServer) -> None:
    held: list[aiohttp.ClientResponse] = []
    async with session_of(server, READER) as rita, session_of(server, ADMIN) as ada:
        for _ in range(api.MAX_STREAMS_PER_OPERATOR):
            assert (await open_stream(rita, held))[0] == 200
        status, why = await open_stream(rita, held)
        assert status == 503 and "rita" in why and "close one" in why
        # The admin still gets a stream.
        assert (await open_stream(ada, held))[0] == 200
        # Closing one of rita's frees her slot.
        held.pop(0).close()
        for _ in range(50):
            status, _why = await open_stream(rita, held)
            if status == 200:
                break
        assert status == 200
        for r in held:
            r.close()


async def test_per_address_and_admin_reserve(server: TestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    held: list[aiohttp.ClientResponse] = []
    monkeypatch.setattr(api, "MAX_STREAMS_PER_OPERATOR", 100)
    monkeypatch.setattr(api, "MAX_STREAMS_PER_ADDRESS", 100)
    monkeypatch.setattr(api, "MAX_STREAMS", 6)
    monkeypatch.setattr(api, "ADMIN_RESERVED_STREAMS", 2)
    async with session_of(server, READER) as rita, session_of(server, ADMIN) as ada:
        for _ in range(4):
            assert (await open_stream(rita, held))[0] == 200
        status, why = await open_stream(rita, held)
        assert status == 503 and "max 4" in why
        # The reserved streams are the admins'.
        assert (await open_stream(ada, held))[0] == 200
        assert (await open_stream(ada, held))[0] == 200
        status, why = await open_stream(ada, held)
        assert status == 503 and "max 6" in why
        for r in held:
            r.close()
        held.clear()
        monkeypatch.setattr(api, "MAX_STREAMS", 64)
        monkeypatch.setattr(api, "MAX_STREAMS_PER_ADDRESS", 3)
        for s in (rita, ada, rita):
            for _ in range(50):  # the server notices closed streams within its poll period
                if (await open_stream(s, held))[0] == 200:
                    break
        status, why = await open_stream(ada, held)
        assert status == 503 and "127.0.0.1" in why
        for r in held:
            r.close()
