"""The `archive` platform: posts published to files on local disk.

Layout (version 2, issue 18: a text post costs a few hundred bytes, not a folder of 4 KiB blocks):

- ``<root>/.packs/<name>.jsonl``: text-only posts, one *pack* per group published together.
  One line per (post, account): a compact JSON record that proves the post on its own (post id,
  author, account, the exact text, signer fingerprint, signature, the signed body and, for a
  batch signature, the statement's name or the post's Merkle audit path). A pack appears
  atomically (written, made durable, then renamed), so its presence is the proof its posts were
  published. A post's URL is the pack's with ``#<post id>``.
- ``<root>/.index.db``: which pack holds each (account, post id), for lookups and retractions.
  Rows are committed *before* their pack is renamed into place; a row whose pack does not
  exist (a crash in between) means "not published". The index is derived: if it is missing,
  it is rebuilt from the packs.
- ``<root>/<account>/<post id>/``: a post with photos, as before: ``text.txt`` (exact UTF-8
  bytes), the media files (exact bytes; hard links to ground's stored originals) and
  ``record.json`` (the record above plus each file's sha256). An archive written by an
  earlier release holds every post this way; it is read (:func:`read_post`,
  :func:`archived_posts`, the verifier) and looked up exactly as before.
- ``<root>/.statements/<sha256>.bin``: a format-2 batch statement, kept once per bundle and
  signer, named by the records of its posts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from durable.files import BlobStore, FileBatch, write_atomic
from durable.sqlitedb import open_db, transaction
from protocol.mediatype import EXTENSIONS

from ..errors import PublishError
from .base import Published, PublishRequest

# Batch statements, one file each, beside the account folders (no account may start with '.').
STATEMENTS = ".statements"
PACKS = ".packs"
INDEX = ".index.db"

INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE           -- file name under .packs/
);
CREATE TABLE IF NOT EXISTS posts (
    account  TEXT NOT NULL,
    post_id  TEXT NOT NULL,
    pack     INTEGER NOT NULL REFERENCES packs(id),
    PRIMARY KEY (account, post_id)
) WITHOUT ROWID;
"""

_NOTE = "files written as signed; sha256 in record.json"
# Compact records: no indentation, UTF-8 text as it is (a pretty-printed record with its audit
# path was ~1.4 kB a post, most of a 4 KiB block).
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivedPost:
    """One (post, account) as the archive holds it, whichever layout it was written in."""

    account: str
    post_id: str
    text: bytes  # the exact UTF-8 bytes published
    record: dict[str, Any]
    media: tuple[Path, ...] = ()  # photo files, in order (folder layout only)
    location: Path  # the post's folder, or the pack holding its record


class ArchivePlatform:
    name = "archive"

    def __init__(self, root: Path, blobs: BlobStore | None = None) -> None:
        """``blobs``: ground's store; a photo file is then a hard link to the stored original
        (one copy on disk, issue 18) where both are on one filesystem, else a copy."""
        self.root = root
        self.blobs = blobs
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the index connection is shared by the writer thread
        self._swept = False

    def close(self) -> None:
        """Close the pack index (its -wal and -shm files go); it reopens when next needed."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # --- paths and the index ----------------------------------------------------------------

    def _dir(self, account: str, post_id: str) -> Path:
        _check_account(account)
        return self.root / account / post_id

    def _root_uri(self) -> str:
        return self.root.resolve().as_uri()

    def _index(self) -> sqlite3.Connection:
        """The pack index (opened once; rebuilt from the packs if it was lost). Hold ``_lock``."""
        if self._db is None:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            fresh = not (self.root / INDEX).exists()
            db = open_db(self.root / INDEX, INDEX_SCHEMA, check_same_thread=False)
            # A 500-post group writes ~30 kB of index: keep the WAL from growing past that.
            db.execute("PRAGMA journal_size_limit = 1048576")
            if fresh and (self.root / PACKS).is_dir():
                _reindex(db, self.root / PACKS)
            self._db = db
        return self._db

    def _where(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """URL of each (account, post id) of ``keys`` already in the archive (either layout)."""
        found: dict[tuple[str, str], str] = {}
        root_uri = self._root_uri()
        by_account: dict[str, list[str]] = {}
        for account, post_id in keys:
            by_account.setdefault(account, []).append(post_id)
        for account, ids in by_account.items():
            # One stat per account, not per post, where an account has only text posts.
            if os.path.isdir(os.path.join(self.root, account)):
                for post_id in ids:
                    if os.path.exists(os.path.join(self.root, account, post_id, "record.json")):
                        found[account, post_id] = f"{root_uri}/{account}/{post_id}"
        if len(found) == len(keys) or not (self.root / INDEX).exists() and not (self.root / PACKS).is_dir():
            return found
        packs_exist: dict[str, bool] = {}
        with self._lock:
            db = self._index()
            for account, ids in by_account.items():
                for i in range(0, len(ids), 500):  # SQLite's bound-parameter limit
                    part = ids[i : i + 500]
                    rows = db.execute(
                        "SELECT p.post_id, k.name FROM posts p JOIN packs k ON k.id = p.pack "
                        f"WHERE p.account = ? AND p.post_id IN ({','.join('?' * len(part))})",
                        [account, *part],
                    ).fetchall()
                    for post_id, name in rows:
                        if name not in packs_exist:
                            packs_exist[name] = os.path.exists(os.path.join(self.root, PACKS, name))
                        if packs_exist[name]:  # else: a crash before the pack was renamed into place
                            found[account, post_id] = f"{root_uri}/{PACKS}/{name}#{post_id}"
        return found

    # --- publishing ------------------------------------------------------------------------------

    async def publish(self, req: PublishRequest, session: Any = None) -> Published:
        (published,) = await self._publish_many([req])
        return published

    async def publish_batch(self, reqs: list[PublishRequest], session: Any = None) -> list[Published]:
        """Publish many posts with durability paid once for the group (issue 18).

        Idempotent like :meth:`publish`: a post already in the archive is returned as it is.
        All or nothing as far as the caller knows: raises PublishError if the group could not
        be made durable (some posts may then be there; a later lookup finds them).
        """
        return await self._publish_many(reqs)

    async def _publish_many(self, reqs: list[PublishRequest]) -> list[Published]:
        for r in reqs:
            _check_account(r.account)
        try:
            # fsync-bound writes (whole photos, a pack): off the event loop, awaited, so the
            # order of publications is unchanged.
            urls = await asyncio.to_thread(self._write_posts, reqs)
        except (NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError) as exc:
            # The folder layout is wrong: waiting will not fix it, an operator will (then retry).
            raise PublishError(f"archive write failed: {exc}", retryable=False) from exc
        except (OSError, sqlite3.Error) as exc:  # e.g. disk full: may clear up by itself
            raise PublishError(f"archive write failed: {exc}", retryable=True) from exc
        return [
            Published(
                url=url, remote_id=req.post.id, fidelity="exact", fidelity_note=_NOTE if req.media else ""
            )
            for req, url in zip(reqs, urls, strict=True)
        ]

    def _write_posts(self, reqs: list[PublishRequest]) -> list[str]:
        """Write what is not in the archive yet, durably; returns each request's URL."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self._swept:
            _sweep_temporaries(self.root / PACKS)
            self._swept = True
        keys = [(r.account, r.post.id) for r in reqs]
        urls = self._where(keys)
        root_uri = self._root_uri()
        known: dict[bytes, str] = {}
        lines: list[bytes] = []
        packed: list[tuple[str, str]] = []
        with FileBatch(self.root) as batch:
            for req, key in zip(reqs, keys, strict=True):
                if key in urls:
                    continue  # already published (or earlier in this group)
                if req.media:
                    self._stage_post(req, self.root / req.account / req.post.id, batch, known)
                    urls[key] = f"{root_uri}/{req.account}/{req.post.id}"
                else:
                    lines.append(_dumps(self._record(req, batch, known, f"../{STATEMENTS}")).encode() + b"\n")
                    packed.append(key)
                    urls[key] = ""  # set below, once the pack has a name
            if lines:
                name = self._stage_pack(batch, packed, b"".join(lines))
                for key in packed:
                    urls[key] = f"{root_uri}/{PACKS}/{name}#{key[1]}"
            batch.sync()
        return [urls[k] for k in keys]

    def _stage_pack(self, batch: FileBatch, keys: list[tuple[str, str]], data: bytes) -> str:
        """Index ``keys`` under a new pack (committed now), then stage the pack for ``batch.sync``.

        The index rows are durable before the pack can exist: a pack that exists is always
        indexed, and rows whose pack never appeared (a crash) are replaced when those posts are
        published again.
        """
        packs = self.root / PACKS
        if not packs.is_dir() and not batch.will_create(packs):
            batch.mkdir(packs)
        name = f"{keys[0][1]}-{os.urandom(4).hex()}.jsonl"
        with self._lock:
            db = self._index()
            with transaction(db):
                pack_id = db.execute("INSERT INTO packs (name) VALUES (?) RETURNING id", (name,)).fetchone()[
                    0
                ]
                db.executemany(
                    "INSERT OR REPLACE INTO posts (account, post_id, pack) VALUES (?, ?, ?)",
                    [(a, p, pack_id) for a, p in keys],
                )
        batch.put(packs / name, data)
        return name

    def _keep_statement(self, statement: bytes, batch: FileBatch, known: dict[bytes, str]) -> str | None:
        """Write a batch statement once under the archive root; returns its sha256 (hex).

        ``known``: statements already handled in this batch (a 10,000-post bundle shares three).
        """
        if not statement:
            return None
        if statement in known:
            return known[statement]
        sha = hashlib.sha256(statement).hexdigest()
        path = self.root / STATEMENTS / f"{sha}.bin"
        if not path.exists() and not batch.will_create(path):
            if not path.parent.exists():
                batch.mkdir(path.parent)
            batch.put(path, statement, 0o400)
        known[statement] = sha
        return sha

    def _record(
        self, req: PublishRequest, batch: FileBatch, known: dict[bytes, str], statements: str
    ) -> dict[str, Any]:
        """What proves the post on its own; ``statements``: the statements folder, relative to
        the file holding the record."""
        record: dict[str, Any] = {
            "post_id": req.post.id,
            "account": req.account,
            "author": req.post.author,
            "created_ms": req.post.created_ms,
            "signer_fingerprint": req.signer_fingerprint,
            "signature": req.signature.hex(),
            "signed_body": base64.b64encode(req.body).decode(),
        }
        statement_sha = self._keep_statement(req.statement, batch, known)
        if statement_sha:
            # The signature covers a batch (docs/PROTOCOL.md §14): it is then over
            # "orbitpost/batch/v1\0" + that statement, one of whose 32-byte entries is the
            # body's sha256. The statement lists every post of its signer in the bundle, so
            # it is kept once, in <archive>/.statements/, not copied into each record.
            record["batch_statement_sha256"] = statement_sha
            record["batch_statement_file"] = f"{statements}/{statement_sha}.bin"
        if req.inclusion is not None:
            # The signature covers a Merkle root (bundle format 3, docs/PROTOCOL.md §17): it is
            # then over "orbitpost/batch/v2\0" + tree size (u64) + the root this audit path
            # leads to from sha256(body): ⌈log₂ n⌉ hashes, so every record stays small.
            record["batch_proof"] = req.inclusion.to_json()
        # The astronaut's signed rendition consents (docs/PROTOCOL.md §3.1).
        if req.post.renditions:
            record["renditions_allowed"] = list(req.post.renditions)
        if not req.media:
            record["text"] = req.post.text
        return record

    def _stage_post(
        self, req: PublishRequest, final: Path, batch: FileBatch, known: dict[bytes, str]
    ) -> None:
        """Write a post with photos as a folder under a temporary name; ``batch.sync()`` renames it."""
        tmp = final.with_name(f".{final.name}.partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        # Private like the rest of ground's home: embargoed posts and their signatures.
        if not final.parent.exists() and not batch.will_create(final.parent):
            batch.mkdir(final.parent)
        batch.mkdir(tmp)
        text = req.post.text.encode("utf-8")
        # The .partial folder is private until renamed, so its files need no atomic replace of
        # their own; the batch makes them durable together before any rename.
        batch.create(tmp / "text.txt", text)
        # A photo sent here as a rendition (main's renditions) is not the stored original: copy it.
        made = {r.photo for r in req.renditions}
        names = [
            f"media-{i}.{EXTENSIONS.get(ref.media_type, 'bin')}" for i, (ref, _) in enumerate(req.media, 1)
        ]
        for i, ((ref, data), name) in enumerate(zip(req.media, names, strict=True), start=1):
            if i in made:
                batch.create(tmp / name, data)
            else:
                self._put_media(batch, tmp / name, ref.sha256, data)
        record = self._record(req, batch, known, f"../../{STATEMENTS}")
        record["signed_body_sha256"] = hashlib.sha256(req.body).hexdigest()
        record["files"] = {
            "text.txt": hashlib.sha256(text).hexdigest(),
            **{
                name: hashlib.sha256(data).hexdigest() if i in made else ref.sha256.hex()
                for i, ((ref, data), name) in enumerate(zip(req.media, names, strict=True), start=1)
            },
        }
        record["alt"] = [ref.alt for ref, _ in req.media]
        # What "unchanged" means here (protocol/rules.py): the archive keeps the exact bytes,
        # so each photo file's sha256 equals the signed original's; should a photo have been
        # sent here as a rendition, both hashes and the recipe for it.
        record["media"] = [
            {"sha256": ref.sha256.hex(), "media_type": ref.media_type, "fidelity": "exact"}
            for ref, _ in req.media
        ]
        for r in req.renditions:
            entry = record["media"][r.photo - 1]
            entry.update(fidelity="rendition", original_sha256=r.original_sha256, rendition=asdict(r))
        batch.create(tmp / "record.json", _dumps(record).encode())
        batch.rename(tmp, final)

    def _put_media(self, batch: FileBatch, path: Path, sha256: bytes, data: bytes) -> None:
        """The photo file: a hard link to the stored original if possible, else a copy.

        The stored blob is read-only (0400) and named by its sha256, which equals the signed
        one (checked at ingest and by BlobStore.get when the request was built), so the
        link is the exact bytes; retracting the post unlinks the archive's name only.
        """
        if self.blobs is not None:
            try:
                os.link(self.blobs.path(sha256), path)
            except OSError:  # another filesystem (EXDEV), no hard links, blob gone: copy
                pass
            else:
                batch.written(path)
                return
        batch.create(path, data)

    # --- lookup and retraction -------------------------------------------------------------------

    async def lookup(self, req: PublishRequest, session: Any = None) -> Published | None:
        key = (req.account, req.post.id)
        _check_account(req.account)
        url = (await asyncio.to_thread(self._where, [key])).get(key)
        return None if url is None else Published(url=url, remote_id=req.post.id)

    async def delete(self, account: str, remote_id: str, session: Any = None) -> None:
        _check_account(account)
        await asyncio.to_thread(self._delete, account, remote_id)

    def _delete(self, account: str, post_id: str) -> None:
        final = self.root / account / post_id
        if final.exists():
            gone = final.with_name(f".{final.name}.retracted")
            final.rename(gone)
            shutil.rmtree(gone)
        if not (self.root / INDEX).exists():
            return
        with self._lock:
            db = self._index()
            row = db.execute(
                "SELECT k.id, k.name FROM posts p JOIN packs k ON k.id = p.pack WHERE p.account = ? AND p.post_id = ?",
                (account, post_id),
            ).fetchone()
            if row is None:
                return
            pack_id, name = row
            # The pack first, then the row: a crash in between leaves a row whose pack no longer
            # holds the post, and deleting again only drops the row.
            _drop_from_pack(self.root / PACKS / name, account, post_id)
            with transaction(db):
                db.execute("DELETE FROM posts WHERE account = ? AND post_id = ?", (account, post_id))


def _check_account(account: str) -> None:
    if not account or "/" in account or account.startswith(".") or "\\" in account:
        raise PublishError(f"archive account {account!r} is not a valid folder name", retryable=False)


def _pack_lines(pack: Path) -> Iterable[tuple[bytes, dict[str, Any]]]:
    for line in pack.read_bytes().splitlines():
        if line.strip():
            yield line, json.loads(line)


def _drop_from_pack(pack: Path, account: str, post_id: str) -> None:
    """Rewrite ``pack`` (atomically) without the post's record for ``account``."""
    if not pack.exists():
        return
    kept = [
        line
        for line, rec in _pack_lines(pack)
        if (rec.get("account"), rec.get("post_id")) != (account, post_id)
    ]
    if kept:
        write_atomic(pack, b"".join(line + b"\n" for line in kept))
    else:
        pack.unlink()


def _reindex(db: sqlite3.Connection, packs: Path) -> None:
    """Index every record of every pack (the index was lost; the packs are what counts)."""
    with transaction(db):
        for pack in sorted(packs.glob("*.jsonl")):
            pack_id = db.execute("INSERT INTO packs (name) VALUES (?) RETURNING id", (pack.name,)).fetchone()[
                0
            ]
            db.executemany(
                "INSERT OR REPLACE INTO posts (account, post_id, pack) VALUES (?, ?, ?)",
                [(rec["account"], rec["post_id"], pack_id) for _, rec in _pack_lines(pack)],
            )


def _sweep_temporaries(packs: Path) -> None:
    """Remove packs a killed writer left under their temporary name (never renamed: unpublished).

    Called by the publisher only (one per ground home, ground/publish.py's lock)."""
    try:
        entries = list(os.scandir(packs))
    except FileNotFoundError:
        return
    for e in entries:
        if e.name.startswith(".") and e.name.endswith(".tmp"):
            os.unlink(e.path)


# --- reading the archive (the verifier, tests, an operator) -------------------------------------


def read_post(root: Path, account: str, post_id: str) -> ArchivedPost | None:
    """The archive's copy of ``post_id`` for ``account``, whichever layout holds it, or None."""
    folder = root / account / post_id
    if (folder / "record.json").exists():
        return _read_folder(account, folder)
    if not (root / INDEX).exists():
        return None
    db = sqlite3.connect(f"file:{root / INDEX}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT k.name FROM posts p JOIN packs k ON k.id = p.pack WHERE p.account = ? AND p.post_id = ?",
            (account, post_id),
        ).fetchone()
    finally:
        db.close()
    if row is None or not (root / PACKS / row[0]).exists():
        return None
    return read_packed(root / PACKS / row[0], post_id, account)


def read_packed(pack: Path, post_id: str, account: str | None = None) -> ArchivedPost | None:
    """The record of ``post_id`` (for ``account``, if given) in the pack file ``pack``, or None."""
    needle = f'"post_id":"{post_id}"'.encode()
    for line in pack.read_bytes().splitlines():
        if needle in line:
            rec = json.loads(line)
            if rec.get("post_id") == post_id and account in (None, rec.get("account")):
                return _from_record(pack, rec)
    return None


def archived_posts(root: Path, account: str | None = None) -> list[ArchivedPost]:
    """Every post the archive holds (for ``account``, or all), both layouts, sorted by
    (account, post id); a post held twice would be listed twice."""
    out: list[ArchivedPost] = []
    for pack in sorted((root / PACKS).glob("*.jsonl")) if (root / PACKS).is_dir() else []:
        out.extend(
            _from_record(pack, rec) for _, rec in _pack_lines(pack) if account in (None, rec.get("account"))
        )
    accounts = [root / account] if account else [p for p in root.iterdir() if not p.name.startswith(".")]
    for acct in accounts:
        if acct.is_dir():
            out.extend(_read_folder(acct.name, f) for f in acct.iterdir() if (f / "record.json").exists())
    return sorted(out, key=lambda p: (p.account, p.post_id))


def _from_record(pack: Path, rec: dict[str, Any]) -> ArchivedPost:
    return ArchivedPost(
        account=str(rec["account"]),
        post_id=str(rec["post_id"]),
        text=str(rec.get("text", "")).encode("utf-8"),
        record=rec,
        location=pack,
    )


def _read_folder(account: str, folder: Path) -> ArchivedPost:
    rec = json.loads((folder / "record.json").read_bytes())
    return ArchivedPost(
        account=account,
        post_id=folder.name,
        text=(folder / "text.txt").read_bytes(),
        record=rec,
        media=tuple(sorted(folder.glob("media-*"), key=lambda p: int(p.name.split("-")[1].split(".")[0]))),
        location=folder,
    )
