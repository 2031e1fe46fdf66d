"""The facebook adapter through the engine, against tests/fake_meta.py (Pages API): unpublished
photos attached to one feed post, text posts, exactly once without an idempotency key (the
Page's posts are read back), Page token revoked, retract, Business Use Case headers."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from fake_meta import Fault
from meta_support import meta_rig, timeout_then_lookup
from publish_support import command, ingest, make_post

from ground.platforms import http
from protocol import SigningKey
from protocol.model import Retract

TEXT = "Page post from orbit 🛰️\r\n<b>not html</b> & kept"


async def test_text_and_multi_photo_posts_are_exact(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path], sample_pngs: list[Path]
) -> None:
    async with meta_rig("facebook", tmp_path, alice_key) as rig:
        imgs = [
            (sample_jpegs[0].read_bytes(), "image/jpeg", "rocket"),
            (sample_pngs[1].read_bytes(), "image/png", ""),
        ]
        text_only, _ = make_post(TEXT, [rig.target])
        photos, blobs = make_post("two photos", [rig.target], photos=imgs)
        ingest(rig.home, alice_key, [text_only, photos], blobs)
        outcomes = {o.item_id: o for o in await rig.run()}
        assert {o.state for o in outcomes.values()} == {"published"}, outcomes
        by_text = {p["text"]: p for p in rig.fake.posts.values()}
        assert by_text[TEXT]["media"] == []
        assert by_text["two photos"]["media"] == [d for d, _, _ in imgs]
        assert by_text["two photos"]["content_types"] == ["image/jpeg", "image/png"]
        assert by_text["two photos"]["alts"] == ["rocket", ""]
        assert outcomes[photos.id].url == f"https://www.facebook.com/{by_text['two photos']['id']}"
        # No public URL needed: Facebook takes the upload itself.
        assert rig.live_links() == 0 and not rig.fake.fetches


async def test_an_ambiguous_feed_post_is_found_by_its_photos(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("facebook", tmp_path, alice_key) as rig:
        rig.fake.faults.append(Fault("POST", "/feed", after=True))
        imgs = [(p.read_bytes(), "image/jpeg", "") for p in sample_jpegs[:2]]
        post, blobs = make_post(TEXT, [rig.target], photos=imgs)
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        assert o.state == "publishing"  # ambiguous: the engine asks before any new try
        (o,) = await rig.run(o.next_attempt_ms)
        assert o.state == "published", o.error
        (p,) = rig.fake.posts.values()
        assert o.url.endswith(p["id"])
        # Photos were uploaded once (their ids were kept), the feed post made once.
        assert len(rig.fake.photos) == 2
        assert sum(1 for m, path, _ in rig.fake.log if m == "POST" and path.endswith("/feed")) == 1


async def test_an_ambiguous_text_post_is_found_by_its_exact_message(
    tmp_path: Path, alice_key: SigningKey
) -> None:
    async with meta_rig("facebook", tmp_path, alice_key) as rig:
        longer, _ = make_post(TEXT + " (an earlier, longer post)", [rig.target])
        ingest(rig.home, alice_key, [longer])
        assert [o.state for o in await rig.run()] == ["published"]
        rig.fake.faults.append(Fault("POST", "/feed", after=True, status=503))
        post, _ = make_post(TEXT, [rig.target])
        ingest(rig.home, alice_key, [post])
        (o,) = await rig.run()
        assert o.state == "publishing"
        (o,) = await rig.run(o.next_attempt_ms)
        assert o.state == "published", o.error
        assert sorted(p["text"] for p in rig.fake.posts.values()) == sorted([TEXT, longer.text])


async def test_a_feed_post_refused_before_sending_is_sent_once_later(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("facebook", tmp_path, alice_key) as rig:
        rig.fake.faults.append(Fault("POST", "/feed", status=500))  # nothing done
        post, blobs = make_post(TEXT, [rig.target], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        assert o.state == "publishing"
        (o,) = await rig.run(o.next_attempt_ms)
        assert o.state == "published", o.error
        assert len(rig.fake.posts) == 1 and len(rig.fake.photos) == 1


async def test_a_revoked_page_token_says_reconnect(tmp_path: Path, alice_key: SigningKey) -> None:
    async with meta_rig("facebook", tmp_path, alice_key) as rig:
        del rig.fake.tokens["token-alice"]
        post, _ = make_post(TEXT, [rig.target])
        ingest(rig.home, alice_key, [post])
        (o,) = await rig.run()
        assert o.state == "failed" and "reconnect this account" in str(o.error)


async def test_retract_deletes_the_page_post(tmp_path: Path, alice_key: SigningKey) -> None:
    async with meta_rig("facebook", tmp_path, alice_key) as rig:
        post, _ = make_post(TEXT, [rig.target])
        ingest(rig.home, alice_key, [post])
        assert [o.state for o in await rig.run()] == ["published"]
        ingest(rig.home, alice_key, [command(Retract, post.id)])
        (o,) = await rig.run()
        assert o.state == "retracted", o.error
        assert rig.fake.posts == {}


async def test_business_use_case_throttling_waits_meta_s_estimate(
    tmp_path: Path, alice_key: SigningKey
) -> None:
    async with meta_rig("facebook", tmp_path, alice_key, call_limit=1, regain_minutes=12) as rig:
        post, _ = make_post(TEXT, [rig.target])
        ingest(rig.home, alice_key, [post])
        (o,) = await rig.run()
        assert o.hold_account and o.next_attempt_ms is not None
        assert abs((o.next_attempt_ms - rig.now_ms()) / 60_000 - 12) < 0.2
        assert not rig.fake.posts


async def test_a_client_timeout_on_the_feed_post_is_resolved_by_lookup(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "DEFAULT_TIMEOUT", aiohttp.ClientTimeout(total=0.5))
    async with meta_rig("facebook", tmp_path, alice_key) as rig:
        await timeout_then_lookup(rig, alice_key, TEXT, sample_jpegs[0].read_bytes(), "/feed")


async def test_the_message_is_read_back_and_a_difference_is_recorded(
    tmp_path: Path, alice_key: SigningKey
) -> None:
    async with meta_rig("facebook", tmp_path, alice_key) as rig:
        post, _ = make_post(TEXT, [rig.target])
        ingest(rig.home, alice_key, [post])
        original = rig.fake.post_fields

        def altered(pid: str):  # type: ignore[no-untyped-def]
            rig.fake.posts[pid]["text"] = TEXT.replace("\r\n", "\n")  # a platform normalising newlines
            return original(pid)

        rig.fake.post_fields = altered  # type: ignore[method-assign]
        (o,) = await rig.run()
        assert o.state == "published"  # it happened; the record says what the Page shows
        (note,) = rig.home.conn.execute(
            "SELECT fidelity_note FROM publications WHERE item_id = ?", (post.id,)
        ).fetchone()
        assert note.startswith("text read back DIFFERS: Facebook shows")
