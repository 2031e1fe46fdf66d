"""Where an onboard home keeps its files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Home:
    root: Path

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def db_path(self) -> Path:
        return self.root / "onboard.db"

    def ensure(self) -> Home:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.keys_dir.mkdir(mode=0o700, exist_ok=True)
        self.blobs_dir.mkdir(mode=0o700, exist_ok=True)
        return self
