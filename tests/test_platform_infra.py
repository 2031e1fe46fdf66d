"""Shared adapter infrastructure: OAuth 2.0 refresh with rotated tokens, quotas, handles."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from ground.credentials import CredentialStore, TokenSet, expiry_text
from ground.errors import QuotaWait, ReconnectNeeded
from ground.platforms.handles import HandleStore
from ground.platforms.oauth2 import TokenEndpoint, TokenKeeper, split_token_file, standard_refresher
from ground.platforms.quota import QuotaBook, meta_usage_wait_s, x_windows

TARGET = "x:alice"


class TokenServer:
    """RFC 6749 §6 refresh with rotation: each refresh token works once (as X's do)."""

    def __init__(self) -> None:
        self.valid = {"r0"}
        self.n = 0
        self.delay_s = 0.0

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        await asyncio.sleep(self.delay_s)
        rt = str(form.get("refresh_token"))
        if form.get("grant_type") != "refresh_token" or rt not in self.valid:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "bad refresh token"}, status=400
            )
        self.valid.discard(rt)
        self.n += 1
        new = f"r{self.n}"
        self.valid.add(new)
        return web.json_response(
            {"access_token": f"a{self.n}", "refresh_token": new, "expires_in": 7200, "token_type": "bearer"}
        )


async def _serve(server: TokenServer) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/2/oauth2/token", server.token)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/2/oauth2/token"


def _store(tmp_path: Path, expires_at_ms: int) -> CredentialStore:
    store = CredentialStore(tmp_path / "credentials")
    store.add(TARGET, '{"client_id":"c"}', service_url="http://127.0.0.1:1")
    store.save_tokens(TARGET, TokenSet(access_token="a0", refresh_token="r0", expires_at_ms=expires_at_ms))
    return store


def test_refresh_ahead_of_expiry_persists_the_rotated_token(tmp_path: Path) -> None:
    now = time.time()
    store = _store(tmp_path, int((now + 300) * 1000))  # 5 min left: inside the 10 min margin

    async def run() -> None:
        server = TokenServer()
        runner, url = await _serve(server)
        try:
            refresher = standard_refresher(TokenEndpoint(url=url, client_id="c"), TARGET)
            async with aiohttp.ClientSession() as s:
                keeper = TokenKeeper(store, TARGET, refresher, clock=lambda: now)
                assert await keeper.access_token(s) == "a1"
                saved = store.load_tokens(TARGET)
                assert saved is not None and saved.refresh_token == "r1"
                # A second keeper (another process) sees the fresh token: no second refresh.
                other = TokenKeeper(store, TARGET, refresher, clock=lambda: now)
                assert await other.access_token(s) == "a1"
                assert server.n == 1
                # Concurrent 401s on the same token refresh once, not twice (rotation would strand one).
                got = await asyncio.gather(
                    keeper.after_unauthorized(s, "a1"), other.after_unauthorized(s, "a1")
                )
                assert got == ["a2", "a2"] and server.n == 2
        finally:
            await runner.cleanup()

    asyncio.run(run())


def test_refused_refresh_token_says_reconnect(tmp_path: Path) -> None:
    now = time.time()
    store = _store(tmp_path, int((now - 1) * 1000))
    store.save_tokens(
        TARGET, TokenSet(access_token="a0", refresh_token="stale", expires_at_ms=int(now * 1000))
    )

    async def run() -> None:
        runner, url = await _serve(TokenServer())
        try:
            keeper = TokenKeeper(
                store, TARGET, standard_refresher(TokenEndpoint(url=url, client_id="c"), TARGET)
            )
            async with aiohttp.ClientSession() as s:
                with pytest.raises(ReconnectNeeded, match="reconnect this account: x:alice"):
                    await keeper.access_token(s)
        finally:
            await runner.cleanup()

    asyncio.run(run())
    # The tokens on disk are untouched (the operator sees them expired, not deleted).
    assert (store.load_tokens(TARGET) or TokenSet(access_token="")).refresh_token == "stale"


def test_no_tokens_or_expired_without_refresh_says_reconnect(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "c")
    keeper = TokenKeeper(
        store, TARGET, standard_refresher(TokenEndpoint(url="http://127.0.0.1:1", client_id="c"), TARGET)
    )

    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            with pytest.raises(ReconnectNeeded, match="no OAuth tokens"):
                await keeper.access_token(s)
            store.save_tokens(TARGET, TokenSet(access_token="a", expires_at_ms=1))
            with pytest.raises(ReconnectNeeded, match="no refresh token"):
                await keeper.access_token(s)

    asyncio.run(run())


def test_expiry_text() -> None:
    day = 86_400_000
    assert expiry_text(None, 0) == ""
    assert expiry_text(TokenSet(access_token="a", expires_at_ms=12 * day + 5), 0) == "expires in 12 days"
    lnk = TokenSet(access_token="a", refresh_token="r", expires_at_ms=day, refresh_expires_at_ms=300 * day)
    assert expiry_text(lnk, 0) == "expires in 300 days"
    assert expiry_text(TokenSet(access_token="a", refresh_token="r"), 0) == "renews itself"
    assert "reconnect" in expiry_text(TokenSet(access_token="a", expires_at_ms=5), 10)


def test_split_token_file_keeps_tokens_out_of_the_secret() -> None:
    app, tokens = split_token_file(
        json.dumps({"client_id": "cid", "access_token": "A", "refresh_token": "R", "expires_in": 60}), 1000
    )
    assert "A" not in app and "R" not in app and json.loads(app)["client_id"] == "cid"
    assert tokens.access_token == "A" and tokens.refresh_token == "R" and tokens.expires_at_ms == 61_000
    with pytest.raises(ValueError, match="client_id"):
        split_token_file('{"access_token": "A"}', 0)
    with pytest.raises(ValueError, match="JSON"):
        split_token_file("not json", 0)


def test_token_file_is_private_and_repr_hides_tokens(tmp_path: Path) -> None:
    store = _store(tmp_path, 5)
    path = next((tmp_path / "credentials").glob("*.tokens"))
    assert path.stat().st_mode & 0o777 == 0o600
    assert "a0" not in repr(store.load_tokens(TARGET)) and "r0" not in repr(store.load_tokens(TARGET))
    # Re-adding the account drops the old tokens (they belong to the old grant).
    store.add(TARGET, '{"client_id":"c"}', service_url="http://127.0.0.1:1")
    assert store.load_tokens(TARGET) is None


def test_quota_book_waits_until_reset_and_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "quotas.json"
    book = QuotaBook(path)
    now = 1_000_000.0
    headers = {
        "x-rate-limit-limit": "100",
        "x-rate-limit-remaining": "5",
        "x-rate-limit-reset": str(int(now + 900)),
        "X-User-Limit-24hour-Limit": "17",
        "x-user-limit-24hour-remaining": "0",
        "x-user-limit-24hour-reset": str(int(now + 3600)),
    }
    book.learn(TARGET, x_windows(headers, "post"))
    with pytest.raises(QuotaWait, match="24-hour post limit for this user: 0 of 17 left") as info:
        QuotaBook(path).check(TARGET, "X", now)  # a fresh book (restart) knows it too
    assert info.value.retry_after_s == pytest.approx(3600)
    assert info.value.retryable
    QuotaBook(path).check(TARGET, "X", now + 3601)  # reset passed: go
    QuotaBook(path).check("x:bob", "X", now)  # other accounts unaffected


def test_daily_cap_counts_a_rolling_day(tmp_path: Path) -> None:
    book = QuotaBook(None)
    for i in range(3):
        book.record_post("linkedin:a", 100.0 + i)
    book.check("linkedin:a", "LinkedIn", 200.0, daily_cap=4)
    with pytest.raises(QuotaWait, match="limit of 3 posts per 24 h") as info:
        book.check("linkedin:a", "LinkedIn", 200.0, daily_cap=3)
    assert info.value.retry_after_s == pytest.approx(100.0 + 86_400 - 200.0)


def test_meta_usage_header() -> None:
    assert meta_usage_wait_s({"X-App-Usage": '{"call_count": 20, "total_time": 5}'}) is None
    assert meta_usage_wait_s({"x-app-usage": '{"call_count": 100}'}) == 60.0
    buc = {
        "X-Business-Use-Case-Usage": json.dumps(
            {"123": [{"call_count": 100, "estimated_time_to_regain_access": 7}]}
        )
    }
    assert meta_usage_wait_s(buc) == 420.0
    assert meta_usage_wait_s({"x-app-usage": "garbage"}) is None


def test_handles_merge_and_survive(tmp_path: Path) -> None:
    store = HandleStore(tmp_path / "h")
    post = "01JBZZZZZZZZZZZZZZZZZZZZZZ"
    assert store.get(TARGET, post) == {}
    store.put(TARGET, post, media_ids=["1"])
    store.put(TARGET, post, started_ms=5)
    assert HandleStore(tmp_path / "h").get(TARGET, post) == {"media_ids": ["1"], "started_ms": 5}
    with pytest.raises(ValueError):
        store.put(TARGET, "../etc", x=1)
    store.drop(TARGET, post)
    assert store.get(TARGET, post) == {}
