"""Durability paid per group (issue 18): durable.FileBatch and the archive's group publishing.

- A FileBatch makes nothing visible before ``sync``; an unsynced batch leaves no temporary
  file behind; with or without syncfs(2) the files end up whole, in place, with their mode.
- Publishing a hand-off to the archive goes through ground/publish_batch.py: one claim
  transaction and one record transaction per group, each publication audited once, and a
  group interrupted between its claim and its record (a crash) is published exactly once by
  the next pass; a group whose write fails is reported post by post (the one-by-one path).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections import Counter
from pathlib import Path

import pytest
from publish_support import make_home, make_post, new_id

import durable.files as files
import ground.publish_batch as publish_batch
from durable.files import BlobStore, FileBatch
from ground.errors import PublishError
from ground.home import GroundHome
from ground.ingest import ingest_bytes
from ground.platforms.archive import ArchivePlatform, archived_posts
from ground.publish import publish_due
from protocol import SigningKey, build_bundle, sign_item

ACCOUNTS = ("archive:alice", "archive:backup")


@pytest.fixture(params=["syncfs", "fsync"])
def flush_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with syncfs(2) and with the portable path (one fsync per file and folder)."""
    if request.param == "fsync":
        monkeypatch.setattr(files, "_syncfs", lambda fd: False)
    return str(request.param)


def test_a_batch_shows_nothing_before_sync_then_everything_whole(tmp_path: Path, flush_mode: str) -> None:
    store = BlobStore(tmp_path / "blobs")
    blobs = [os.urandom(1000 + i) for i in range(20)]
    with FileBatch(tmp_path) as batch:
        folder = tmp_path / ".post.partial"
        batch.mkdir(folder)
        batch.create(folder / "text.txt", b"hello")
        batch.rename(folder, tmp_path / "post")
        batch.put(tmp_path / "single.bin", b"one file", 0o400)
        shas = [store.put_in(batch, b) for b in blobs]
        store.put_in(batch, blobs[0])  # the same blob twice in one batch is written once
        assert not (tmp_path / "post").exists() and not (tmp_path / "single.bin").exists()
        assert not any(store.has(s) for s in shas)
        batch.sync()
    assert (tmp_path / "post" / "text.txt").read_bytes() == b"hello"
    assert (tmp_path / "single.bin").read_bytes() == b"one file"
    assert stat.S_IMODE((tmp_path / "single.bin").stat().st_mode) == 0o400
    assert [store.get(s) for s in shas] == blobs
    assert not list(tmp_path.rglob("*.tmp")) and not list(tmp_path.rglob("*.partial"))


def test_an_unsynced_batch_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    with FileBatch(tmp_path) as batch:
        sha = store.put_in(batch, b"never synced")
        batch.put(tmp_path / "x.bin", b"never synced either")
    assert not store.has(sha) and not (tmp_path / "x.bin").exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def _hand_off(
    tmp_path: Path, key: SigningKey, n: int, photo: bytes | None = None
) -> tuple[GroundHome, dict[str, str]]:
    home = make_home(tmp_path / "G", key, ACCOUNTS)
    posts, blobs, items = [], [], []
    for i in range(n):
        post, b = make_post(
            f"group post {i} ✓",
            ACCOUNTS,
            photos=[(photo, "image/jpeg", "alt")] if photo and i % 3 == 0 else [],
        )
        posts.append(post)
        blobs = blobs or b
        items.append(sign_item(key, post))
    data = build_bundle(bundle_id=new_id(), created_ms=posts[0].created_ms, items=items, blobs=blobs)
    ingest_bytes(home, data, source="test", now_ms=posts[0].created_ms)
    return home, {p.id: p.text for p in posts}


def _audited_publications(home: GroundHome) -> Counter[str]:
    """How many 'published' audit lines each (post, account) has ("<post> → <account>: <url>")."""
    rows = home.conn.execute("SELECT detail FROM events WHERE kind = 'published'")
    return Counter(detail.split(": file:", 1)[0] for (detail,) in rows)


def _assert_exactly_once(home: GroundHome, texts: dict[str, str]) -> None:
    states = Counter(s for (s,) in home.conn.execute("SELECT state FROM publications"))
    assert states == {"published": len(texts) * len(ACCOUNTS)}
    audited = _audited_publications(home)
    assert len(audited) == len(texts) * len(ACCOUNTS) and set(audited.values()) == {1}
    for account in ("alice", "backup"):
        # Each post held once (text posts in packs, photo posts in folders), its exact text.
        held = archived_posts(home.archive_dir, account)
        assert sorted(p.post_id for p in held) == sorted(texts)
        for p in held:
            assert p.text == texts[p.post_id].encode()
    assert not list(home.archive_dir.rglob("*.tmp")) and not list(home.archive_dir.rglob("*.partial"))


def test_a_hand_off_is_published_in_groups_with_few_commits(
    tmp_path: Path, alice_key: SigningKey, monkeypatch: pytest.MonkeyPatch, flush_mode: str
) -> None:
    monkeypatch.setattr(publish_batch, "MAX_GROUP", 50)
    home, texts = _hand_off(tmp_path, alice_key, 120, photo=b"\xff\xd8 photo" * 500)
    commits = Counter[str]()
    home.conn.set_trace_callback(lambda sql: commits.update([sql]) if sql == "COMMIT" else None)
    asyncio.run(publish_due(home, 2**50))
    home.conn.set_trace_callback(None)
    _assert_exactly_once(home, texts)
    # 240 publications in groups of ≤ 50: one claim and one record per group (5 groups), not 2 per publication.
    assert commits["COMMIT"] <= 2 * 5 + 2, commits
    media = list((home.archive_dir / "alice").glob("*/media-1.jpg"))
    assert len(media) == 40 and all(m.read_bytes() == b"\xff\xd8 photo" * 500 for m in media)


def test_a_group_cut_between_claim_and_record_is_published_once(
    tmp_path: Path, alice_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, texts = _hand_off(tmp_path, alice_key, 30)
    real = ArchivePlatform.publish_batch

    async def then_crash(self: ArchivePlatform, reqs: list, session: object = None) -> list:  # type: ignore[type-arg]
        await real(self, reqs[: len(reqs) // 2], session)  # half of it reached the disk
        raise KeyboardInterrupt("killed before the record transaction")

    monkeypatch.setattr(ArchivePlatform, "publish_batch", then_crash)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(publish_due(home, 2**50))
    assert {s for (s,) in home.conn.execute("SELECT state FROM publications")} == {"publishing"}
    monkeypatch.setattr(ArchivePlatform, "publish_batch", real)
    asyncio.run(publish_due(home, 2**50))
    _assert_exactly_once(home, texts)


def test_a_group_that_cannot_be_written_goes_one_by_one(
    tmp_path: Path, alice_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, texts = _hand_off(tmp_path, alice_key, 12)

    async def disk_trouble(self: ArchivePlatform, reqs: list, session: object = None) -> list:  # type: ignore[type-arg]
        raise PublishError("archive write failed: [Errno 28] No space left on device", retryable=True)

    monkeypatch.setattr(ArchivePlatform, "publish_batch", disk_trouble)
    outcomes = asyncio.run(publish_due(home, 2**50))
    # The one-by-one path looked each up and published it (only the group write was broken).
    assert Counter(o.state for o in outcomes) == {"published": len(texts) * len(ACCOUNTS)}
    _assert_exactly_once(home, texts)


def _allocated_bytes(root: Path) -> int:
    """Bytes the files under ``root`` take on disk, each inode counted once (as `du` does)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for p in root.rglob("*"):
        st = p.lstat()
        if p.is_file() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


@pytest.mark.parametrize("group", [True, False], ids=["group", "one-by-one"])
def test_ground_keeps_one_copy_of_each_photo(
    tmp_path: Path, alice_key: SigningKey, monkeypatch: pytest.MonkeyPatch, group: bool
) -> None:
    """The store and two archive accounts share one copy of a photo (hard links), byte-exact."""
    if not group:
        monkeypatch.setattr(ArchivePlatform, "publish_batch", None)  # the one-by-one path
    photo = os.urandom(3 * 1024 * 1024)
    home, texts = _hand_off(tmp_path, alice_key, 3, photo=photo)  # one post carries it
    asyncio.run(publish_due(home, 2**50))
    _assert_exactly_once(home, texts)
    copies = list(home.archive_dir.glob("*/*/media-1.jpg"))
    assert len(copies) == 2 and all(c.read_bytes() == photo for c in copies)
    used = _allocated_bytes(home.root)
    assert len(photo) <= used < len(photo) + 2 * 1024 * 1024, (
        f"{used:,} bytes on disk for one {len(photo):,}-byte photo"
    )


def test_the_archive_copies_a_photo_it_cannot_link(
    tmp_path: Path, alice_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    photo = os.urandom(100_000)
    home, texts = _hand_off(tmp_path, alice_key, 1, photo=photo)
    asyncio.run(publish_due(home, 2**50))
    copies = list(home.archive_dir.glob("*/*/media-1.jpg"))
    assert len(copies) == 2 and all(c.read_bytes() == photo and c.stat().st_nlink == 1 for c in copies)


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_batch_files_get_exactly_their_mode_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        with FileBatch(tmp_path) as batch:
            batch.create(tmp_path / "private", b"x")
            batch.put(tmp_path / "read-only", b"y", 0o400)
            batch.sync()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "read-only").stat().st_mode) == 0o400


def test_a_group_write_that_crashes_goes_one_by_one(
    tmp_path: Path, alice_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter bug in the group path must not leave a group 'publishing' pass after pass."""
    home, texts = _hand_off(tmp_path, alice_key, 5)

    async def bug(self: ArchivePlatform, reqs: list, session: object = None) -> list:  # type: ignore[type-arg]
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ArchivePlatform, "publish_batch", bug)
    asyncio.run(publish_due(home, 2**50))
    _assert_exactly_once(home, texts)
