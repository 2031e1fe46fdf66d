"""What the fake platforms share: scripted faults, and running one on its own.

Faults: a test scripts ``Fault(method, path, status, after=…)`` and the fake answers that
status to the next matching request — before acting, or *after* acting (the ambiguous case a
lost answer makes; ``status=0`` drops the connection instead of answering).

On its own (the subprocess tests: test_crash.py, `ground demo --with-fakes`), every fake serves its ``app()`` on loopback at a free port (or ``port``), learns its own base
URL (it writes it into the links it answers), prints one JSON line — ``{"url": …}`` plus what
an operator would be given (a grant, a secret) — and serves until killed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Fault:
    """Answer ``status`` to the next ``times`` matching requests; ``after`` = act first, then fail
    (``status=0`` drops the connection without an answer)."""

    method: str
    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    after: bool = False
    times: int = 1


def take_fault(faults: list[Fault], method: str, path: str) -> Fault | None:
    """The first scripted fault for this request that has tries left (one is used up), or None."""
    for f in faults:
        if f.method == method and path.startswith(f.path) and f.times > 0:
            f.times -= 1
            return f
    return None


async def serve_standalone(fake: Any, port: int, **given: Any) -> None:
    """Serve ``fake`` on 127.0.0.1:``port`` (0: any free port); print its URL and ``given``; never return."""
    runner = web.AppRunner(fake.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    fake.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(json.dumps({"url": fake.base_url, **given}), flush=True)
    await asyncio.Event().wait()
