"""The x adapter through the engine, against tests/fake_x.py (written from X's API docs):
chunked upload with processing states, OAuth 2.0 refresh with rotation, reconnect, rate-limit
headers and the daily quota, ambiguous timeouts looked up, never a second post."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_x import FakeX, Fault
from hypothesis import given
from hypothesis import strategies as st
from publish_support import (
    T0,
    fails_asking_to_reconnect,
    ingest,
    make_post,
    oauth2_home,
    publish_run,
    publish_then_retract,
    reconnect_and_retry,
    serving,
)

from ground.credentials import store_for
from ground.home import GroundHome
from ground.platforms.x import text_matches
from ground.publish import PublishOutcome
from protocol import SigningKey

TARGET = "x:alice"


@pytest.fixture
async def fake() -> AsyncIterator[FakeX]:
    async with serving(FakeX()) as x:
        yield x


@pytest.fixture
def home(tmp_path: Path, alice_key: SigningKey, fake: FakeX) -> Iterator[GroundHome]:
    yield from oauth2_home(tmp_path / "G", alice_key, TARGET, fake)


async def run(home: GroundHome, now: int) -> list[PublishOutcome]:
    return await publish_run(home, now, quick_poll="x")


def row(home: GroundHome, item_id: str) -> tuple[str, ...]:
    return home.conn.execute(
        "SELECT state, url, last_error, fidelity, fidelity_note FROM publications WHERE item_id = ?",
        (item_id,),
    ).fetchone()


async def test_publishes_text_exactly_and_photos_byte_exact_after_processing(
    home: GroundHome, fake: FakeX, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    imgs = [p.read_bytes() for p in sample_jpegs[:2]]
    imgs[1] += b"\0" * (2_500_000 - len(imgs[1]))  # several APPEND segments
    text = "Cafe\u0301 at 400 km 👩‍🚀 & <orbit>\r\nline two  "
    post, blobs = make_post(
        text, [TARGET], photos=[(imgs[0], "image/jpeg", "Rocket"), (imgs[1], "image/jpeg", "")]
    )
    ingest(home, alice_key, [post], blobs)
    (o,) = await run(home, T0)
    assert o.state == "published", o.error
    (tw,) = fake.tweets.values()
    assert tw["text"].encode() == text.encode()
    assert [fake.media[i]["data"] for i in tw["media_ids"]] == imgs
    assert [fake.media[i]["alt"] for i in tw["media_ids"]] == ["Rocket", None]
    # FINALIZE said pending; STATUS was polled until succeeded before the post was created.
    statuses = [s for m, p, s in fake.log if m == "GET" and p == "/2/media/upload"]
    assert statuses == [200, 200, 200, 200]
    assert o.url == f"https://x.com/alice/status/{tw['id']}"
    state, _, _, fidelity, note = row(home, post.id)
    assert (state, fidelity) == ("published", "re-encoded") and "X re-encodes" in note
    assert "text read back: exact" in note


async def test_refreshes_ahead_of_expiry_and_persists_the_rotated_token(
    home: GroundHome, fake: FakeX, alice_key: SigningKey
) -> None:
    store = store_for(home.root)
    before = store.load_tokens(TARGET)
    assert before is not None
    # Five minutes left: inside the ten-minute margin, so ground refreshes before using it.
    store.save_tokens(TARGET, dataclasses.replace(before, expires_at_ms=int(time.time() * 1000) + 300_000))
    p1, _ = make_post("first", [TARGET])
    ingest(home, alice_key, [p1])
    (o,) = await run(home, T0)
    assert o.state == "published", o.error
    after = store.load_tokens(TARGET)
    assert after is not None and after.refresh_token != before.refresh_token
    assert after.refresh_token in fake.refresh and before.refresh_token not in fake.refresh
    assert fake.refreshes == 1 and not [s for _, _, s in fake.log if s == 401]
    # A token the platform revoked early: the 401 refreshes once and the request is repeated.
    fake.access.clear()
    p2, _ = make_post("second", [TARGET])
    ingest(home, alice_key, [p2])
    (o2,) = await run(home, T0 + 1)
    assert o2.state == "published", o2.error
    assert [t["text"] for t in fake.tweets.values()] == ["first", "second"]


async def test_a_dead_refresh_token_fails_with_reconnect_this_account(
    home: GroundHome, fake: FakeX, alice_key: SigningKey
) -> None:
    fake.access.clear()
    fake.refresh.clear()  # revoked (or lost to a rotation whose answer never arrived)
    p, _ = make_post("hello", [TARGET])
    await fails_asking_to_reconnect(home, alice_key, p, T0)
    assert not fake.tweets
    # After the operator reconnects (new grant) and retries, it goes out once.
    o2 = await reconnect_and_retry(home, fake, p, T0 + 1)
    assert o2.state == "published" and len(fake.tweets) == 1


@pytest.mark.parametrize("fault_status", [0, 503])
async def test_ambiguous_post_is_looked_up_not_reposted(
    home: GroundHome, fake: FakeX, alice_key: SigningKey, sample_jpegs: list[Path], fault_status: int
) -> None:
    img = sample_jpegs[0].read_bytes()
    photo_post, blobs = make_post("with photo", [TARGET], photos=[(img, "image/jpeg", "")])
    text_post, _ = make_post("text & a link https://example.org/a?b=1&c=2 <ok>", [TARGET])
    ingest(home, alice_key, [photo_post, text_post], blobs)
    fake.faults = [Fault("POST", "/2/tweets", fault_status, after=True, times=2)]
    out = await run(home, T0)
    assert {o.state for o in out} == {"publishing"}, [o.error for o in out]
    assert len(fake.tweets) == 2  # both reached X; neither answer did
    out = await run(home, T0 + 10**8)
    assert {o.state for o in out} == {"published"}, [o.error for o in out]
    assert len(fake.tweets) == 2  # found, not posted again
    assert {o.url for o in out} == {f"https://x.com/alice/status/{i}" for i in fake.tweets}


async def test_daily_quota_waits_and_says_so(home: GroundHome, fake: FakeX, alice_key: SigningKey) -> None:
    fake.daily_posts = 1
    p1, _ = make_post("one", [TARGET])
    p2, _ = make_post("two", [TARGET])
    ingest(home, alice_key, [p1, p2])
    out = await run(home, T0)
    assert [o.state for o in out] == ["published", "pending"]
    state, _, err, _, _ = row(home, p2.id)
    assert state == "pending" and "waiting for X's 24-hour post limit for this user: 0 of 1 left" in err
    assert [m for m, p, s in fake.log if p == "/2/tweets"] == ["POST"]  # the second was never sent
    attempts = home.conn.execute("SELECT attempts FROM publications WHERE item_id = ?", (p2.id,)).fetchone()[
        0
    ]
    assert attempts == 0


async def test_429_with_reset_is_a_wait(home: GroundHome, fake: FakeX, alice_key: SigningKey) -> None:
    reset = str(int(time.time()) + 900)
    fake.faults = [
        Fault("POST", "/2/tweets", 429, {"x-rate-limit-remaining": "0", "x-rate-limit-reset": reset})
    ]
    p, _ = make_post("one", [TARGET])
    ingest(home, alice_key, [p])
    (o,) = await run(home, T0)
    assert o.state == "pending" and "waiting for X's post rate limit (15 min)" in (o.error or "")
    assert o.next_attempt_ms is not None and o.next_attempt_ms - T0 > 800_000


async def test_limits_and_error_bodies(home: GroundHome, fake: FakeX, alice_key: SigningKey) -> None:
    fake.faults = [Fault("POST", "/2/media/upload", 400)]
    p, blobs = make_post("x", [TARGET], photos=[(b"\xff\xd8\xff" + b"1" * 100, "image/jpeg", "")])
    ingest(home, alice_key, [p], blobs)
    (o,) = await run(home, T0)
    assert o.state == "failed" and "Fault: scripted" in (o.error or "")


async def test_retract_deletes(home: GroundHome, fake: FakeX, alice_key: SigningKey) -> None:
    p, _ = make_post("bye", [TARGET])
    assert await publish_then_retract(home, alice_key, p, quick_poll="x") == {TARGET: "retracted"}
    assert all(t.get("deleted") for t in fake.tweets.values())


def test_text_matches_undoes_tco_and_entities() -> None:
    ours = "a & b <c> https://example.org/x?y=1&z=2 end"
    assert text_matches(ours, FakeX.rendered(ours))
    assert not text_matches(ours, FakeX.rendered(ours + "!"))
    assert text_matches("plain", "plain")


@given(
    st.text(max_size=60),
    st.lists(st.sampled_from(["https://a.example/x?y=1&z=2", "http://b.example"]), max_size=3),
)
def test_text_matches_any_text_as_x_renders_it(text: str, urls: list[str]) -> None:
    ours = " ".join([text, *urls])
    assert text_matches(ours, FakeX.rendered(ours))
    assert not text_matches("x" + ours, FakeX.rendered(ours))
