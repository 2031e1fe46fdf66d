"""Shared set-up for the Meta platform tests: a fake Graph API, ground's own web app serving
public media on loopback, and an engine pass with a controllable clock."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from fake_meta import FakeMeta, Fault
from publish_support import ingest, make_home, make_post

from ground.credentials import store_for
from ground.home import GroundHome
from ground.platforms import context_for
from ground.platforms.facebook import FacebookPlatform
from ground.platforms.instagram import InstagramPlatform
from ground.platforms.threads import ThreadsPlatform
from ground.public_media import PublicMedia, set_base_url
from ground.publish import PublishOutcome, publish_due
from ground.server import create_app
from protocol import SigningKey

PLATFORMS = {"instagram": InstagramPlatform, "threads": ThreadsPlatform}


@dataclass
class Clock:
    """Wall time plus an offset the test moves (shared by the fake and the adapter)."""

    offset_s: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


@dataclass
class MetaRig:
    kind: str
    home: GroundHome
    fake: FakeMeta
    ground_url: str
    clock: Clock
    target: str
    platform: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def advance(self, seconds: float) -> None:
        self.clock.offset_s += seconds
        self.fake.advance(seconds)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def run(self, now_ms: int | None = None) -> list[PublishOutcome]:
        async with aiohttp.ClientSession() as s:
            return await publish_due(
                self.home,
                self.now_ms() if now_ms is None else now_ms,
                {self.kind: self.platform},
                s,
                rng=random.Random(0),
            )

    def live_links(self) -> int:
        return PublicMedia(self.home.root).live(self.now_ms())


@asynccontextmanager
async def meta_rig(kind: str, tmp_path: Path, key: SigningKey, **fake_kw: Any) -> AsyncIterator[MetaRig]:
    """A ground home enrolled for ``kind:alice``, its web app on loopback, and the fake."""
    target = f"{kind}:alice"
    home = make_home(tmp_path / "G", key, [target])
    ground = TestServer(create_app(home), host="127.0.0.1")
    await ground.start_server()
    ground_url = str(ground.make_url("")).rstrip("/")
    set_base_url(home.root, ground_url)
    fake = FakeMeta(kind=kind, **fake_kw)
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.base_url = str(server.make_url("")).rstrip("/")
    store_for(home.root).add(target, "token-alice", service_url=fake.base_url)
    clock = Clock()
    ctx = context_for(home.root, home.archive_dir)
    platform: Any
    if kind == "facebook":
        platform = FacebookPlatform(ctx.credentials, ctx.handles, ctx.quotas, clock=clock)
    else:
        platform = PLATFORMS[kind](
            ctx.credentials, ctx.handles, ctx.quotas, home.root, poll_interval_s=0.01, clock=clock
        )
    rig = MetaRig(
        kind=kind, home=home, fake=fake, ground_url=ground_url, clock=clock, target=target, platform=platform
    )
    try:
        yield rig
    finally:
        await server.close()
        await ground.close()
        home.close()


async def timeout_then_lookup(rig: MetaRig, key: SigningKey, text: str, photo: bytes, path: str) -> None:
    """Ground has stopped waiting after 0.5 s (the caller sets ``http.DEFAULT_TIMEOUT``) when the
    platform acts on ``POST path``, a second later: the attempt is ambiguous, and the next pass
    finds the post instead of making a second one."""
    rig.fake.faults.append(Fault("POST", path, after=True, delay_s=1.0))
    post, blobs = make_post(text, [rig.target], photos=[(photo, "image/jpeg", "")])
    ingest(rig.home, key, [post], blobs)
    (o,) = await rig.run()
    assert o.state == "publishing" and "no answer" in str(o.error)
    await asyncio.sleep(1.5)  # the platform finishes what it was asked
    (o,) = await rig.run(o.next_attempt_ms)
    assert o.state == "published", o.error
    assert len(rig.fake.posts) == 1
