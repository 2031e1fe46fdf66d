"""A ground home: the database, the blob store and the archive platform's folder."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from durable.files import BlobStore

from . import db


@dataclass
class GroundHome:
    root: Path
    _conn: sqlite3.Connection | None = field(default=None, repr=False)

    @property
    def db_path(self) -> Path:
        return self.root / "ground.db"

    @property
    def blobs(self) -> BlobStore:
        return BlobStore(self.root / "blobs")

    @property
    def archive_dir(self) -> Path:
        return self.root / "archive"

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._conn = db.connect(self.db_path)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
