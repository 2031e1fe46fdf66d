"""A short dark the heartbeat did not see (docs/link.md "A short dark"): a text post sent while
the link is believed up goes on the kept connection, and the dark takes its segments. TCP's
backed-off retransmission left it up to 7 RTT after the return. Now a text post on a kept
connection whose bytes ground's TCP has not acknowledged after ``race_after_s`` makes the link
silent and its copy races on a new connection; and a silence brings any plain connect still
waiting out its own ``race_after_s`` into the race at once.

Three layers: the sender's rule (sans-IO), the simulator (posts written before the end of a
10 s dark that nothing noticed), and the real `onboard sync --watch` through a loopback relay
whose dark closes nothing.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from link_support import (
    archive_posts,
    committed_answer,
    fill_accept_queue,
    live_sender,
    record_link_downs,
    record_races,
    rtts_after_the_return,
    run_posts_around_a_dark,
    text_post,
    until,
    watching_via_relay,
)

from protocol.transfer import LinkDown, SenderConfig, TransferDone
from protocol.transfer_wire import Open, decode_request
from simlink.virtual import transfer_available

# -- the rule (sans-IO) ---------------------------------------------------------------------


def test_a_text_post_sent_while_up_carries_its_copy_for_a_kept_connection() -> None:
    """While believed up a whole text post comes with ``copy_if_unacked`` (the same OPEN,
    asking for no receipts) and no ``hedge``; while down the other way round; a photo's
    OPEN has neither; ``hedge_kept_posts=False`` gives none while up."""
    s = live_sender(0.6)
    s.open_receipts_since = 5
    text_post(s, 0)
    (o,) = s.data_to_send(1.0)
    assert o.hedge is None and o.copy_if_unacked is not None
    sent, copy = decode_request(o.data), decode_request(o.copy_if_unacked)
    assert isinstance(sent, Open) and isinstance(copy, Open)
    assert (copy.key, copy.data, copy.size_bytes) == (sent.key, sent.data, sent.size_bytes)
    assert sent.receipts_since == 5 and copy.receipts_since is None
    off = live_sender(0.6, SenderConfig(hedge_kept_posts=False))
    text_post(off, 0)
    (o,) = off.data_to_send(1.0)
    assert o.copy_if_unacked is None
    s.request_failed(sent.seq, 2.0, "cut")  # the link is down now
    assert not s.link_up
    (probe,) = s.data_to_send(10.0)
    assert probe.hedge is not None and probe.copy_if_unacked is None


def test_an_unacknowledged_post_on_a_kept_connection_makes_the_link_silent_not_down() -> None:
    """``kept_unacked`` gives the race step; the link stays up; requests after it race from
    their first attempt; the first answer (the copy's or the original's) ends the silence,
    and the second changes nothing."""
    rtt = 0.6
    s = live_sender(rtt)
    key = text_post(s, 0)
    (o,) = s.data_to_send(1.0)
    assert o.race_after_s is not None
    step = s.kept_unacked(o.seq, 1.0 + o.race_after_s)
    assert step == pytest.approx(max(0.05, rtt * 0.2))
    assert s.link_up and s.link_suspect
    assert not any(isinstance(e, LinkDown) for e in iter(s.next_event, None))
    text_post(s, 1)
    (o1,) = s.data_to_send(2.3)
    assert o1.race_every_s is not None and o1.race_after_s is None  # silent: it races at once
    later = s.request_began(o.seq, 2.5)  # the copy began on a raced connection
    assert later is not None and later >= 2.5 + s.config.min_timeout_s
    answer = committed_answer(o.seq, key, len(b"post 0"))
    s.receive(answer, 3.1, started_at=2.5)
    s.receive(answer, 3.4)  # the original, through the kept connection at last
    done = [e for e in iter(s.next_event, None) if isinstance(e, TransferDone)]
    assert len(done) == 1 and not s.link_suspect


def test_no_copy_for_an_answered_or_unknown_request_while_down_or_when_off() -> None:
    s = live_sender(0.6)
    key = text_post(s, 0)
    (o,) = s.data_to_send(1.0)
    s.receive(committed_answer(o.seq, key, len(b"post 0")), 1.6, started_at=1.0)
    assert s.kept_unacked(o.seq, 2.5) is None and s.kept_unacked(999, 2.5) is None
    assert not s.link_suspect
    off = live_sender(0.6, SenderConfig(hedge_kept_posts=False))
    text_post(off, 0)
    (o,) = off.data_to_send(1.0)
    assert off.kept_unacked(o.seq, 3.0) is None and not off.link_suspect
    off.request_failed(o.seq, 3.5, "cut")
    assert off.kept_unacked(o.seq, 4.0) is None


# -- the simulator: posts written before the end of a 10 s dark nothing noticed ---------------


def _published(
    monkeypatch: pytest.MonkeyPatch,
    before_s: float,
    dark_s: float = 10.0,
    first_at_s: float = 70.0,
    **config: Any,
) -> float:
    """RTTs from the end of a dark of ``dark_s`` from 1,500 s (iss-ku, 0.6 s RTT, no loss,
    the dark cutting nothing; the heartbeats following a first post at ``first_at_s``) to the
    publication of a post written ``before_s`` before that end. (The default: the last
    heartbeat answered ~10 s before a 10 s dark.)"""
    r, end = run_posts_around_a_dark(
        [1500.0 + dark_s - before_s],
        monkeypatch,
        cut_after_s=1e6,
        dark_s=dark_s,
        first_at_s=first_at_s,
        **config,
    )
    (late,) = rtts_after_the_return(r, end).values()
    monkeypatch.undo()
    return float(late)


@pytest.mark.skipif(not transfer_available(), reason="needs the transfer machines")
def test_in_the_simulator_a_post_on_a_kept_connection_is_published_within_2_rtt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Posts written 2-8 s before the end of a short dark that cut nothing went on the kept
    connection; each is published within 2 RTT of the return. Without the copy the same
    posts waited for TCP's backed-off retransmission (measured 2.5-7.3 RTT)."""
    xs = (2.0, 3.8, 6.5, 8.0)
    now = {x: _published(monkeypatch, x) for x in xs}
    without = {x: _published(monkeypatch, x, hedge_kept_posts=False) for x in xs}
    print(f"\nRTTs after the return by seconds written before it: {now}; without the copy {without}")
    assert all(v <= 2.0 for v in now.values()), now
    assert max(without.values()) > 4.0, without


@pytest.mark.skipif(not transfer_available(), reason="needs the transfer machines")
def test_in_the_simulator_a_silence_brings_a_plain_connect_into_the_race(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The kept connection carries a heartbeat into the dark; a post written after it connects
    plainly and its SYN is lost. The heartbeat's silence comes first: the post joins the race
    then, not once its own ``race_after_s`` is up (a round trip and more later). (Without the
    post's own early race beside the heartbeat, ``race_beside_ask_rtts``, which comes sooner.)"""
    import simlink.transfer_driver as td

    # The heartbeat leaves 0.75 s before the end of a 58 s dark; the post 0.65 s after it.
    now = _published(monkeypatch, 0.1, dark_s=58.0, first_at_s=890.0, race_beside_ask_rtts=None)
    monkeypatch.setattr(td.TransferDriver, "_silenced", lambda self: None)
    before = _published(monkeypatch, 0.1, dark_s=58.0, first_at_s=890.0, race_beside_ask_rtts=None)
    print(f"\npublished {now:.2f} RTT after the return; {before:.2f} when it waited out its own timer")
    assert now <= before - 0.5, (now, before)


# -- onboard: TCP_INFO, the connector, and sync --watch through a dark relay -------------------


async def test_unacked_reads_the_connection_from_tcp_info() -> None:
    """A loopback connection whose bytes were acknowledged reads False; one with bytes written
    into a peer that reads nothing and whose window is full reads True; closed, None."""
    from onboard.delivery import unacked

    got: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda r, w: got.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, w = await asyncio.open_connection("127.0.0.1", port)
        assert await until(lambda: bool(got), 5.0)
        w.write(b"x" * 100)
        await w.drain()
        assert await until(lambda: unacked(w.transport) is False, 5.0)
        w.write(b"y" * (32 << 20))  # far past both buffers: some of it waits
        assert unacked(w.transport) is True
        w.transport.abort()
        assert unacked(w.transport) is None
    finally:
        for g in got:
            g.transport.abort()
        server.close()
        await server.wait_closed()


async def test_a_silence_brings_a_plain_connect_waiting_out_its_timer_into_the_race() -> None:
    """``_WatchedConnector.silenced``: a plain connect into a listener that drops SYNs, with
    an ``after_s`` of 30 s, asks the sender for a step at once and joins the race."""
    import aiohttp

    from onboard.sync import _Suspect, _WatchedConnector

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    held = fill_accept_queue(port)
    info = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))
    asked: list[float] = []
    joined: list[float] = []
    connector = _WatchedConnector()

    async def racing(addr_info: Any, every_s: float) -> socket.socket:
        joined.append(time.monotonic())
        await asyncio.sleep(30)
        raise AssertionError("not reached")

    connector.race.connect = racing  # type: ignore[method-assign]
    suspect = _Suspect(30.0, lambda: asked.append(time.monotonic()) or 0.1)
    try:
        task = asyncio.ensure_future(
            connector._plain_or_raced([info], suspect, None, aiohttp.ClientConnectorError)
        )
        await asyncio.sleep(0.3)
        assert not asked and not joined
        silenced = time.monotonic()
        connector.silenced()
        assert await until(lambda: bool(joined), 2.0)
        assert asked and asked[0] - silenced < 0.5
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await connector.close()
        for s in held:
            s.close()
        lst.close()


@pytest.mark.parametrize("copy", [True, False], ids=["copied", "kept-only"])
async def test_sync_watch_copies_a_post_stuck_on_a_kept_connection(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, copy: bool
) -> None:
    """A first post is published; the relay goes dark closing nothing, and a post goes on the
    kept connection into it. Its bytes unacknowledged (the relay stands in for ground's TCP:
    on loopback the kernel acknowledges what the relay holds) after ``race_after_s``, the
    link is silent and a copy races on a new connection; at the return both arrive and the
    post is published once, the link never called down. Without the copy the post is still
    published, by the kept connection."""
    import onboard.sync as sync_mod
    import protocol.transfer_sender as ts

    copies: list[float | None] = []
    kept = ts.TransferSender.kept_unacked

    def noted(self: ts.TransferSender, seq: int, now: float) -> float | None:
        step = kept(self, seq, now)
        copies.append(step)
        return step

    monkeypatch.setattr(ts.TransferSender, "kept_unacked", noted)
    joined = record_races(monkeypatch)
    downs = record_link_downs(monkeypatch)
    config = SenderConfig(heartbeat_s=None, hedge_kept_posts=copy)
    async with watching_via_relay(cli, tmp_path, config=config) as w:
        monkeypatch.setattr(sync_mod, "unacked", lambda transport: w.relay.dark)
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "before the dark")
        assert await until(lambda: len(archive_posts(cli.ground_home)) >= 1, 15.0)
        await asyncio.sleep(1.0)  # its answer crosses: the sender has a round trip
        await w.relay.darken(cut=False)
        accepted = w.relay.accepted
        await w.post_in_the_dark(cli, "on the kept connection", published=1, dark_for_s=2.5)
        await asyncio.sleep(0.5)
        result = await w.finish()
    texts = sorted(p.text for p in archive_posts(cli.ground_home))
    assert texts == [b"before the dark", b"on the kept connection"], texts
    assert result.rejected == 0 and result.pending_items == 0 and downs == []
    if copy:
        assert copies and copies[0] is not None and joined  # copied, on a raced connection
    else:
        assert copies == [None] * len(copies) and not joined and w.relay.accepted == accepted
