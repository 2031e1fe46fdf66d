"""Helpers for publishing tests: a ground home with alice enrolled, and signed items ingested
through the real bundle path (plain functions, not fixtures)."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ground.enroll import enroll
from ground.errors import PublishError
from ground.home import GroundHome
from ground.ingest import IngestResult, ingest_bytes
from ground.platforms.base import Published, PublishRequest
from protocol import BlobPayload, MediaRef, Post, SigningKey, build_bundle, format_public_key, sign_item
from protocol.ids import new_ulid
from protocol.model import Cancel, Item, Retract

T0 = 1_790_000_000_000
_counter = itertools.count(1)


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
