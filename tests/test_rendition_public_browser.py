"""The public proof page of a post X received as a rendition, in the real browser: the page
says so with both hashes, and its own checks find the rendition in the log leaf and served."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from conftest import Cli
from fake_x import FakeX
from link_support import running_ground
from publish_support import add_oauth2_account
from test_public_page_browser import page  # noqa: F401
from test_rendition_e2e import X, fake, publish  # noqa: F401
from test_rendition_onboard import panorama

from ground import translog
from ground.home import GroundHome
from ground.ingest import ingest_bytes


async def test_public_page_shows_and_checks_the_rendition(
    cli: Cli,
    fake: FakeX,  # noqa: F811
    page: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    cli.onboard("keys", "new", "alice")
    line = cli.onboard("keys", "show", "alice").output.strip()
    cli.ground("enroll", "alice", "--key", line, "--account", X, "--account", "archive:alice")
    add_oauth2_account(cli.ground_home, X, fake)
    photo = tmp_path / "wide.jpg"
    photo.write_bytes(panorama())
    out = cli.onboard(
        "post", "--as", "alice", "--to", f"{X},archive:alice", "--photo", str(photo),
        "--allow-rendition", X, "Panorama",
    ).output  # fmt: skip
    post_id = out.split()[1]
    cli.onboard("export", str(tmp_path / "OUT"))
    home = GroundHome(cli.ground_home)
    try:
        for f in sorted((tmp_path / "OUT").glob("*.opb")):
            ingest_bytes(home, f.read_bytes(), source="test", now_ms=int(time.time() * 1000))
        assert await publish(home) == {X: "published", "archive:alice": "published"}
        translog.catch_up(home, int(time.time() * 1000))
    finally:
        home.close()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    async with running_ground(cli.ground_home) as url:
        await page.goto(f"{url}/p/{post_id}")
        await page.wait_for_function(
            "() => document.querySelector('#verdict').className !== 'verdict pending'", timeout=60_000
        )
        verdict = page.locator("#verdict")
        assert await verdict.get_attribute("class") == "verdict ok", await verdict.text_content()
        checks = await page.locator("#checks li").all_text_contents()
        assert any(
            "the log records the rendition sent to x:alice (photo 1, rendition/v1) with both hashes" in c
            for c in checks
        )
        assert any("the rendition sent to x:alice is the one served here" in c for c in checks)
        assert any("the signed post allows a rendition for x:alice" in c for c in checks)
        row = await page.locator("#publications tbody tr", has_text="x:alice").text_content()
        assert "photo 1 sent as a rendition (rendition/v1, 9000×1200 → 8192×1092 JPEG" in (row or "")
        assert "allowed in the signed post" in (row or "")
        assert await page.locator("#checks li.bad").count() == 0
    assert not errors
