"""What the station keeps of its link between passes (protocol/link_memory.py), as a sync runs.

A sync recalls the last pass's link at its start (it sizes the first flights and the send
gate's restart), notes the link as it measures it, and writes it to the station's SQLite every
``REMEMBER_EVERY_S`` and when it stops: a sync killed mid-pass still leaves a memory at most
that old. The simulator's station keeps it the same way (simlink/transfer_driver.py).
"""

from __future__ import annotations

import sqlite3

from protocol.link_memory import LinkMemory, reference_link, replaces, start_link

from . import link

REMEMBER_EVERY_S = 30.0


class LinkRecorder:
    """The link memory of one sync: the one recalled at its start, and the newest noted since."""

    def __init__(self, conn: sqlite3.Connection, wall_now: float, mono_now: float) -> None:
        self._conn = conn
        self.kept = link.recall_memory(conn, wall_now)  # as stored now (None: nothing usable)
        # What this sync starts on: the memory, else the link an operator said to expect, else
        # the reference link, only ``guessed`` (a queue on the link ends the guess: SendGate).
        known = start_link(self.kept, link.expected_link(conn), wall_now)
        self.guessed = known is None
        self.start = reference_link(wall_now) if known is None else known
        self._written_at = mono_now
        self._noted: LinkMemory | None = None  # measured since the last write

    def note(
        self, rate_bytes_s: float | None, base_rtt_s: float | None, *, wall_now: float, link_limited: bool
    ) -> None:
        """The link as just measured, if both are known and it ``replaces`` what is kept (a
        pass that sent little never lowers the memory)."""
        if rate_bytes_s is None or base_rtt_s is None or rate_bytes_s <= 0 or base_rtt_s <= 0:
            return
        m = LinkMemory(rate_bytes_s=rate_bytes_s, base_rtt_s=base_rtt_s, measured_at=wall_now)
        if replaces(m, self.kept, now=wall_now, link_limited=link_limited):
            self._noted = m

    def flush(self, mono_now: float, *, force: bool = False) -> None:
        """Write what was noted, if ``REMEMBER_EVERY_S`` have passed since the last write (or
        ``force``: the sync stops)."""
        if self._noted is None or (not force and mono_now - self._written_at < REMEMBER_EVERY_S):
            return
        link.remember(self._conn, self._noted)
        self._written_at, self.kept, self._noted = mono_now, self._noted, None
