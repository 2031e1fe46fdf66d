"""A dark that begins while nothing is in flight (docs/link.md "A dark with nothing in flight").

While the link is believed up and idle the driver asks ground (GET /v1/health on its kept
connection) once the sender's ``heartbeat_at`` is due; that ask, or a warm-up's connect,
unanswered for ``race_after_s`` makes the link *silent*: every request needing a connection
races from its first attempt until ground answers anything. So a post written just before
the link's return is published within 2 RTT of it, whether or not the dark cut anything.
The onboard keeper's part is in tests/test_sync_parts.py.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from hypothesis import given, settings
from hypothesis import strategies as st
from link_support import (
    archive_posts,
    committed_answer,
    live_sender,
    record_link_downs,
    record_races,
    rtts_after_the_return,
    run_posts_around_a_dark,
    setup_station,
    text_post,
    until,
    watching_via_relay,
)

from protocol.transfer import LinkDown, SenderConfig
from simlink.virtual import transfer_available

# -- the sender (sans-IO) -------------------------------------------------------------------


def test_the_heartbeat_is_due_only_while_idle_and_believed_up() -> None:
    """Due ``heartbeat_s`` after ground last answered; none while a request is in flight or
    the link is known down, and none before a round trip is measured."""
    fresh = live_sender(0.6, SenderConfig(heartbeat_s=30.0))
    assert fresh.heartbeat_at == pytest.approx(30.6)
    s = live_sender(0.6, SenderConfig(heartbeat_s=30.0))
    key = text_post(s, 0, 10.0)
    (o,) = s.data_to_send(10.0)
    assert s.heartbeat_at is None  # a request in flight: its answer (or deadline) says enough
    s.receive(committed_answer(o.seq, key, len(b"post 0")), 11.0)
    assert s.heartbeat_at == pytest.approx(41.0)
    s.ground_heard(50.0)  # the last heartbeat's answer
    assert s.heartbeat_at == pytest.approx(80.0)
    text_post(s, 1, 60.0)
    (o,) = s.data_to_send(60.0)
    s.request_failed(o.seq, 61.0, "cut")
    assert not s.link_up and s.heartbeat_at is None  # known down: its probes ask already
    assert s.ground_unanswered(62.0) is None
    from protocol.transfer import TransferSender

    assert TransferSender(SenderConfig(), 0.0).heartbeat_at is None  # nothing measured yet


def test_a_silent_ground_makes_requests_race_without_calling_the_link_down() -> None:
    """Silent (the driver's GET unanswered), the link stays up and nothing is copied, but the
    next request races from its first attempt; ground's answer ends it."""
    rtt = 0.6
    s = live_sender(rtt, SenderConfig(heartbeat_s=30.0))
    step = s.ground_unanswered(31.8)
    assert step == pytest.approx(max(0.05, 0.2 * rtt))
    assert s.link_up and s.link_suspect and s.heartbeat_at is None
    assert not any(isinstance(e, LinkDown) for e in iter(s.next_event, None))
    key = text_post(s, 0, 40.0)
    (o,) = s.data_to_send(40.0)
    assert o.race_every_s is not None and o.race_after_s is None  # races from its first SYN
    assert o.hedge is None  # believed up: no copy
    s.receive(committed_answer(o.seq, key, len(b"post 0")), 41.0)
    assert not s.link_suspect and s.race_every_s is None and s.heartbeat_at == pytest.approx(71.0)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["post", "send", "answer", "fail", "began", "tick", "unanswered", "heard"]),
        st.integers(0, 7),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops=_OPS, rtt=st.floats(0.01, 5.0), every_s=st.floats(1.0, 120.0))
def test_silence_never_calls_the_link_down_and_any_answer_ends_it(
    ops: list[tuple[str, int]], rtt: float, every_s: float
) -> None:
    """Any mix of posts, sends, answers, failures, connections, deadlines and the driver's
    asks answered or not: only a failure or a deadline calls the link down; a heartbeat is
    due only while idle and up, never sooner than ``heartbeat_s`` after ground's last answer
    nor later than that from now; while silent every request handed out races from its first
    attempt; any answer from ground ends the silence."""
    s = live_sender(rtt, SenderConfig(heartbeat_s=every_s))
    now, posts, heard = rtt, 0, rtt
    flying: dict[int, Any] = {}  # seq -> [its key, its deadline]
    for op, n in ops:
        now += 0.1 + n * 0.7
        if op == "post":
            text_post(s, posts, now)
            posts += 1
        elif op == "send":
            silent = s.link_up and s.link_suspect
            for o in s.data_to_send(now):
                if silent:
                    assert o.race_every_s is not None and o.race_after_s is None
                flying[o.seq] = [o.key, o.deadline]
        elif op == "unanswered":
            was_up = s.link_up
            step = s.ground_unanswered(now)
            assert (step is not None) == was_up and s.link_up == was_up
            if was_up:
                assert s.link_suspect and s.heartbeat_at is None
        elif op == "heard":
            s.ground_heard(now)
            heard = now
            assert s.heartbeat_at is None or s.heartbeat_at == pytest.approx(now + every_s)
        elif op == "tick":
            s.handle_timeout(now)
            flying = {k: v for k, v in flying.items() if v[1] > now}  # the sender gave them up
        elif flying:
            seq = sorted(flying)[n % len(flying)]
            if op == "answer":
                key, _ = flying.pop(seq)
                s.receive(committed_answer(seq, key, len(b"post 0")), now)
                heard = now
                if s.link_up:
                    assert s.race_every_s is None  # ground answered: nothing races, nothing silent
            elif op == "fail":
                flying.pop(seq)
                s.request_failed(seq, now, "cut")
            else:
                later = s.request_began(seq, now)
                if later is not None:
                    flying[seq][1] = later
        events = list(iter(s.next_event, None))
        if any(isinstance(e, LinkDown) for e in events):
            assert op in ("fail", "tick")
        due = s.heartbeat_at
        if due is not None:
            assert s.link_up and not s.link_suspect
            assert heard + every_s - 1e-9 <= due <= now + every_s + 1e-9


# -- the simulator: a post just before the return, nothing in flight since the dark began ----


@pytest.mark.skipif(not transfer_available(), reason="needs the transfer machines")
@pytest.mark.parametrize("cut_after_s", [None, 1e6], ids=["the-dark-cuts-at-20s", "the-dark-cuts-nothing"])
def test_in_the_simulator_a_post_just_before_the_return_is_published_within_2_rtt(
    cut_after_s: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """iss-ku (0.6 s RTT) without loss: posts written 3.8 and 0.3 s before a return while the
    sender has sent nothing since the dark began. With the heartbeat each is published within
    2 RTT of the return; without it the one 0.3 s before waited for the kernel's SYN retry
    (2.3–2.7 RTT) and, where the dark cut nothing, the one 3.8 s before for a request on the
    kept connection and TCP's backed-off retransmission (5.5 RTT)."""
    rtt = 0.6

    def published(before_s: float, **config: float | None) -> float:
        r, end = run_posts_around_a_dark([1860.0 - before_s], monkeypatch, cut_after_s=cut_after_s, **config)
        (late,) = rtts_after_the_return(r, end, rtt).values()
        return late

    now = {x: published(x) for x in (3.8, 0.3)}
    without = {x: published(x, heartbeat_s=None) for x in (3.8, 0.3)}
    print(f"\nRTTs after the return, by seconds written before it: {now}; without the heartbeat {without}")
    assert all(x <= 2.0 for x in now.values()), now
    assert max(without.values()) > 2.2, without


@pytest.mark.skipif(not transfer_available(), reason="needs the transfer machines")
def test_in_the_simulator_an_idle_live_link_is_asked_every_60_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat's cost: one GET /v1/health per ``heartbeat_s`` of an idle link, each
    answered. (The same run with the heartbeat on never races a lone post on the live link:
    tests/test_link_suspect.py ``..._a_lone_post_on_a_live_link_never_races``.)"""
    r, _ = run_posts_around_a_dark([600.0, 1200.0], monkeypatch)
    health = (r.traffic_by_kind or {}).get("heartbeat", {})
    # 60-1,500 s up and idle: ~24 heartbeats (the dark's warm-ups are counted apart).
    assert 20 <= health.get("answered", 0) <= 30, health
    assert health["requests"] - health["answered"] == 1  # the one the dark took (it told the silence)
    assert all(p.published_s is not None for p in r.posts)


@pytest.mark.skipif(not transfer_available(), reason="needs the transfer machines")
def test_in_the_simulator_a_post_is_planned_at_syncs_next_look_at_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As `sync --watch` (its ``_watch_queue``), the simulator plans a post within QUEUE_POLL_S
    of its writing, not at the next rescan: posts written 0.3 s after a scan, and a second
    after one, are each planned within the poll."""
    import onboard.link as onboard_link
    import simlink.transfer_driver as td
    from onboard.sync import QUEUE_POLL_S

    planned: list[float] = []
    plan = onboard_link.plan
    clock: list[Any] = []

    def recorded(*a: Any, **kw: Any) -> Any:
        planned.append(clock[0].now)
        return plan(*a, **kw)

    made = td.TransferDriver.__init__

    def keep_clock(self: Any, loop: Any, *a: Any, **kw: Any) -> None:
        clock.append(loop)
        made(self, loop, *a, **kw)

    monkeypatch.setattr(onboard_link, "plan", recorded)
    monkeypatch.setattr(td.TransferDriver, "__init__", keep_clock)
    written = [300.0, 300.3, 301.0, 400.05, 400.55, 401.45]
    r, _ = run_posts_around_a_dark(written, monkeypatch)
    for t in written:
        assert any(t <= p <= t + QUEUE_POLL_S + 1e-6 for p in planned), (t, planned)
    assert all(p.published_s is not None for p in r.posts)


# -- onboard sync --watch through a loopback relay whose dark closes nothing -----------------


async def test_sync_watch_hears_a_silent_kept_connection_and_races_the_next_post(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first post is published (the sender learns the round trip); the relay goes dark
    without closing anything, so the kept connection lives on and takes whatever is sent
    on it into the dark. The heartbeat (every 2 s here) goes on it unanswered, the sender
    is silent, and a post written then races from its first attempt: never suspect, never
    on the kept connection, the link never called down, no copy; published once after the
    relay returns. (The time it takes is the simulator's to measure: on loopback a stalled
    connection loses nothing, so TCP's backed-off retransmissions are not there to wait on.)"""
    import protocol.transfer_sender as ts

    suspected: list[float] = []
    unanswered = ts.TransferSender.connect_unanswered
    monkeypatch.setattr(
        ts.TransferSender,
        "connect_unanswered",
        lambda self, seq, now: suspected.append(now) or unanswered(self, seq, now),
    )
    silences: list[float] = []
    silent = ts.TransferSender.ground_unanswered

    def noted(self: ts.TransferSender, now: float) -> float | None:
        step = silent(self, now)
        if step is not None:
            silences.append(now)
        return step

    monkeypatch.setattr(ts.TransferSender, "ground_unanswered", noted)
    joined = record_races(monkeypatch)
    downs = record_link_downs(monkeypatch)
    async with watching_via_relay(cli, tmp_path, config=SenderConfig(heartbeat_s=2.0)) as w:
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "before the dark")
        assert await until(lambda: len(archive_posts(cli.ground_home)) >= 1, 15.0)
        await asyncio.sleep(1.0)  # its answer crosses: the sender has a round trip
        await w.relay.darken(cut=False)
        dark = time.monotonic()
        # Heartbeat 2 s + race_after_s 1 s (a silence before the dark, a loaded machine's
        # late answer, does not count: it ended with that answer).
        assert await until(lambda: any(t > dark for t in silences), 10.0)
        back = await w.post_in_the_dark(cli, "into a dark that closed nothing", published=1)
        print(
            f"\nsilent {max(silences) - dark:.2f} s into the dark; published "
            f"{time.monotonic() - back:.2f} s after the return; raced {len(joined)}"
        )
        await asyncio.sleep(0.3)
        result = await w.finish()
        accepted = w.relay.accepted
    texts = sorted(p.text for p in archive_posts(cli.ground_home))
    assert texts == [b"before the dark", b"into a dark that closed nothing"], texts
    assert result.rejected == 0 and result.pending_items == 0
    assert joined and min(joined) < back  # raced from its first attempt, in the dark
    assert suspected == [] and downs == []  # never suspect (it raced at once), never called down
    assert accepted >= 2  # the post came on a new connection, not the kept one


# -- the operator's knob: onboard sync --heartbeat ----------------------------------------------


def test_sync_heartbeat_option_sets_the_senders_and_refuses_a_flood(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--heartbeat SECONDS` is the sender's heartbeat_s (0: none); under 5 s, or not a
    number, is refused with the rule and no sync runs."""
    import onboard.sync as sync_mod

    setup_station(cli, tmp_path)
    seen: list[float | None] = []

    async def fake_sync(home: Any, **kw: Any) -> Any:
        seen.append(kw["config"].heartbeat_s)
        zero = dict.fromkeys(
            ("committed", "rejected", "receipts", "requests", "request_bytes", "chunk_bytes"), 0
        )
        return sync_mod.SyncResult(**zero, max_chunk_bytes=0, failures=0, duration_s=0.0, pending_items=0)

    monkeypatch.setattr(sync_mod, "sync", fake_sync)
    cli.onboard("sync")
    cli.onboard("sync", "--heartbeat", "0")
    cli.onboard("sync", "--heartbeat", "90")
    assert seen == [SenderConfig().heartbeat_s, None, 90.0]
    for bad in ("2", "-1", "nan"):
        out = cli.onboard("sync", "--heartbeat", bad, ok=False).output
        assert "give 0 (never) or at least 5 seconds" in out, out
    assert len(seen) == 3


async def test_sync_watch_plans_a_post_from_another_process_at_once(cli: Cli, tmp_path: Path) -> None:
    """A post committed by another process (`onboard post`) wakes `sync --watch` within
    QUEUE_POLL_S (SQLite's data_version), not at its next rescan (30 s here): a post written
    just before a link's return must not wait a rescan before its race begins."""
    async with watching_via_relay(cli, tmp_path, rescan_s=30.0) as w:
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "first")
        assert await until(lambda: len(archive_posts(cli.ground_home)) >= 1, 15.0)
        await asyncio.sleep(0.5)
        written = time.monotonic()
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "second")
        assert await until(lambda: len(archive_posts(cli.ground_home)) >= 2, 10.0)
        took = time.monotonic() - written
        print(f"\npublished {took:.2f} s after it was written (rescan every 30 s)")
        result = await w.finish()
    assert took < 5.0 and result.pending_items == 0
