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
from protocol.batch_tree import BatchInclusion

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


def _publish_batch(cli: Cli, tmp_path: Path, texts: list[str], token: str | None) -> list[str]:
    """alice's posts exported as one bundle (format 3 unless ``token`` says otherwise), published."""
    ids = [cli.onboard("post", "--as", "alice", "--to", "archive:alice", t).output.split()[1] for t in texts]
    cli.onboard("export", *(["--ground-decodes", token] if token else []), str(tmp_path / "OUT"))
    cli.ground("ingest", str(tmp_path / "OUT"))
    cli.ground("publish")
    cli.ground("log", "sync")
    return ids


async def _verdict(page: Any, url: str) -> tuple[str, str, list[str]]:
    await page.wait_for_function(
        "() => document.querySelector('#verdict').className !== 'verdict pending'", timeout=60_000
    )
    verdict = page.locator("#verdict")
    checks = await page.locator("#checks li").all_text_contents()
    return str(await verdict.get_attribute("class")), str(await verdict.text_content()), checks


async def test_a_format_3_post_is_checked_through_its_merkle_path_in_the_browser(
    enrolled: Cli, tmp_path: Path, page: Any
) -> None:
    """The page hashes the body, folds the audit path with WebCrypto SHA-256 to the batch root and
    checks the astronaut's signature over it (docs/PROTOCOL.md §17); one changed path hash fails."""
    texts = [f"Orbit {i}: the same sunrise, {i + 1} times" for i in range(5)]
    ids = await asyncio.to_thread(_publish_batch, enrolled, tmp_path, texts, None)
    home = GroundHome(enrolled.ground_home)
    target = sorted(ids)[2]
    raw = home.conn.execute("SELECT batch_proof FROM items WHERE id = ?", (target,)).fetchone()[0]
    inclusion = BatchInclusion.from_bytes(bytes(raw))
    assert inclusion.tree_size == 5 and len(inclusion.path) >= 2
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    async with running_ground(enrolled.ground_home) as url:
        await page.goto(f"{url}/p/{target}")
        cls, text, checks = await _verdict(page, url)
        assert cls == "verdict ok", text
        leaf = f"this body is leaf {inclusion.leaf_index + 1} of the 5 in the astronaut's signed batch"
        assert any(c.startswith(leaf) for c in checks), checks
        assert any("Ed25519 signature is valid" in c for c in checks)
    first = bytes([inclusion.path[0][0] ^ 1]) + inclusion.path[0][1:]
    forged = BatchInclusion.make(inclusion.tree_size, inclusion.leaf_index, [first, *inclusion.path[1:]])
    home.conn.execute("UPDATE items SET batch_proof = ? WHERE id = ?", (forged.to_bytes(), target))
    async with running_ground(enrolled.ground_home) as url:
        await page.goto(f"{url}/p/{target}")
        cls, text, checks = await _verdict(page, url)
        assert cls == "verdict bad" and text.startswith("NOT verified") and "signature" in text, text
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "public-proof-merkle-tampered.png"), full_page=True)
    assert not errors


async def test_a_format_2_post_still_checks_in_the_browser(enrolled: Cli, tmp_path: Path, page: Any) -> None:
    """An older bundle format keeps its proof: the statement that lists the body's hash."""
    token = "codecs=0,1,2;dicts=6f700001,6f700002;formats=1,2"
    ids = await asyncio.to_thread(_publish_batch, enrolled, tmp_path, ["one", "two", "three"], token)
    async with running_ground(enrolled.ground_home) as url:
        await page.goto(f"{url}/p/{ids[1]}")
        cls, text, checks = await _verdict(page, url)
        assert cls == "verdict ok", text
        assert any("the signed batch statement lists this body's SHA-256" in c for c in checks), checks
