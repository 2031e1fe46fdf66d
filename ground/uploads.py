"""Where link uploads are staged on ground, made durable and committed.

Staged bytes live in ``<home>/uploads/<station>/<kind>-<sha256>.part``; each chunk is
written with pwrite and fsynced before the receiver may acknowledge it (§8.3). The
``transfers`` table (ground/db.py) holds each upload's durable ranges. Committing verifies
the whole: a blob must hash to its name, a bundle goes through ``ingest_bytes`` like a
file hand-off (atomic, idempotent); only then does it become visible.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import msgpack

from durable.files import fsync_dir
from protocol import RemoteProtocolError
from protocol.codecs import decode_section
from protocol.limits import DEFAULT_LIMITS
from protocol.rangeset import RangeSet
from protocol.transfer import UploadRecord
from protocol.transfer_wire import TransferKey, TransferKind, UploadState, unpack_coded_blob

from .db import transaction
from .errors import BundleRejected
from .home import GroundHome
from .ingest import decoders, ingest_bytes
from .receipts import station_source

_STATE_TO_DB = {
    UploadState.RECEIVING: "receiving",
    UploadState.COMMITTED: "complete",
    UploadState.REJECTED: "failed",
}
_STATE_FROM_DB = {v: k for k, v in _STATE_TO_DB.items()}


def _db_kind(key: TransferKey) -> str:
    """The ``transfers.kind`` column: 'blob' for a photo in any form, 'bundle' for a bundle."""
    return "bundle" if key.kind is TransferKind.BUNDLE else "blob"


def transfer_id(station: str, key: TransferKey) -> str:
    return f"{station}/{key.name}"


class UploadStore:
    """The ground driver's storage for the transfer receiver.

    ``commit`` runs in a worker thread (ground/server.py) with a database connection of its
    own (``worker``), so a long verification never holds the event loop's connection or
    interleaves with its transactions; SQLite's locking orders the two writers.
    """

    def __init__(self, home: GroundHome) -> None:
        self.home = home
        self.root = home.root / "uploads"
        self.worker = GroundHome(home.root)

    def close(self) -> None:
        self.worker.close()

    def path(self, station: str, key: TransferKey) -> Path:
        return self.root / station / f"{key.kind.name.lower()}-{key.sha256.hex()}.part"

    def have(self, key: TransferKey, home: GroundHome | None = None) -> bool:
        """Does ground already hold this, whole and verified (from any station or a file)?"""
        home = home or self.home
        if key.kind in (TransferKind.BLOB, TransferKind.CODED_BLOB):
            return home.blobs.has(key.sha256)
        row = home.conn.execute("SELECT 1 FROM bundles WHERE sha256 = ?", (key.sha256.hex(),)).fetchone()
        return row is not None

    def load_records(self) -> list[UploadRecord]:
        """Uploads still receiving, and refused ones (so a re-send hears the same reason)."""
        out = []
        for (
            station,
            tid,
            sha,
            owner,
            state,
            total,
            ranges,
            code,
            msg,
            started,
            updated,
        ) in self.home.conn.execute(
            "SELECT station, transfer_id, sha256, owner, state, total_bytes, ranges, code, message, started_ms, "
            "updated_ms "
            "FROM transfers WHERE state IN ('receiving', 'failed')"
        ):
            flat = msgpack.unpackb(ranges)
            out.append(
                UploadRecord(
                    station=station,
                    # transfer_id is "<station>/<kind>:<sha>"; the kind column says 'blob' for both photo forms.
                    key=TransferKey(
                        kind=TransferKind[tid.split("/", 1)[1].split(":")[0].upper()], sha256=sha
                    ),
                    size_bytes=total,
                    owner=owner,
                    ranges=RangeSet(zip(flat[::2], flat[1::2], strict=True)),
                    state=_STATE_FROM_DB[state],
                    code=code or "",
                    message=msg or "",
                    created=started / 1000,
                    updated=updated / 1000,
                )
            )
        return out

    def write(self, station: str, key: TransferKey, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset`` and fsync: when this returns, the bytes survive a crash."""
        path = self.path(station, key)
        new = not path.exists()
        self.root.mkdir(mode=0o700, exist_ok=True)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            pos = offset
            while view:
                n = os.pwrite(fd, view, pos)
                view, pos = view[n:], pos + n
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(path.parent)  # the file's name must survive a crash too

    def persist(self, rec: UploadRecord) -> None:
        """Record an upload's state and durable ranges (one transaction)."""
        conn = self.home.conn
        with transaction(conn):
            conn.execute(
                "INSERT INTO transfers (transfer_id, station, kind, sha256, source, owner, state, total_bytes, "
                "received_bytes, ranges, code, message, started_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(transfer_id) DO UPDATE SET state = excluded.state, received_bytes = excluded.received_bytes, "
                "ranges = excluded.ranges, code = excluded.code, message = excluded.message, "
                "updated_ms = excluded.updated_ms",
                (
                    transfer_id(rec.station, rec.key),
                    rec.station,
                    _db_kind(rec.key),
                    rec.key.sha256,
                    f"link:{rec.station}",
                    rec.owner,
                    _STATE_TO_DB[rec.state],
                    rec.size_bytes,
                    rec.ranges.total,
                    msgpack.packb(rec.ranges.to_wire()),
                    rec.code or None,
                    rec.message or None,
                    int(rec.created * 1000),
                    int(rec.updated * 1000),
                ),
            )

    def commit(
        self, station: str, key: TransferKey, size_bytes: int, now_ms: int
    ) -> tuple[UploadState, str, str]:
        """Verify the staged upload and make it visible; returns (state, code, message).

        Idempotent, so a commit that failed at any step (disk full, database locked: the
        OSError or sqlite3.Error propagates to the caller) is simply run again: what an earlier
        attempt already made durable (the blob, the accepted bundle) is found, not redone.
        """
        path = self.path(station, key)
        home = self.worker
        if self.have(key, home):
            path.unlink(missing_ok=True)
            return UploadState.COMMITTED, "", ""
        data = path.read_bytes()[:size_bytes]
        if key.kind is TransferKind.CODED_BLOB:
            try:
                data = self._decode(data)
            except RemoteProtocolError as exc:
                path.unlink(missing_ok=True)
                return UploadState.REJECTED, str(exc.code), f"coded photo {key.sha256.hex()[:12]}: {exc}"
        if key.kind in (TransferKind.BLOB, TransferKind.CODED_BLOB):
            if hashlib.sha256(data).digest() != key.sha256:
                result = (
                    UploadState.REJECTED,
                    "media_hash_mismatch",
                    f"photo {key.sha256.hex()[:12]} arrived with different bytes (sha256 mismatch)",
                )
            else:
                home.blobs.put(data)
                result = (UploadState.COMMITTED, "", "")
        else:
            try:
                ingest_bytes(home, data, source=station_source(station), now_ms=now_ms)
                result = (UploadState.COMMITTED, "", "")
            except BundleRejected as exc:
                result = (UploadState.REJECTED, str(exc.code), exc.message)
        path.unlink(missing_ok=True)
        return result

    def _decode(self, data: bytes) -> bytes:
        """Rebuild the original photo from its transport codec, bounded by its declared size."""
        codec, raw_size, stored = unpack_coded_blob(data, max_raw_bytes=DEFAULT_LIMITS.max_blob_bytes)
        return decode_section(codec, stored, raw_size, decoders(), "coded photo")

    def expire(self, station: str, key: TransferKey) -> None:
        self.path(station, key).unlink(missing_ok=True)
        conn = self.home.conn
        with transaction(conn):
            conn.execute("DELETE FROM transfers WHERE transfer_id = ?", (transfer_id(station, key),))
