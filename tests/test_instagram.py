"""The instagram adapter through the engine, against tests/fake_meta.py: containers whose image
the fake downloads from ground's public URL over loopback, status polling, media_publish,
exactly once across ambiguous answers, the publishing quota, token refresh and reconnect,
rate-limit headers."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
from fake_meta import Fault
from meta_support import meta_rig, timeout_then_lookup
from publish_support import command, ingest, make_post

from ground.credentials import TokenSet, expiry_text, store_for
from ground.platforms import http
from ground.public_media import set_base_url
from protocol import SigningKey
from protocol.model import Retract

TEXT = "Cafe\u0301 over the Pacific 👩‍🚀🇯🇵\r\nline two  #ISS"


async def test_one_photo_goes_out_byte_exact_through_the_public_link(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        img = sample_jpegs[0].read_bytes()
        post, blobs = make_post(TEXT, [rig.target], photos=[(img, "image/jpeg", "A rocket on the pad")])
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        assert o.state == "published", o.error
        (p,) = rig.fake.posts.values()
        assert p["text"].encode() == TEXT.encode()
        assert p["media"] == [img]  # what Instagram fetched is the astronaut's exact file
        assert p["content_types"] == ["image/jpeg"]
        assert p["alts"] == ["A rocket on the pad"]
        ((url, status, ctype),) = rig.fake.fetches
        assert url.startswith(rig.ground_url + "/public/media/") and (status, ctype) == (200, "image/jpeg")
        assert o.url == f"https://www.instagram.com/p/{p['id'][-8:]}/"
        fidelity, note = rig.home.conn.execute(
            "SELECT fidelity, fidelity_note FROM publications WHERE item_id = ?", (post.id,)
        ).fetchone()
        assert fidelity == "re-encoded" and "photos sent byte-exact" in note
        assert note.startswith("text read back: exact; ")
        # The link ended once Instagram had the photo.
        assert rig.live_links() == 0
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            assert r.status == 404
        # Polled while processing, then published once.
        polls = [st for m, path, st in rig.fake.log if m == "GET" and path.endswith(p["container"])]
        assert len(polls) >= 3
        assert sum(1 for m, path, _ in rig.fake.log if path.endswith("/media_publish")) == 1


async def test_a_carousel_keeps_order_bytes_and_alt_texts(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        imgs = [p.read_bytes() for p in sample_jpegs]
        photos = [(d, "image/jpeg", f"photo {i}") for i, d in enumerate(imgs)]
        post, blobs = make_post(TEXT, [rig.target], photos=photos)
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        assert o.state == "published", o.error
        (p,) = rig.fake.posts.values()
        assert p["media"] == imgs and p["alts"] == ["photo 0", "photo 1", "photo 2"]
        assert p["text"] == TEXT
        assert rig.live_links() == 0


async def test_text_only_is_refused_with_a_reason(tmp_path: Path, alice_key: SigningKey) -> None:
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        post, _ = make_post("no photo", [rig.target])
        ingest(rig.home, alice_key, [post])
        (o,) = await rig.run()
        assert o.state == "failed" and "at least one photo" in str(o.error)
        assert not rig.fake.containers


async def test_an_ambiguous_publish_is_found_not_repeated(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        rig.fake.faults.append(Fault("POST", "/media_publish", after=True))
        post, blobs = make_post(TEXT, [rig.target], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        # The publish went through but the answer was an error: ground saw PUBLISHED on the
        # container and found the post among the account's media instead of failing.
        assert o.state == "published", o.error
        assert len(rig.fake.posts) == 1
        (p,) = rig.fake.posts.values()
        assert o.url.endswith(p["id"][-8:] + "/")


async def test_a_timeout_after_publishing_is_looked_up_on_the_next_pass(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        # The publish is done, then the connection breaks and the container read fails too:
        # the engine keeps the row 'publishing' and asks the platform before any new try.
        rig.fake.faults += [
            Fault("POST", "/media_publish", after=True, status=502),
        ]
        post, blobs = make_post(TEXT, [rig.target], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        assert o.state == "published"
        # A second pass (as after a crash) changes nothing.
        assert await rig.run() == []
        assert len(rig.fake.posts) == 1


async def test_lookup_after_a_crash_uses_the_stored_container(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        post, blobs = make_post(TEXT, [rig.target], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
        ingest(rig.home, alice_key, [post], blobs)
        # The publish succeeds but its answer is lost, and so is the container read right
        # after: the engine's row stays 'publishing' and the next pass asks before acting.
        rig.fake.faults.append(Fault("POST", "/media_publish", after=True, then=Fault("GET", "", status=500)))
        (o,) = await rig.run()
        assert o.state == "publishing", o  # ambiguous: left for a lookup
        (o,) = await rig.run(o.next_attempt_ms)
        assert o.state == "published", o.error
        assert len(rig.fake.posts) == 1
        assert sum(1 for m, path, _ in rig.fake.log if path.endswith("/media_publish")) == 1


async def test_the_publishing_quota_makes_a_post_wait_and_say_so(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key, quota_total=1) as rig:
        img = sample_jpegs[0].read_bytes()
        first, b1 = make_post("first", [rig.target], photos=[(img, "image/jpeg", "")])
        second, b2 = make_post("second", [rig.target], photos=[(img, "image/jpeg", "")])
        ingest(rig.home, alice_key, [first, second], b1 + b2)
        outcomes = {o.item_id: o for o in await rig.run()}
        assert outcomes[first.id].state == "published"
        waiting = outcomes[second.id]
        assert waiting.state != "failed" and "publishing quota reached (1 of 1 posts in 24 h)" in str(
            waiting.error
        )
        assert waiting.next_attempt_ms is not None
        wait_h = (waiting.next_attempt_ms - rig.now_ms()) / 3_600_000
        assert 23.5 < wait_h < 24.5, wait_h  # until the first post leaves the 24-hour window
        assert len(rig.fake.posts) == 1
        rig.advance(24 * 3600 + 120)
        (o,) = await rig.run()
        assert o.state == "published", o.error
        assert sorted(p["text"] for p in rig.fake.posts.values()) == ["first", "second"]


async def test_tokens_are_refreshed_when_a_day_old_and_persisted(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        store = store_for(rig.home.root)
        async with aiohttp.ClientSession() as s:
            said = await rig.platform.check("alice", s)
        assert "@alice" in said and "quota 0 of 50" in said and "not known yet" in said
        # Too young to refresh (Meta's 24 h rule): the token in use is still the one added.
        assert store.load_tokens(rig.target) is None
        rig.advance(2 * 86400)
        async with aiohttp.ClientSession() as s:
            said = await rig.platform.check("alice", s)
        assert "expires in 59 days" in said
        tokens = store.load_tokens(rig.target)
        assert tokens is not None
        new = tokens.access_token
        assert new.startswith("tok-") and new in rig.fake.tokens
        assert tokens.expires_at_ms is not None and tokens.expires_at_ms > rig.now_ms() + 59 * 86_400_000
        assert expiry_text(tokens, rig.now_ms()) == "expires in 59 days"  # what `ground account list` shows
        token_file = next(store.root.glob("*.tokens"))
        assert token_file.stat().st_mode & 0o777 == 0o600 and json.loads(token_file.read_bytes())
        # The old token dies; ground carries on with the refreshed one.
        rig.fake.tokens["token-alice"].expires_s = 0
        post, blobs = make_post(TEXT, [rig.target], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        assert o.state == "published", o.error


async def test_an_expired_token_fails_with_reconnect_this_account(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        rig.fake.tokens["token-alice"].expires_s = 0
        post, blobs = make_post(TEXT, [rig.target], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        assert o.state == "failed"
        assert "reconnect this account" in str(o.error) and "ground account add instagram:alice" in str(
            o.error
        )
        assert "token-alice" not in str(o.error)
        # A token ground knows to be past its expiry fails before any call.
        store_for(rig.home.root).save_tokens(
            rig.target, TokenSet(access_token="token-alice", expires_at_ms=rig.now_ms() - 1000)
        )
        calls = len(rig.fake.log)
        async with aiohttp.ClientSession() as s:
            try:
                await rig.platform.check("alice", s)
            except Exception as exc:
                assert "reconnect this account" in str(exc)
            else:
                raise AssertionError("an expired token was accepted")
        assert len(rig.fake.log) == calls


async def test_rate_limit_headers_hold_the_account(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key, call_limit=3, regain_minutes=7) as rig:
        post, blobs = make_post(TEXT, [rig.target], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        assert o.state != "failed" and o.hold_account
        assert "rate limit" in str(o.error)
        assert o.next_attempt_ms is not None
        assert 6.9 * 60_000 <= o.next_attempt_ms - rig.now_ms() <= 7.1 * 60_000 + 5000
        calls = len(rig.fake.log)
        # Until then the adapter does not call the API at all.
        (o2,) = await rig.run(o.next_attempt_ms)
        assert len(rig.fake.log) == calls and "waiting" in str(o2.error)
        rig.fake.call_limit = 10_000
        rig.advance(8 * 60)
        (o3,) = await rig.run(o2.next_attempt_ms)
        assert o3.state == "published", o3.error
        assert len(rig.fake.posts) == 1


async def test_a_client_timeout_during_publish_is_resolved_by_lookup(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # ground stops waiting after 0.5 s; Instagram publishes the container a second later.
    monkeypatch.setattr(http, "DEFAULT_TIMEOUT", aiohttp.ClientTimeout(total=0.5))
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        await timeout_then_lookup(rig, alice_key, TEXT, sample_jpegs[0].read_bytes(), "/media_publish")
        assert sum(1 for m, path, _ in rig.fake.log if path.endswith("/media_publish")) == 1


async def test_retract_on_instagram_says_to_delete_in_the_app(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        post, blobs = make_post(TEXT, [rig.target], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
        ingest(rig.home, alice_key, [post], blobs)
        assert [o.state for o in await rig.run()] == ["published"]
        ingest(rig.home, alice_key, [command(Retract, post.id)])
        (o,) = await rig.run()
        assert o.state == "retract_failed" and "delete" in str(o.error) and "in the app" in str(o.error)
        assert len(rig.fake.posts) == 1


async def test_an_unreachable_public_url_is_retried_with_a_hint(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        set_base_url(rig.home.root, "http://127.0.0.1:9")  # nothing listens there
        post, blobs = make_post(TEXT, [rig.target], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        assert o.state == "pending", o  # nothing was published: a plain retry later
        assert "could not fetch the photo" in str(o.error) and "--public-base-url" in str(o.error)
        assert rig.live_links() == 0  # the failed attempt's link was revoked
        set_base_url(rig.home.root, rig.ground_url)
        (o,) = await rig.run(o.next_attempt_ms)
        assert o.state == "published", o.error
        (p,) = rig.fake.posts.values()
        assert p["media"] == [sample_jpegs[0].read_bytes()]
