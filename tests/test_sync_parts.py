"""onboard/sync.py's parts on their own: progress sums, connection keeping's spacing, the heartbeat."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from link_support import live_sender, text_post

from onboard import sync
from onboard.sync import SyncStatus, _ConnectionKeeper, _Progress
from protocol.transfer import SenderConfig, TransferSender


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
    keeper = _ConnectionKeeper("http://ground/v1/health", _ClosedConnector(), wake, TransferSender())  # type: ignore[arg-type]
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


class _OpenConnector:
    def __init__(self) -> None:
        self.silences = 0

    def open(self) -> bool:
        return True

    def silenced(self) -> None:
        self.silences += 1  # (the real one brings plain connects under way into the race)


class _QuietSession:
    """A kept connection into a dark that cuts nothing: each GET waits until ``answer`` is set."""

    def __init__(self) -> None:
        self.gets = 0
        self.answer = asyncio.Event()

    def get(self, *_a: Any, **_k: Any) -> Any:
        self.gets += 1
        return _QuietResponse(self.answer)


class _QuietResponse:
    def __init__(self, answer: asyncio.Event) -> None:
        self._answer = answer

    async def __aenter__(self) -> _QuietResponse:
        await self._answer.wait()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None

    async def read(self) -> bytes:
        return b"{}"


async def test_keeper_heartbeat_on_the_kept_connection_tells_the_sender_of_a_silence() -> None:
    """With a connection open and nothing in flight, the keeper asks ground once the sender's
    heartbeat is due; unanswered the sender's race_after_s, the sender is *silent* (requests
    race, the link is not called down); the answer ends it and sets the next heartbeat."""
    sender = live_sender(0.02, SenderConfig(suspect_min_s=0.05, heartbeat_s=30.0))
    wake = asyncio.Event()
    contacts: list[float] = []  # the compose page's "last contact with ground"
    connector = _OpenConnector()
    keeper = _ConnectionKeeper(
        "http://ground/v1/health",
        connector,  # type: ignore[arg-type]
        wake,
        sender,
        on_contact=lambda: contacts.append(time.monotonic()),
    )
    session = _QuietSession()
    due = sender.heartbeat_at
    assert due == 30.02 and sender.race_after_s == 0.05
    keeper.step(session, due - 1.0, requests_open=False, answered_at=0.0)  # type: ignore[arg-type]
    keeper.step(session, due + 1.0, requests_open=True, answered_at=0.0)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert session.gets == 0  # not yet due; then requests in flight say enough
    keeper.step(session, due, requests_open=False, answered_at=0.0)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert session.gets == 1 and not sender.link_suspect
    await asyncio.wait_for(wake.wait(), 2.0)  # woken by the silence
    assert sender.link_suspect and sender.link_up and sender.race_every_s is not None
    assert connector.silences == 1  # a plain connect under way would join the race now
    assert sender.heartbeat_at is None  # silent: no further heartbeat, the race asks now
    session.answer.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert not sender.link_suspect and sender.race_every_s is None
    assert sender.heartbeat_at is not None and sender.heartbeat_at >= time.monotonic() + 29.0
    assert len(contacts) == 1  # an answered heartbeat is a contact with ground
    await keeper.close()


async def test_keeper_without_a_heartbeat_leaves_a_kept_connection_alone() -> None:
    sender = live_sender(0.02, SenderConfig(heartbeat_s=None))
    keeper = _ConnectionKeeper("http://ground/v1/health", _OpenConnector(), asyncio.Event(), sender)  # type: ignore[arg-type]
    session = _QuietSession()
    keeper.step(session, time.monotonic() + 3600.0, requests_open=False, answered_at=0.0)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert session.gets == 0 and sender.heartbeat_at is None
    assert sender.ground_unanswered(1.0) is None and not sender.link_suspect
    await keeper.close()


async def test_keeper_tells_the_sender_while_its_ask_is_out() -> None:
    """While the heartbeat is out, a text post's new connection races early (the sender's
    ``race_beside_ask_rtts``); once it is answered, or a warm-up fails, as any other."""
    sender = live_sender(0.6, SenderConfig(heartbeat_s=30.0))
    normal = sender.race_after_s
    keeper = _ConnectionKeeper("http://ground/v1/health", _OpenConnector(), asyncio.Event(), sender)  # type: ignore[arg-type]
    session = _QuietSession()
    due = sender.heartbeat_at
    assert due is not None and normal is not None
    keeper.step(session, due, requests_open=False, answered_at=0.0)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert session.gets == 1
    text_post(sender, 0)
    (o,) = sender.data_to_send(due + 0.1)
    assert o.race_after_s is not None and o.race_after_s < normal
    session.answer.set()
    for _ in range(5):
        await asyncio.sleep(0)
    text_post(sender, 1)
    assert [o.race_after_s for o in sender.data_to_send(due + 0.3)] == [normal]
    await keeper.close()
    dead = _ConnectionKeeper("http://ground/v1/health", _ClosedConnector(), asyncio.Event(), sender)  # type: ignore[arg-type]
    dead.step(_DeadSession(), time.monotonic(), requests_open=False, answered_at=0.0)  # type: ignore[arg-type]
    for _ in range(3):
        await asyncio.sleep(0)
    text_post(sender, 2)
    assert [o.race_after_s for o in sender.data_to_send(due + 0.5)] == [normal]
    await dead.close()
