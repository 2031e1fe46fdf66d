"""onboard/sync.py's parts on their own: progress sums, connection keeping's spacing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from onboard import sync
from onboard.sync import SyncStatus, _ConnectionKeeper, _Progress


def test_progress_sums_acked_and_counts_outcomes() -> None:
    p = _Progress(SyncStatus())
    p.added("a", 100)
    p.added("b", 50)
    p.acked("a", 40)
    p.acked("b", 10)
    assert (p.update(2).total_bytes, p.status.acked_bytes) == (150, 50)
    p.done("a", True)  # committed: counts as wholly acked
    p.done("b", False)  # rejected: keeps what was acked
    s = p.update(0)
    assert (s.acked_bytes, s.committed, s.rejected, s.transfers_left) == (110, 1, 1, 0)
    p.link(False, "cut")
    assert (s.link_up, s.reason) == (False, "cut")


class _ClosedConnector:
    def open(self) -> bool:
        return False


class _DeadSession:
    def __init__(self) -> None:
        self.gets = 0

    def get(self, *_a: Any, **_k: Any) -> Any:
        self.gets += 1
        raise aiohttp.ClientConnectionError("link down")


async def test_keeper_spaces_failed_warmups_and_restarts_after_an_answer() -> None:
    wake = asyncio.Event()
    keeper = _ConnectionKeeper("http://ground/v1/health", _ClosedConnector(), wake)  # type: ignore[arg-type]
    session = _DeadSession()

    async def step(now: float, answered_at: float = 0.0, busy: bool = False) -> None:
        keeper.step(session, now, requests_open=busy, answered_at=answered_at)  # type: ignore[arg-type]
        await asyncio.sleep(0)  # let the warm-up task run to its end
        await asyncio.sleep(0)

    t0 = time.monotonic()
    await step(t0)
    assert session.gets == 1
    # The attempt failed: the next waits WARM_RETRY_S; none while requests are open either.
    await step(t0 + 1)
    await step(t0 + sync.WARM_RETRY_S + 5, busy=True)
    assert session.gets == 1
    await step(t0 + sync.WARM_RETRY_S + 5)
    assert session.gets == 2
    # The backoff doubled (counted from when the attempt ended, on the real clock) ...
    await step(t0 + 2 * sync.WARM_RETRY_S - 5)
    assert session.gets == 2
    # ... unless ground answered a transfer request since: the link works, warm at once.
    await step(t0 + 2 * sync.WARM_RETRY_S - 5, answered_at=t0 + sync.WARM_RETRY_S + 6)
    assert session.gets == 3
    assert sync.WARM_RETRY_S < sync.WARM_RETRY_MAX_S
    await keeper.close()
