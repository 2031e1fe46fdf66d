"""Our Mastodon adapter against PyPI's `mastodon-mock`, an independent mock of the Mastodon REST
API written by others: our reading of the API (ground/platforms/mastodon.py, and our own
tests/fake_mastodon.py) checked against someone else's."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from publish_support import make_post

from ground.credentials import CredentialStore
from ground.platforms.base import PublishRequest
from ground.platforms.mastodon import MastodonPlatform

server_mod = pytest.importorskip("mastodon_mock.testing.server")

TARGET = "mastodon:alice@mock.example"


@pytest.fixture(scope="module")
def mock() -> Iterator[object]:
    with server_mod.MockServer() as server:
        yield server


def _platform(tmp_path: Path, base_url: str) -> MastodonPlatform:
    store = CredentialStore(tmp_path / "credentials")
    store.add(TARGET, "alice_token", service_url=base_url)
    return MastodonPlatform(store, poll_interval_s=0.05)


def _req(text: str, photos: list[tuple[bytes, str, str]], **kw: object) -> PublishRequest:
    post, blobs = make_post(text, [TARGET], photos=photos)
    media = tuple((ref, b.raw) for ref, b in zip(post.media, blobs, strict=True))
    return PublishRequest(
        post=post,
        account="alice@mock.example",
        media=media,
        signer_fingerprint="00",
        signature=b"",
        body=b"",
        **kw,
    )  # type: ignore[arg-type]


async def _get_json(s: aiohttp.ClientSession, url: str) -> object:
    async with s.get(url, headers={"Authorization": "Bearer alice_token"}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def test_publish_text_and_photo_read_back_exactly(mock, tmp_path: Path, sample_jpegs: list[Path]) -> None:  # type: ignore[no-untyped-def]
    base = mock.base_url
    plat = _platform(tmp_path, base)
    text = "Cafe\u0301 at 400 km 👩‍🚀 & <b>not html</b>\nline two"
    req = _req(text, [(sample_jpegs[0].read_bytes(), "image/jpeg", "A rocket")])

    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            rules = await plat.rules(TARGET, s)
            assert rules is not None and rules.max_text and rules.max_media
            said = await plat.check("alice@mock.example", s)
            assert "@alice" in said
            pub = await plat.publish(req, s)
            source = await _get_json(s, f"{base}/api/v1/statuses/{pub.remote_id}/source")
            assert isinstance(source, dict) and source["text"] == text
            status = await _get_json(s, f"{base}/api/v1/statuses/{pub.remote_id}")
            assert isinstance(status, dict)
            (att,) = status["media_attachments"]
            assert att["description"] == "A rocket"
            # Ten hours later (past the Idempotency-Key hour) the adapter finds the status by
            # reading the account back. The mock stamps statuses with the real clock, so the
            # uncertain attempt is placed a minute before now.
            now = int(time.time() * 1000)
            late = dataclasses.replace(req, ambiguous_since_ms=now - 60_000, now_ms=now + 10 * 3600 * 1000)
            found = await plat.lookup(late, s)
            assert found is not None and found.remote_id == pub.remote_id
            await plat.delete("alice@mock.example", pub.remote_id, s)
            await plat.delete("alice@mock.example", pub.remote_id, s)  # already gone: fine

    asyncio.run(run())


def test_idempotency_key_returns_the_first_status(mock, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plat = _platform(tmp_path, mock.base_url)
    req = _req("exactly once, please", [])

    async def run() -> tuple[str, str]:
        async with aiohttp.ClientSession() as s:
            a = await plat.publish(req, s)
            b = await plat.publish(req, s)  # a retry after a lost answer sends the same key
            return a.remote_id, b.remote_id

    first, second = asyncio.run(run())
    assert first == second
