"""The threads adapter through the engine, against tests/fake_meta.py (graph.threads.net's model):
TEXT / IMAGE / CAROUSEL containers, 500 characters, threads_publishing_limit, th_refresh_token,
exactly once after ambiguous answers, retract."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from fake_meta import Fault
from meta_support import meta_rig
from publish_support import command, ingest, make_post

from protocol import SigningKey
from protocol.model import Retract

TEXT = "Sunrise #16 today 🌅\r\n\tspaces  kept — ünïcode"


async def test_text_post_is_byte_exact(tmp_path: Path, alice_key: SigningKey) -> None:
    async with meta_rig("threads", tmp_path, alice_key) as rig:
        post, _ = make_post(TEXT, [rig.target])
        ingest(rig.home, alice_key, [post])
        (o,) = await rig.run()
        assert o.state == "published", o.error
        (p,) = rig.fake.posts.values()
        assert p["text"].encode() == TEXT.encode() and p["media"] == []
        assert o.url == f"https://www.threads.net/@alice/post/{p['id'][-8:]}"
        assert not rig.fake.fetches


async def test_image_and_carousel_are_fetched_from_ground_exactly(
    tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path], sample_pngs: list[Path]
) -> None:
    async with meta_rig("threads", tmp_path, alice_key) as rig:
        jpeg, png = sample_jpegs[0].read_bytes(), sample_pngs[0].read_bytes()
        single, b1 = make_post("one", [rig.target], photos=[(png, "image/png", "coffee")])
        many, b2 = make_post("two", [rig.target], photos=[(jpeg, "image/jpeg", "a"), (png, "image/png", "b")])
        ingest(rig.home, alice_key, [single, many], b1 + b2)
        outcomes = await rig.run()
        assert [o.state for o in outcomes] == ["published", "published"], outcomes
        by_text = {p["text"]: p for p in rig.fake.posts.values()}
        assert by_text["one"]["media"] == [png] and by_text["one"]["content_types"] == ["image/png"]
        assert by_text["one"]["alts"] == ["coffee"]
        assert by_text["two"]["media"] == [jpeg, png] and by_text["two"]["alts"] == ["a", "b"]
        assert all(status == 200 and url.startswith(rig.ground_url) for url, status, _ in rig.fake.fetches)
        assert rig.live_links() == 0


async def test_over_500_characters_is_refused_before_any_call(tmp_path: Path, alice_key: SigningKey) -> None:
    async with meta_rig("threads", tmp_path, alice_key) as rig:
        post, _ = make_post("x" * 501, [rig.target])
        ingest(rig.home, alice_key, [post])
        (o,) = await rig.run()
        assert o.state == "failed" and "500" in str(o.error)
        assert not rig.fake.containers


async def test_an_ambiguous_threads_publish_is_looked_up_not_repeated(
    tmp_path: Path, alice_key: SigningKey
) -> None:
    async with meta_rig("threads", tmp_path, alice_key) as rig:
        rig.fake.faults.append(
            Fault("POST", "/threads_publish", after=True, then=Fault("GET", "", status=503))
        )
        post, _ = make_post(TEXT, [rig.target])
        ingest(rig.home, alice_key, [post])
        (o,) = await rig.run()
        assert o.state == "publishing"
        assert o.next_attempt_ms is not None
        (o,) = await rig.run(o.next_attempt_ms)
        assert o.state == "published", o.error
        assert [p["text"] for p in rig.fake.posts.values()] == [TEXT]


async def test_an_expired_container_is_replaced_not_published_twice(
    tmp_path: Path, alice_key: SigningKey
) -> None:
    async with meta_rig("threads", tmp_path, alice_key, quota_total=0) as rig:
        rig.fake.quota_total = 0  # every publish refused: the container is made, then waits
        post, _ = make_post(TEXT, [rig.target])
        ingest(rig.home, alice_key, [post])
        (o,) = await rig.run()
        assert "publishing quota reached (0 of 0" in str(o.error)
        first_container = next(iter(rig.fake.containers))
        rig.fake.quota_total = 250
        rig.advance(25 * 3600)  # the stored container expires (24 h)
        (o,) = await rig.run()
        assert o.state == "published", o.error
        (p,) = rig.fake.posts.values()
        assert p["container"] != first_container and len(rig.fake.containers) == 2


async def test_refresh_uses_the_threads_grant_and_check_reports_quota(
    tmp_path: Path, alice_key: SigningKey
) -> None:
    async with meta_rig("threads", tmp_path, alice_key) as rig:
        rig.advance(3 * 86400)
        async with aiohttp.ClientSession() as s:
            said = await rig.platform.check("alice", s)
        assert "@alice" in said and "expires in 59 days" in said and "quota 0 of 250" in said
        assert any(path == "/refresh_access_token" and st == 200 for _, path, st in rig.fake.log)


async def test_retract_deletes_the_thread(tmp_path: Path, alice_key: SigningKey) -> None:
    async with meta_rig("threads", tmp_path, alice_key) as rig:
        post, _ = make_post(TEXT, [rig.target])
        ingest(rig.home, alice_key, [post])
        (o,) = await rig.run()
        assert o.state == "published"
        ingest(rig.home, alice_key, [command(Retract, post.id)])
        (o,) = await rig.run()
        assert o.state == "retracted", o.error
        assert rig.fake.posts == {}
