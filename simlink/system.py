"""The system under test in virtual time: a real onboard home and a real ground home.

Posts are signed and queued with the project's own code (protocol signing, onboard's queue and
blob store, platform rules); ground verifies, stores and publishes with its own code (ingest,
publishing engine, archive platform). Only the clock is virtual: every call gets ``now_ms``
from the simulation, and ids come from the run's seeded RNG so a seed fixes every byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from durable.files import BlobStore
from ground.enroll import enroll
from ground.home import GroundHome
from ground.publish import publish_due
from onboard import queue
from onboard.compose import check_rules
from onboard.errors import OnboardError
from onboard.home import Home
from protocol import MediaRef, Post, ProtocolError, SigningKey, format_public_key, sign_item
from protocol.ids import new_ulid
from protocol.model import check_item

from .workload import PlannedPost

# Virtual time zero: 2026-12-01T00:00:00Z (ms). Fixed, so ids and reports never depend on the host clock.
EPOCH_MS = 1_796_083_200_000


def sim_key(name: str, seed: int) -> SigningKey:
    """A deterministic key per (astronaut, seed): a simulation needs repeatable signatures, not secrecy."""
    return SigningKey.from_seed(hashlib.sha256(f"orbitpost-sim/{seed}/{name}".encode()).digest())


@dataclass(slots=True)
class PostRecord:
    """What the report needs to know about one post."""

    post_id: str
    author: str
    queued_s: float
    payload_bytes: int
    photos: int
    accounts: int
    received_s: float | None = None
    published: dict[str, float] = field(default_factory=dict)

    @property
    def published_s(self) -> float | None:
        return max(self.published.values()) if len(self.published) == self.accounts else None


class Tracker:
    """Per-post fates, filled by both sides as things happen."""

    def __init__(self) -> None:
        self.posts: dict[str, PostRecord] = {}
        self.refused: list[str] = []
        self.rejected: list[str] = []
        self.publish_failures = 0

    def received(self, post_ids: tuple[str, ...], now_s: float) -> None:
        for pid in post_ids:
            rec = self.posts.get(pid)
            if rec is not None and rec.received_s is None:
                rec.received_s = now_s

    def counts(self) -> tuple[int, int, int]:
        """(waiting onboard, received but not published, published) posts right now."""
        waiting = awaiting = done = 0
        for r in self.posts.values():
            if r.received_s is None:
                waiting += 1
            elif r.published_s is None:
                awaiting += 1
            else:
                done += 1
        return waiting, awaiting, done


class Station:
    """The onboard laptop: astronauts' keys, the SQLite queue and the blob store."""

    def __init__(self, root: Path, names: list[str], seed: int, tracker: Tracker) -> None:
        self.home = Home(root).ensure()
        self.conn: sqlite3.Connection = queue.connect(self.home.db_path)
        self.keys = {n: sim_key(n, seed) for n in names}
        self.store = BlobStore(self.home.blobs_dir)
        self.rng = random.Random(f"ids-{seed}")
        self.tracker = tracker

    def post(self, p: PlannedPost, now_s: float) -> str | None:
        """Sign and queue ``p`` as `onboard post` would; None if the rules refuse it onboard."""
        now_ms = EPOCH_MS + round(now_s * 1000)
        media = tuple(
            MediaRef(
                sha256=hashlib.sha256(ph.data).digest(),
                size_bytes=len(ph.data),
                media_type=ph.media_type,
                alt=ph.alt,
            )
            for ph in p.photos
        )
        post = Post(
            id=new_ulid(now_ms, self.rng.randbytes(10)),
            author=p.author,
            created_ms=now_ms,
            text=p.text,
            media=media,
            targets=p.targets,
        )
        try:
            check_rules(post)
            check_item(post)
        except (OnboardError, ProtocolError) as exc:
            self.tracker.refused.append(f"{post.id}: {exc}")
            return None
        for ph in p.photos:
            self.store.put(ph.data)
        queue.add_item(self.conn, sign_item(self.keys[p.author], post), post)
        self.tracker.posts[post.id] = PostRecord(
            post_id=post.id,
            author=p.author,
            queued_s=now_s,
            payload_bytes=p.payload_bytes,
            photos=len(p.photos),
            accounts=len(p.targets),
        )
        return post.id

    def close(self) -> None:
        self.conn.close()


class Ground:
    """The ground service's state and its publishing engine, run on the virtual clock."""

    def __init__(
        self, root: Path, station: Station, accounts: dict[str, tuple[str, ...]], tracker: Tracker
    ) -> None:
        self.home = GroundHome(root)
        self.tracker = tracker
        self.aio = asyncio.new_event_loop()
        for name, key in station.keys.items():
            enroll(self.home.conn, name, format_public_key(key.public_key), list(accounts[name]), EPOCH_MS)

    def publish(self, now_s: float) -> None:
        """One pass of ground's publishing loop (`ground serve` runs it every second)."""
        now_ms = EPOCH_MS + round(now_s * 1000)
        for o in self.aio.run_until_complete(publish_due(self.home, now_ms)):
            rec = self.tracker.posts.get(o.item_id)
            if o.state == "published" and rec is not None:
                rec.published.setdefault(o.account, now_s)
            elif o.state != "published":
                self.tracker.publish_failures += 1

    def close(self) -> None:
        self.aio.close()
        self.home.close()
