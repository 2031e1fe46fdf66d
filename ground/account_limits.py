"""Per-account limits ground learned from the platforms, kept so stations can be told them.

The engine and `ground account check` record what a Mastodon instance's
``/api/v2/instance`` says; receipts (ground/receipts.py) carry each changed row to the
station (a trigger stamps it in the change log, ground/changes.py), signed by ground's key,
and onboard checks posts for that account against the same numbers ground will
(protocol/rules.py).
"""

from __future__ import annotations

import sqlite3

from protocol.receipts import AccountLimitsReceipt
from protocol.rules import PlatformRules

from .db import transaction


def record(conn: sqlite3.Connection, target: str, rules: PlatformRules, now_ms: int) -> bool:
    """Remember ``rules`` for ``target``; returns True if they changed (and will be sent again)."""
    row = (
        rules.max_text,
        rules.max_media,
        rules.max_media_bytes,
        rules.url_length,
        rules.max_alt,
        None if rules.media_types is None else " ".join(sorted(rules.media_types)),
    )
    with transaction(conn):
        old = conn.execute(
            "SELECT max_text, max_media, max_media_bytes, url_length, max_alt, media_types "
            "FROM account_limits WHERE account = ?",
            (target,),
        ).fetchone()
        if old is not None and tuple(old) == row:
            return False  # unchanged: no write, so no new change stamp and nothing resent
        conn.execute(
            "INSERT OR REPLACE INTO account_limits (account, max_text, max_media, max_media_bytes, url_length, "
            "max_alt, media_types, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (target, *row, now_ms),
        )
    return True


def receipt(conn: sqlite3.Connection, account: str, seq: int) -> AccountLimitsReceipt | None:
    """The account-limits receipt for ``account`` as it stands, stamped ``seq`` (ground/changes.py)."""
    row = conn.execute(
        "SELECT max_text, max_media, max_media_bytes, url_length, max_alt, media_types "
        "FROM account_limits WHERE account = ?",
        (account,),
    ).fetchone()
    if row is None:
        return None
    mt, mm, mb, ul, ma, types = row
    return AccountLimitsReceipt(
        account=account,
        max_text=mt,
        max_media=mm,
        max_media_bytes=mb,
        url_length=ul,
        max_alt=ma,
        media_types=None if types is None else tuple(types.split()),
        seq=seq,
    )
