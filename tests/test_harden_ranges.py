"""Issue 16 item 1: a fragmented upload neither stalls ground nor leaves it answering 500.

The probe sent 1-byte chunks at every 4th offset of an upload: each request copied the ranges
through a linear ``add`` (O(n²)), and at 4,096 holes the ranges had already grown past what a
STATUS may carry, so every later OPEN of that upload was HTTP 500 (ground decoding its own reply).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from conftest import Cli
from hypothesis import given
from hypothesis import strategies as st
from link_support import setup_station

from ground.home import GroundHome
from ground.server import LINK_KEY, create_app
from protocol.rangeset import RangeSet
from protocol.transfer import ReceiverConfig, TransferReceiver, WriteChunk
from protocol.transfer_wire import (
    MAX_RANGES,
    Chunk,
    ErrorFrame,
    Open,
    Status,
    TransferKey,
    TransferKind,
    decode_response,
    encode_request,
)


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 300)), max_size=40))
def test_building_and_copying_agree_with_adding_one_by_one(pairs: list[tuple[int, int]]) -> None:
    one_by_one = RangeSet()
    for a, b in pairs:
        before = one_by_one.count_after_add(a, b)
        one_by_one.add(a, b)
        assert len(one_by_one) == before
    assert RangeSet(pairs) == one_by_one  # unsorted, overlapping, empty input
    assert RangeSet(one_by_one) == one_by_one
    half = len(pairs) // 2
    assert RangeSet(pairs[:half]).union(RangeSet(pairs[half:])) == one_by_one


def test_copying_many_ranges_is_linear() -> None:
    # 4,096 ranges copied 2,000 times: the old copy did ~8 M list operations per copy (minutes);
    # a linear one is a few ms each. Generous bound: a regression guard, not a benchmark.
    big = RangeSet((i * 4, i * 4 + 1) for i in range(MAX_RANGES))
    t0 = time.perf_counter()
    for _ in range(2000):
        assert len(RangeSet(big)) == MAX_RANGES
    assert time.perf_counter() - t0 < 10.0


def _drive(r: TransferReceiver, frame: bytes, now: float) -> bytes:
    rid = r.receive(frame, now, station="iss")
    while (ev := r.next_event()) is not None:
        if isinstance(ev, WriteChunk):
            r.chunk_stored(ev.rid, now)
    out = r.response_for(rid)
    assert out is not None
    return out


def test_a_write_that_would_exceed_the_hole_limit_is_refused_before_it_is_accepted() -> None:
    size = 4 * (MAX_RANGES + 10)
    key = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(b"x").digest())
    r = TransferReceiver(ReceiverConfig())
    _drive(r, encode_request(Open(seq=1, key=key, size_bytes=size, owner="a")), 0)
    rec = r.upload("iss", key)
    assert rec is not None
    # Fragmented to 5 short of the limit directly (4,000 requests would say nothing more).
    rec.ranges = RangeSet((4 * i, 4 * i + 1) for i in range(MAX_RANGES - 5))
    for i in range(MAX_RANGES - 5, MAX_RANGES):
        resp = decode_response(_drive(r, encode_request(Chunk(seq=2, key=key, offset=4 * i, data=b"a")), 1))
        assert isinstance(resp, Status)
    resp = decode_response(
        _drive(r, encode_request(Chunk(seq=3, key=key, offset=4 * MAX_RANGES, data=b"a")), 2)
    )
    assert isinstance(resp, ErrorFrame) and "pieces" in resp.message
    rec = r.upload("iss", key)
    assert rec is not None and len(rec.ranges) == MAX_RANGES
    # A chunk that fills a hole still goes through, and every OPEN decodes.
    resp = decode_response(_drive(r, encode_request(Chunk(seq=4, key=key, offset=1, data=b"bbb")), 3))
    assert isinstance(resp, Status) and len(resp.ranges) == MAX_RANGES - 1
    resp = decode_response(_drive(r, encode_request(Open(seq=5, key=key, size_bytes=size, owner="a")), 4))
    assert isinstance(resp, Status)


def test_a_record_stored_over_the_limit_still_gets_a_status_that_decodes() -> None:
    # What a ground that ran before the fix may hold in its transfers table.
    size = 4 * (MAX_RANGES + 100)
    key = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(b"y").digest())
    r = TransferReceiver(ReceiverConfig())
    _drive(r, encode_request(Open(seq=1, key=key, size_bytes=size, owner="a")), 0)
    rec = r.upload("iss", key)
    assert rec is not None
    rec.ranges = RangeSet((4 * i, 4 * i + 1) for i in range(MAX_RANGES + 50))
    resp = decode_response(_drive(r, encode_request(Open(seq=2, key=key, size_bytes=size, owner="a")), 1))
    assert isinstance(resp, Status) and len(resp.ranges) < MAX_RANGES  # under-reports, safely
    # Filling holes shrinks it back; splitting further is refused.
    resp = decode_response(_drive(r, encode_request(Chunk(seq=3, key=key, offset=0, data=b"z" * 400)), 2))
    assert isinstance(resp, Status)
    assert len(r.upload("iss", key).ranges) == MAX_RANGES + 50 - 100  # type: ignore[union-attr]


async def test_fragmenting_an_upload_over_the_link_never_stalls_or_500s(cli: Cli, tmp_path: Path) -> None:
    token = json.loads(setup_station(cli, tmp_path).read_text())["token"]
    size = 4 * MAX_RANGES + 64
    key = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(b"fragmented").digest())
    h = {"Authorization": f"Bearer {token}"}
    home = GroundHome(cli.ground_home)
    app = create_app(home)
    async with TestClient(TestServer(app)) as c:

        async def link(frame: bytes) -> tuple[int, bytes]:
            r = await c.post("/v1/link", data=frame, headers=h)
            return r.status, await r.read()

        assert (await link(encode_request(Open(seq=1, key=key, size_bytes=size, owner="alice"))))[0] == 200
        # What 4,000 one-byte chunks at every 4th offset leave behind, stored as ground stores it.
        rec = app[LINK_KEY].receiver.upload("iss", key)
        assert rec is not None
        rec.ranges = RangeSet((4 * i, 4 * i + 1) for i in range(MAX_RANGES - 20))
        app[LINK_KEY].store.persist(rec)
        worst = 0.0
        for i in range(MAX_RANGES - 20, MAX_RANGES + 5):
            status, _ = await link(encode_request(Chunk(seq=2 + i, key=key, offset=4 * i, data=b"a")))
            assert status == (200 if i < MAX_RANGES else 416), (i, status)
            t0 = time.perf_counter()
            assert (await c.get("/v1/health")).status == 200
            worst = max(worst, time.perf_counter() - t0)
        print(f"\nat {MAX_RANGES} holes: /v1/health worst {worst * 1000:.0f} ms")
        # The probe saw /v1/health at 0.9 s here; generous regression bound.
        assert worst < 0.6, worst
        for _ in range(3):
            status, body = await link(encode_request(Open(seq=9, key=key, size_bytes=size, owner="alice")))
            assert status == 200 and isinstance(decode_response(body), Status)
    # And after a restart (the records reloaded from the database).
    app = create_app(home)
    async with TestClient(TestServer(app)) as c:
        r = await c.post(
            "/v1/link", data=encode_request(Open(seq=1, key=key, size_bytes=size, owner="alice")), headers=h
        )
        assert r.status == 200 and len(decode_response(await r.read()).ranges) == MAX_RANGES  # type: ignore[union-attr]
    home.close()
