"""Platform handles an adapter must not lose: media ids, upload URLs, container ids.

Written atomically and durably *before* the step that publishes (docs/platforms.md, "No
duplicates"): after a crash or an ambiguous timeout the adapter finds what it already made
(an uploaded image it can attach again, a container it can publish or look up) instead of
making a second one. One JSON object per (account, post) under
``<ground home>/platform-state/<quoted platform:account>/<post id>.json``.
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

from durable.files import write_atomic


class HandleStore:
    """The handles files under ``root``; values are JSON (strings, numbers, lists)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, target: str, post_id: str) -> Path:
        if not post_id.isalnum():
            raise ValueError(f"not a post id: {post_id!r}")
        return self.root / urllib.parse.quote(target, safe="") / f"{post_id}.json"

    def get(self, target: str, post_id: str) -> dict[str, Any]:
        """Everything saved for this post on this account ({} if nothing yet)."""
        try:
            data = json.loads(self._path(target, post_id).read_bytes())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def put(self, target: str, post_id: str, **values: Any) -> dict[str, Any]:
        """Merge ``values`` into the saved handles, durably; returns the new whole."""
        path = self._path(target, post_id)
        data = {**self.get(target, post_id), **values}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data, sort_keys=True).encode(), mode=0o600)  # fsyncs file and folder
        return data

    def drop(self, target: str, post_id: str) -> None:
        """Forget this post's handles (once it is published or retracted)."""
        self._path(target, post_id).unlink(missing_ok=True)
