"""What `onboard sync` last saw of the link, kept in the queue database for the compose page.

The page must add no bytes to the space link, so it never asks ground anything: it shows
what the running sync recorded here (up or down, last answer from ground, the rate at which
ground acknowledged bytes). Writes are throttled: at most one a second, plus every change
of up/down.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field

from . import link

STATE_KEY = "ui_link_status"
# A rate measured over less than this is noise (one chunk's round trip).
MIN_RATE_WINDOW_S = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkStatus:
    up: bool | None  # None: no sync has run yet on this laptop
    reason: str = ""
    last_contact_ms: int | None = None
    rate_bps: float | None = None  # ground-acknowledged bytes per second, last measured
    updated_ms: int | None = None


def read(conn: sqlite3.Connection) -> LinkStatus:
    """The last recorded status (``up=None`` when no sync ever ran)."""
    link.ensure_schema(conn)
    raw = link.get_state(conn, STATE_KEY, "")
    if not raw:
        return LinkStatus(up=None)
    try:
        d = json.loads(raw)
        return LinkStatus(
            up=bool(d["up"]),
            reason=str(d.get("reason", "")),
            last_contact_ms=d.get("last_contact_ms"),
            rate_bps=d.get("rate_bps"),
            updated_ms=d.get("updated_ms"),
        )
    except (ValueError, KeyError, TypeError):
        return LinkStatus(up=None)


@dataclass(slots=True)
class Recorder:
    """Fed by sync's events; writes LinkStatus to ``conn`` now and then."""

    conn: sqlite3.Connection
    up: bool = True
    reason: str = ""
    last_contact_ms: int | None = None
    rate_bps: float | None = None
    _window_start: float | None = None
    _window_bytes: int = 0
    _written_at: float = 0.0
    _dirty: bool = field(default=False)

    def __post_init__(self) -> None:
        # Carry on from what the last sync saw: a sync that never reaches ground must not
        # erase the last contact, nor claim the link is up.
        prev = read(self.conn)
        self.last_contact_ms, self.rate_bps = prev.last_contact_ms, prev.rate_bps
        if prev.up is not None:
            self.up, self.reason = prev.up, prev.reason

    def contact(self) -> None:
        """Ground answered a request: the link is up."""
        self.last_contact_ms = int(time.time() * 1000)
        if not self.up:
            self.link(True)
        self._dirty = True

    def link(self, up: bool, reason: str = "") -> None:
        if up != self.up:
            self.up, self.reason = up, reason
            self._window_start, self._window_bytes = None, 0
            self._written_at = 0.0  # a change of state is shown at once
        self._dirty = True

    def acked(self, new_bytes: int) -> None:
        """Ground acknowledged ``new_bytes`` more bytes."""
        now = time.monotonic()
        if self._window_start is None:
            self._window_start, self._window_bytes = now, 0
            return
        self._window_bytes += new_bytes
        span = now - self._window_start
        if span >= MIN_RATE_WINDOW_S:
            self.rate_bps = self._window_bytes / span
            self._window_start, self._window_bytes = now, 0
        self._dirty = True

    def idle(self) -> None:
        """Nothing is being sent: the next burst measures from its own start."""
        self._window_start, self._window_bytes = None, 0

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._dirty or (not force and now - self._written_at < 1.0):
            return
        doc = {
            "up": self.up,
            "reason": self.reason,
            "last_contact_ms": self.last_contact_ms,
            "rate_bps": self.rate_bps,
            "updated_ms": int(time.time() * 1000),
        }
        link.set_state(self.conn, STATE_KEY, json.dumps(doc))
        self._written_at, self._dirty = now, False
