"""The `archive` platform: posts published to folders on local disk.

Layout: ``<root>/<account>/<post id>/`` holding ``text.txt`` (exact UTF-8 bytes), the
media files (exact bytes) and ``record.json`` (post id, author, signer fingerprint,
signature and the sha256 of every published byte). A format-2 post's batch statement is kept
once per bundle and signer in ``<root>/.statements/<sha256>.bin``, named by the record. A post folder appears atomically
(built beside it, then renamed), so its presence is the proof it was published.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

from durable.files import BlobStore, FileBatch
from protocol.mediatype import EXTENSIONS

from ..errors import PublishError
from .base import Published, PublishRequest

# Batch statements, one file each, beside the account folders (no account may start with '.').
STATEMENTS = ".statements"


class ArchivePlatform:
    name = "archive"

    def __init__(self, root: Path, blobs: BlobStore | None = None) -> None:
        """``blobs``: ground's store; a photo file is then a hard link to the stored original
        (one copy on disk, issue 18) where both are on one filesystem, else a copy."""
        self.root = root
        self.blobs = blobs

    def _dir(self, account: str, post_id: str) -> Path:
        if "/" in account or account.startswith(".") or "\\" in account:
            raise PublishError(f"archive account {account!r} is not a valid folder name", retryable=False)
        return self.root / account / post_id

    async def publish(self, req: PublishRequest, session: Any = None) -> Published:
        existing = await self.lookup(req, session)
        if existing is not None:
            return existing
        final = self._dir(req.account, req.post.id)
        try:
            # fsync-bound writes of whole photos: off the event loop, awaited, so the order of
            # publications is unchanged.
            await asyncio.to_thread(self._write_post, req, final)
        except (NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError) as exc:
            # The folder layout is wrong: waiting will not fix it, an operator will (then retry).
            raise PublishError(f"archive write failed: {exc}", retryable=False) from exc
        except OSError as exc:  # e.g. disk full: may clear up by itself
            raise PublishError(f"archive write failed: {exc}", retryable=True) from exc
        return Published(
            url=final.resolve().as_uri(),
            remote_id=req.post.id,
            fidelity="exact",
            fidelity_note="files written as signed; sha256 in record.json" if req.media else "",
        )

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

    def _write_post(self, req: PublishRequest, final: Path) -> None:
        """Write one post's folder and make it durable (see :meth:`_stage_post`)."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with FileBatch(self.root) as batch:
            self._stage_post(req, final, batch, {})
            batch.sync()

    def _stage_post(
        self, req: PublishRequest, final: Path, batch: FileBatch, known: dict[bytes, str]
    ) -> None:
        """Write the post's folder under a temporary name; ``batch.sync()`` renames it into place."""
        tmp = final.with_name(f".{final.name}.partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        # Private like the rest of ground's home: embargoed posts and their signatures.
        if not final.parent.exists() and not batch.will_create(final.parent):
            batch.mkdir(final.parent)
        batch.mkdir(tmp)
        text = req.post.text.encode("utf-8")
        files = {"text.txt": text}
        # The .partial folder is private until renamed, so its files need no atomic replace of
        # their own; the batch makes them durable together before any rename (issue 18: one
        # fsync per file was most of `ground ingest`).
        for name, data in files.items():
            batch.create(tmp / name, data)
        # A photo sent here as a rendition (main's renditions) is not the stored original: copy it.
        made = {r.photo for r in req.renditions}
        for i, (ref, _data) in enumerate(req.media, start=1):
            path = tmp / f"media-{i}.{EXTENSIONS.get(ref.media_type, 'bin')}"
            if i in made:
                batch.create(path, _data)
            else:
                self._put_media(batch, path, ref.sha256, _data)
        statement_sha = self._keep_statement(req.statement, batch, known)
        record: dict[str, Any] = {
            "post_id": req.post.id,
            "author": req.post.author,
            "account": req.account,
            "signer_fingerprint": req.signer_fingerprint,
            "signature": req.signature.hex(),
            "signed_body_sha256": hashlib.sha256(req.body).hexdigest(),
            "signed_body": base64.b64encode(req.body).decode(),
            # Set when the signature covers a batch (docs/PROTOCOL.md §14): it is then over
            # "orbitpost/batch/v1\0" + that statement, one of whose 32-byte entries is the
            # body's sha256. The statement lists every post of its signer in the bundle, so
            # it is kept once, in <archive>/.statements/, not copied into each record.
            "batch_statement_sha256": statement_sha,
            "batch_statement_file": f"../../{STATEMENTS}/{statement_sha}.bin" if statement_sha else None,
            # Set when the signature covers a Merkle root (bundle format 3, docs/PROTOCOL.md §17):
            # it is then over "orbitpost/batch/v2\0" + tree size (u64) + the root this audit
            # path leads to from sha256(body): ⌈log₂ n⌉ hashes, so every record stays small.
            "batch_proof": None if req.inclusion is None else req.inclusion.to_json(),
            "created_ms": req.post.created_ms,
            "files": {
                **{name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
                **{
                    f"media-{i}.{EXTENSIONS.get(ref.media_type, 'bin')}": (
                        hashlib.sha256(data).hexdigest() if i in made else ref.sha256.hex()
                    )
                    for i, (ref, data) in enumerate(req.media, start=1)
                },
            },
            "alt": [ref.alt for ref, _ in req.media],
            # What "unchanged" means here (protocol/rules.py): the archive keeps the exact
            # bytes, so each photo file's sha256 equals the signed original's.
            "media": [
                {"sha256": ref.sha256.hex(), "media_type": ref.media_type, "fidelity": "exact"}
                for ref, _ in req.media
            ],
        }
        # The astronaut's signed rendition consents (docs/PROTOCOL.md §3.1), and, should a
        # photo have been sent here as a rendition, both hashes and the recipe for it.
        if req.post.renditions:
            record["renditions_allowed"] = list(req.post.renditions)
        for r in req.renditions:
            entry = record["media"][r.photo - 1]
            entry.update(fidelity="rendition", original_sha256=r.original_sha256, rendition=asdict(r))
        batch.create(tmp / "record.json", json.dumps(record, indent=2, ensure_ascii=False).encode())
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

    async def publish_batch(self, reqs: list[PublishRequest], session: Any = None) -> list[Published]:
        """Publish many posts with durability paid once for the group (issue 18).

        Idempotent like :meth:`publish`: a post already in the archive is returned as it is.
        All or nothing as far as the caller knows: raises PublishError if the group could not
        be made durable (some folders may then exist; a later lookup finds them).
        """
        finals = [self._dir(r.account, r.post.id) for r in reqs]
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        root = self.root.resolve()  # once, not per post (a realpath is a stat per component)
        try:
            await asyncio.to_thread(self._write_posts, reqs, finals)
        except (NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError) as exc:
            raise PublishError(f"archive write failed: {exc}", retryable=False) from exc
        except OSError as exc:
            raise PublishError(f"archive write failed: {exc}", retryable=True) from exc
        account_uris: dict[str, str] = {}  # Path.as_uri once per account, not per post
        for req in reqs:
            if req.account not in account_uris:
                account_uris[req.account] = (root / req.account).as_uri()
        return [
            Published(
                url=f"{account_uris[req.account]}/{req.post.id}",  # a post id is a ULID: URL-safe
                remote_id=req.post.id,
                fidelity="exact",
                fidelity_note="files written as signed; sha256 in record.json" if req.media else "",
            )
            for req, final in zip(reqs, finals, strict=True)
        ]

    def _write_posts(self, reqs: list[PublishRequest], finals: list[Path]) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        known: dict[bytes, str] = {}
        with FileBatch(self.root) as batch:
            for req, final in zip(reqs, finals, strict=True):
                if not (final / "record.json").exists() and not batch.will_create(final):
                    self._stage_post(req, final, batch, known)
            batch.sync()

    async def lookup(self, req: PublishRequest, session: Any = None) -> Published | None:
        final = self._dir(req.account, req.post.id)
        if (final / "record.json").exists():
            return Published(url=final.resolve().as_uri(), remote_id=req.post.id)
        return None

    async def delete(self, account: str, remote_id: str, session: Any = None) -> None:
        final = self.root / account / remote_id
        if final.exists():
            gone = final.with_name(f".{final.name}.retracted")
            final.rename(gone)
            shutil.rmtree(gone)
