"""How many link request bodies ground holds at once, per station and in all (issue 16 item 9).

aiohttp reads a body into memory when the handler asks for it; with 200 connections each
holding a 4 MiB frame ground grew by 1 GiB. A request takes a slot *after* its token is checked
and *before* its body is read, and keeps it until answered; with no free slot it gets
``503 busy`` (retryable) at once, without a byte of its body read, so a station backs off
instead of ground buffering. Bounds: ``per_station × MAX_FRAME_BYTES`` for one station's
bodies, ``total × MAX_FRAME_BYTES`` for all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(slots=True)
class BodyGate:
    # A station's sender keeps `window` (4) requests in flight plus a receipts poll: 8 leaves room.
    per_station: int = 8
    # 32 × 4 MiB = 128 MiB of request bodies at most, whatever the number of stations.
    total: int = 32
    _held: dict[str, int] = field(default_factory=dict)
    _all: int = 0

    @contextlib.contextmanager
    def slot(self, station: str) -> Iterator[bool]:
        """Yield True holding a slot for one request of ``station``, or False if none is free."""
        if self._all >= self.total or self._held.get(station, 0) >= self.per_station:
            yield False
            return
        self._held[station] = self._held.get(station, 0) + 1
        self._all += 1
        try:
            yield True
        finally:
            self._all -= 1
            left = self._held[station] - 1
            if left:
                self._held[station] = left
            else:
                del self._held[station]
