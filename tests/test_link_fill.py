"""Issue 14: parallel streams sized from TCP's view of the link, and a cut chunk's bytes kept
on ground (docs/link.md)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path

from conftest import Cli
from hypothesis import given, settings
from hypothesis import strategies as st
from link_support import running_ground, setup_station
from test_transfer import PHOTO, add, make_pair

from protocol.transfer import SenderConfig, TransferSender, TransferSpec
from protocol.transfer_wire import (
    Chunk,
    Open,
    ReceiptsRequest,
    TransferKey,
    TransferKind,
    decode_request,
    encode_request,
    salvage_chunk,
)

KEY = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(b"k").digest())


# -- streams ---------------------------------------------------------------------------


def _busy_sender(config: SenderConfig, size: int = 50_000_000) -> tuple[TransferSender, float]:
    """A sender with one big photo whose OPEN was answered: every stream has a chunk to carry."""
    pair = make_pair()
    pair.sender = TransferSender(config, 0.0)
    add(pair, b"\0" * size)
    for _ in range(3):
        pair.step()
    return pair.sender, pair.now


def _observe(s: TransferSender, now: float, rtt_s: float) -> None:
    s.data_to_send(now)
    s.observe_path(now, rtt_s=rtt_s, segments=1000, retransmits=10, mss_bytes=1400)


def test_streams_grow_while_the_queue_stays_empty_and_shed_when_it_fills() -> None:
    cfg = SenderConfig(window=4, max_window=24, initial_chunk_bytes=4096, max_chunk_bytes=8192)
    s, now = _busy_sender(cfg)
    seen = [s.streams]
    for _ in range(10):  # RTT at its base: the streams, not the link, are the limit
        now += 3.0
        _observe(s, now, 1.4)
        seen.append(s.streams)
    assert seen == sorted(seen) and seen[-1] == 24  # grew, never past max_window
    for _ in range(40):  # RTT 2× the base: the link's queue fills, so shed streams
        now += 3.0
        _observe(s, now, 2.8)
        assert s.streams >= cfg.window
    assert s.streams == cfg.window
    assert len(s.data_to_send(now)) <= s.streams


def test_streams_do_not_grow_when_the_queue_not_the_window_holds_requests() -> None:
    """App-limited (one small text bundle): more streams would carry nothing more."""
    s = TransferSender(SenderConfig(window=4), 0.0)
    data = b"x" * 100
    key = TransferKey(kind=TransferKind.BUNDLE, sha256=hashlib.sha256(data).digest())
    s.add(
        TransferSpec(key=key, size_bytes=len(data), owner="a", priority=0), lambda o, n: data[o : o + n], 0.0
    )
    now = 0.0
    for _ in range(10):
        now += 3.0
        _observe(s, now, 1.4)
    assert s.streams == 4


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0.5, 5.0), st.floats(0.01, 10.0), st.integers(0, 5000)), max_size=40))
def test_streams_stay_within_their_bounds(obs: list[tuple[float, float, int]]) -> None:
    cfg = SenderConfig(window=3, max_window=9, initial_chunk_bytes=4096, max_chunk_bytes=8192)
    s, now = _busy_sender(cfg, size=5_000_000)
    for dt, rtt, segs in obs:
        now += dt
        s.data_to_send(now)
        s.observe_path(now, rtt_s=rtt, segments=segs, retransmits=segs // 50, mss_bytes=1400)
        assert cfg.window <= s.streams <= cfg.max_window


# -- a cut chunk's bytes ---------------------------------------------------------------


def test_salvage_gives_every_data_byte_that_arrived() -> None:
    data = bytes(range(256)) * 300
    frame = encode_request(Chunk(seq=7, key=KEY, offset=4096, data=data))
    header = len(frame) - len(data)
    for cut in range(len(frame) + 1):
        got = salvage_chunk(frame[:cut])
        if header < cut < len(frame):
            assert got == Chunk(seq=7, key=KEY, offset=4096, data=data[: cut - header])
        else:
            assert got is None  # nothing of the data yet, or the whole frame (decode it instead)


def test_salvage_refuses_what_is_not_a_chunk() -> None:
    for req in (
        Open(seq=1, key=KEY, size_bytes=10_000, owner="a", data=b"y" * 5000),
        ReceiptsRequest(seq=2, since=5),
    ):
        frame = encode_request(req)
        assert all(salvage_chunk(frame[:n]) is None for n in range(len(frame) + 1))
    bad_version = bytearray(encode_request(Chunk(seq=1, key=KEY, offset=0, data=b"z" * 300)))
    bad_version[1] = 9
    assert salvage_chunk(bytes(bad_version[:200])) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_salvage_of_garbage_is_none_or_a_valid_chunk(data: bytes) -> None:
    got = salvage_chunk(data)
    if got is not None:
        assert decode_request(encode_request(got)) == got


def test_ground_keeps_what_reached_it_so_resume_sends_only_the_rest() -> None:
    """The in-memory pair: a chunk cut after half its bytes costs only the other half."""
    pair = make_pair()
    k = add(pair, PHOTO)
    pair.step()  # OPEN answered
    out = pair.sender.data_to_send(pair.now)
    first = decode_request(out[0].data)
    assert isinstance(first, Chunk)
    cut = len(out[0].data) - len(first.data) // 2
    partial = salvage_chunk(out[0].data[:cut])
    assert partial is not None and len(partial.data) == len(first.data) - len(first.data) // 2
    pair.ground.handle(encode_request(partial), pair.now)  # ground stores it; nobody hears back
    for o in out:
        pair.sender.request_failed(o.seq, pair.now + 1, "cut")
    before = pair.sender.stats.chunk_bytes
    pair.now += 2.0
    pair.run()
    assert pair.ground.committed[k] == PHOTO
    resent = pair.sender.stats.chunk_bytes - before
    assert resent <= len(PHOTO) - len(partial.data)


async def test_real_ground_keeps_the_bytes_of_a_request_cut_mid_body(cli: Cli, tmp_path: Path) -> None:
    token = json.loads(setup_station(cli, tmp_path).read_text())["token"]
    data = bytes(range(256)) * 400  # 102,400 bytes
    key = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(data).digest())
    async with running_ground(cli.ground_home) as url:
        host, port = url.removeprefix("http://").split(":")

        async def raw_post(body: bytes, send: int) -> bytes:
            r, w = await asyncio.open_connection(host, int(port))
            head = (
                f"POST /v1/link HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/x-orbitpost-frame\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            w.write(head + body[:send])
            await w.drain()
            if send < len(body):
                await asyncio.sleep(0.3)
                w.transport.abort()  # the link drops mid-request
                return b""
            answer = await r.read(65536)
            w.close()
            return answer

        opened = await raw_post(
            encode_request(Open(seq=1, key=key, size_bytes=len(data), owner="alice")), 10**9
        )
        assert b" 200 " in opened.split(b"\r\n")[0]
        chunk = encode_request(Chunk(seq=2, key=key, offset=0, data=data))
        await raw_post(chunk, len(chunk) - 40_000)
        for _ in range(100):
            conn = sqlite3.connect(cli.ground_home / "ground.db")
            (stored,) = conn.execute("SELECT received_bytes FROM transfers").fetchone()
            conn.close()
            if stored:
                break
            await asyncio.sleep(0.05)
    # Every data byte that reached ground was kept (the frame header is 46 bytes).
    assert stored == len(data) - 40_000
