"""How many link request bodies ground holds at once, per station and in all (issue 16 item 9).

aiohttp reads a body into memory when the handler asks for it; with 200 connections each
holding a 4 MiB frame ground grew by 1 GiB. A request takes a slot *after* its token is checked
and *before* its body is read, and keeps it until answered; with no free slot it gets
``503 busy`` (retryable) at once, without a byte of its body read, so a station backs off
instead of ground buffering. A slot is counted in bytes (the declared Content-Length, at least
``min_cost_bytes``; ``MAX_FRAME_BYTES`` when undeclared), so a station's parallel streams of
small chunks (issue 14: up to 32 of ≤ 512 KiB) fit where eight 4 MiB frames did. Bounds as
before: ``per_station_bytes`` (8 × MAX_FRAME_BYTES) for one station's bodies, ``total_bytes``
(32 × MAX_FRAME_BYTES) for all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from protocol.transfer_wire import MAX_FRAME_BYTES


@dataclass(slots=True)
class BodyGate:
    # A station's sender keeps up to 32 requests in flight plus a receipts poll, each well under
    # a frame: 8 frames' worth of bytes holds them; 8 × 4 MiB is what one station may pin.
    per_station_bytes: int = 8 * MAX_FRAME_BYTES
    # 32 × 4 MiB = 128 MiB of request bodies at most, whatever the number of stations.
    total_bytes: int = 32 * MAX_FRAME_BYTES
    # What the smallest request costs (so a flood of tiny ones is bounded too).
    min_cost_bytes: int = 64 * 1024
    _held: dict[str, int] = field(default_factory=dict)
    _all: int = 0

    @contextlib.contextmanager
    def slot(self, station: str, size_bytes: int | None = None) -> Iterator[bool]:
        """Yield True holding room for one request of ``station`` whose body declares
        ``size_bytes`` (None: undeclared, counted as a whole frame), or False if there is none."""
        cost = MAX_FRAME_BYTES if size_bytes is None else max(self.min_cost_bytes, size_bytes)
        held = self._held.get(station, 0)
        if self._all + cost > self.total_bytes or held + cost > self.per_station_bytes:
            yield False
            return
        self._held[station] = held + cost
        self._all += cost
        try:
            yield True
        finally:
            self._all -= cost
            left = self._held[station] - cost
            if left:
                self._held[station] = left
            else:
                del self._held[station]
