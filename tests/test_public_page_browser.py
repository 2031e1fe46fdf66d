"""The public proof page in a real browser: the check runs in the page and fails visibly on tampering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import ARTIFACTS, needs_chromium, open_page
from conftest import Cli
from link_support import running_ground
from test_translog import _publish_one

from ground.home import GroundHome

pytestmark = needs_chromium

HOSTILE = 'Mercury_(planet) <script>alert(1)</script><img src=x onerror="alert(2)"> [b]bold[/b] \u202eevil\u202c 👩🏽‍🚀'


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    async with open_page(tmp_path, width=1100, height=900) as p:
        yield p


async def test_reader_sees_the_check_pass_then_fail_on_a_tampered_post(
    enrolled: Cli, tmp_path: Path, photo: Path, page: Any
) -> None:
    post_id = await asyncio.to_thread(_publish_one, enrolled, tmp_path, photo, HOSTILE)
    home = GroundHome(enrolled.ground_home)
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    async with running_ground(enrolled.ground_home) as url:
        await page.goto(f"{url}/p/{post_id}")
        verdict = page.locator("#verdict")
        await page.wait_for_function(
            "() => document.querySelector('#verdict').className !== 'verdict pending'", timeout=60_000
        )
        assert await verdict.get_attribute("class") == "verdict ok", await verdict.text_content()
        assert await page.locator("#text").text_content() == HOSTILE  # verbatim, never markup
        checks = await page.locator("#checks li").all_text_contents()
        assert any("Ed25519 signature is valid" in c for c in checks)
        assert any("byte-identical to the signed one" in c for c in checks)
        assert await page.locator("#checks li.bad").count() == 0
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "public-proof.png"), full_page=True)
    # One byte of the signed body changed in ground's database: the page must say so, in red.
    body = bytes(home.conn.execute("SELECT body FROM items WHERE id = ?", (post_id,)).fetchone()[0])
    home.conn.execute("UPDATE items SET body = ? WHERE id = ?", (body.replace(b"planet", b"planes"), post_id))
    async with running_ground(enrolled.ground_home) as url:
        await page.goto(f"{url}/p/{post_id}")
        await page.wait_for_function(
            "() => document.querySelector('#verdict').className !== 'verdict pending'", timeout=60_000
        )
        assert await page.locator("#verdict").get_attribute("class") == "verdict bad"
        text = await page.locator("#verdict").text_content()
        assert text.startswith("NOT verified") and "signature" in text, text
        await page.screenshot(path=str(ARTIFACTS / "public-proof-tampered.png"), full_page=True)
    assert not dialogs and not errors
