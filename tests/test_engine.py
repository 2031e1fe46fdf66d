"""The publishing engine: states, partial success, retries with backoff, ambiguity, schedules,
cancel, retract and the operator's retry — driven with `now` passed in (no sleeping)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from publish_support import T0, ScriptedPlatform, command, ingest, make_home, make_post, states

from ground.errors import GroundError, PublishError
from ground.home import GroundHome
from ground.platforms import ArchivePlatform
from ground.platforms.archive import read_post
from ground.publish import RetryPolicy, publish_due, retry
from protocol import SigningKey
from protocol.model import Cancel, Retract

ACCOUNTS = ["fake:a", "fake:b", "archive:alice"]


@pytest.fixture
def home(tmp_path: Path, alice_key: SigningKey) -> GroundHome:
    h = make_home(tmp_path / "G", alice_key, ACCOUNTS)
    yield h
    h.close()


@pytest.fixture
def fake() -> ScriptedPlatform:
    return ScriptedPlatform()


def platforms(home: GroundHome, fake: ScriptedPlatform) -> dict[str, object]:
    return {"fake": fake, "archive": ArchivePlatform(home.archive_dir)}


async def run(home: GroundHome, fake: ScriptedPlatform, now: int, **kw: object):  # type: ignore[no-untyped-def]
    return await publish_due(home, now, platforms(home, fake), session=object(), rng=random.Random(1), **kw)  # type: ignore[arg-type]


def audit_text(home: GroundHome) -> str:
    return "\n".join(d for (d,) in home.conn.execute("SELECT kind || ' ' || detail FROM events"))


async def test_partial_success_and_per_account_retry(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    post, _ = make_post("hello", ["fake:a", "fake:b", "archive:alice"])
    ingest(home, alice_key, [post])
    fake.script = [PublishError("account suspended", retryable=False)]  # fake:a fails for good
    out = {o.account: o.state for o in await run(home, fake, T0)}
    assert out == {"archive:alice": "published", "fake:a": "failed", "fake:b": "published"}
    row = home.conn.execute(
        "SELECT last_error, retryable FROM publications WHERE item_id = ? AND account = 'fake:a'", (post.id,)
    ).fetchone()
    assert row == ("account suspended", 0)
    # Permanent errors are never retried by the engine.
    assert await run(home, fake, T0 + 10**9) == []
    # The operator retries one account: only that one is attempted; nothing else is re-posted.
    assert retry(home.conn, post.id, T0 + 1, "fake:a") == ["fake:a"]
    fake.calls.clear()
    out2 = await run(home, fake, T0 + 2)
    assert [(o.account, o.state) for o in out2] == [("fake:a", "published")]
    assert fake.calls == [f"publish {post.id} a"]
    assert fake.posts == {"a": [post.id], "b": [post.id]}
    with pytest.raises(GroundError, match="nothing to retry"):
        retry(home.conn, post.id, T0 + 3)
    with pytest.raises(GroundError, match="no publication"):
        retry(home.conn, "01JBZZZZZZZZZZZZZZZZZZZZZZ", T0 + 3)


async def test_rate_limit_backs_off_honouring_retry_after_and_holds_the_account(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    p1, _ = make_post("one", ["fake:a"])
    p2, _ = make_post("two", ["fake:a"])
    ingest(home, alice_key, [p1, p2])
    fake.script = [PublishError("rate limited (HTTP 429)", retryable=True, retry_after_s=600)]
    out = await run(home, fake, T0)
    # The 429 holds the whole account: the second post is not even tried in this pass.
    assert [(o.item_id, o.state) for o in out] == [(p1.id, "pending")]
    assert out[0].next_attempt_ms is not None and out[0].next_attempt_ms >= T0 + 600_000
    assert await run(home, fake, T0 + 599_000) == []
    out = await run(home, fake, T0 + 600_000)
    assert sorted(o.state for o in out) == ["published", "published"]
    assert fake.posts == {"a": [p1.id, p2.id]}


async def test_5xx_is_ambiguous_and_reconciled_by_lookup_before_any_retry(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    post, _ = make_post("maybe", ["fake:a"])
    ingest(home, alice_key, [post])
    # The platform posts it, then the answer is lost (timeout / 502).
    fake.script = [("after", PublishError("no answer in time", retryable=True, ambiguous=True))]
    (o,) = await run(home, fake, T0)
    assert o.state == "publishing" and o.next_attempt_ms and o.next_attempt_ms > T0
    fake.calls.clear()
    (o,) = await run(home, fake, o.next_attempt_ms)
    assert o.state == "published"
    assert fake.calls == [f"lookup {post.id} a"]  # found it: no second publish
    assert fake.posts == {"a": [post.id]}


async def test_retryable_errors_back_off_exponentially_then_fail_for_an_operator(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    post, _ = make_post("down", ["fake:a"])
    ingest(home, alice_key, [post])
    policy = RetryPolicy(base_s=10, cap_s=1000, max_attempts=4)
    fake.script = [PublishError("cannot connect", retryable=True) for _ in range(4)]
    now, waits = T0, []
    for _ in range(3):
        (o,) = await run(home, fake, now, policy=policy)
        assert o.state == "pending" and o.next_attempt_ms
        waits.append(o.next_attempt_ms - now)
        now = o.next_attempt_ms
    assert 5_000 <= waits[0] <= 10_000 and 10_000 <= waits[1] <= 20_000 and 20_000 <= waits[2] <= 40_000
    (o,) = await run(home, fake, now, policy=policy)
    assert o.state == "failed" and "gave up after 4 attempts" in (o.error or "")
    assert home.conn.execute("SELECT retryable FROM publications").fetchone() == (1,)
    assert fake.posts == {}


@given(
    attempts=st.integers(min_value=0, max_value=60),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=10_000)),
    rand=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_is_bounded_jittered_and_honours_retry_after(
    attempts: int, retry_after: float | None, rand: float
) -> None:
    p = RetryPolicy(base_s=30, cap_s=3600)
    d = p.delay_s(attempts, retry_after, rand)
    exp = min(3600, 30 * 2 ** max(0, attempts - 1))
    assert d >= exp / 2 and d >= (retry_after or 0)
    assert d <= max(exp, retry_after or 0)


async def test_schedule_not_published_before_its_time(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    at = T0 + 3_600_000
    post, _ = make_post("later", ["fake:a", "archive:alice"], publish_at_ms=at)
    ingest(home, alice_key, [post])
    assert await run(home, fake, T0) == []
    assert await run(home, fake, at - 1) == []
    assert states(home, post.id) == {"fake:a": "pending", "archive:alice": "pending"}
    out = await run(home, fake, at)
    assert sorted(o.state for o in out) == ["published", "published"]


async def test_cancel_before_publication(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    at = T0 + 3_600_000
    post, _ = make_post("never mind", ["fake:a", "archive:alice"], publish_at_ms=at)
    ingest(home, alice_key, [post])
    ingest(home, alice_key, [command(Cancel, post.id)])
    assert await run(home, fake, at) == []
    assert states(home, post.id) == {"fake:a": "cancelled", "archive:alice": "cancelled"}
    assert fake.calls == [] and not home.archive_dir.exists()
    assert "cancel" in audit_text(home)


async def test_cancel_too_late_says_so_and_changes_nothing_published(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    post, _ = make_post("out already", ["fake:a"])
    ingest(home, alice_key, [post])
    await run(home, fake, T0)
    ingest(home, alice_key, [command(Cancel, post.id)])
    await run(home, fake, T0 + 1)
    assert states(home, post.id) == {"fake:a": "published"}
    assert "too late for fake:a (published; retract it instead)" in audit_text(home)


async def test_cancel_or_retract_by_another_author_is_refused(
    tmp_path: Path, fake: ScriptedPlatform, alice_key: SigningKey, bob_key: SigningKey
) -> None:
    home = make_home(tmp_path / "G", alice_key, ACCOUNTS)
    make_home(tmp_path / "G", bob_key, ["fake:b"], name="bob")
    post, _ = make_post("mine", ["fake:a"], publish_at_ms=T0 + 10)
    ingest(home, alice_key, [post])
    ingest(home, bob_key, [command(Cancel, post.id, author="bob")])
    await run(home, fake, T0 + 10)
    assert states(home, post.id) == {"fake:a": "published"}
    assert "security" in audit_text(home) and "is not a post by bob" in audit_text(home)


async def test_retract_deletes_from_every_platform(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    post, _ = make_post("oops", ["fake:a", "fake:b", "archive:alice"])
    ingest(home, alice_key, [post])
    await run(home, fake, T0)
    held = read_post(home.archive_dir, "alice", post.id)
    assert held is not None and held.text == b"oops"
    ingest(home, alice_key, [command(Retract, post.id)])
    fake.script = [PublishError("HTTP 503", retryable=True, ambiguous=True)]  # first delete fails
    out = await run(home, fake, T0 + 1)
    assert sorted((o.account, o.state) for o in out) == [
        ("archive:alice", "retracted"),
        ("fake:a", "retracting"),
        ("fake:b", "retracted"),
    ]
    (o,) = [o for o in out if o.state == "retracting"]
    await run(home, fake, o.next_attempt_ms or 0)
    assert set(states(home, post.id).values()) == {"retracted"}
    assert read_post(home.archive_dir, "alice", post.id) is None and fake.posts == {"a": [], "b": []}
    # Gone from its pack too, not only from the index.
    assert b"oops" not in b"".join(p.read_bytes() for p in held.location.parent.glob("*.jsonl"))


async def test_retract_waits_for_an_in_flight_publication(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    post, _ = make_post("in flight", ["fake:a", "fake:b"])
    ingest(home, alice_key, [post])
    fake.script = [("after", PublishError("timeout", retryable=True, ambiguous=True))]
    out = await run(home, fake, T0)
    assert sorted(o.state for o in out) == ["published", "publishing"]
    ingest(home, alice_key, [command(Retract, post.id)])
    # fake:a is ambiguous: the retract waits, reconciles it, then deletes both.
    await run(home, fake, T0 + 10**8)
    await run(home, fake, T0 + 10**8 + 1)
    assert states(home, post.id) == {"fake:a": "retracted", "fake:b": "retracted"}
    assert fake.posts == {"a": [], "b": []}


async def test_ground_rechecks_rules_before_publishing(
    tmp_path: Path, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    home = make_home(tmp_path / "G", alice_key, ["bluesky:alice.test"])
    # Not refused onboard (an older client, or rules changed): ground refuses, permanently.
    post, _ = make_post("x" * 301, ["bluesky:alice.test"])
    ingest(home, alice_key, [post])
    (o,) = await publish_due(home, T0, {"bluesky": fake}, session=object())  # type: ignore[dict-item]
    assert o.state == "failed" and "bluesky.text_length" in (o.error or "")
    assert fake.calls == []


async def test_missing_adapter_and_missing_credentials_fail_with_a_clear_reason(
    tmp_path: Path, alice_key: SigningKey
) -> None:
    home = make_home(tmp_path / "G", alice_key, ["mastodon:alice@m.example", "nowhere:alice"])
    post, _ = make_post("hi", ["mastodon:alice@m.example", "nowhere:alice"])
    ingest(home, alice_key, [post])
    out = {o.account: o.error for o in await publish_due(home, T0)}
    assert "ground account add mastodon:alice@m.example" in (out["mastodon:alice@m.example"] or "")
    assert "no adapter for platform 'nowhere'" in (out["nowhere:alice"] or "")


async def test_only_one_publisher_per_home(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    from ground.publish import publisher_lock

    post, _ = make_post("once", ["fake:a"])
    ingest(home, alice_key, [post])
    with publisher_lock(home) as mine:
        assert mine
        assert await run(home, fake, T0) == []  # another publisher is busy: do nothing
    assert [o.state for o in await run(home, fake, T0)] == ["published"]


async def test_paused_platform_or_account_is_left_alone(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    from ground.dashboard.actions import set_account_paused, set_platform_paused

    post, _ = make_post("wait", ["fake:a", "archive:alice"])
    ingest(home, alice_key, [post])
    set_platform_paused(home.conn, "fake", True, T0, "operator:ada")
    set_account_paused(home.conn, "archive:alice", True, T0, "operator:ada")
    assert await run(home, fake, T0) == []
    set_platform_paused(home.conn, "fake", False, T0, "operator:ada")
    assert [(o.account, o.state) for o in await run(home, fake, T0)] == [("fake:a", "published")]
    set_account_paused(home.conn, "archive:alice", False, T0, "operator:ada")
    assert [(o.account, o.state) for o in await run(home, fake, T0)] == [("archive:alice", "published")]


def test_http_error_mapping() -> None:
    from ground.platforms.http import Response, raise_for_status, retry_after_s

    def err(status: int, headers: dict[str, str] | None = None, body: bytes = b"{}") -> PublishError:
        with pytest.raises(PublishError) as info:
            raise_for_status(Response(status=status, headers=headers or {}, body=body), "post")
        return info.value

    raise_for_status(Response(status=200, headers={}, body=b""), "post")
    e = err(429, {"Retry-After": "17"})
    assert e.retryable and not e.ambiguous and e.retry_after_s == 17
    e = err(429, {"RateLimit-Reset": "4102444800"})  # 2100-01-01: a Bluesky PDS's reset time
    assert e.retry_after_s is not None and e.retry_after_s > 0
    e = err(503, {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"})
    assert e.retryable and e.ambiguous and (e.retry_after_s or 0) > 0
    e = err(
        400,
        body=b'{"error": "InvalidRequest", "message": "Record/text must not be longer than 300 graphemes"}',
    )
    assert not e.retryable and "InvalidRequest: Record/text must not be longer" in str(e)
    assert retry_after_s("soon") is None and retry_after_s(None) is None


def test_cli_schedule_cancel_and_retract_end_to_end(enrolled, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli = enrolled
    later = cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--at", "2099-01-01T00:00Z", "later"
    )
    later_id = later.output.split()[1]
    now = cli.onboard("post", "--as", "alice", "--to", "archive:alice", "now")
    now_id = now.output.split()[1]
    cli.onboard("export", str(tmp_path / "OUT1"))
    out = cli.ground("ingest", str(tmp_path / "OUT1")).output
    assert f"published {now_id}" in out and later_id not in out.split("queued")[-1]
    cli.onboard("cancel", later_id)
    cli.onboard("retract", now_id)
    cli.onboard("export", str(tmp_path / "OUT2"))
    out = cli.ground("ingest", str(tmp_path / "OUT2")).output
    assert f"retracted {now_id} → archive:alice" in out
    posts = [line.split() for line in cli.ground("posts").output.splitlines()]
    assert [later_id, "alice", "archive:alice", "cancelled"] in posts
    assert [now_id, "alice", "archive:alice", "retracted"] == [p[:4] for p in posts if p[0] == now_id][0]
    assert read_post(cli.ground_home / "archive", "alice", now_id) is None


async def test_idempotent_only_platform_past_its_window_goes_to_an_operator(
    home: GroundHome, alice_key: SigningKey
) -> None:
    # A platform that can only re-send with an idempotency key (no lookup of its own) must
    # not re-send once the platform has forgotten the key.
    class KeyOnly(ScriptedPlatform):
        idempotency_window_s = 3600.0

        async def lookup(self, req, session):  # type: ignore[no-untyped-def]
            return None

    fake = KeyOnly()
    post, _ = make_post("maybe out", ["fake:a"])
    ingest(home, alice_key, [post])
    fake.script = [("after", PublishError("timeout", retryable=True, ambiguous=True))]
    (o,) = await run(home, fake, T0)
    assert o.state == "publishing"
    (o,) = await run(home, fake, T0 + 2 * 3600_000)
    assert o.state == "failed" and "idempotency window" in (o.error or "")
    assert fake.posts == {"a": [post.id]}


async def test_quota_wait_keeps_the_post_queued_says_why_and_counts_no_attempt(
    home: GroundHome, fake: ScriptedPlatform, alice_key: SigningKey
) -> None:
    from ground.errors import QuotaWait

    p1, _ = make_post("one", ["fake:a"])
    p2, _ = make_post("two", ["fake:a"])
    ingest(home, alice_key, [p1, p2])
    fake.script = [
        QuotaWait("waiting for Fake's 24-hour post limit: 0 left; resets at noon", retry_after_s=3600)
    ]
    out = await run(home, fake, T0)
    assert [(o.item_id, o.state) for o in out] == [(p1.id, "pending")]  # p2 held with its account
    rows = home.conn.execute(
        "SELECT state, attempts, last_error, next_attempt_ms FROM publications WHERE account = 'fake:a' "
        "ORDER BY item_id"
    ).fetchall()
    assert rows[0][:2] == ("pending", 0) and "waiting for Fake's 24-hour post limit" in rows[0][2]
    assert all(r[3] >= T0 + 3_600_000 for r in rows)
    # Even far more waits than max_attempts never fail the post.
    for i in range(12):
        fake.script = [QuotaWait("still waiting", retry_after_s=1)]
        await run(home, fake, T0 + 3_600_000 + i * 10_000)
    assert states(home, p1.id) == {"fake:a": "pending"}
    out = await run(home, fake, T0 + 10**8)
    assert {o.state for o in out} == {"published"}
    assert fake.posts == {"a": [p1.id, p2.id]}
