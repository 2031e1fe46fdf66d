"""Accounts' URL templates for receipts version 4 (docs/PROTOCOL.md §9.5).

Ground makes a template the first time a published post's URL and platform id fit none of its
account's (``protocol.receipt_templates.infer``): a row in ``url_templates``, stamped in the
change log like an account's limits, so every station reading version 4 gets it once. A
document names a URL by a template only where it rebuilds the strings exactly.

What a station holds: every template stamped after ``receipt_readers.v4_from`` and at or below
its cursor now. ``v4_from`` is the cursor of its first version-4 request, raised to the
``next_since`` of every live document of an older version it is sent since (its cursor may
move past templates that document did not carry): every document that moved its cursor above
``v4_from`` was version 4, and a version-4 document carries every template stamped in its
range. Any other template a document needs goes in that document.

That is ground's inference; a station whose own rows were lost (a restored or edited
onboard.db, two laptops sharing one station's token) finds a template it does not hold, does
not apply that document and asks once without version 4 (onboard/receipts.py ``heal_begins``):
the older document raises ``v4_from`` to its cursor, and from there on every template it needs
comes in the document.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from durable.sqlitedb import transaction
from protocol.receipt_templates import Parts, best, infer, parts_from_text, parts_to_text
from protocol.receipts import PublicationReceipt, UrlTemplateReceipt

# Templates one account may have: one or two in practice (the archive's lone and shared packs,
# a Bluesky web app changed); past this, URLs that fit none are spelled out, so a platform
# whose URLs vary in a way ``infer`` does not see cannot grow a template per post.
MAX_TEMPLATES_PER_ACCOUNT = 16


def receipt(conn: sqlite3.Connection, number: str, seq: int) -> UrlTemplateReceipt | None:
    """The template change row ``number`` describes."""
    row = conn.execute(
        "SELECT account, url, remote_id FROM url_templates WHERE id = ?", (int(number),)
    ).fetchone()
    if row is None:
        return None
    return UrlTemplateReceipt(
        number=int(number),
        account=row[0],
        url=parts_from_text(row[1]),
        remote_id=parts_from_text(row[2]),
        seq=seq,
    )


def of_accounts(conn: sqlite3.Connection, accounts: Iterable[str]) -> list[UrlTemplateReceipt]:
    """Every template of these accounts, with the seq of its change row."""
    out = []
    for account in sorted(set(accounts)):
        for number, url, remote, seq in conn.execute(
            "SELECT t.id, t.url, t.remote_id, COALESCE(c.seq, 0) FROM url_templates t LEFT JOIN changes c "
            "ON c.kind = 'template' AND c.k1 = CAST(t.id AS TEXT) WHERE t.account = ? ORDER BY t.id",
            (account,),
        ):
            out.append(
                UrlTemplateReceipt(
                    number=number,
                    account=account,
                    url=parts_from_text(url),
                    remote_id=parts_from_text(remote),
                    seq=seq,
                )
            )
    return out


def make_missing(conn: sqlite3.Connection, since: int, limit: int) -> int:
    """Make a template for each publication stamped after ``since`` that no template of its
    account fits and ``infer`` finds one for; returns how many were made (a write, done
    before the document's read snapshot so the new rows' stamps fall inside it)."""
    rows = conn.execute(
        "SELECT p.item_id, p.account, p.url, p.remote_id FROM changes c JOIN publications p "
        "ON c.kind = 'pub' AND p.item_id = c.k1 AND p.account = c.k2 "
        "WHERE c.seq > ? AND (p.url IS NOT NULL OR p.remote_id IS NOT NULL) ORDER BY c.seq LIMIT ?",
        (since, limit),
    ).fetchall()
    if not rows:
        return 0
    known: dict[str, list[tuple[int, Parts | None, Parts | None]]] = {}
    for t in of_accounts(conn, (r[1] for r in rows)):
        known.setdefault(t.account, []).append((t.number, t.url, t.remote_id))
    new: list[tuple[str, Parts | None, Parts | None]] = []
    for item_id, account, url, remote in rows:
        mine = known.get(account, [])
        if len(mine) >= MAX_TEMPLATES_PER_ACCOUNT or best(mine, item_id, url, remote) is not None:
            continue
        guess = infer(item_id, url, remote)
        if guess is None:
            continue
        known.setdefault(account, []).append((-1, *guess))  # a later post of this document fits it too
        new.append((account, *guess))
    if not new:
        return 0
    with transaction(conn):
        made = 0
        for account, url_parts, remote_parts in new:
            made += conn.execute(
                "INSERT OR IGNORE INTO url_templates (account, url, remote_id) VALUES (?, ?, ?)",
                (account, parts_to_text(url_parts), parts_to_text(remote_parts)),
            ).rowcount
    return made


def note_reader(conn: sqlite3.Connection, station: str, version: int, since: int) -> int | None:
    """``station``'s ``v4_from`` for a request at cursor ``since`` (None: an older version, or
    it holds no template for sure); registers it at ``since`` on its first version-4 request.
    Writes only then."""
    if version < 4:
        return None
    row = conn.execute("SELECT v4_from FROM receipt_readers WHERE station = ?", (station,)).fetchone()
    if row is not None:
        return int(row[0])
    with transaction(conn):
        conn.execute(
            "INSERT OR IGNORE INTO receipt_readers (station, v4_from) VALUES (?, ?)", (station, since)
        )
        (v4_from,) = conn.execute(
            "SELECT v4_from FROM receipt_readers WHERE station = ?", (station,)
        ).fetchone()
    return int(v4_from)


def note_older(conn: sqlite3.Connection, station: str, next_since: int) -> None:
    """A live document of an older version goes to ``station``, covering changes up to
    ``next_since``: a station applying it moves its cursor past templates it is not sent, so
    from now on it holds none stamped at or below ``next_since``.

    The floor only rises, never goes (deleting it once let a version-4 request still on its way
    register again below a version-3 document's cursor, and the station stuck, §9.5). Writes
    only for a station that reads version 4 too and only when ground has changed since."""
    row = conn.execute("SELECT v4_from FROM receipt_readers WHERE station = ?", (station,)).fetchone()
    if row is None or int(row[0]) >= next_since:
        return
    with transaction(conn):
        conn.execute(
            "UPDATE receipt_readers SET v4_from = MAX(v4_from, ?) WHERE station = ?", (next_since, station)
        )


def needed(
    conn: sqlite3.Connection, receipts: Sequence[object], v4_from: int | None, since: int
) -> tuple[list[UrlTemplateReceipt], list[UrlTemplateReceipt]]:
    """(held, missing): the templates the document's publications can use that the reader holds
    (stamped in ``(v4_from, since]``), and those it must be sent (not held, not in the document)."""
    pubs = [r for r in receipts if isinstance(r, PublicationReceipt) and (r.url or r.remote_id)]
    in_doc = {r.number for r in receipts if isinstance(r, UrlTemplateReceipt)}
    by_account: dict[str, list[UrlTemplateReceipt]] = {}
    for t in of_accounts(conn, (p.account for p in pubs)):
        by_account.setdefault(t.account, []).append(t)

    def is_held(t: UrlTemplateReceipt) -> bool:
        return v4_from is not None and v4_from < t.seq <= since

    held: dict[int, UrlTemplateReceipt] = {}
    missing: dict[int, UrlTemplateReceipt] = {}
    for p in pubs:
        ts = by_account.get(p.account, [])
        # Prefer what the reader holds or is sent anyway; send a template only where none of those fits.
        free = [t for t in ts if is_held(t) or t.number in in_doc or t.number in missing]
        pick = best([(t.number, t.url, t.remote_id) for t in free], p.item_id, p.url, p.remote_id)
        if pick is None:
            pick = best([(t.number, t.url, t.remote_id) for t in ts], p.item_id, p.url, p.remote_id)
        if pick is None:
            continue
        t = next(t for t in ts if t.number == pick[0])
        if is_held(t):
            held[t.number] = t
        elif t.number not in in_doc:
            missing[t.number] = t
    return list(held.values()), list(missing.values())
