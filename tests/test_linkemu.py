"""The link-emulating proxy: bytes pass unchanged, cuts land where the seed says, the dark stalls."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from linkemu import Direction, LinkProxy, LossWindow, ProxyError


async def _echo_server() -> asyncio.Server:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def _roundtrip(port: int, payload: bytes) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(payload)
    await w.drain()
    w.write_eof()
    got = await r.read(-1)
    w.close()
    return got


async def test_bytes_cross_unchanged_and_are_counted() -> None:
    server = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    payload = hashlib.sha256(b"x").digest() * 4000  # 128 KB
    async with LinkProxy("127.0.0.1", port, up=Direction(rate_bps=20_000_000, delay_s=0.01)) as proxy:
        got = await asyncio.wait_for(_roundtrip(proxy.port, payload), 20)
        assert got == payload
        assert proxy.stats.bytes_up == len(payload) == proxy.stats.bytes_down
        assert proxy.stats.cuts == 0
    server.close()


async def test_random_cuts_are_seeded_and_at_the_drawn_byte() -> None:
    server = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    offsets = []
    for _ in range(2):
        async with LinkProxy("127.0.0.1", port, cut_every_bytes=(1000, 5000), max_cuts=3, seed=7) as proxy:
            for _ in range(3):
                got = await asyncio.wait_for(_roundtrip(proxy.port, b"a" * 20000), 10)
                assert len(got) < 20000  # cut before everything came back
            offsets.append(list(proxy.stats.cut_offsets))
            assert proxy.stats.random_cuts == 3
            # max_cuts reached: the next connection goes through whole.
            assert await asyncio.wait_for(_roundtrip(proxy.port, b"b" * 20000), 10) == b"b" * 20000
    assert offsets[0] == offsets[1]
    server.close()


async def test_loss_of_signal_stalls_then_cuts() -> None:
    server = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    async with LinkProxy("127.0.0.1", port) as proxy:
        r, w = await asyncio.open_connection("127.0.0.1", proxy.port)
        w.write(b"hello")
        assert await asyncio.wait_for(r.readexactly(5), 5) == b"hello"
        proxy.start_loss()
        w.write(b"in the dark")
        await w.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r.read(100), 0.3)
        assert proxy.stats.bytes_up == 5
        proxy.end_loss()
        assert await asyncio.wait_for(r.read(100), 5) == b""  # cut: reset or EOF
        assert proxy.stats.loss_cuts == 1
        w.close()
        # A new connection after the window works again.
        assert await asyncio.wait_for(_roundtrip(proxy.port, b"again"), 5) == b"again"
        proxy.schedule_loss([LossWindow(start_s=0, duration_s=0.2)])
        await asyncio.sleep(0.05)
        assert proxy.dark
        await asyncio.sleep(0.3)
        assert not proxy.dark
    server.close()


async def test_loss_cuts_tell_idle_connections_from_busy_ones() -> None:
    """The end of a loss of signal cuts every connection; those whose last bytes were an
    answer (idle between requests) are counted apart, since an HTTP client has nothing to
    fail there (tests/test_link_e2e.py's random-cuts test flaked on exactly that)."""
    server = await _echo_server()
    port = server.sockets[0].getsockname()[1]
    async with LinkProxy("127.0.0.1", port) as proxy:
        conns = [await asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(3)]
        for r, w in conns:  # each has had an exchange: all idle now
            w.write(b"ping")
            assert await asyncio.wait_for(r.readexactly(4), 5) == b"ping"
        proxy.start_loss()
        conns[0][1].write(b"a request into the dark")  # busy: sent, no answer
        await conns[0][1].drain()
        fresh = await asyncio.open_connection("127.0.0.1", proxy.port)  # opened, nothing sent yet
        await asyncio.sleep(0.2)
        proxy.end_loss()
        assert proxy.stats.loss_cuts == 4
        assert proxy.stats.loss_cuts_idle == 2  # conns 1 and 2; not the busy one, not the fresh one
        for _, w in [*conns, fresh]:
            w.close()
    server.close()


def test_refuses_non_loopback() -> None:
    with pytest.raises(ProxyError):
        LinkProxy("10.0.0.1", 80)
    with pytest.raises(ProxyError):
        LinkProxy("127.0.0.1", 80, listen_host="0.0.0.0")
