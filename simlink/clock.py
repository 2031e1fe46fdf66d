"""A deterministic discrete-event core: a virtual clock and a heap of timed callbacks.

Events at the same instant run in the order they were scheduled (a sequence number breaks
ties), so a run depends only on its inputs and its seed, never on the machine's speed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any


class Timer:
    """A scheduled callback; ``cancel()`` makes it a no-op."""

    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """Virtual time in seconds from the start of the run."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = 0
        self.events_run = 0

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Run ``fn(*args)`` at virtual time ``when`` (never earlier than now)."""
        t = Timer(max(when, self.now), fn, args)
        self._seq += 1
        heapq.heappush(self._heap, (t.when, self._seq, t))
        return t

    def after(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> Timer:
        return self.at(self.now + delay_s, fn, *args)

    def run_until(self, until: float) -> None:
        """Run every event due up to ``until``, then leave the clock at ``until``."""
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, t = heapq.heappop(heap)
            if t.cancelled:
                continue
            self.now = when
            self.events_run += 1
            t.fn(*t.args)
        self.now = max(self.now, until)
