"""Helpers for publishing tests: a ground home with alice enrolled, and signed items ingested
through the real bundle path (plain functions, not fixtures)."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp.test_utils import TestServer

from ground.credentials import store_for
from ground.enroll import enroll
from ground.errors import PublishError
from ground.home import GroundHome
from ground.ingest import IngestResult, ingest_bytes
from ground.platforms import build_platforms
from ground.platforms.base import Published, PublishRequest
from ground.publish import PublishOutcome, publish_due, retry
from ground.publish_cli import add_credential
from protocol import BlobPayload, MediaRef, Post, SigningKey, build_bundle, format_public_key, sign_item
from protocol.ids import new_ulid
from protocol.model import Cancel, Item, Retract

T0 = 1_790_000_000_000
_counter = itertools.count(1)
FakeT = TypeVar("FakeT")


def make_home(root: Path, key: SigningKey, accounts: Sequence[str], name: str = "alice") -> GroundHome:
    home = GroundHome(root)
    enroll(home.conn, name, format_public_key(key.public_key), list(accounts), T0)
    return home


def new_id(ms: int = T0) -> str:
    n = next(_counter)
    return new_ulid(ms, n.to_bytes(10, "big"))


def make_post(
    text: str,
    targets: Sequence[str],
    *,
    author: str = "alice",
    photos: Sequence[tuple[bytes, str, str]] = (),
    publish_at_ms: int | None = None,
    created_ms: int = T0,
) -> tuple[Post, list[BlobPayload]]:
    """A post and its blobs; ``photos`` is (bytes, media type, alt) each."""
    media = tuple(
        MediaRef(sha256=hashlib.sha256(d).digest(), size_bytes=len(d), media_type=mt, alt=alt)
        for d, mt, alt in photos
    )
    post = Post(
        id=new_id(created_ms),
        author=author,
        created_ms=created_ms,
        text=text,
        media=media,
        targets=tuple(targets),
        publish_at_ms=publish_at_ms,
    )
    blobs = [BlobPayload(sha256=hashlib.sha256(d).digest(), raw=d) for d, _, _ in photos]
    return post, blobs


def command(kind: type[Cancel] | type[Retract], target_id: str, author: str = "alice") -> Item:
    return kind(id=new_id(), author=author, created_ms=T0 + 1, target_id=target_id)


def ingest(
    home: GroundHome,
    key: SigningKey,
    items: Sequence[Item],
    blobs: Sequence[BlobPayload] = (),
    now_ms: int = T0,
) -> IngestResult:
    """Sign ``items`` with ``key``, bundle them and ingest the bundle as ground would."""
    data = build_bundle(
        bundle_id=new_id(),
        created_ms=now_ms,
        items=[sign_item(key, it) for it in items],
        blobs=list({b.sha256: b for b in blobs}.values()),
    )
    return ingest_bytes(home, data, source="test", now_ms=now_ms)


def states(home: GroundHome, item_id: str) -> dict[str, str]:
    return dict(
        home.conn.execute("SELECT account, state FROM publications WHERE item_id = ?", (item_id,)).fetchall()
    )


@asynccontextmanager
async def serving(fake: FakeT) -> AsyncIterator[FakeT]:
    """``fake.app()`` served on a free loopback port for the block, with ``fake.base_url`` set to it."""
    app: Any = fake
    server = TestServer(app.app(), host="127.0.0.1")
    await server.start_server()
    app.base_url = str(server.make_url("")).rstrip("/")
    try:
        yield fake
    finally:
        await server.close()


def add_oauth2_account(ground_root: Path, target: str, fake: Any, identifier: str = "alice") -> None:
    """Connect ``target`` with a fresh grant from ``fake`` (what `ground account add --token-file` does)."""
    add_credential(
        store_for(ground_root),
        target,
        json.dumps(fake.grant()),
        service_url=fake.base_url,
        identifier=identifier,
        now_ms=int(time.time() * 1000),
    )


def oauth2_home(root: Path, key: SigningKey, target: str, fake: Any) -> Iterator[GroundHome]:
    """A home fixture's body: alice enrolled for ``target``, connected with a grant from ``fake``."""
    home = make_home(root, key, [target])
    add_oauth2_account(home.root, target, fake)
    yield home
    home.close()


async def publish_run(home: GroundHome, now: int, quick_poll: str | None = None) -> list[PublishOutcome]:
    """One publish_due pass over the home's platforms (``quick_poll``: that one polls every 10 ms)."""
    plats = build_platforms(home.root, home.archive_dir)
    if quick_poll is not None:
        plats[quick_poll].poll_interval_s = 0.01  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as s:
        return await publish_due(home, now, plats, s, rng=random.Random(0))


async def publish_then_retract(
    home: GroundHome,
    key: SigningKey,
    post: Post,
    blobs: Sequence[BlobPayload] = (),
    quick_poll: str | None = None,
) -> dict[str, str]:
    """Publish ``post`` (at T0), then retract it (at T0 + 1); its publications' states after."""
    ingest(home, key, [post], blobs)
    await publish_run(home, T0, quick_poll)
    ingest(home, key, [command(Retract, post.id)])
    await publish_run(home, T0 + 1, quick_poll)
    return states(home, post.id)


async def fails_asking_to_reconnect(home: GroundHome, key: SigningKey, post: Post, now: int) -> None:
    """With the account's refresh token dead, publishing ``post`` fails and says to reconnect it."""
    (target,) = post.targets
    ingest(home, key, [post])
    (o,) = await publish_run(home, now, quick_poll=target.split(":")[0])
    assert o.state == "failed", o.error
    assert f"reconnect this account: {target}" in (o.error or "")


async def reconnect_and_retry(home: GroundHome, fake: Any, post: Post, now: int) -> PublishOutcome:
    """The operator reconnects the post's account (a new grant) and retries it at ``now``; the
    outcome of the next publish pass (at ``now + 1``)."""
    (target,) = post.targets
    add_oauth2_account(home.root, target, fake)
    retry(home.conn, post.id, now)
    (o,) = await publish_run(home, now + 1, quick_poll=target.split(":")[0])
    return o


@dataclass
class ScriptedPlatform:
    """An in-memory platform without idempotency: it really posts twice if asked twice.

    ``script`` holds errors to raise on the next publish calls; an entry ``("after", exc)``
    posts first and then raises (the ambiguous timeout).
    """

    name: str = "fake"
    posts: dict[str, list[str]] = field(default_factory=dict)  # account → post ids, in order
    script: list[object] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    async def publish(self, req: PublishRequest, session: object) -> Published:
        self.calls.append(f"publish {req.post.id} {req.account}")
        step = self.script.pop(0) if self.script else None
        if isinstance(step, tuple) and step[0] == "after":
            self.posts.setdefault(req.account, []).append(req.post.id)
            raise step[1]
        if isinstance(step, PublishError):
            raise step
        self.posts.setdefault(req.account, []).append(req.post.id)
        return Published(url=f"fake://{req.account}/{req.post.id}", remote_id=req.post.id)

    async def lookup(self, req: PublishRequest, session: object) -> Published | None:
        self.calls.append(f"lookup {req.post.id} {req.account}")
        if req.post.id in self.posts.get(req.account, []):
            return Published(url=f"fake://{req.account}/{req.post.id}", remote_id=req.post.id)
        return None

    async def delete(self, account: str, remote_id: str, session: object) -> None:
        self.calls.append(f"delete {remote_id} {account}")
        step = self.script.pop(0) if self.script else None
        if isinstance(step, PublishError):
            raise step
        if remote_id in self.posts.get(account, []):
            self.posts[account].remove(remote_id)
        self.deleted.append(remote_id)
