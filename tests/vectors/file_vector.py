"""One vector file and what a reader must make of it: the record receipt_vectors.py and
link_vectors.py both write into the manifest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FileVector:
    name: str
    description: str
    data: bytes
    expect: dict[str, Any]

    def manifest_entry(self) -> dict[str, Any]:
        """The vector's manifest entry: its file, size, sha256 and expectation."""
        return {
            "file": f"{self.name}.bin",
            "description": self.description,
            "size_bytes": len(self.data),
            "sha256": hashlib.sha256(self.data).hexdigest(),
            "expect": self.expect,
        }
