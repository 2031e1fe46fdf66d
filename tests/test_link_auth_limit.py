"""Repeated bad station tokens from one address are refused with 429 and still audited."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import aiohttp
from conftest import Cli
from link_support import running_ground, setup_station

from ground.ratelimit import AuthFailureLimiter
from protocol.transfer_wire import ReceiptsBatch, ReceiptsRequest, decode_response, encode_request


def test_limiter_blocks_after_max_failures_in_the_window_then_forgets() -> None:
    lim = AuthFailureLimiter(max_failures=3, window_s=10.0, block_s=30.0)
    assert lim.blocked("a", 0.0) is None
    assert not lim.failed("a", 0.0) and not lim.failed("a", 1.0)
    assert lim.blocked("a", 2.0) is None
    assert lim.failed("a", 2.0)  # the third within 10 s starts the block
    v = lim.blocked("a", 12.0)
    assert v is not None and v.retry_after_s == 20.0 and v.log and v.refused == 1
    logs = [lim.blocked("a", 13.0) for _ in range(15)]
    assert [x.refused for x in logs if x is not None and x.log] == [2, 4, 8, 16]  # log2 of a flood
    assert lim.blocked("b", 13.0) is None  # per address
    assert lim.blocked("a", 32.0) is None  # the block ends by itself
    # Failures spread wider than the window never add up to a block.
    assert not any(lim.failed("c", t) for t in (0.0, 11.0, 22.0, 33.0, 44.0))


def test_limiter_memory_is_bounded() -> None:
    lim = AuthFailureLimiter(max_failures=2, max_addresses=100)
    for i in range(1000):
        lim.failed(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(lim._by_addr) == 100


def _events(ground_home: Path, kind: str) -> list[str]:
    conn = sqlite3.connect(ground_home / "ground.db")
    try:
        return [d for (d,) in conn.execute("SELECT detail FROM events WHERE kind = ? ORDER BY id", (kind,))]
    finally:
        conn.close()


async def test_bad_tokens_get_429_with_retry_after_and_are_audited(cli: Cli, tmp_path: Path) -> None:
    token = json.loads(setup_station(cli, tmp_path).read_text())["token"]
    frame = encode_request(ReceiptsRequest(seq=1, since=0))
    async with running_ground(cli.ground_home) as url, aiohttp.ClientSession() as s:

        async def post(tok: str) -> tuple[int, str | None, dict[str, object] | bytes]:
            async with s.post(url + "/v1/link", data=frame, headers={"Authorization": f"Bearer {tok}"}) as r:
                body = await r.json() if r.content_type == "application/json" else await r.read()
                return r.status, r.headers.get("Retry-After"), body

        limit = AuthFailureLimiter().max_failures
        for i in range(limit):
            status, _, body = await post(f"guess-{i}")
            assert status == 401 and isinstance(body, dict) and body["error"] == "unauthorized"
        for _ in range(5):
            status, retry_after, body = await post("guess-more")
            assert status == 429, body
            assert isinstance(body, dict) and body["error"] == "rate_limited" and body["retryable"] is True
            assert "try again in" in str(body["message"])
            assert retry_after is not None and 0 < int(retry_after) <= 60
        # The station's own token still gets through from the same address.
        status, _, raw = await post(token)
        assert status == 200 and isinstance(raw, bytes)
        assert isinstance(decode_response(raw), ReceiptsBatch)

    assert len(_events(cli.ground_home, "link-unauthorized")) == limit
    limited = _events(cli.ground_home, "link-rate-limited")
    # The block starting, then the 1st, 2nd and 4th refusals (a flood adds log2(n) rows).
    assert len(limited) == 4 and "refused for 60 s" in limited[0]
    assert all(d.startswith("127.0.0.1") for d in limited)
