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

from durable.files import fsync_dir, write_atomic
from protocol.mediatype import EXTENSIONS

from ..errors import PublishError
from .base import Published, PublishRequest

# Batch statements, one file each, beside the account folders (no account may start with '.').
STATEMENTS = ".statements"


class ArchivePlatform:
    name = "archive"

    def __init__(self, root: Path) -> None:
        self.root = root

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

    def _keep_statement(self, statement: bytes) -> str | None:
        """Write a batch statement once under the archive root; returns its sha256 (hex)."""
        if not statement:
            return None
        sha = hashlib.sha256(statement).hexdigest()
        path = self.root / STATEMENTS / f"{sha}.bin"
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_atomic(path, statement, 0o400)
        return sha

    def _write_post(self, req: PublishRequest, final: Path) -> None:
        """Write the post's folder under a temporary name, then rename it into place."""
        tmp = final.with_name(f".{final.name}.partial")
        if tmp.exists():
            shutil.rmtree(tmp)
        # Private like the rest of ground's home: embargoed posts and their signatures.
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        final.parent.mkdir(mode=0o700, exist_ok=True)
        tmp.mkdir(mode=0o700)
        text = req.post.text.encode("utf-8")
        files = {"text.txt": text}
        for i, (ref, data) in enumerate(req.media, start=1):
            files[f"media-{i}.{EXTENSIONS.get(ref.media_type, 'bin')}"] = data
        # The .partial folder is private until renamed, so its files need no atomic replace of
        # their own: each is written and fsynced, the folder fsynced once before the rename
        # (issue 18: a temporary file and a directory fsync per file were most of `ground ingest`).
        for name, data in files.items():
            _write_synced(tmp / name, data)
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
            "batch_statement_sha256": self._keep_statement(req.statement),
            "batch_statement_file": (
                f"../../{STATEMENTS}/{hashlib.sha256(req.statement).hexdigest()}.bin"
                if req.statement
                else None
            ),
            # Set when the signature covers a Merkle root (bundle format 3, docs/PROTOCOL.md §17):
            # it is then over "orbitpost/batch/v2\0" + tree size (u64) + the root this audit
            # path leads to from sha256(body): ⌈log₂ n⌉ hashes, so every record stays small.
            "batch_proof": None if req.inclusion is None else req.inclusion.to_json(),
            "created_ms": req.post.created_ms,
            "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
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
        _write_synced(tmp / "record.json", json.dumps(record, indent=2, ensure_ascii=False).encode())
        fsync_dir(tmp)
        tmp.rename(final)
        fsync_dir(final.parent)

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


def _write_synced(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` (in a folder nobody reads yet) with ``data`` and exactly ``mode``
    (private, as durable.files.write_atomic), fsynced; the caller fsyncs the folder."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
