"""Read-only views of ground's database, shaped as the JSON the API returns.

Nothing here writes. Every view reads the tables other modules own (ingest, publish,
enroll, the link), so the database stays the single source of truth and a CLI command
run beside the server shows up on the dashboard at the next refresh.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from typing import Any

from protocol import Post, ProtocolError, decode_item

from . import actions

JSON = dict[str, Any]
TEXT_PREVIEW_CHARS = 280  # enough to recognise a post; the archive holds the exact bytes


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        is not None
    )


def has_link_tables(conn: sqlite3.Connection) -> bool:
    """True once the live link's tables exist in this database."""
    return all(_has_table(conn, t) for t in ("link_contacts", "link_traffic", "transfers"))


def platform_of(account: str) -> str:
    return account.split(":", 1)[0]


def display_state(state: str, next_attempt_ms: int | None, attempts: int, now_ms: int) -> str:
    """What an operator cares about: 'scheduled' is a pending post whose time has not come."""
    if state == "pending" and next_attempt_ms is not None and next_attempt_ms > now_ms:
        return "scheduled" if attempts == 0 else "retry-wait"
    return state


def link_status(conn: sqlite3.Connection, now_ms: int) -> JSON:
    """Last contact, traffic today and now, stations and transfers in progress.

    Uses the live link's tables (ground/db.py: link_contacts, link_traffic, transfers) when
    this database has them; bundles and rejections alone (file hand-off) otherwise.
    """
    day_start = now_ms - now_ms % 86_400_000
    last_contact = conn.execute(
        "SELECT MAX(t) FROM (SELECT MAX(received_ms) AS t FROM bundles UNION ALL "
        "SELECT MAX(received_ms) FROM rejections)"
    ).fetchone()[0]
    bytes_today = conn.execute(
        "SELECT COALESCE(SUM(size_bytes), 0) FROM (SELECT size_bytes, received_ms FROM bundles "
        "UNION ALL SELECT size_bytes, received_ms FROM rejections) WHERE received_ms >= ?",
        (day_start,),
    ).fetchone()[0]
    bytes_total = conn.execute(
        "SELECT (SELECT COALESCE(SUM(size_bytes), 0) FROM bundles) + (SELECT COALESCE(SUM(size_bytes), 0) FROM rejections)"
    ).fetchone()[0]
    bytes_per_s: float | None = None
    stations: list[JSON] = []
    if _has_table(conn, "link_contacts") and _has_table(conn, "link_traffic"):
        try:
            stations = [
                dict(
                    zip(
                        ("station", "last_seen_ms", "requests", "bytes_in", "bytes_out", "last_addr"),
                        r,
                        strict=True,
                    )
                )
                for r in conn.execute(
                    "SELECT station, last_seen_ms, requests, bytes_in, bytes_out, last_addr FROM link_contacts "
                    "ORDER BY last_seen_ms DESC"
                )
            ]
            seen = max((st["last_seen_ms"] for st in stations), default=None)
            if seen is not None and (last_contact is None or seen > last_contact):
                last_contact = seen
            # Everything that crossed the link (photos too), not only committed bundles.
            bytes_today = max(
                bytes_today,
                conn.execute(
                    "SELECT COALESCE(SUM(bytes_in), 0) FROM link_traffic WHERE minute_ms >= ?", (day_start,)
                ).fetchone()[0],
            )
            bytes_total = max(bytes_total, sum(st["bytes_in"] for st in stations))
            # Rate over the current and the previous whole minute.
            since = now_ms - now_ms % 60_000 - 60_000
            recent = conn.execute(
                "SELECT COALESCE(SUM(bytes_in), 0) FROM link_traffic WHERE minute_ms >= ?", (since,)
            ).fetchone()[0]
            bytes_per_s = recent / max((now_ms - since) / 1000, 1.0)
        except sqlite3.OperationalError:  # an older or newer link schema: show what bundles say
            stations = []
    return {
        "last_contact_ms": last_contact,
        "seconds_since_contact": None if last_contact is None else max(0.0, (now_ms - last_contact) / 1000),
        "bytes_today": bytes_today,
        "bytes_total": bytes_total,
        "bytes_per_s": bytes_per_s,
        "stations": stations,
        "active_transfers": link_transfers(conn, now_ms, active_only=True),
    }


def link_transfers(
    conn: sqlite3.Connection, now_ms: int, *, active_only: bool = False, limit: int = 50
) -> list[JSON]:
    """Uploads the live link is receiving or has received, newest first (empty without the link)."""
    if not _has_table(conn, "transfers"):
        return []
    where = "WHERE state = 'receiving'" if active_only else ""
    try:
        rows = conn.execute(
            f"SELECT transfer_id, station, kind, source, state, total_bytes, received_bytes, code, message, "
            f"started_ms, updated_ms FROM transfers {where} ORDER BY updated_ms DESC LIMIT ?",
            (limit,),
        ).fetchall()
    except sqlite3.OperationalError:  # a link schema this dashboard does not know
        return []
    out = []
    for tid, station, kind, source, state, total, received, code, message, started, updated in rows:
        elapsed_s = max((updated - started) / 1000, 0.001)
        out.append(
            {
                "transfer_id": tid,
                "station": station,
                "kind": kind,
                "source": source,
                "state": state,
                "total_bytes": total,
                "received_bytes": received,
                "progress": (received / total) if total else None,
                "bytes_per_s": received / elapsed_s,
                "code": code,
                "message": message,
                "started_ms": started,
                "updated_ms": updated,
            }
        )
    return out


def bundles(conn: sqlite3.Connection, now_ms: int, limit: int = 50) -> list[JSON]:
    """Recent bundles, accepted and rejected, newest first (partial ones are in link_transfers)."""
    rows = conn.execute(
        "SELECT * FROM ("
        " SELECT received_ms, bundle_id, source, size_bytes, item_count, 'verified' AS status, NULL AS code, "
        "        NULL AS message, sha256 FROM bundles"
        " UNION ALL"
        " SELECT received_ms, NULL, source, size_bytes, NULL, 'rejected', code, message, sha256 FROM rejections"
        ") ORDER BY received_ms DESC LIMIT ?",
        (limit,),
    ).fetchall()
    keys = (
        "received_ms",
        "bundle_id",
        "source",
        "size_bytes",
        "item_count",
        "status",
        "code",
        "message",
        "sha256",
    )
    return [dict(zip(keys, r, strict=True)) for r in rows]


def posts(
    conn: sqlite3.Connection, now_ms: int, *, astronaut: str | None = None, limit: int = 100
) -> list[JSON]:
    """Posts newest first, each with its per-account publication state."""
    args: list[Any] = []
    where = "WHERE i.kind = 'post'"
    if astronaut:
        where += " AND i.author = ?"
        args.append(astronaut)
    items = conn.execute(
        f"SELECT i.id, i.author, i.created_ms, i.received_ms, i.publish_at_ms, i.body, i.bundle_id "
        f"FROM items i {where} ORDER BY i.received_ms DESC, i.id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    out = []
    paused_accounts = {
        (a, acct) for a, acct in conn.execute("SELECT astronaut, account FROM accounts WHERE paused = 1")
    }
    paused_platforms = actions.paused_platforms(conn)
    for item_id, author, created, received, publish_at, body, bundle_id in items:
        text, media = "", 0
        try:
            post = decode_item(body)
            if isinstance(post, Post):
                text, media = post.text, len(post.media)
        except ProtocolError:  # stored bytes were verified on the way in; never expected
            text = "(undecodable)"
        pubs = [
            {
                "account": acct,
                "platform": platform_of(acct),
                "state": state,
                "display_state": (
                    "paused"
                    if state == "pending"
                    and ((author, acct) in paused_accounts or platform_of(acct) in paused_platforms)
                    else display_state(state, nxt, attempts, now_ms)
                ),
                "url": url,
                "attempts": attempts,
                "last_error": err,
                "retryable": None if retryable is None else bool(retryable),
                "next_attempt_ms": nxt,
                "published_ms": published,
                "updated_ms": updated,
                # How faithfully the photos went out (protocol/rules.py MediaFidelity; issue 13).
                "fidelity": fidelity,
                "fidelity_note": fidelity_note,
                # Photos sent as a rendition the signed post allowed (ground/renditions.py).
                "renditions": json.loads(made) if made else [],
            }
            for acct, state, url, attempts, err, retryable, nxt, published, updated, fidelity, fidelity_note, made in (
                conn.execute(
                    "SELECT account, state, url, attempts, last_error, retryable, next_attempt_ms, published_ms, "
                    "updated_ms, fidelity, fidelity_note, renditions FROM publications WHERE item_id = ? "
                    "ORDER BY account",
                    (item_id,),
                )
            )
        ]
        out.append(
            {
                "id": item_id,
                "astronaut": author,
                "bundle_id": bundle_id,
                "created_ms": created,
                "received_ms": received,
                "publish_at_ms": publish_at,
                "text_preview": text[:TEXT_PREVIEW_CHARS],
                "media_count": media,
                "publications": pubs,
            }
        )
    return out


SECURITY_KINDS = (
    "login-failed",
    "login-limited",
    "link-unauthorized",
    "link-rate-limited",
    "link-bad-request",
    "security",
)


def security_events(conn: sqlite3.Connection, limit: int = 100) -> list[JSON]:
    """Rejected bundles (bad signature, unknown/revoked key, replay, malformed), failed uploads,
    refused station tokens, refused commands and failed operator logins; newest first."""
    marks = ",".join("?" * len(SECURITY_KINDS))
    parts = [
        "SELECT received_ms AS ts, 'bundle-rejected' AS kind, code, message, source, sha256, size_bytes "
        "FROM rejections",
        f"SELECT ts_ms, kind, NULL, detail, actor, NULL, NULL FROM events WHERE kind IN ({marks})",
    ]
    if _has_table(conn, "transfers"):
        parts.append(
            "SELECT updated_ms, 'transfer-failed', code, COALESCE(message, ''), station || ' ' || source, "
            "lower(hex(sha256)), total_bytes FROM transfers WHERE state = 'failed'"
        )
    try:
        rows = conn.execute(
            "SELECT * FROM (" + " UNION ALL ".join(parts) + ") ORDER BY ts DESC LIMIT ?",
            (*SECURITY_KINDS, limit),
        ).fetchall()
    except sqlite3.OperationalError:  # a link schema this dashboard does not know
        rows = conn.execute(
            "SELECT * FROM (" + " UNION ALL ".join(parts[:2]) + ") ORDER BY ts DESC LIMIT ?",
            (*SECURITY_KINDS, limit),
        ).fetchall()
    keys = ("ts_ms", "kind", "code", "message", "source", "sha256", "size_bytes")
    return [dict(zip(keys, r, strict=True)) for r in rows]


def platforms(conn: sqlite3.Connection, now_ms: int) -> list[JSON]:
    """Per platform and account: last success, failure rate, paused flags."""
    paused_platforms = actions.paused_platforms(conn)
    stats: dict[str, dict[str, JSON]] = {}
    for acct, state, n, last_ok, _failed, attempts in conn.execute(
        "SELECT account, state, COUNT(*), MAX(published_ms), SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), "
        "SUM(attempts) FROM publications GROUP BY account, state"
    ):
        a = stats.setdefault(platform_of(acct), {}).setdefault(
            acct, {"account": acct, "by_state": {}, "last_success_ms": None, "attempts": 0}
        )
        a["by_state"][state] = n
        a["attempts"] += attempts or 0
        if last_ok is not None and (a["last_success_ms"] is None or last_ok > a["last_success_ms"]):
            a["last_success_ms"] = last_ok
    account_rows = conn.execute("SELECT astronaut, account, paused FROM accounts ORDER BY account").fetchall()
    for astronaut, acct, paused in account_rows:
        a = stats.setdefault(platform_of(acct), {}).setdefault(
            acct, {"account": acct, "by_state": {}, "last_success_ms": None, "attempts": 0}
        )
        a.setdefault("astronauts", []).append(astronaut)
        a["paused"] = a.get("paused", False) or bool(paused)
    for name in paused_platforms:
        stats.setdefault(name, {})
    out = []
    for name in sorted(stats):
        accts = []
        for acct in sorted(stats[name]):
            a = stats[name][acct]
            done = a["by_state"].get("published", 0) + a["by_state"].get("failed", 0)
            a["error_rate"] = (a["by_state"].get("failed", 0) / done) if done else None
            a.setdefault("paused", False)
            a.setdefault("astronauts", [])
            accts.append(a)
        published = sum(a["by_state"].get("published", 0) for a in accts)
        failed = sum(a["by_state"].get("failed", 0) for a in accts)
        last_ok = max((a["last_success_ms"] for a in accts if a["last_success_ms"] is not None), default=None)
        out.append(
            {
                "platform": name,
                "paused": name in paused_platforms,
                "last_success_ms": last_ok,
                "published": published,
                "failed": failed,
                "error_rate": (failed / (published + failed)) if (published + failed) else None,
                "accounts": accts,
            }
        )
    return out


def astronauts(conn: sqlite3.Connection) -> list[JSON]:
    """Astronauts with their keys (fingerprint, revoked) and accounts (paused)."""
    out = []
    for (name,) in conn.execute("SELECT name FROM astronauts ORDER BY name").fetchall():
        keys = [
            {"fingerprint": kid.hex(), "enrolled_ms": enrolled, "revoked_ms": revoked}
            for kid, enrolled, revoked in conn.execute(
                "SELECT key_id, enrolled_ms, revoked_ms FROM keys WHERE astronaut = ? ORDER BY enrolled_ms",
                (name,),
            )
        ]
        accts = [
            {"account": a, "paused": bool(p)}
            for a, p in conn.execute(
                "SELECT account, paused FROM accounts WHERE astronaut = ? ORDER BY account", (name,)
            )
        ]
        out.append({"name": name, "keys": keys, "accounts": accts})
    return out


def audit_log(
    conn: sqlite3.Connection, *, before_id: int | None = None, operators_only: bool = False, limit: int = 100
) -> list[JSON]:
    """The append-only audit trail, newest first."""
    where, args = [], []
    if before_id is not None:
        where.append("id < ?")
        args.append(before_id)
    if operators_only:
        where.append("actor LIKE 'operator:%'")
    sql = "SELECT id, ts_ms, actor, kind, detail FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
    return [dict(zip(("id", "ts_ms", "actor", "kind", "detail"), r, strict=True)) for r in rows]


def summary(conn: sqlite3.Connection, now_ms: int) -> JSON:
    """The status strip: link, queue and counts, in one cheap call."""
    by_state = dict(conn.execute("SELECT state, COUNT(*) FROM publications GROUP BY state").fetchall())
    # Waiting for its publish time (or a backoff) is not a backlog: count it apart.
    scheduled = conn.execute(
        "SELECT COUNT(*) FROM publications WHERE state = 'pending' AND next_attempt_ms > ?", (now_ms,)
    ).fetchone()[0]
    due = by_state.get("pending", 0) - scheduled + by_state.get("publishing", 0)
    return {
        "now_ms": now_ms,
        "link": link_status(conn, now_ms),
        "publications": by_state,
        "queue_depth": due,
        "scheduled": scheduled,
        "bundles_accepted": conn.execute("SELECT COUNT(*) FROM bundles").fetchone()[0],
        "bundles_rejected": conn.execute("SELECT COUNT(*) FROM rejections").fetchone()[0],
        "astronauts": conn.execute("SELECT COUNT(*) FROM astronauts").fetchone()[0],
        "paused_platforms": sorted(actions.paused_platforms(conn)),
    }


def change_marker(conn: sqlite3.Connection) -> tuple[Any, ...]:
    """Cheap fingerprint of everything the dashboard shows; SSE pushes when it changes.

    O(1) on purpose (it runs every second per open dashboard). Called on the dashboard's own
    reader connection (reader.py), ``data_version`` moves whenever any other connection
    commits: the server's, the publisher's, a CLI command's. The audit and link columns keep
    it useful on a shared connection too, short of the brief 'publishing' step.
    """
    row = conn.execute("SELECT (SELECT MAX(id) FROM events), (SELECT MAX(id) FROM rejections)").fetchone()
    version = conn.execute("PRAGMA data_version").fetchone()[0]
    extra: tuple[Any, ...] = ()
    if _has_table(conn, "link_contacts"):
        with contextlib.suppress(sqlite3.OperationalError):
            extra = tuple(
                conn.execute("SELECT MAX(last_seen_ms), SUM(requests) FROM link_contacts").fetchone()
            )
    return (version, *row, *extra)
