"""orbitpost-verify reads copies back from Mastodon, X, Instagram, Threads, Facebook and Flickr.

One signed post with a photo is published by the real engine to each platform's local fake
(tests/fake_*.py), the log is brought up to date, and ground's public proof page is served on
loopback. The verifier, given only that page's URL, a reader's tokens and the fakes' base URLs,
must verify every copy; one character changed on a platform's copy (or one byte of a Flickr
original) must fail verification and name that copy. Without a reader's token, it says it
cannot read the copy back, and claims nothing about it.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from fake_flickr import FakeFlickr
from fake_mastodon import FakeMastodon
from fake_meta import FakeMeta
from fake_x import FakeX
from publish_support import ingest, make_home, make_post
from typer.testing import CliRunner

from ground import translog
from ground.credentials import store_for
from ground.home import GroundHome
from ground.platforms import build_platforms, context_for
from ground.platforms.instagram import InstagramPlatform
from ground.platforms.threads import ThreadsPlatform
from ground.public_media import set_base_url
from ground.publish import publish_due
from ground.publish_cli import add_credential
from ground.receipts import ground_key
from ground.server import create_app
from protocol import SigningKey, format_public_key
from verifier.cli import app as verify_app

MASTODON = "mastodon:alice@fake.example"
META = ("instagram", "threads", "facebook")
TARGETS = [MASTODON, "x:alice", *(f"{k}:alice" for k in META), "flickr:alice"]
TEXT = "Cupola, dawn 🌅 — see https://example.org/iss?orbit=42 & <wave>\nsecond line"


@dataclass
class Rig:
    home: GroundHome
    ground_url: str
    mastodon: FakeMastodon
    x: FakeX
    meta: dict[str, FakeMeta]
    flickr: FakeFlickr
    post_id: str
    gkey: str

    def reader_args(self) -> list[str]:
        args = ["--ground-key", self.gkey]
        for name, token in [("x", "reader-x"), *((k, f"reader-{k}") for k in META), ("flickr", "reader-key")]:
            args += ["--read-token", f"{name}={token}"]
        apis = {"x": self.x, **self.meta, "flickr": self.flickr}
        for name, fake in apis.items():
            args += ["--api", f"{name}={fake.base_url}"]
        return args


async def _serve(app: Any) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.fixture
async def rig(tmp_path: Path, alice_key: SigningKey, sample_jpegs: list[Path]) -> AsyncIterator[Rig]:
    home = make_home(tmp_path / "G", alice_key, TARGETS)
    fakes: dict[str, Any] = {
        "mastodon": FakeMastodon(),
        "x": FakeX(readers={"reader-x"}),
        **{k: FakeMeta(kind=k, processing_polls=0, readers={f"reader-{k}"}) for k in META},
        "flickr": FakeFlickr(api_keys={"reader-key"}),
    }
    servers = {name: await _serve(f.app()) for name, f in fakes.items()}
    for name, f in fakes.items():
        f.base_url = str(servers[name].make_url("")).rstrip("/")
    ground = await _serve(create_app(home))
    ground_url = str(ground.make_url("")).rstrip("/")
    set_base_url(home.root, ground_url)  # Instagram and Threads fetch the photo from ground
    store = store_for(home.root)
    store.add(MASTODON, "token-alice", service_url=fakes["mastodon"].base_url)
    add_credential(
        store,
        "x:alice",
        json.dumps(fakes["x"].grant()),
        service_url=fakes["x"].base_url,
        identifier="alice",
        now_ms=int(time.time() * 1000),
    )
    for k in META:
        store.add(f"{k}:alice", "token-alice", service_url=fakes[k].base_url)
    store.add("flickr:alice", json.dumps(fakes["flickr"].secret()), service_url=fakes["flickr"].base_url)
    post, blobs = make_post(TEXT, TARGETS, photos=[(sample_jpegs[0].read_bytes(), "image/jpeg", "dawn")])
    ingest(home, alice_key, [post], blobs)
    platforms = build_platforms(home.root, home.archive_dir)
    ctx = context_for(home.root, home.archive_dir)
    for name, cls in (("instagram", InstagramPlatform), ("threads", ThreadsPlatform)):
        platforms[name] = cls(ctx.credentials, ctx.handles, ctx.quotas, home.root, poll_interval_s=0.01)
    now_ms = int(time.time() * 1000)
    async with aiohttp.ClientSession() as s:
        for _ in range(5):  # Threads fetches its photo in the background: a few passes
            out = await publish_due(home, now_ms, platforms, s, rng=random.Random(0))
            if not out:
                break
            now_ms += 10**7
            await asyncio.sleep(0.05)
    states = dict(home.conn.execute("SELECT account, state FROM publications"))
    assert set(states.values()) == {"published"}, states
    translog.catch_up(home, now_ms)
    try:
        yield Rig(
            home=home,
            ground_url=ground_url,
            mastodon=fakes["mastodon"],
            x=fakes["x"],
            meta={k: fakes[k] for k in META},
            flickr=fakes["flickr"],
            post_id=post.id,
            gkey=format_public_key(ground_key(home).public_key),
        )
    finally:
        for server in [*servers.values(), ground]:
            await server.close()
        home.close()


async def _verify(*args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, verify_app, list(args))


async def test_every_copy_is_read_back_and_verified(rig: Rig) -> None:
    ok = await _verify(f"{rig.ground_url}/p/{rig.post_id}", *rig.reader_args())
    assert ok.exit_code == 0, ok.output
    out = ok.output
    assert "VERIFIED" in out and "  --  " not in out, out
    assert (
        "ok  Mastodon status" in out and "text byte-identical; 1 photo(s) re-encoded by the instance" in out
    )
    assert "X post" in out and "links shown as t.co" in out
    for title in ("Instagram", "Threads", "Facebook"):
        assert f"ok  {title} post" in out and "text byte-identical; 1 photo(s) re-encoded" in out
    assert "Flickr copy" in out and "text and 1 original photo(s) byte-identical" in out
    # What ground found reading each copy back is in the log, and so in the public proof.
    async with aiohttp.ClientSession() as s, s.get(f"{rig.ground_url}/p/{rig.post_id}.json") as r:
        proof = await r.json()
    read_back = {p["account"]: p["read_back"] for p in proof["publications"]}
    assert read_back["flickr:alice"].startswith("text read back: exact; photo 1: original read back: sha256")
    assert all(note and "text read back: exact" in note for note in read_back.values()), read_back
    as_json = json.loads(
        (await _verify(f"{rig.ground_url}/p/{rig.post_id}", *rig.reader_args(), "--json")).output
    )
    assert as_json["verified"] and as_json["unchecked"] == []


def _no_tokens(rig: Rig) -> list[str]:
    """Only the public reads: Mastodon's instance (from the logged URL) and X's oEmbed, on loopback."""
    return ["--ground-key", rig.gkey, "--api", f"x-oembed={rig.x.base_url}"]


async def test_without_a_readers_token_nothing_is_claimed(rig: Rig) -> None:
    res = await _verify(f"{rig.ground_url}/p/{rig.post_id}", *_no_tokens(rig))
    assert res.exit_code == 0, res.output
    assert "cannot read back from Flickr without an API key (--read-token flickr=…)" in res.output
    for title in ("Instagram", "Threads", "Facebook"):
        assert (
            f"cannot read back from {title} without a reader's token (--read-token {title.lower()}=…)"
            in res.output
        )
    assert res.output.count("  --  ") == 4
    # Mastodon and X need no token: read from their public pages and checked.
    assert "ok  Mastodon status" in res.output
    assert "ok  X post" in res.output and "as X's public embed shows it" in res.output
    assert "1 photo(s) re-encoded by X" in res.output


def _one(d: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = d.values()
    return only


async def test_one_changed_character_on_any_platform_is_named(rig: Rig) -> None:
    page = f"{rig.ground_url}/p/{rig.post_id}"
    flickr_photo = _one(rig.flickr.photos)
    cases: list[tuple[dict[str, Any], str, str]] = [
        (_one(rig.mastodon.statuses), "text", "Mastodon status"),
        (_one(rig.x.tweets), "text", "X post"),
        *((_one(rig.meta[k].posts), "text", f"{k.capitalize()} post") for k in META),
        (flickr_photo, "description", "Flickr photo"),
    ]
    for record, key, named in cases:
        original = record[key]
        record[key] = original.replace("dawn", "dawm")
        bad = await _verify(page, *rig.reader_args())
        public = await _verify(page, *_no_tokens(rig))  # X and Mastodon: from their public pages too
        record[key] = original
        assert bad.exit_code == 1, (named, bad.output)
        assert "NOT VERIFIED" in bad.output and named in bad.output and "text differs" in bad.output
        if named in ("X post", "Mastodon status"):
            assert public.exit_code == 1 and named in public.output, public.output
    # One byte of Flickr's original: the photo Flickr promises to keep exactly.
    data = flickr_photo["data"]
    flickr_photo["data"] = data[:-1] + bytes([data[-1] ^ 1])
    bad = await _verify(page, *rig.reader_args())
    flickr_photo["data"] = data
    assert bad.exit_code == 1 and "the Original differs from signed photo 1" in bad.output
    # The restored copies verify again.
    assert (await _verify(page, *rig.reader_args())).exit_code == 0
