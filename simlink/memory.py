"""The link memory a run's station starts with and leaves (protocol/link_memory.py), for both
the simulator and real time: a run of a station that has been on this link before."""

from __future__ import annotations

import dataclasses
import time

from onboard import link, queue
from onboard.home import Home
from protocol.link_memory import LinkMemory

WARM_SEED = 1000  # a warm-up pass's seed is the run's + this: another backlog, another loss pattern


def set_memory(home: Home, encoded: str) -> None:
    """Keep ``encoded`` (a LinkMemory) in the station's database, dated now."""
    memory = dataclasses.replace(LinkMemory.decode(encoded), measured_at=time.time())
    conn = queue.connect(home.db_path)
    try:
        link.ensure_schema(conn)
        link.remember(conn, memory)
    finally:
        conn.close()


def get_memory(home: Home) -> str | None:
    """The link memory the station wrote, encoded (None: it measured nothing to keep)."""
    conn = queue.connect(home.db_path)
    try:
        link.ensure_schema(conn)
        memory = link.recall_memory(conn, time.time())
    finally:
        conn.close()
    return None if memory is None else memory.encode()
