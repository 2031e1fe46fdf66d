"""`sync --watch` keeps one connection to ground open, so a post after a quiet spell or a cut
does not wait a round trip for a TCP handshake; idle, it sends nothing (onboard/sync.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest
from conftest import Cli
from link_support import link_requests, link_to, running_ground, setup_station, until

from linkemu import LinkProxy
from onboard.home import Home
from onboard.sync import WARM_RETRY_MAX_S, sync
from simlink.profile import load_profile
from simlink.report import build_report
from simlink.virtual import run_virtual
from simlink.workload import load_workload


def _published(home: Home) -> int:
    conn = sqlite3.connect(home.db_path)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM items WHERE status = 'published'").fetchone()[0])
    finally:
        conn.close()


async def test_watch_keeps_one_connection_open_and_reopens_it_after_a_cut(cli: Cli, tmp_path: Path) -> None:
    token = setup_station(cli, tmp_path)
    home = Home(cli.onboard_home)
    stop = asyncio.Event()
    async with running_ground(cli.ground_home, publish_interval_s=0.05) as url:
        port = int(url.rsplit(":", 1)[1])
        async with LinkProxy("127.0.0.1", port) as proxy:
            link_to(cli, proxy.url, token)
            task = asyncio.ensure_future(
                sync(home, watch=True, stop=stop, rescan_s=0.1, receipts_every_s=0.2, receipts_max_s=0.8)
            )
            try:
                # Nothing queued: one connection opened by GET /v1/health, no link request.
                assert await until(lambda: proxy.stats.connections == 1, 10)
                await asyncio.sleep(1.0)
                assert proxy.stats.connections == 1 and link_requests(cli.ground_home) == 0

                # A post leaves on that connection: no new handshake.
                cli.onboard("post", "--as", "alice", "--to", "archive:alice", "first light")
                assert await until(lambda: _published(home) == 1, 15)
                assert proxy.stats.connections == 1
                sent = link_requests(cli.ground_home)
                assert sent >= 1

                # A cut: sync opens another within a second or two, then stays quiet.
                proxy.cut_all()
                assert await until(lambda: proxy.stats.connections >= 2, 10)
                await asyncio.sleep(0.5)
                up, opened = proxy.stats.bytes_up, proxy.stats.connections
                await asyncio.sleep(2.0)
                assert (proxy.stats.bytes_up, proxy.stats.connections) == (up, opened)
                assert link_requests(cli.ground_home) == sent

                # The next post rides the reopened connection.
                cli.onboard("post", "--as", "alice", "--to", "archive:alice", "second light")
                assert await until(lambda: _published(home) == 2, 15)
                assert proxy.stats.connections == opened, (opened, proxy.stats)
            finally:
                stop.set()
                result = await asyncio.wait_for(task, 20)
    assert result.pending_items == 0


def test_simulated_text_post_skips_the_handshake() -> None:
    """Virtual time mirrors it: with no gaps or cuts, every text post after the start-up backlog
    is published one way after it is queued (0.3 s on iss-ku: ground publishes as soon as the
    bundle commits), not a handshake's round trip later, however long the link was quiet."""
    prof = dataclasses.replace(load_profile("iss-ku"), dark=(), orbit_s=0.0, cuts_per_hour=0.0, loss=0.0)
    r = run_virtual(prof, load_workload("crew-day"), astronauts=4, duration_s=3 * 3600, seed=3)
    later = [p.published_s - p.queued_s for p in r.posts if not p.photos and p.queued_s > 60]
    assert later and all(p is not None for p in later)
    assert max(later) < 0.5, later  # type: ignore[type-var]


def test_simulated_cuts_each_cost_one_health_request() -> None:
    prof = dataclasses.replace(load_profile("dialup"), cuts_per_hour=4.0, loss=0.0)
    r = run_virtual(prof, load_workload("crew-day"), astronauts=2, duration_s=3 * 3600, seed=5)
    health = build_report(r)["traffic_by_kind"]["health"]
    # The first connection plus at most one per cut (a cut mid-transfer leaves posts' own).
    assert 1 < health["answered"] <= 1 + r.cuts_random
    assert health["answered"] == health["requests"]  # never dark: every attempt got through


def test_a_ground_that_closes_every_connection_gets_a_spaced_health_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If something between closes each connection after its answer, the warm-up does not loop:
    attempts are spaced out to WARM_RETRY_MAX_S, and start again only after a post's answer."""
    from simlink import transfer_driver

    monkeypatch.setattr(transfer_driver, "KEEPALIVE_S", 0.001)  # closed right after each answer
    prof = dataclasses.replace(load_profile("iss-ku"), dark=(), orbit_s=0.0, cuts_per_hour=0.0, loss=0.0)
    hours = 3
    r = run_virtual(prof, load_workload("crew-day"), astronauts=2, duration_s=hours * 3600, seed=3)
    health = build_report(r)["traffic_by_kind"]["health"]
    # ~36 spaced attempts in 3 h, plus a few after each post's answers; not one per loop turn.
    assert health["requests"] <= hours * 3600 / WARM_RETRY_MAX_S + 6 * len(r.posts), health
