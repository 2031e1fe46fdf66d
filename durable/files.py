"""Durable file writes shared by onboard and ground (both must survive a crash mid-write)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old file or the new one, never half.

    The file gets exactly ``mode`` whatever the umask; the default is private (0600): what
    both sides write (bundles, posts, photos, receipts) may be embargoed or personal.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # a umask of 0 must not widen it, nor a stale .tmp keep its old mode
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class BlobStore:
    """Content-addressed files: ``<root>/<first 2 hex>/<sha256 hex>``, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sha256: bytes) -> Path:
        h = sha256.hex()
        return self.root / h[:2] / h

    def has(self, sha256: bytes) -> bool:
        return self.path(sha256).exists()

    def put(self, data: bytes) -> bytes:
        """Store ``data`` (if not already there) and return its sha256."""
        sha = hashlib.sha256(data).digest()
        p = self.path(sha)
        if not p.exists():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            p.parent.mkdir(mode=0o700, exist_ok=True)
            # Read-only (content-addressed, never rewritten) and private like everything here.
            write_atomic(p, data, 0o400)
        return sha

    def get(self, sha256: bytes) -> bytes:
        data = self.path(sha256).read_bytes()
        if hashlib.sha256(data).digest() != sha256:
            # Disk rot or tampering: refuse to hand on bytes the signature no longer covers.
            raise OSError(f"stored blob {sha256.hex()[:12]} is damaged (hash mismatch)")
        return data
