"""Durable file writes shared by onboard and ground (both must survive a crash mid-write)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


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

    def put_in(self, batch: FileBatch, data: bytes) -> bytes:
        """As :meth:`put`, but durable (and visible) only when ``batch`` is synced."""
        sha = hashlib.sha256(data).digest()
        p = self.path(sha)
        if not p.exists() and not batch.will_create(p):
            if not self.root.exists():
                self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
                batch.written(self.root)
            if not p.parent.exists():
                batch.mkdir(p.parent)
            batch.put(p, data, 0o400)
        return sha

    def check(self, sha256: bytes) -> int:
        """Size of the stored blob after hashing it in 1 MiB pieces (never whole in memory);
        OSError if it is missing or damaged, as :meth:`get`."""
        h = hashlib.sha256()
        size = 0
        with self.path(sha256).open("rb") as f:
            while piece := f.read(1024 * 1024):
                h.update(piece)
                size += len(piece)
        if h.digest() != sha256:
            raise OSError(f"stored blob {sha256.hex()[:12]} is damaged (hash mismatch)")
        return size

    def get(self, sha256: bytes) -> bytes:
        data = self.path(sha256).read_bytes()
        if hashlib.sha256(data).digest() != sha256:
            # Disk rot or tampering: refuse to hand on bytes the signature no longer covers.
            raise OSError(f"stored blob {sha256.hex()[:12]} is damaged (hash mismatch)")
        return data


# Files made durable as a group (issue 18). On ext4 every fsync() flushes the device cache
# (~3 ms here even for a file already written back), so a hand-off of 5,000 posts paying one
# fsync per file could not pass ~150 posts/s. syncfs() makes every file of the filesystem
# durable with one flush; it reports writeback errors since the descriptor it is given was
# opened (Linux >= 5.8), so the batch opens that descriptor before it writes anything.
_libc: Any = None


def _syncfs(fd: int) -> bool:
    """syncfs(2) on ``fd``'s filesystem; False where the call does not exist (not Linux)."""
    import ctypes  # here, not at import: onboard loads this module and never batches

    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.syncfs.argtypes = [ctypes.c_int]
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    if _libc.syncfs(fd) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syncfs failed: {os.strerror(err)}")
    return True


def _umask() -> int:
    """This process's umask, read without changing it (os.umask would, racing other threads);
    0o777 where it cannot be read, so every mode is then set explicitly."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBatch:
    """Many new files, made durable together, then moved into place together.

    ``create`` writes a file nobody reads yet (in a private folder that is renamed later);
    ``put`` writes a file under a temporary name, renamed into ``path`` at :meth:`sync`;
    ``rename`` moves a finished folder (or file) into place at :meth:`sync`. ``sync`` makes
    every written byte durable, then renames, then makes the renames durable: a crash leaves
    each destination absent or whole, never a visible name over unsynced data.

    Durability costs two flushes per batch where syncfs(2) exists, otherwise one fsync per
    file and folder, issued from a few threads so the kernel merges their flushes. Used as a
    context manager, a batch that is not synced removes its temporary files.
    """

    # Threads issuing fsyncs where syncfs is not used; more stopped helping on this machine.
    FSYNC_THREADS = 16
    # Fewer files than this are fsynced one by one (a single post, a photo or two): syncfs
    # would also wait for whatever else is being written on the filesystem.
    SYNCFS_FROM = 8

    def __init__(self, anchor: Path) -> None:
        """``anchor``: an existing folder on the filesystem every path of the batch is on."""
        self._anchor_fd = os.open(anchor, os.O_RDONLY)
        self._umask = _umask()  # a file whose mode it would narrow gets an fchmod (a journal write)
        self._written: list[Path] = []  # files and folders whose content must be durable
        self._moves: list[tuple[Path, Path]] = []
        self._dests: set[Path] = set()
        self._temps: list[Path] = []

    def create(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        """Write a new file ``path`` (exactly ``mode``) now; durable at :meth:`sync`."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            if mode & self._umask:
                os.fchmod(fd, mode)  # the umask took bits of ``mode`` away: give them back
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        self._written.append(path)

    def mkdir(self, path: Path, mode: int = 0o700) -> None:
        """Create a folder now; its entries are durable at :meth:`sync`."""
        path.mkdir(mode=mode)
        self._written.append(path)
        self._dests.add(path)  # will_create() answers for it too

    def put(self, path: Path, data: bytes, mode: int = 0o600) -> None:
        """Write ``data`` under a temporary name now; it becomes ``path`` at :meth:`sync`."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)  # a stale one from a killed run
        self._temps.append(tmp)
        self.create(tmp, data, mode)
        self.rename(tmp, path)

    def written(self, path: Path) -> None:
        """Count ``path`` (made outside the batch, e.g. a parent folder) among what sync flushes."""
        self._written.append(path)

    def will_create(self, path: Path) -> bool:
        """Whether this batch made the folder ``path`` or will move something there at :meth:`sync`."""
        return path in self._dests

    def rename(self, src: Path, dst: Path) -> None:
        """Move ``src`` (written in this batch) to ``dst`` at :meth:`sync`."""
        self._moves.append((src, dst))
        self._dests.add(dst)

    def __len__(self) -> int:
        return len(self._written)

    def sync(self) -> None:
        """Make everything durable and in place; raises OSError (the caller must not commit)."""
        self._flush(self._written)
        for src, dst in self._moves:
            os.replace(src, dst)
        self._temps.clear()
        self._flush(sorted({dst.parent for _, dst in self._moves}))
        self._written.clear()
        self._moves.clear()
        self._dests.clear()

    def _flush(self, paths: list[Path]) -> None:
        if not paths:
            return
        if len(paths) >= self.SYNCFS_FROM and _syncfs(self._anchor_fd):
            return
        if len(paths) == 1:
            _fsync_path(paths[0])
            _fsync_path(paths[0].parent)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.FSYNC_THREADS) as pool:
            list(pool.map(_fsync_path, paths))
        for parent in sorted({p.parent for p in paths}):
            _fsync_path(parent)

    def close(self) -> None:
        """Remove what was written under a temporary name and never moved into place."""
        for tmp in self._temps:
            tmp.unlink(missing_ok=True)
        self._temps.clear()
        if self._anchor_fd >= 0:
            os.close(self._anchor_fd)
            self._anchor_fd = -1

    def __enter__(self) -> FileBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
