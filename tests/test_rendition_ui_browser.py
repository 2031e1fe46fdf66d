"""The compose page's "allow a rendition" box, in the real browser (Debian's chromium).

A panorama over X's 8192-pixel side: the page refuses it for X with the limit and the remedy;
ticking "allow a rendition" beside x:bob turns X green and says what ground will make; the
queued post carries the signed consent (body version 2) for x:bob only. When ground's receipt
comes back, the post says per account how faithfully its photo went out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import ARTIFACTS, needs_chromium
from test_rendition_onboard import panorama
from test_ui_browser import page, queue_from_page, text_of  # noqa: F401
from ui_support import Ui, start_ui, stop_ui

from onboard import queue
from onboard.home import Home
from onboard.receipts import apply_document
from protocol import Post
from protocol.receipts import PhotoFidelity, PhotoNote, PublicationReceipt, ReceiptDocument, RenditionNote

pytestmark = needs_chromium


@pytest.fixture
def ui(tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator[tuple[Path, Ui]]:
    import subprocess
    import sys

    a = tmp_path / "A"
    subprocess.run(
        [sys.executable, "-m", "onboard", "--home", str(a), "keys", "new", "bob"],
        env=subprocess_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    u = start_ui(a, subprocess_env)
    try:
        yield a, u
    finally:
        stop_ui(u)


async def add_account(page: Any, account: str) -> None:  # noqa: F811
    await page.fill("#new-account", account)
    await page.press("#new-account", "Enter")
    await page.wait_for_selector(f'#counters li[data-target="{account}"]')


async def test_allow_a_rendition_from_the_page(ui: tuple[Path, Ui], page: Any, tmp_path: Path) -> None:  # noqa: F811
    home, u = ui
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    wide = tmp_path / "wide.jpg"
    wide.write_bytes(panorama())

    await page.goto(u.login_url)
    # The page focuses the text once its draft is loaded (app.js boot): before that an account
    # typed is dropped and the text filled is overwritten by the draft's (a fresh-clone CI
    # run timed out waiting for x:bob's counter, 4 Dec).
    await page.wait_for_selector("#text:focus")
    await page.fill("#text", "Panorama from the cupola")
    await add_account(page, "x:bob")
    await add_account(page, "archive:bob")
    await page.set_input_files("#photo-input", str(wide))
    await page.wait_for_selector("#photo-list li:nth-child(1) img")

    # Over X's limit, no consent: refused there, with the limit and the remedy; archive is fine.
    over = '#counters li.over[data-target="x:bob"]'
    await page.wait_for_selector(over)
    said = await text_of(page, over)
    assert "photo 1 is 9000×1200; X allows at most 8192 pixels a side" in said
    assert "tick “allow a rendition” for x:bob to let ground make a JPEG within X's limits" in said
    assert await page.locator('#counters li.ok[data-target="archive:bob"]').count() == 1
    await page.click("#queue-btn")
    await page.wait_for_selector("#message.error:has-text('Not queued')")

    # The box is per account: ticking it for X cures X only, and the page says what will happen.
    assert await page.is_disabled('#account-list input[data-rendition="x:bob"]') is False
    await page.check('#account-list input[data-rendition="x:bob"]')
    await page.wait_for_selector('#counters li.ok[data-target="x:bob"]')
    await page.wait_for_selector("#warnings li:has-text('will receive a rendition')")
    warned = await text_of(page, "#warnings")
    assert "X (x:bob) will receive a rendition of photo 1 (9000×1200 → 8192×1092 JPEG, rendition/v1" in warned
    assert "archive keeps the photos exactly" in warned
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "ui-rendition.png"), full_page=True)

    queued_id = await queue_from_page(page, "Queue the post")
    conn = queue.connect(Home(home).db_path)
    try:
        q = queue.get(conn, queued_id)
    finally:
        conn.close()
    assert q is not None and isinstance(q.item, Post)
    assert q.item.renditions == ("x:bob",) and q.signed.body[1] == 2  # body version 2

    # Ground's version-3 receipt comes back (docs/PROTOCOL.md §9.4): the post's view says, per
    # account, how faithfully the photo went out — from what ground did, not from the rules.
    sha = q.item.media[0].sha256
    made = RenditionNote(
        photo=1, original_sha256=sha, sha256=b"\x01" * 32, recipe="rendition/v1", width=8192, height=1092
    )
    doc = ReceiptDocument(
        issued_ms=1,
        version=3,
        receipts=(
            PublicationReceipt(
                item_id=queued_id, account="x:bob", state="published", url="https://x.com/bob/status/1",
                error=None, seq=5, renditions=(made,),
                photos=(PhotoNote(fidelity=PhotoFidelity.RENDITION, original_sha256=sha),),
            ),
            PublicationReceipt(
                item_id=queued_id, account="archive:bob", state="published", url="file:///archive/bob/1",
                error=None, seq=6, photos=(PhotoNote(fidelity=PhotoFidelity.EXACT, original_sha256=sha),),
                read_back="files written as signed <b>not bold</b>",
            ),
        ),
    )  # fmt: skip
    conn = queue.connect(Home(home).db_path)
    try:
        apply_document(conn, doc)
    finally:
        conn.close()
    await page.wait_for_selector("[data-fidelity]")
    said = await text_of(page, "[data-fidelity]")
    assert (
        f"x:bob got a rendition of this photo (as allowed); archive:bob kept it exactly (sha256 {sha.hex()[:16]}…)"
        in said
    )
    assert await text_of(page, 'li[data-account="archive:bob"] .fidelity') == "photo kept exactly"
    assert await text_of(page, 'li[data-account="x:bob"] .fidelity') == "photo sent as a rendition (allowed)"
    title = await page.get_attribute('li[data-account="archive:bob"] .fidelity', "title")
    assert title == "files written as signed <b>not bold</b>"  # text, never markup
    assert await page.locator("b").count() == 0
    assert not errors
