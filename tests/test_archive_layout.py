"""The archive's layout 2 (issue 18): text posts packed per group, each record standing alone.

- A packed record proves its post on its own (signed body, signature, audit path) and the
  verifier reads it from the publication's URL; one changed character is named.
- An archive written by an earlier release (a folder per post) is still looked up (nothing
  published twice), read and verified.
- Exactly once through a crash between the index commit and the pack's rename, and when the
  index is lost (rebuilt from the packs).
- Retracting a packed post removes its record from the pack; the others stay.
- Storage: a text post costs no file or folder of its own, well under a 4 KiB block.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import pytest

from benchmarks.bench_scale import make_bundle, make_posts, new_home
from benchmarks.corpus import ASTRONAUTS, BASE_MS, astronaut_key, split
from ground.home import GroundHome
from ground.ingest import ingest_bytes
from ground.platforms.archive import INDEX, PACKS, ArchivePlatform, archived_posts, read_post
from ground.publish import publish_due
from protocol import Post, decode_item
from protocol.batch_tree import BatchInclusion, check_inclusion
from verifier.proof import VerificationFailed
from verifier.readback import read_back

N = 60


def _hand_off(tmp_path: Path, n: int = N) -> tuple[GroundHome, list[Post]]:
    home = new_home(tmp_path / "G")
    posts = make_posts(n, split()[1])
    ingest_bytes(home, make_bundle(posts, n), source="test", now_ms=BASE_MS)
    return home, posts


def _publish(home: GroundHome) -> None:
    asyncio.run(publish_due(home, 2**50))


def _assert_once(home: GroundHome, posts: list[Post]) -> None:
    held = archived_posts(home.archive_dir)
    assert sorted((p.account, p.post_id) for p in held) == sorted((p.author, p.id) for p in posts)
    texts = {p.id: p.text.encode() for p in posts}
    assert all(p.text == texts[p.post_id] for p in held)
    assert not list(home.archive_dir.rglob("*.tmp"))
    states = {s for (s,) in home.conn.execute("SELECT state FROM publications")}
    assert states == {"published"}


def test_a_packed_record_proves_its_post_alone_and_the_verifier_reads_it(tmp_path: Path) -> None:
    home, posts = _hand_off(tmp_path)
    _publish(home)
    _assert_once(home, posts)
    # No file or folder per post: one pack per group (here one), beside the index.
    names = {p.name for p in home.archive_dir.iterdir()}
    assert {n for n in names if not n.startswith(INDEX + "-")} == {PACKS, INDEX}  # -wal, -shm while open
    (pack,) = (home.archive_dir / PACKS).glob("*.jsonl")
    assert pack.stat().st_size < 1024 * N
    for post in posts[:10]:
        held = read_post(home.archive_dir, post.author, post.id)
        assert held is not None and held.location == pack
        rec = held.record
        body = base64.b64decode(rec["signed_body"])
        assert decode_item(body) == post and held.text == post.text.encode()
        inclusion = BatchInclusion.from_json(rec["batch_proof"])
        key = astronaut_key(post.author).public_key
        assert check_inclusion(key, bytes.fromhex(rec["signature"]), body, inclusion)
        # The verifier reads the copy from the URL ground recorded.
        (url,) = home.conn.execute("SELECT url FROM publications WHERE item_id = ?", (post.id,)).fetchone()
        assert url.endswith(f"/{PACKS}/{pack.name}#{post.id}")
        check = read_back(post, {"account": f"archive:{post.author}", "url": url}, pds=None, plc="")
        assert check.checked and "byte-identical" in check.detail
    # One character changed in the pack: the verifier names it.
    victim = posts[3]
    data = pack.read_bytes()
    line = next(x for x in data.splitlines() if victim.id.encode() in x)
    rec = json.loads(line)
    rec["text"] = rec["text"][:-1] + ("?" if rec["text"][-1] != "?" else "!")
    pack.write_bytes(data.replace(line, json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode()))
    (url,) = home.conn.execute("SELECT url FROM publications WHERE item_id = ?", (victim.id,)).fetchone()
    with pytest.raises(VerificationFailed, match="text differs from the signed text"):
        read_back(victim, {"account": f"archive:{victim.author}", "url": url}, pds=None, plc="")
    home.close()


def test_an_archive_from_an_earlier_release_is_looked_up_read_and_verified(tmp_path: Path) -> None:
    home, posts = _hand_off(tmp_path, 9)
    old = posts[0]
    folder = home.archive_dir / old.author / old.id
    folder.mkdir(parents=True)
    (folder / "text.txt").write_bytes(old.text.encode())
    (folder / "record.json").write_text(json.dumps({"post_id": old.id, "author": old.author}, indent=2))
    _publish(home)
    _assert_once(home, posts)  # the old folder counts; no packed copy of it was added
    (url,) = home.conn.execute("SELECT url FROM publications WHERE item_id = ?", (old.id,)).fetchone()
    assert url.endswith(f"/{old.author}/{old.id}")
    check = read_back(old, {"account": f"archive:{old.author}", "url": url}, pds=None, plc="")
    assert check.checked
    held = read_post(home.archive_dir, old.author, old.id)
    assert held is not None and held.location == folder and held.text == old.text.encode()
    home.close()


def test_a_crash_between_the_index_and_the_pack_publishes_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, posts = _hand_off(tmp_path)
    real = ArchivePlatform._stage_pack

    def then_crash(self: ArchivePlatform, batch: object, keys: list[tuple[str, str]], data: bytes) -> str:
        real(self, batch, keys, data)  # type: ignore[arg-type]
        raise KeyboardInterrupt("killed after the index commit, before the pack's rename")

    monkeypatch.setattr(ArchivePlatform, "_stage_pack", then_crash)
    with pytest.raises(KeyboardInterrupt):
        _publish(home)
    assert not list((home.archive_dir / PACKS).glob("*.jsonl"))
    assert archived_posts(home.archive_dir) == []
    monkeypatch.setattr(ArchivePlatform, "_stage_pack", real)
    _publish(home)
    _assert_once(home, posts)
    home.close()


def test_a_lost_index_is_rebuilt_from_the_packs(tmp_path: Path) -> None:
    home, posts = _hand_off(tmp_path)
    _publish(home)
    for name in (INDEX, INDEX + "-wal", INDEX + "-shm"):
        (home.archive_dir / name).unlink(missing_ok=True)
    # Every publication made ambiguous again: the next pass must find each post, not repeat it.
    home.conn.execute("UPDATE publications SET state = 'publishing'")
    _publish(home)
    _assert_once(home, posts)
    assert len(list((home.archive_dir / PACKS).glob("*.jsonl"))) == 1
    home.close()


def test_retracting_a_packed_post_removes_its_record_only(tmp_path: Path) -> None:
    home, posts = _hand_off(tmp_path, 6)
    _publish(home)
    gone, kept = posts[0], posts[1:]
    asyncio.run(ArchivePlatform(home.archive_dir).delete(gone.author, gone.id))
    assert read_post(home.archive_dir, gone.author, gone.id) is None
    (pack,) = (home.archive_dir / PACKS).glob("*.jsonl")
    assert gone.id.encode() not in pack.read_bytes()
    assert sorted(p.post_id for p in archived_posts(home.archive_dir)) == sorted(p.id for p in kept)
    # Retracting again (a retried delete) is harmless.
    asyncio.run(ArchivePlatform(home.archive_dir).delete(gone.author, gone.id))
    home.close()


def test_the_pack_index_is_private(tmp_path: Path) -> None:
    home, _posts = _hand_off(tmp_path, 3)
    _publish(home)
    for p in [home.archive_dir / INDEX, *(home.archive_dir / PACKS).iterdir()]:
        assert os.stat(p).st_mode & 0o077 == 0, p
    assert set(ASTRONAUTS) >= {p.account for p in archived_posts(home.archive_dir)}
    home.close()
