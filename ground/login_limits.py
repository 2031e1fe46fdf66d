"""Failed operator logins, counted in ground's database (table ``login_failures``, ground/db.py).

The guesser is throttled, not the operator (issue 16 item 12: ten wrong passwords for a name
used to lock its owner out from everywhere). Per client address, within ``window_s``:

- the first ``free_failures`` failures cost nothing (typos);
- each further one makes that address wait ``base_delay_s``, then twice that, and so on,
  after its latest failure;
- at ``max_failures`` the address is refused until enough failures age out of the window.

Per operator name: once ``max_failures`` failures for a name fall within the window (a guess
spread over many addresses), an address that has itself failed for that name is refused for it
until the window lets go; an address that has not failed (the operator at her own desk) still
logs in, and the API audits that it did while the name was being guessed.

Kept in SQLite, not in memory, so restarting ground (or a crash an attacker provokes) does not
hand out a fresh budget, and every process on one home shares it. Time is passed in
(``now_ms``, wall-clock milliseconds: the record outlives the process). A successful login
clears only the failures for that name *from that address*.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginLimiter:
    """The limits; every method takes the connection and ``now_ms`` (call inside your transaction)."""

    # 10 in 15 minutes from one address: far beyond an operator mistyping a password, far too
    # few to guess a 12-character one (and each guess costs an scrypt check anyway).
    max_failures: int = 10
    window_s: float = 15 * 60.0
    # Free mistakes per address, then 1 s, 2 s, 4 s ... before the next try.
    free_failures: int = 3
    base_delay_s: float = 1.0
    # Rows kept at most: a spray of names or addresses cannot grow the table without bound.
    # Failures cost an scrypt check each (~0.1 s), so a real window holds far fewer.
    max_rows: int = 100_000

    @property
    def window_ms(self) -> int:
        return int(self.window_s * 1000)

    def _recent(self, conn: sqlite3.Connection, where: str, args: tuple[str, ...], now_ms: int) -> list[int]:
        # `where` is one of the fixed clauses below, never input.
        rows = conn.execute(
            f"SELECT ts_ms FROM login_failures WHERE {where} AND ts_ms > ? ORDER BY ts_ms DESC LIMIT ?",
            (*args, now_ms - self.window_ms, self.max_failures),
        ).fetchall()
        return [int(r[0]) for r in rows]

    def address_wait_ms(self, conn: sqlite3.Connection, addr: str, now_ms: int) -> int:
        """How long ``addr`` must wait before its next login attempt, for any name (0: now)."""
        mine = self._recent(conn, "addr = ?", (addr,), now_ms)
        if len(mine) >= self.max_failures:
            # Until the max_failures-th most recent failure ages out of the window.
            return max(0, mine[self.max_failures - 1] + self.window_ms - now_ms)
        if len(mine) >= self.free_failures:
            delay_ms = int(self.base_delay_s * 1000 * 2 ** (len(mine) - self.free_failures))
            return max(0, min(mine[0] + delay_ms, mine[0] + self.window_ms) - now_ms)
        return 0

    def name_under_attack_ms(self, conn: sqlite3.Connection, name: str, now_ms: int) -> int:
        """How long ``name`` stays 'being guessed' (max_failures failures in the window), 0 if not."""
        failures = self._recent(conn, "name = ?", (name,), now_ms)
        if len(failures) < self.max_failures:
            return 0
        return max(0, failures[self.max_failures - 1] + self.window_ms - now_ms)

    def retry_after_s(self, conn: sqlite3.Connection, name: str, addr: str, now_ms: int) -> float:
        """Seconds until a login for ``name`` from ``addr`` may be tried again (0: now)."""
        wait_ms = self.address_wait_ms(conn, addr, now_ms)
        hot_ms = self.name_under_attack_ms(conn, name, now_ms)
        if hot_ms and self._recent(conn, "name = ? AND addr = ?", (name, addr), now_ms):
            wait_ms = max(wait_ms, hot_ms)
        return wait_ms / 1000

    def failed(self, conn: sqlite3.Connection, name: str, addr: str, now_ms: int) -> None:
        """Record one failed login for ``name`` from ``addr``, and prune what no longer counts."""
        conn.execute("DELETE FROM login_failures WHERE ts_ms <= ?", (now_ms - self.window_ms,))
        conn.execute("INSERT INTO login_failures (ts_ms, name, addr) VALUES (?, ?, ?)", (now_ms, name, addr))
        # Ids only grow, so this keeps the newest max_rows rows by the primary key alone.
        conn.execute(
            "DELETE FROM login_failures WHERE id <= (SELECT MAX(id) FROM login_failures) - ?",
            (self.max_rows,),
        )

    def succeeded(self, conn: sqlite3.Connection, name: str, addr: str) -> None:
        """A right password for ``name`` from ``addr``: forget that pair's failures, nothing else."""
        conn.execute("DELETE FROM login_failures WHERE name = ? AND addr = ?", (name, addr))
