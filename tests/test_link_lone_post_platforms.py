"""Issue 14, real time: a lone text post to Mastodon, X or Bluesky costs ≤ 2 × its bundle down.

The real `ground serve` publishing through its real adapters (Mastodon and X against their
local fakes, tests/fake_*.py; Bluesky against a real local PDS when installed) and the real
`onboard sync`, through linkemu, bytes counted on the wire. Receipts version 4 (docs/PROTOCOL.md
§9.5) sends each account's URL template once (the station's first post) and then a short key
per post; tests/test_link_open_receipts.py measures the archive the same way.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from link_support import link_to, running_ground, setup_station
from test_all_platforms_e2e import fakes  # noqa: F401 - the fake platforms' servers, a fixture

from linkemu import LinkProxy
from onboard.home import Home
from onboard.sync import sync

TEXTS = ("first post of the station", "a", "Hi!", "Привет, Земля! 🌍")


async def _measure(cli: Cli, tmp_path: Path, account: str, add: list[str]) -> list[tuple[int, int, int, int]]:
    """(text bytes, bundle bytes, up, down) for each text posted alone to ``account``."""
    token = setup_station(cli, tmp_path)
    line = cli.onboard("keys", "show", "alice").output.strip()
    cli.ground("enroll", "alice", "--key", line, "--account", "archive:alice", "--account", account)
    cli.ground("account", "add", account, *add)
    rows = []
    async with running_ground(cli.ground_home) as url:
        port = int(url.rsplit(":", 1)[1])
        for text in TEXTS:
            cli.onboard("post", "--as", "alice", "--to", account, text)
            async with LinkProxy("127.0.0.1", port) as proxy:
                link_to(cli, proxy.url, token)
                result = await sync(Home(cli.onboard_home), wait_published_s=20)
            assert result.requests == 1 and result.pending_items == 0, result
            conn = sqlite3.connect(cli.onboard_home / "onboard.db")
            (bundle,) = conn.execute(
                "SELECT size_bytes FROM link_transfers WHERE kind = 'bundle' ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
            conn.close()
            rows.append((len(text.encode()), bundle, proxy.stats.bytes_up, proxy.stats.bytes_down))
    queue = json.loads(cli.onboard("queue", "--json").output)
    assert all(a["state"] == "published" and a["url"] for i in queue["items"] for a in i["accounts"])
    return rows


def _check(rows: list[tuple[int, int, int, int]], name: str) -> None:
    print(f"\n{name} (text B, bundle B, up B, down B):", rows)
    for text_bytes, bundle, up, down in rows[1:]:  # the first also brings the template and checkpoint
        assert up <= 2 * bundle, (name, text_bytes, bundle, up)
        assert down <= 2 * bundle, (name, text_bytes, bundle, down)


@pytest.mark.parametrize("platform", ["mastodon", "x"])
async def test_real_bytes_of_lone_posts_to_a_fake_platform(
    cli: Cli,
    tmp_path: Path,
    fakes: dict[str, Any],  # noqa: F811
    platform: str,
) -> None:
    fake = fakes[platform]
    if platform == "mastodon":
        account, secret = "mastodon:alice@fake.example", "token-alice"
    else:
        account, secret = "x:alice", json.dumps(fake.grant())
    f = tmp_path / "secret"
    f.write_text(secret)
    rows = await _measure(cli, tmp_path, account, ["--token-file", str(f), "--service-url", fake.base_url])
    _check(rows, platform)


async def test_real_bytes_of_lone_posts_to_bluesky(cli: Cli, tmp_path: Path) -> None:
    from pds import harness

    harness.require_installed()  # skips without the PDS (.cache)
    server = harness.start(tmp_path / "pds")
    try:
        server.create_account("alice.test")
        f = tmp_path / "secret"
        f.write_text(server.accounts["alice.test"].app_password)
        rows = await _measure(
            cli, tmp_path, "bluesky:alice.test", ["--app-password-file", str(f), "--service-url", server.url]
        )
    finally:
        server.stop()
    _check(rows, "bluesky")
