"""Fallback transfer: onboard's real bundler, one HTTP POST per bundle, ground's real ingest.

Used when the resumable transfer machine (protocol/transfer*.py) is not available: a cut
mid-bundle means the whole bundle goes again, which the report counts as bytes resent.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from ground.errors import BundleRejected
from ground.ingest import ingest_bytes
from onboard import queue
from onboard.export import build_batch_bundle, plan_batches

from .clock import EventLoop, Timer
from .link import SimLink
from .system import EPOCH_MS, Ground, Station, Tracker
from .vhttp import HttpClient, HttpResponse, ServerConn

BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0)
TOKEN = "sim-station-token-0123456789abcdef0123456789abcdef"


class BundlePostDriver:
    """Sends every queued item as bundles of at most ``target_bytes``, text-only posts first."""

    name = "bundle-post"
    description = "onboard's bundler + one HTTP POST per bundle (no resume: a cut resends the bundle)"

    def __init__(
        self,
        loop: EventLoop,
        link: SimLink,
        station: Station,
        ground: Ground,
        tracker: Tracker,
        schedule_publish: Callable[[], None],
        target_bytes: int = 256 * 1024,
    ) -> None:
        self.loop = loop
        self.station = station
        self.ground = ground
        self.tracker = tracker
        self.schedule_publish = schedule_publish
        self.target_bytes = target_bytes
        self.http = HttpClient(loop, link, lambda: ServerConn(self.handle))
        self.current: tuple[str, list[str], bytes] | None = None
        self.attempts = 0
        self.retry: Timer | None = None
        self.app_resent_bytes = 0
        self.requests = 0

    def now_ms(self) -> int:
        return EPOCH_MS + round(self.loop.now * 1000)

    # station side ----------------------------------------------------------------------
    def kick(self) -> None:
        """Start sending if there is something to send and nothing is in progress."""
        if self.http.pending is not None or self.retry is not None:
            return
        if self.current is None:
            waiting = queue.items(self.station.conn, status="queued")
            if not waiting:
                return
            batch = plan_batches(waiting, self.target_bytes)[0]
            bundle_id, data = build_batch_bundle(self.station.home, batch, self.now_ms())
            self.current = (bundle_id, [q.item.id for q in batch], data)
            self.attempts = 0
        _, _, data = self.current
        if self.attempts:
            self.app_resent_bytes += len(data)
        self.attempts += 1
        self.requests += 1
        self.http.request(
            "POST",
            "/v1/bundles",
            data,
            [("Content-Type", "application/octet-stream"), ("Authorization", f"Bearer {TOKEN}")],
            self._done,
            self._failed,
        )

    def _done(self, resp: HttpResponse) -> None:
        assert self.current is not None
        bundle_id, ids, data = self.current
        if resp.status != 200:
            self.tracker.rejected.append(f"bundle {bundle_id}: HTTP {resp.status} {resp.body[:200]!r}")
        queue.mark_exported(self.station.conn, ids, bundle_id, "link", hashlib.sha256(data).digest())
        self.current = None
        self.kick()

    def _failed(self, reason: str) -> None:
        delay = BACKOFF_S[min(self.attempts - 1, len(BACKOFF_S) - 1)]
        self.retry = self.loop.after(delay, self._retry)

    def _retry(self) -> None:
        self.retry = None
        self.kick()

    # ground side -------------------------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        if method != "POST" or target != "/v1/bundles":
            return 404, "application/json", b'{"error": "no such endpoint"}'
        try:
            r = ingest_bytes(self.ground.home, body, source="sim-link", now_ms=self.now_ms())
        except BundleRejected as exc:
            return (
                422,
                "application/json",
                json.dumps({"error": str(exc.code), "message": exc.message}).encode(),
            )
        self.tracker.received(r.post_ids, self.loop.now)
        self.schedule_publish()
        return (
            200,
            "application/json",
            json.dumps({"outcome": str(r.outcome), "bundle_id": r.bundle_id}).encode(),
        )

    def finish(self) -> None:
        """The run is over (a transfer driver keeps its link memory here; this one has none)."""

    def stats(self) -> dict[str, int]:
        return {"requests": self.requests, "app_resent_bytes": self.app_resent_bytes}
