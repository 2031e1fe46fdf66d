"""Ground's receipt key and the signed receipts documents it hands to stations (§9).

The key is a raw Ed25519 seed in ``<home>/receipt.key`` (mode 0600), made on first use;
its public half goes into every station token file so the station can pin it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from protocol import SigningKey, format_public_key
from protocol.ids import ulid_to_bytes
from protocol.receipts import (
    MAX_READ_BACK_CHARS,
    RECEIPTS_VERSION_COMPACT,
    BundleReceipt,
    CommandOutcome,
    CommandReceipt,
    EnrolledReceipt,
    PhotoFidelity,
    PhotoNote,
    PublicationReceipt,
    Receipt,
    RenditionNote,
    UrlTemplateReceipt,
    answer_version,
    sign_receipts,
)

from . import account_limits, changes, url_templates
from .errors import GroundError
from .home import GroundHome

KEY_FILE = "receipt.key"
# Receipts per document: a few hundred keeps one live reply small on a 10 kbit/s link.
DEFAULT_LIMIT = 500


def _key_path(home: GroundHome) -> Path:
    return home.root / KEY_FILE


def ground_key(home: GroundHome) -> SigningKey:
    """Ground's receipt-signing key, created (0600, fsynced) the first time it is needed."""
    path = _key_path(home)
    if not path.exists():
        home.root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first; read theirs
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
                f.flush()
                os.fsync(f.fileno())
    seed = path.read_bytes()
    if len(seed) != 32:
        raise GroundError(f"{path} is not a 32-byte receipt key; restore it from backup")
    return SigningKey.from_seed(seed)


def ground_key_line(home: GroundHome) -> str:
    return format_public_key(ground_key(home).public_key)


def station_source(station: str) -> str:
    """The ``source`` ground records for bundles a station uploads over the live link."""
    return f"link:{station}"


# Which changes a station may read (docs/PROTOCOL.md §9): its own bundles (uploaded over the
# link, or claimed by sha256 after a file hand-off) and what they carried; enrolled accounts,
# account limits and URL templates (ground's configuration, no post in them) go to every station.
_MINE = "(b.source = :source OR b.sha256 IN (SELECT sha256 FROM station_claims WHERE station = :station))"
_VISIBLE = (
    ":source IS NULL OR c.kind IN ('limits', 'enrolled', 'template') "
    f"OR (c.kind = 'bundle' AND EXISTS (SELECT 1 FROM bundles b WHERE b.bundle_id = c.k1 AND {_MINE})) "
    "OR (c.kind IN ('pub', 'command') AND EXISTS (SELECT 1 FROM items i JOIN bundles b "
    f"ON b.bundle_id = i.bundle_id WHERE i.id = c.k1 AND {_MINE})) "
    "OR (c.kind = 'rejection' AND EXISTS (SELECT 1 FROM rejections b WHERE CAST(b.id AS TEXT) = c.k1 "
    f"AND {_MINE}))"
)


def collect(
    conn: sqlite3.Connection, since: int, limit: int = DEFAULT_LIMIT, *, station: str | None = None
) -> tuple[list[Receipt], int, bool]:
    """Receipts for every change stamped after ``since`` (a change seq, §9), oldest first.

    With ``station``, only what that station may read (``_VISIBLE``). Returns (receipts,
    next_since, more). All reads share one snapshot, so the cursor returned covers exactly
    the changes read: nothing committed later can carry a stamp at or below it.
    """
    source = None if station is None else station_source(station)
    conn.execute("BEGIN")  # deferred: a read snapshot, no lock against writers (WAL)
    try:
        rows = conn.execute(
            f"SELECT c.seq, c.kind, c.k1, c.k2 FROM changes c WHERE c.seq > :since AND ({_VISIBLE}) "
            "ORDER BY c.seq LIMIT :limit",
            {"since": since, "source": source, "station": station, "limit": limit + 1},
        ).fetchall()
        (top,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        cache: dict[str, tuple[bytes, ...]] = {}
        out = [r for r in (_receipt(conn, *row, cache=cache) for row in rows[:limit]) if r is not None]
    finally:
        conn.execute("COMMIT")
    more = len(rows) > limit
    # Not more: every change up to `top` was in this snapshot and looked at, visible or not,
    # so the next request need not scan the other stations' changes again.
    next_since = rows[limit - 1][0] if more else max(since, top)
    return out, next_since, more


def _rendition_notes(made: str | None) -> tuple[RenditionNote, ...]:
    """publications.renditions (ground/renditions.py) as receipt notes (docs/PROTOCOL.md §9.2)."""
    return tuple(
        RenditionNote(
            photo=int(r["photo"]),
            original_sha256=bytes.fromhex(r["original_sha256"]),
            sha256=bytes.fromhex(r["sha256"]),
            recipe=str(r["recipe"]),
            width=int(r["width"]),
            height=int(r["height"]),
        )
        for r in (json.loads(made) if made else [])
    )


def _photo_hashes(
    conn: sqlite3.Connection, item_id: str, cache: dict[str, tuple[bytes, ...]]
) -> tuple[bytes, ...]:
    """The signed sha256 of each photo of ``item_id`` (one decode per item per document)."""
    if item_id not in cache:
        from protocol import decode_item
        from protocol.model import Post

        row = conn.execute("SELECT body FROM items WHERE id = ?", (item_id,)).fetchone()
        item = decode_item(bytes(row[0])) if row is not None else None
        cache[item_id] = tuple(m.sha256 for m in item.media) if isinstance(item, Post) else ()
    return cache[item_id]


def photo_notes(
    conn: sqlite3.Connection,
    item_id: str,
    fidelity: str | None,
    notes: tuple[RenditionNote, ...],
    cache: dict[str, tuple[bytes, ...]] | None = None,
) -> tuple[PhotoNote, ...]:
    """How faithfully each photo of ``item_id`` reached one account (docs/PROTOCOL.md §9.4):
    a rendition where one was sent, else the publication's recorded fidelity (the platform's
    declared one, or what the adapter found reading the copy back), with the signed sha256."""
    if not fidelity:
        return ()  # not published, or a post without photos
    sent_as_rendition = {n.photo for n in notes}
    # A value this release does not know is never passed on as "exact": assume the worse case.
    whole = PhotoFidelity(fidelity) if fidelity in _WHOLE else PhotoFidelity.RE_ENCODED
    return tuple(
        PhotoNote(fidelity=PhotoFidelity.RENDITION if n in sent_as_rendition else whole, original_sha256=sha)
        for n, sha in enumerate(_photo_hashes(conn, item_id, {} if cache is None else cache), start=1)
    )


_WHOLE = {str(PhotoFidelity.EXACT), str(PhotoFidelity.RE_ENCODED)}


def _read_back(note: str | None) -> str:
    """The adapter's read-back words, cut to what a receipt carries (a longer one would make the
    station refuse the whole document); the dashboard and the log keep them whole."""
    if not note or len(note) <= MAX_READ_BACK_CHARS:
        return note or ""
    return note[: MAX_READ_BACK_CHARS - 1] + "…"


def _receipt(
    conn: sqlite3.Connection, seq: int, kind: str, k1: str, k2: str, *, cache: dict[str, tuple[bytes, ...]]
) -> Receipt | None:
    """The current state of what one change row describes."""
    if kind == "pub":
        row = conn.execute(
            "SELECT state, url, last_error, remote_id, renditions, fidelity, fidelity_note FROM publications "
            "WHERE item_id = ? AND account = ?",
            (k1, k2),
        ).fetchone()
        if row is None:
            return None
        state, url, err, remote, made, fidelity, note = row
        notes = _rendition_notes(made) if state == "published" else ()
        return PublicationReceipt(
            item_id=k1,
            account=k2,
            state=state,
            url=url,
            error=err,
            seq=seq,
            remote_id=remote,
            renditions=notes,
            photos=photo_notes(conn, k1, fidelity, notes, cache) if state == "published" else (),
            read_back=_read_back(note) if state == "published" else "",
        )
    if kind == "bundle":
        (sha_hex,) = conn.execute("SELECT sha256 FROM bundles WHERE bundle_id = ?", (k1,)).fetchone()
        ids = tuple(i for (i,) in conn.execute("SELECT id FROM items WHERE bundle_id = ? ORDER BY id", (k1,)))
        return BundleReceipt(
            bundle_sha256=bytes.fromhex(sha_hex),
            bundle_id=k1,
            accepted=True,
            code="",
            message="",
            item_ids=ids,
            seq=seq,
        )
    if kind == "rejection":
        sha_hex, code, message = conn.execute(
            "SELECT sha256, code, message FROM rejections WHERE id = ?", (int(k1),)
        ).fetchone()
        return BundleReceipt(
            bundle_sha256=bytes.fromhex(sha_hex),
            bundle_id=None,
            accepted=False,
            code=code,
            message=message,
            item_ids=(),
            seq=seq,
        )
    if kind == "limits":
        return account_limits.receipt(conn, k1, seq)
    if kind == "template":
        return url_templates.receipt(conn, k1, seq)
    if kind == "enrolled":
        accounts = tuple(
            a
            for (a,) in conn.execute(
                "SELECT account FROM accounts WHERE astronaut = ? ORDER BY account", (k1,)
            )
        )
        return EnrolledReceipt(astronaut=k1, accounts=accounts, seq=seq)
    if kind == "command":
        row = conn.execute(
            "SELECT c.state, c.detail, i.target_id FROM commands c JOIN items i ON i.id = c.item_id "
            "WHERE c.item_id = ?",
            (k1,),
        ).fetchone()
        if row is None:
            return None
        return CommandReceipt(
            command_id=k1, target_id=row[2], outcome=CommandOutcome(row[0]), detail=row[1], seq=seq
        )
    return None  # a kind a later release added: this one has nothing to say about it


def build_document(
    home: GroundHome,
    since: int,
    now_ms: int,
    limit: int = DEFAULT_LIMIT,
    *,
    station: str | None = None,
    claims: Iterable[bytes] = (),
    versions: Iterable[int] = (),
    checkpoint: bool = True,
    live: bool = True,
) -> tuple[bytes, int, bool]:
    """A signed receipts document (bytes), the cursor (change seq) for the next one, and whether
    more remain.

    ``station`` scopes it to what that station may read (see ``collect``), after recording
    its ``claims`` (sha256 of bundles it handed off as files, §9); None: everything.
    ``versions``: the receipts versions the reader asked for (§9.3); written in the newest
    of them this ground knows, version 2 (no photo fidelity) when it asked for none.
    ``checkpoint``: carry ground's latest log checkpoint (§15), as every document did before
    link version 2 (whose OPEN answers carry it once a day, ground/server.py).
    ``live``: the document answers a station's request over the link (its cursor moves once it
    is applied); False for a file, which carries every URL template it uses (§9.5).
    """
    version = answer_version(versions)
    if station is not None:
        changes.claim(home.conn, station, claims, now_ms)
    v4_from = None
    if version >= RECEIPTS_VERSION_COMPACT:
        url_templates.make_missing(home.conn, since, limit)
    if station is not None and live:
        v4_from = url_templates.note_reader(home.conn, station, version, since)
    receipts, next_since, more = collect(home.conn, since, limit, station=station)
    if station is not None and live and version < RECEIPTS_VERSION_COMPACT:
        url_templates.note_older(home.conn, station, next_since)  # before the document goes
    held: list[UrlTemplateReceipt] = []
    if version >= RECEIPTS_VERSION_COMPACT:
        held, missing = url_templates.needed(home.conn, receipts, v4_from, since)
        receipts = [*missing, *receipts]
    from . import translog  # late: translog imports this module for ground's key

    note = (translog.latest(home) or "") if checkpoint else ""
    doc = sign_receipts(
        ground_key(home), now_ms, receipts, checkpoint=note, version=version, held_templates=held
    )
    return doc, next_since, more


def item_id_bytes(item_id: str) -> bytes:
    return ulid_to_bytes(item_id)
