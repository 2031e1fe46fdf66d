"""The station's send gate (link version 4): how many upload bytes it may hold outstanding.

Ground's clamp binds a real connection seconds late (Linux never withdraws a window it has
offered: docs/link.md "A cut in real time"), so the station writes a body carrying a window only
as its own budget allows. While every stream has just started (a backlog's start or the link's
return) the budget is the windows' total, no more than ``gain`` × rate × base RTT once a rate
is measured, and never under ``FIRST_FLIGHT_BDP`` of the link as last measured; after that it
grows gradually (``release`` × per base RTT) to the gate's total (``gate_share`` × ``gain`` ×
rate × base RTT) and stays there, following the rate.

Sans-IO: windows, connection counts and times in, a budget in bytes out. onboard/delivery.py
feeds it from TCP_INFO and paces request bodies by it; simlink holds its simulated
connections to it.
"""

from __future__ import annotations

from .window_clamp import MAX_WINDOW_BYTES, MIN_WINDOW_BYTES, DeliveryRate, restart_budget_bytes


class SendGate:
    """The budget of upload bytes outstanding on every connection together (None: open)."""

    def __init__(
        self,
        rate: DeliveryRate,
        *,
        rtt_floor_s: float = 0.0,
        remembered_rate: float | None = None,
        guessed: bool = False,
    ) -> None:
        self.rate = rate
        self._rtt_floor_s = rtt_floor_s  # the least base RTT the budget is sized by
        # The last pass's delivery rate (protocol/link_memory.py), until a silence in this one
        # leaves a newer (``restart_rate``); ``guessed``: only the reference link's, until the
        # link shows a queue (``link_queued``).
        self._remembered_rate = remembered_rate
        self._guessed = guessed
        self._budget: int | None = None
        self._opening: tuple[float, int, float] | None = None  # (since, budget then, base RTT)

    def link_queued(self) -> None:
        """The link holds a queue of its own: the rate measured now is the link's, so a guessed
        rate (the reference link's, protocol/link_memory.py) no longer floors the budget. On a
        256 kbit/s link it held 4-5 BDP in the network through a first start's first 20 s."""
        if self._guessed:
            self._remembered_rate, self._guessed = None, False

    def hold(
        self,
        window_bytes: int | None,
        busy: int,
        now: float,
        base_rtt_s: float | None = None,
        until: float | None = None,
    ) -> None:
        """Hold the outstanding bytes to ``window_bytes`` × the connections it was shared among
        (``busy`` + the one asking: the windows' total; ``_held_total``), until ``until`` if
        given, and from then open gradually without being told again: one long body must not
        stay held at the start's budget (on loopback that paced 160 MiB to 8 KiB a poll). With
        None (``until`` unused), open gradually from ``now``. Opening, the budget grows as a
        clamped window is lifted (``WindowRule.release`` × per base RTT; opened at once, the
        streams wrote ~9 BDP in half a second at 0.6 s) up to the gate's total
        (``_steady_total``) and stays there, following the rate; before any rate is measured
        it opens entirely. A base RTT under ``rtt_floor_s`` counts as that."""
        if base_rtt_s is not None:
            base_rtt_s = max(base_rtt_s, self._rtt_floor_s)
        if window_bytes is not None:
            self._budget = self._held_total(window_bytes, busy, base_rtt_s)
            self._opening = None if until is None else (until, self._budget, base_rtt_s or 1.0)
            return
        if self._budget is not None and self._opening is None:
            self._opening = (now, self._budget, base_rtt_s or 1.0)
        elif self._opening is not None and base_rtt_s is not None:
            self._opening = (*self._opening[:2], base_rtt_s)  # the steady total follows the base RTT

    @property
    def restart_rate(self) -> float | None:
        """The delivery rate the link had before this start or return: before the last silence
        in this sync, else the last pass's; None if neither was measured."""
        before, remembered = self.rate.before, self._remembered_rate
        if before is None:
            return remembered
        if self.rate.before_brief and remembered is not None:
            return max(before, remembered)  # a restart's first samples cannot lower the last pass's
        return before

    def restart_budget(self, base_rtt_s: float) -> int | None:
        """``restart_budget_bytes`` of ``restart_rate`` at ``base_rtt_s``: what a restart may
        hold outstanding (the gate's floor), and what the windows share until a rate is
        measured (DeliveryMeter.window, simlink's TransferDriver); None if nothing is known."""
        return restart_budget_bytes(self.restart_rate, base_rtt_s)

    def _held_total(self, window_bytes: int, busy: int, base_rtt_s: float | None) -> int:
        """The windows' total, but once a rate is measured no more than ``gain`` × rate × base
        RTT: each window is at least 8 KiB (a stream must recover a loss by duplicate acks),
        and at 0.6 s RTT 30 streams' least windows were 2.1 BDP (docs/link.md "The first
        flight and the gate's total"); the gate holds the sum, so no stream needs the floor.
        With the link known from before (``restart_rate``), never under ``FIRST_FLIGHT_BDP``
        of it: the rate measured in a restart's first round trips is what the gate let
        through, and a budget following it alone grew 1.25× a round trip from a few KiB."""
        total = window_bytes * (busy + 1)
        rate = self.rate.rate()
        restart = None if base_rtt_s is None else self.restart_budget(base_rtt_s)
        if rate is None or base_rtt_s is None:
            return total if restart is None else restart
        measured = min(total, max(MIN_WINDOW_BYTES, int(self.rate.rule.gain * rate * base_rtt_s)))
        return measured if restart is None else max(measured, restart)

    def budget(self, now: float) -> int | None:
        """The bytes the station may hold outstanding at ``now`` (None: the gate is open)."""
        if self._opening is None or self._budget is None:
            return self._budget
        since, start, base = self._opening
        if now < since:
            # Still held (every stream started at once): the held budget keeps the restart's
            # floor (``_held_total``). Capped by the steady total here too, it followed a rate
            # measured only since the return, whose first sample spans the round trip before
            # any data was acknowledged: in real time 16 kB/s on a 187 kB/s link, a budget of
            # 0.17 BDP, and less sent kept the rate low (data 10-14 s after a 2.6 s return).
            return start
        rtts = (now - since) / max(base, 1e-3)
        grown = start * self.rate.rule.release ** min(rtts, 100.0)
        steady = self._steady_total(base)
        if steady is not None:
            return int(min(grown, steady))
        if grown >= MAX_WINDOW_BYTES:
            self._budget = self._opening = None
            return None
        return int(grown)

    def _steady_total(self, base_rtt_s: float) -> int | None:
        """After the start, ``gate_share`` × ``gain`` × rate × base RTT, following the rate
        (None before a rate is measured: the gate opens). Opened entirely, the streams filled a
        real link's queue to ~2.2-2.5 BDP 10-30 s into a start and held ~1.1 BDP after
        (docs/link.md "The gate stays"); at the windows' total (``share``) up to 1.24 BDP
        ("A slice once the last has left")."""
        rate = self.rate.rate()
        if rate is None:
            return None
        r = self.rate.rule
        return max(MIN_WINDOW_BYTES, int(r.gate_share * r.gain * rate * base_rtt_s))
