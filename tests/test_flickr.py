"""The flickr adapter through the engine, against tests/fake_flickr.py (which checks every
OAuth 1.0a signature with its own RFC 5849 code): the original kept and read back, the
description byte-exact, an in-flight upload adopted rather than repeated, reconnect."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from fake_flickr import FakeFlickr
from publish_support import T0, command, ingest, make_home, make_post, states

from ground.credentials import store_for
from ground.home import GroundHome
from ground.platforms import build_platforms
from ground.publish import publish_due
from protocol import SigningKey
from protocol.model import Retract

TARGET = "flickr:alice"


@pytest.fixture
async def fake() -> AsyncIterator[FakeFlickr]:
    f = FakeFlickr()
    server = TestServer(f.app(), host="127.0.0.1")
    await server.start_server()
    f.base_url = str(server.make_url("")).rstrip("/")
    yield f
    await server.close()


@pytest.fixture
def home(tmp_path: Path, alice_key: SigningKey, fake: FakeFlickr) -> GroundHome:
    h = make_home(tmp_path / "G", alice_key, [TARGET])
    store_for(h.root).add(TARGET, json.dumps(fake.secret()), service_url=fake.base_url)
    yield h
    h.close()


async def run(home: GroundHome, now: int):  # type: ignore[no-untyped-def]
    async with aiohttp.ClientSession() as s:
        return await publish_due(
            home, now, build_platforms(home.root, home.archive_dir), s, rng=random.Random(0)
        )


def fidelity(home: GroundHome, item_id: str) -> tuple[str, str]:
    return home.conn.execute(
        "SELECT fidelity, fidelity_note FROM publications WHERE item_id = ?", (item_id,)
    ).fetchone()


async def test_originals_kept_and_verified_by_reading_back(
    home: GroundHome, fake: FakeFlickr, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    imgs = [p.read_bytes() for p in sample_jpegs[:2]]
    text = 'Aurora from the cupola — Café ☕ & <friends> "quoted"\r\nsecond line'
    post, blobs = make_post(
        text, [TARGET], photos=[(imgs[0], "image/jpeg", "Aurora"), (imgs[1], "image/jpeg", "")]
    )
    ingest(home, alice_key, [post], blobs)
    (o,) = await run(home, T0)
    assert o.state == "published", o.error
    photos = sorted(fake.photos.values(), key=lambda p: int(p["id"]))
    assert [p["data"] for p in photos] == imgs
    assert {p["description"] for p in photos} == {text} and {p["title"] for p in photos} == {""}
    assert o.url == f"https://www.flickr.com/photos/{fake.nsid}/{photos[0]['id']}/"
    fid, note = fidelity(home, post.id)
    assert fid == "exact"
    assert f"sha256 {hashlib.sha256(imgs[0]).hexdigest()[:16]}… matches" in note


async def test_a_reencoded_original_is_recorded_as_such(
    home: GroundHome, fake: FakeFlickr, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    fake.reencode = True
    img = sample_jpegs[0].read_bytes()
    post, blobs = make_post("x", [TARGET], photos=[(img, "image/jpeg", "")])
    ingest(home, alice_key, [post], blobs)
    (o,) = await run(home, T0)
    assert o.state == "published"
    fid, note = fidelity(home, post.id)
    assert fid == "re-encoded" and hashlib.sha256(img).hexdigest() in note


@pytest.mark.parametrize("fault_status", [0, 502])
async def test_upload_in_flight_is_adopted_not_repeated(
    home: GroundHome, fake: FakeFlickr, alice_key: SigningKey, sample_jpegs: list[Path], fault_status: int
) -> None:
    imgs = [p.read_bytes() for p in sample_jpegs[:3]]
    post, blobs = make_post("three photos", [TARGET], photos=[(b, "image/jpeg", "") for b in imgs])
    ingest(home, alice_key, [post], blobs)
    fake.lost_answers = {2: fault_status}  # photo 2 reaches Flickr; its answer is lost
    (o,) = await run(home, T0)
    assert o.state == "publishing", o.error
    assert len(fake.photos) == 2
    (o,) = await run(home, T0 + 10**8)
    assert o.state == "published", o.error
    photos = sorted(fake.photos.values(), key=lambda p: int(p["id"]))
    assert [p["data"] for p in photos] == imgs  # three photos, in order, none twice
    assert o.url.endswith(f"/{photos[0]['id']}/")


async def test_revoked_token_says_reconnect(
    home: GroundHome, fake: FakeFlickr, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    fake.tokens.clear()
    post, blobs = make_post("x", [TARGET], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
    ingest(home, alice_key, [post], blobs)
    (o,) = await run(home, T0)
    assert o.state == "failed" and "reconnect this account: flickr:alice" in (o.error or "")


async def test_text_only_post_is_refused_with_a_reason(home: GroundHome, alice_key: SigningKey) -> None:
    post, _ = make_post("no photo", [TARGET])
    ingest(home, alice_key, [post])
    (o,) = await run(home, T0)
    assert o.state == "failed" and "Flickr needs at least one photo" in (o.error or "")


async def test_retract_deletes_every_photo(
    home: GroundHome, fake: FakeFlickr, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    post, blobs = make_post(
        "x", [TARGET], photos=[(p.read_bytes(), "image/jpeg", "") for p in sample_jpegs[:2]]
    )
    ingest(home, alice_key, [post], blobs)
    await run(home, T0)
    ingest(home, alice_key, [command(Retract, post.id)])
    await run(home, T0 + 1)
    assert states(home, post.id) == {TARGET: "retracted"} and not fake.photos
