"""The linkedin adapter through the engine, against tests/fake_linkedin.py (written from
LinkedIn's Posts, Images, little-text and token docs): exact text through little-text
escaping, images uploaded once, refresh and reconnect, daily cap waits, ambiguous posts found."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fake_linkedin import FakeLinkedIn, parse_little
from fake_x import Fault
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

from ground.home import GroundHome
from ground.platforms.linkedin import escape_little, unescape_little
from ground.publish import PublishOutcome
from protocol import SigningKey

TARGET = "linkedin:alice"


@pytest.fixture
async def fake() -> AsyncIterator[FakeLinkedIn]:
    async with serving(FakeLinkedIn()) as li:
        yield li


@pytest.fixture
def home(tmp_path: Path, alice_key: SigningKey, fake: FakeLinkedIn) -> Iterator[GroundHome]:
    yield from oauth2_home(tmp_path / "G", alice_key, TARGET, fake)


async def run(home: GroundHome, now: int) -> list[PublishOutcome]:
    return await publish_run(home, now, quick_poll="linkedin")


@given(st.text(max_size=80))
def test_little_text_escaping_shows_the_exact_text(text: str) -> None:
    assert parse_little(escape_little(text)) == text
    assert unescape_little(escape_little(text)) == text


async def test_exact_text_with_reserved_characters_and_photos(
    home: GroundHome, fake: FakeLinkedIn, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    imgs = [p.read_bytes() for p in sample_jpegs[:2]]
    # Every little-text reserved character: unescaped, LinkedIn would cut the post at "(".
    text = "Orbit (day 12) #ISS @nasa [ok] {x} <y> a_b *c* ~d~ back\\slash | done 🚀"
    post, blobs = make_post(
        text, [TARGET], photos=[(imgs[0], "image/jpeg", "Earth"), (imgs[1], "image/jpeg", "")]
    )
    ingest(home, alice_key, [post], blobs)
    (o,) = await run(home, T0)
    assert o.state == "published", o.error
    (p,) = fake.posts.values()
    assert p["shown"] == text
    assert [fake.images[u]["data"] for u in p["images"]] == imgs
    assert p["alts"] == ["Earth", None]
    assert o.url == f"https://www.linkedin.com/feed/update/{p['id']}/"
    fid, note = home.conn.execute(
        "SELECT fidelity, fidelity_note FROM publications WHERE item_id = ?", (post.id,)
    ).fetchone()
    assert fid == "re-encoded" and "text read back: exact" in note


async def test_expired_access_token_is_refreshed_then_dead_refresh_token_says_reconnect(
    home: GroundHome, fake: FakeLinkedIn, alice_key: SigningKey
) -> None:
    fake.access.clear()  # the access token expired on LinkedIn's side
    p1, _ = make_post("one", [TARGET])
    ingest(home, alice_key, [p1])
    (o,) = await run(home, T0)
    assert o.state == "published", o.error
    assert fake.refreshes == 1
    fake.access.clear()
    fake.refresh.clear()  # the 365-day refresh token lapsed too
    p2, _ = make_post("two", [TARGET])
    await fails_asking_to_reconnect(home, alice_key, p2, T0 + 1)
    o3 = await reconnect_and_retry(home, fake, p2, T0 + 2)
    assert o3.state == "published"
    assert sorted(p["shown"] for p in fake.posts.values()) == ["one", "two"]


@pytest.mark.parametrize("fault_status", [0, 502])
async def test_ambiguous_post_is_found_not_doubled(
    home: GroundHome, fake: FakeLinkedIn, alice_key: SigningKey, sample_jpegs: list[Path], fault_status: int
) -> None:
    with_photo, blobs = make_post(
        "photo post", [TARGET], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")]
    )
    text_only, _ = make_post("text (only) #tag", [TARGET])
    ingest(home, alice_key, [with_photo, text_only], blobs)
    fake.faults = [Fault("POST", "/rest/posts", fault_status, after=True, times=2)]
    out = await run(home, T0)
    assert {o.state for o in out} == {"publishing"}
    out = await run(home, T0 + 10**8)
    assert {o.state for o in out} == {"published"}, [o.error for o in out]
    assert len(fake.posts) == 2 and len(fake.images) == 1  # nothing posted or uploaded twice


async def test_an_ambiguous_post_behind_a_burst_of_newer_posts_is_found_by_paging(
    home: GroundHome, fake: FakeLinkedIn, alice_key: SigningKey
) -> None:
    """More newer posts than one page (a burst after the uncertain attempt) is not "cannot tell"."""
    post, _ = make_post("lost in the burst", [TARGET])
    ingest(home, alice_key, [post])
    fake.faults = [Fault("POST", "/rest/posts", 502, after=True)]
    (o,) = await run(home, T0)
    assert o.state == "publishing"
    ours = next(iter(fake.posts.values()))
    for i in range(120):  # later posts by the same member, newest first in the listing
        fake.posts[f"urn:li:share:burst{i}"] = {
            **ours,
            "id": f"urn:li:share:burst{i}",
            "commentary": f"burst {i}",
            "created": ours["created"] + 1 + i,
        }
    (o,) = await run(home, T0 + 10**8)
    assert o.state == "published", o.error
    assert len(fake.posts) == 121  # found on the third page, not posted again


async def test_image_uploaded_before_a_crash_is_reused(
    home: GroundHome, fake: FakeLinkedIn, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    post, blobs = make_post("p", [TARGET], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
    ingest(home, alice_key, [post], blobs)
    fake.faults = [Fault("POST", "/rest/posts", 503)]  # refused before acting: not ambiguous for LinkedIn
    (o,) = await run(home, T0)
    assert o.state in ("pending", "publishing")
    await run(home, T0 + 10**8)
    assert len(fake.images) == 1 and len(fake.posts) == 1


async def test_daily_cap_waits(home: GroundHome, fake: FakeLinkedIn, alice_key: SigningKey) -> None:
    from ground.platforms import linkedin

    posts = [make_post(f"n{i}", [TARGET])[0] for i in range(3)]
    ingest(home, alice_key, posts)
    old = linkedin.DAILY_POSTS
    linkedin.DAILY_POSTS = 2
    try:
        out = await run(home, T0)
    finally:
        linkedin.DAILY_POSTS = old
    assert [o.state for o in out] == ["published", "published", "pending"]
    assert "LinkedIn's limit of 2 posts per 24 h" in (out[2].error or "")
    # And LinkedIn's own 429 (its count, not ours) is a wait too, never a failure.
    fake.daily_posts = 2
    out = await run(home, T0 + 10**8)
    assert [o.state for o in out] == ["pending"] and "rate limit" in (out[0].error or "")


async def test_retract(home: GroundHome, fake: FakeLinkedIn, alice_key: SigningKey) -> None:
    p, _ = make_post("bye", [TARGET])
    assert await publish_then_retract(home, alice_key, p, quick_poll="linkedin") == {TARGET: "retracted"}
