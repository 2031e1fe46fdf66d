"""The mastodon adapter through the engine, against a local server written to Mastodon's API
(tests/fake_mastodon.py): async media (202 + polling), Idempotency-Key, 429 + Retry-After,
ambiguous 5xx, instance limits, retract."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from fake_mastodon import FakeMastodon, Fault
from publish_support import T0, command, ingest, make_home, make_post, serving, states

from ground.credentials import store_for
from ground.home import GroundHome
from ground.platforms.mastodon import MastodonPlatform, idempotency_key
from ground.publish import PublishOutcome, publish_due
from ground.receipts import collect
from protocol import SigningKey
from protocol.model import Retract
from protocol.receipts import AccountLimitsReceipt

TARGET = "mastodon:alice@fake.example"


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeMastodon, str]]:
    async with serving(FakeMastodon()) as m:
        yield m, m.base_url


@pytest.fixture
def home(tmp_path: Path, alice_key: SigningKey, fake: tuple[FakeMastodon, str]) -> GroundHome:
    h = make_home(tmp_path / "G", alice_key, [TARGET])
    store_for(h.root).add(TARGET, "token-alice", service_url=fake[1])
    yield h
    h.close()


async def run(home: GroundHome, now: int):  # type: ignore[no-untyped-def]
    plat = MastodonPlatform(store_for(home.root), poll_interval_s=0.01)
    async with aiohttp.ClientSession() as s:
        return await publish_due(home, now, {"mastodon": plat}, s, rng=random.Random(0))  # type: ignore[dict-item]


async def test_publishes_text_and_photos_exactly_with_async_media(
    home: GroundHome, fake: tuple[FakeMastodon, str], alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    m, _ = fake
    imgs = [p.read_bytes() for p in sample_jpegs[:2]]
    imgs[1] += b"\0" * (3_000_000 - len(imgs[1]))  # a large photo is streamed, byte-exact
    text = "Cafe\u0301 at 400 km 👩‍🚀🇯🇵\r\nline two  "
    post, blobs = make_post(
        text, [TARGET], photos=[(imgs[0], "image/jpeg", "Rocket"), (imgs[1], "image/jpeg", "")]
    )
    ingest(home, alice_key, [post], blobs)
    (o,) = await run(home, T0)
    assert o.state == "published", o.error
    (status,) = m.statuses.values()
    assert status["text"].encode() == text.encode()
    assert [m.media[i]["data"] for i in status["media_ids"]] == imgs
    assert [m.media[i]["description"] for i in status["media_ids"]] == ["Rocket", None]
    assert status["key"] == idempotency_key(post.id, TARGET)
    # Both uploads answered 202 and were polled (206) until ready before the status was posted.
    assert [s for meth, path, s in m.log if path.startswith("/api/v1/media/")] == [
        206,
        206,
        200,
        206,
        206,
        200,
    ]
    assert o.url == f"{m.base_url}/@alice/{status['id']}"
    row = home.conn.execute("SELECT remote_id, url FROM publications").fetchone()
    assert row == (status["id"], o.url)


async def test_idempotency_key_makes_a_repeat_return_the_same_status(
    home: GroundHome, fake: tuple[FakeMastodon, str], alice_key: SigningKey
) -> None:
    m, _ = fake
    post, _ = make_post("once only", [TARGET])
    ingest(home, alice_key, [post])
    # The status is created, then the answer is lost (502): ambiguous.
    m.faults.append(Fault(method="POST", path="/api/v1/statuses", status=502, after=True))
    (o,) = await run(home, T0)
    assert o.state == "publishing" and len(m.statuses) == 1
    (o,) = await run(home, o.next_attempt_ms or 0)
    assert o.state == "published"
    assert len(m.statuses) == 1 and o.url and o.url.endswith("/" + next(iter(m.statuses)))


async def test_429_with_retry_after_is_honoured(
    home: GroundHome, fake: tuple[FakeMastodon, str], alice_key: SigningKey
) -> None:
    m, _ = fake
    post, _ = make_post("slow down", [TARGET])
    ingest(home, alice_key, [post])
    m.faults.append(Fault(method="POST", path="/api/v1/statuses", status=429, headers={"Retry-After": "120"}))
    (o,) = await run(home, T0)
    assert o.state == "pending" and "429" in (o.error or "")
    assert o.next_attempt_ms is not None and o.next_attempt_ms >= T0 + 120_000
    assert await run(home, T0 + 119_000) == []
    (o,) = await run(home, T0 + 120_000)
    assert o.state == "published" and len(m.statuses) == 1


async def test_instance_limits_are_rechecked_on_ground(
    home: GroundHome, fake: tuple[FakeMastodon, str], alice_key: SigningKey
) -> None:
    m, _ = fake
    m.max_characters = 100  # this instance is stricter than Mastodon's default 500
    post, _ = make_post("x" * 150, [TARGET])
    ingest(home, alice_key, [post])
    (o,) = await run(home, T0)
    assert (
        o.state == "failed" and "mastodon.text_length" in (o.error or "") and "allows 100" in (o.error or "")
    )
    assert m.statuses == {}
    assert home.conn.execute("SELECT retryable FROM publications").fetchone() == (0,)
    # Learned limits are kept and go to the station in the next signed receipts.
    receipts, _, _ = collect(home.conn, 0)
    (limits,) = [r for r in receipts if isinstance(r, AccountLimitsReceipt)]
    assert limits.account == TARGET and limits.max_text == 100


async def test_permanent_refusal_is_not_retried(
    home: GroundHome, fake: tuple[FakeMastodon, str], alice_key: SigningKey
) -> None:
    m, _ = fake
    m.tokens = {"another": "bob"}  # the stored token was revoked on the instance
    post, _ = make_post("hi", [TARGET])
    ingest(home, alice_key, [post])
    (o,) = await run(home, T0)
    assert o.state == "failed" and "401" in (o.error or "")
    assert await run(home, T0 + 10**9) == []


async def test_retract_deletes_the_status(
    home: GroundHome, fake: tuple[FakeMastodon, str], alice_key: SigningKey
) -> None:
    m, _ = fake
    post, _ = make_post("oops", [TARGET])
    ingest(home, alice_key, [post])
    await run(home, T0)
    assert len(m.statuses) == 1
    ingest(home, alice_key, [command(Retract, post.id)])
    (o,) = await run(home, T0 + 1)
    assert o.state == "retracted" and m.statuses == {}
    assert states(home, post.id) == {TARGET: "retracted"}


async def test_ambiguous_beyond_the_idempotency_window_is_reconciled_by_lookup(
    home: GroundHome, fake: tuple[FakeMastodon, str], alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    m, _ = fake
    img = sample_jpegs[0].read_bytes()
    lost, _ = make_post("never made it", [TARGET])
    made, blobs = make_post("made it", [TARGET], photos=[(img, "image/jpeg", "")])
    ingest(home, alice_key, [made, lost], blobs)
    # One status is created but its answer lost; the other request dies before the instance acts.
    # (Fault order follows the posts' order: "never made it" was written first.)
    m.faults.append(Fault(method="POST", path="/api/v1/statuses", status=504))
    m.faults.append(Fault(method="POST", path="/api/v1/statuses", status=504, after=True))
    out = await run(home, T0)
    assert sorted(o.state for o in out) == ["publishing", "publishing"]
    assert [s["text"] for s in m.statuses.values()] == ["made it"]
    posts_before = sum(1 for meth, path, _ in m.log if meth == "POST" and path == "/api/v1/statuses")
    # Ground was down for two hours: the instance has forgotten the keys. Ground reads the
    # account's statuses back (exact text via /source) instead of posting blindly.
    out = {o.item_id: o for o in await run(home, T0 + 2 * 3600_000)}
    assert out[made.id].state == "published" and out[lost.id].state == "published"
    texts = sorted(s["text"] for s in m.statuses.values())
    assert texts == ["made it", "never made it"]
    posts_after = sum(1 for meth, path, _ in m.log if meth == "POST" and path == "/api/v1/statuses")
    assert posts_after == posts_before + 1  # only the one that never made it was posted again
    (made_status,) = [s for s in m.statuses.values() if s["text"] == "made it"]
    assert out[made.id].url and out[made.id].url.endswith("/" + made_status["id"])


async def _lost_then_buried(
    home: GroundHome, m: FakeMastodon, key: SigningKey, text: str, *, others: int
) -> PublishOutcome:
    """``text`` posted at T0 with its answer lost (a 504 before the instance acted), then
    ``others`` newer statuses by another client, none of them ours; the T0 outcome."""
    post, _ = make_post(text, [TARGET])
    ingest(home, key, [post])
    m.faults.append(Fault(method="POST", path="/api/v1/statuses", status=504))
    (o,) = await run(home, T0)
    for i in range(others):
        sid = m.new_id()
        m.statuses[sid] = {
            "id": sid, "account": "alice", "text": f"other {i}", "media_ids": [], "key": None,
            "created_at": "2099-01-01T00:00:00.000Z",
        }  # fmt: skip
    return o


async def test_lookup_that_cannot_see_far_enough_asks_an_operator(
    home: GroundHome, fake: tuple[FakeMastodon, str], alice_key: SigningKey
) -> None:
    m, _ = fake
    # The account posted a lot since (another client).
    o = await _lost_then_buried(home, m, alice_key, "buried", others=210)
    assert o.state == "publishing"
    (o,) = await run(home, T0 + 2 * 3600_000)  # past the key's hour: a real search
    assert o.state == "failed" and "cannot tell whether" in (o.error or "")
    assert not any(s["text"] == "buried" for s in m.statuses.values())


async def test_ground_account_check(cli, fake: tuple[FakeMastodon, str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    m, url = fake
    tok = tmp_path / "tok"
    tok.write_text("token-alice")
    cli.ground("account", "add", TARGET, "--token-file", str(tok), "--service-url", url)
    # The CLI runs its own event loop in a thread; the fake keeps serving on this one.
    r = await asyncio.to_thread(cli.ground, "account", "check", TARGET)
    assert f"token works on {url} for @alice; 500 characters, 4 media" in r.output
    tok.write_text("revoked")
    cli.ground("account", "add", TARGET, "--token-file", str(tok), "--service-url", url)
    r = await asyncio.to_thread(cli.ground, "account", "check", TARGET, ok=False)
    assert r.exit_code == 1 and "401" in str(r.exception) and "revoked" not in str(r.exception)
    r = await asyncio.to_thread(cli.ground, "account", "check", "archive:alice")
    assert "nothing to check" in r.output


async def test_lookup_reads_every_page_down_to_a_short_last_one(
    home: GroundHome, fake: tuple[FakeMastodon, str], alice_key: SigningKey
) -> None:
    m, _ = fake
    await _lost_then_buried(home, m, alice_key, "needle", others=170)  # 4 full pages and a short one
    (o,) = await run(home, T0 + 2 * 3600_000)
    assert o.state == "published"
    assert sum(s["text"] == "needle" for s in m.statuses.values()) == 1
    pages = [p for meth, p, _ in m.log if p.startswith("/api/v1/accounts/id-alice/statuses")]
    assert len(pages) == 5


async def test_text_is_read_back_after_posting_and_recorded(
    home: GroundHome, fake: tuple[FakeMastodon, str], alice_key: SigningKey
) -> None:
    m, _ = fake
    post, _ = make_post("read me back \u2014 exactly", [TARGET])
    ingest(home, alice_key, [post])
    (o,) = await run(home, T0)
    assert o.state == "published" and m.statuses
    (note,) = home.conn.execute("SELECT fidelity_note FROM publications").fetchone()
    assert note == "text read back: exact"
