"""`ground serve` publishes a post as soon as its bundle commits, not at the publisher's next tick."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import Cli
from link_support import archive_posts, link_to, running_ground, setup_station, until

from ground.home import GroundHome
from onboard.home import Home
from onboard.sync import sync


async def test_a_committed_bundle_wakes_the_publisher(cli: Cli, tmp_path: Path) -> None:
    token = setup_station(cli, tmp_path)
    # A tick far longer than the test: only the wake can publish in time.
    async with running_ground(cli.ground_home, publish_interval_s=120.0) as url:
        link_to(cli, url, token)
        await sync(Home(cli.onboard_home), give_up_after_s=30, wait_published_s=0)  # start-up pass
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "published at once")
        start = time.monotonic()
        result = await sync(Home(cli.onboard_home), give_up_after_s=30, wait_published_s=0)
        assert result.pending_items == 0
        await until(lambda: len(archive_posts(cli.ground_home)) == 1, 5)
        took = time.monotonic() - start
    assert len(archive_posts(cli.ground_home)) == 1, "the post waited for the 120 s tick"
    print(f"\ncommitted and published {took:.2f} s after sync started")
    gh = GroundHome(cli.ground_home)
    try:
        (state,) = gh.conn.execute("SELECT state FROM publications").fetchone()
        assert state == "published"
    finally:
        gh.close()
