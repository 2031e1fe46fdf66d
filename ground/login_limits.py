"""Failed operator logins, counted in ground's database (table ``login_failures``, ground/db.py).

At most ``max_failures`` failed logins within ``window_s``, per operator name and per client
address; past that, logins for that name or from that address are refused (HTTP 429 with
Retry-After) until enough failures age out of the window. Kept in SQLite, not in memory, so
restarting ground (or a crash an attacker provokes) does not hand out a fresh budget, and
every process on one home shares it. Time is passed in (``now_ms``, wall-clock milliseconds:
the record outlives the process, so a monotonic clock would not do).

A successful login clears only the failures for that name *from that address*: the
operator's own typos, never an attacker's failures for the same name from elsewhere.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class LoginLimiter:
    """The limits; every method takes the connection and ``now_ms`` (call inside your transaction)."""

    # 10 in 15 minutes: far beyond an operator mistyping a password, far too few to guess a
    # 12-character one (and each guess costs an scrypt check anyway).
    max_failures: int = 10
    window_s: float = 15 * 60.0
    # Rows kept at most: a spray of names or addresses cannot grow the table without bound.
    # Failures cost an scrypt check each (~0.1 s), so a real window holds far fewer.
    max_rows: int = 100_000

    @property
    def window_ms(self) -> int:
        return int(self.window_s * 1000)

    def retry_after_s(self, conn: sqlite3.Connection, name: str, addr: str, now_ms: int) -> float:
        """Seconds until a login for ``name`` from ``addr`` may be tried again (0: now)."""
        wait_ms = 0
        for column, value in (("name", name), ("addr", addr)):
            # The max_failures-th most recent failure inside the window: once it ages out,
            # fewer than max_failures remain and logins are allowed again.
            # `column` is one of the two fixed names above, never input.
            row = conn.execute(
                f"SELECT ts_ms FROM login_failures WHERE {column} = ? AND ts_ms > ? "
                "ORDER BY ts_ms DESC LIMIT 1 OFFSET ?",
                (value, now_ms - self.window_ms, self.max_failures - 1),
            ).fetchone()
            if row is not None:
                wait_ms = max(wait_ms, row[0] + self.window_ms - now_ms)
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
