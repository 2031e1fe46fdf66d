"""Dashboard reads off the event loop: one worker thread with its own SQLite connection.

The event loop also receives the station's uploads; a large view (every platform's
statistics, the metrics histogram) must not stall them. WAL lets this reader run beside
the writer, and its own connection sees every commit by the server's connection too, so
``PRAGMA data_version`` there notices any change at all.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class Reader:
    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        # One thread: a sqlite3 connection is used only by the thread that made it.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-reader")
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, isolation_level=None, timeout=30)
            conn.execute("PRAGMA query_only = ON")  # this connection never writes
            self._local.conn = conn
        return conn

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(conn, *args, **kwargs)`` in the reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._conn(), *args, **kwargs))

    def _close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=True)
