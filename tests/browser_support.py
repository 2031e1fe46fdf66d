"""Debian's chromium driven by playwright: the one launch every browser test shares.

Importing this module skips the importing test module when playwright is missing; mark a
module with ``pytestmark = needs_chromium`` to skip it, with the install line, when the browser
is missing. ``open_page`` gives a page in a fresh, empty profile and closes the browser after.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
# Flags Debian's chromium needs on this closed network, as root, without a GPU.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# What a step may wait for an element or a navigation on 2 busy cores.
TIMEOUT_MS = 20_000

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright is not installed (pip install -e '.[test]')"
)

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=(
        "BROWSER TEST SKIPPED: /usr/bin/chromium is missing; "
        "install Debian's browser with `apt-get install -y chromium chromium-driver` (.ci/run does)"
    ),
)


@contextlib.asynccontextmanager
async def open_page(
    tmp_path: Path, *, width: int, height: int, bypass_csp: bool = False
) -> AsyncIterator[Any]:
    """A page of a headless chromium with a ``width`` × ``height`` viewport, in a new profile
    under ``tmp_path``; ``bypass_csp`` lets playwright's string predicates run on a page whose
    CSP refuses eval (the page's own code still runs as in any browser)."""
    async with playwright_api.async_playwright() as pw:
        ctx = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a fresh, empty profile every run
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
            bypass_csp=bypass_csp,
        )
        try:
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            await ctx.close()
