"""The flickr adapter through the engine, against tests/fake_flickr.py (which checks every
OAuth 1.0a signature with its own RFC 5849 code): the original kept and read back, the
description byte-exact, an in-flight upload adopted rather than repeated, reconnect."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fake_flickr import FakeFlickr
from publish_support import (
    T0,
    ingest,
    make_home,
    make_post,
    publish_run,
    publish_then_retract,
    serving,
    states,
)

from ground.credentials import store_for
from ground.home import GroundHome
from ground.publish import PublishOutcome
from protocol import SigningKey

TARGET = "flickr:alice"


@pytest.fixture
async def fake() -> AsyncIterator[FakeFlickr]:
    async with serving(FakeFlickr()) as f:
        yield f


@pytest.fixture
def home(tmp_path: Path, alice_key: SigningKey, fake: FakeFlickr) -> GroundHome:
    h = make_home(tmp_path / "G", alice_key, [TARGET])
    store_for(h.root).add(TARGET, json.dumps(fake.secret()), service_url=fake.base_url)
    yield h
    h.close()


async def run(home: GroundHome, now: int) -> list[PublishOutcome]:
    return await publish_run(home, now)


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
    assert note.startswith("text read back: exact")


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


async def test_same_text_twice_each_post_adopts_only_its_own_photo(
    home: GroundHome, fake: FakeFlickr, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    """Two posts with the same text and photo: the second's lost upload is recognised by its
    machine tags, never confused with the first's (a description match would adopt the first's
    photo and lose the second post)."""
    img = sample_jpegs[0].read_bytes()
    first, blobs = make_post("Good morning from the ISS", [TARGET], photos=[(img, "image/jpeg", "")])
    second, _ = make_post("Good morning from the ISS", [TARGET], photos=[(img, "image/jpeg", "")])
    ingest(home, alice_key, [first], blobs)
    (o,) = await run(home, T0)
    assert o.state == "published"
    (p1,) = fake.photos.values()
    p1["uploaded"] -= 60  # the same words a minute earlier
    ingest(home, alice_key, [second], blobs)
    fake.lost_answers = {fake.uploads + 1: 0}
    (o,) = await run(home, T0 + 1)
    assert o.state == "publishing"
    (o,) = await run(home, T0 + 10**8)
    assert o.state == "published", o.error
    assert len(fake.photos) == 2
    ids = [r for (r,) in home.conn.execute("SELECT remote_id FROM publications ORDER BY item_id")]
    assert sorted(ids) == sorted(fake.photos) and ids[0] != ids[1]
    for pid, post in zip(ids, sorted([first, second], key=lambda p: p.id), strict=True):
        assert f"orbitpost:post={post.id.lower()}" in fake.photos[pid]["tags"]


async def test_a_changed_description_is_recorded_and_the_upload_still_found(
    home: GroundHome, fake: FakeFlickr, alice_key: SigningKey, sample_jpegs: list[Path]
) -> None:
    fake.strip_html = True
    fake.lost_answers = {1: 502}
    text = "Docking at 10:42 <UTC> & all is well"
    post, blobs = make_post(text, [TARGET], photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "")])
    ingest(home, alice_key, [post], blobs)
    (o,) = await run(home, T0)
    assert o.state == "publishing"
    (o,) = await run(home, T0 + 10**8)
    assert o.state == "published" and len(fake.photos) == 1
    _, note = fidelity(home, post.id)
    assert "text read back DIFFERS: Flickr shows 'Docking at 10:42  & all is well'" in note


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
    assert await publish_then_retract(home, alice_key, post, blobs) == {TARGET: "retracted"}
    assert not fake.photos


# --- every dangerous point: a crash (or an ambiguous timeout) at each step, then recovery ------


class Crash(BaseException):
    """A simulated SIGKILL: the engine catches Exception, so nothing after this runs or is saved."""


class Injector:
    """Counts the adapter's steps (HTTP calls before/after, handle writes, the return to the
    engine) and fails at step ``at``: a Crash, or at an HTTP step an ambiguous timeout."""

    def __init__(self, at: int | None, timeout: bool = False) -> None:
        self.at, self.timeout, self.steps = at, timeout, []  # type: list[str]

    def step(self, name: str, *, http: bool = False) -> None:
        self.steps.append(name)
        if len(self.steps) == self.at:
            if self.timeout and http:
                from ground.errors import PublishError

                raise PublishError(f"{name}: no answer in time (injected)", retryable=True, ambiguous=True)
            raise Crash(name)


def _instrument(monkeypatch: pytest.MonkeyPatch, inj: Injector) -> None:
    from ground.platforms import flickr as flickr_mod
    from ground.platforms.handles import HandleStore

    real_request, real_put, real_drop = flickr_mod.request, HandleStore.put, HandleStore.drop
    real_publish, real_lookup = flickr_mod.FlickrPlatform.publish, flickr_mod.FlickrPlatform.lookup

    async def request(session, method, url, *, what, **kw):  # type: ignore[no-untyped-def]
        inj.step(f"before {what}", http=True)
        resp = await real_request(session, method, url, what=what, **kw)
        inj.step(f"after {what} (the platform acted, its answer is lost)", http=True)
        return resp

    def put(self, target, post_id, **values):  # type: ignore[no-untyped-def]
        out = real_put(self, target, post_id, **values)
        inj.step(f"after saving {sorted(values)}")
        return out

    def drop(self, target, post_id):  # type: ignore[no-untyped-def]
        real_drop(self, target, post_id)
        inj.step("after dropping the handles")

    async def publish(self, req, session):  # type: ignore[no-untyped-def]
        out = await real_publish(self, req, session)
        inj.step("publish returned, before the engine records it")
        return out

    async def lookup(self, req, session):  # type: ignore[no-untyped-def]
        out = await real_lookup(self, req, session)
        inj.step("lookup returned, before the engine records it")
        return out

    monkeypatch.setattr(flickr_mod, "request", request)
    monkeypatch.setattr(HandleStore, "put", put)
    monkeypatch.setattr(HandleStore, "drop", drop)
    monkeypatch.setattr(flickr_mod.FlickrPlatform, "publish", publish)
    monkeypatch.setattr(flickr_mod.FlickrPlatform, "lookup", lookup)


async def _crash_at(
    f: FakeFlickr,
    template: Path,
    key: SigningKey,
    imgs: list[bytes],
    at: int,
    timeout: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> list[str]:
    """Publish one post with ``imgs``, failing at step ``at``; recover; assert each photo once."""
    f.photos.clear()
    root = template.with_name(f"G{at}")
    shutil.copytree(template, root)  # an enrolled home with the credential, made once
    h = GroundHome(root)
    try:
        post, blobs = make_post(
            "photos \r\nfrom orbit ", [TARGET], photos=[(b, "image/jpeg", "") for b in imgs]
        )
        ingest(h, key, [post], blobs)
        inj = Injector(at, timeout)
        with monkeypatch.context() as m:
            _instrument(m, inj)
            try:
                await run(h, T0)
            except Crash:
                pass
        # Recovery: later passes (after any backoff), each with a fresh adapter, as after a restart.
        for n in range(1, 4):
            (o,) = await run(h, T0 + n * 10**8) or [None]
            if o is not None and o.state == "published":
                break
        assert states(h, post.id) == {TARGET: "published"}, (inj.steps, o)
        photos = sorted(f.photos.values(), key=lambda p: int(p["id"]))
        assert [p["data"] for p in photos] == imgs, (
            f"after a failure at {inj.steps[-1]!r}: {len(photos)} photos"
        )
        (remote_id,) = h.conn.execute("SELECT remote_id FROM publications").fetchone()
        assert remote_id == ",".join(p["id"] for p in photos)
        return inj.steps
    finally:
        h.close()
        shutil.rmtree(root)


@pytest.mark.parametrize("timeout", [False, True], ids=["sigkill", "ambiguous-timeout"])
@pytest.mark.parametrize("n_photos", [1, 2])
async def test_a_failure_at_every_step_leaves_each_photo_once(
    tmp_path: Path,
    alice_key: SigningKey,
    fake: FakeFlickr,
    sample_jpegs: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    timeout: bool,
    n_photos: int,
) -> None:
    """Each adapter step (every HTTP call before it is sent and after the platform acted, every
    handle write, the return to the engine) is made to fail in turn, by a simulated SIGKILL or an
    ambiguous timeout; the next passes must end with each photo on Flickr exactly once."""
    imgs = [p.read_bytes() for p in sample_jpegs[:n_photos]]
    template = tmp_path / "template"
    make_home(template, alice_key, [TARGET]).close()
    store_for(template).add(TARGET, json.dumps(fake.secret()), service_url=fake.base_url)
    at = 1
    while True:
        steps = await _crash_at(fake, template, alice_key, imgs, at, timeout, monkeypatch)
        if at > len(steps):  # ran to the end without failing: every step has been tried
            break
        at += 1
    assert at > 8
