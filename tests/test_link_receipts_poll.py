"""`sync` asks for receipts only while something awaits them, and backs off while nothing changes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import Cli
from link_support import link_requests, link_to, running_ground, setup_station, until

from onboard import queue
from onboard.home import Home
from onboard.receipts import ReceiptsPoll, awaiting_receipts
from onboard.sync import sync


def test_poll_backs_off_while_nothing_changes_and_resets_on_news() -> None:
    p = ReceiptsPoll(every_s=20.0, max_s=320.0)
    assert p.due(0.0)
    gaps = []
    now = 0.0
    for _ in range(7):
        p.answered(now, changed=0)
        gaps.append(p.next_at - now)
        now = p.next_at
    assert gaps == [40.0, 80.0, 160.0, 320.0, 320.0, 320.0, 320.0]
    p.answered(now, changed=3)  # news: back to the base interval
    assert p.next_at - now == 20.0
    p.answered(now, changed=0)
    p.kick()  # a bundle committed: ask at once
    assert p.due(now) and p.interval_s == 20.0
    p.idle(now)
    assert not p.due(now + 0.5) and p.due(now + 1.0)


def test_awaiting_counts_unsettled_deliveries_and_retracts_in_flight(cli: Cli) -> None:
    cli.onboard("keys", "new", "alice")
    out = cli.onboard("post", "--as", "alice", "--to", "archive:alice,webhook:alice", "hello").output
    post_id = out.split()[1]
    conn = queue.connect(Home(cli.onboard_home).db_path)
    try:
        assert awaiting_receipts(conn) == 0  # queued: nothing sent, nothing to ask
        conn.execute("UPDATE deliveries SET state = 'received'")
        assert awaiting_receipts(conn) == 2
        conn.execute("UPDATE deliveries SET state = 'published'")
        assert awaiting_receipts(conn) == 0
        cli.onboard("retract", post_id)
        assert awaiting_receipts(conn) == 0  # the retract is still queued here
        conn.execute("UPDATE items SET status = 'received' WHERE kind = 'retract'")
        assert awaiting_receipts(conn) == 1  # the retract's outcome is news (§9)
        conn.execute("UPDATE deliveries SET state = 'retracting' WHERE target LIKE 'archive:%'")
        conn.execute("UPDATE deliveries SET state = 'retract_failed' WHERE target LIKE 'webhook:%'")
        assert awaiting_receipts(conn) == 2  # one delivery still being deleted, and the outcome
        conn.execute("UPDATE deliveries SET state = 'retracted' WHERE target LIKE 'archive:%'")
        assert awaiting_receipts(conn) == 1  # every delivery settled; the retract's outcome is not back
        conn.execute("UPDATE items SET status = 'done' WHERE kind = 'retract'")
        assert awaiting_receipts(conn) == 0
    finally:
        conn.close()


async def test_watch_is_silent_on_a_quiet_day_and_backs_off_while_waiting(cli: Cli, tmp_path: Path) -> None:
    token = setup_station(cli, tmp_path)
    home = Home(cli.onboard_home)
    stop = asyncio.Event()
    async with running_ground(cli.ground_home, publish_interval_s=0.05) as url:
        link_to(cli, url, token)
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "first light")
        task = asyncio.ensure_future(
            sync(home, watch=True, stop=stop, rescan_s=0.1, receipts_every_s=0.2, receipts_max_s=0.8)
        )
        try:
            assert await until(lambda: "published" in cli.onboard("queue").output, 15)
            # Quiet: everything settled, so not one request crosses the link.
            await asyncio.sleep(0.5)
            quiet_from = link_requests(cli.ground_home)
            await asyncio.sleep(3.0)
            quiet = link_requests(cli.ground_home) - quiet_from
            assert quiet == 0

            # A post scheduled for tomorrow is received but not settled: polls continue, backing off.
            at = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%MZ")
            out = cli.onboard("post", "--as", "alice", "--to", "archive:alice", "--at", at, "later").output
            later_id = out.split()[1]
            assert await until(lambda: "received" in cli.onboard("queue").output, 15)
            await asyncio.sleep(0.5)
            waiting_from = link_requests(cli.ground_home)
            await asyncio.sleep(4.0)
            waiting = link_requests(cli.ground_home) - waiting_from
            # Every 0.2 s without backoff would be ~20; doubling to 0.8 s gives ~5-7.
            assert 2 <= waiting <= 10, waiting

            # New posts still leave at once, and a cancel settles the scheduled one: quiet again.
            cli.onboard("cancel", later_id)
            cli.onboard("post", "--as", "alice", "--to", "archive:alice", "second light")

            def settled() -> bool:
                q = cli.onboard("queue").output
                return q.count("published") >= 2 and "cancelled" in q

            assert await until(settled, 15)
            await asyncio.sleep(0.5)
            again_from = link_requests(cli.ground_home)
            await asyncio.sleep(2.0)
            assert link_requests(cli.ground_home) == again_from
        finally:
            stop.set()
            result = await asyncio.wait_for(task, 20)
    print(f"\nreceipt requests: quiet 3 s: {quiet}; waiting on a scheduled post 4 s: {waiting}")
    assert result.pending_items == 0
