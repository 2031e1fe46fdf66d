"""Ground's receipt key and the signed receipts documents it hands to stations (§9).

The key is a raw Ed25519 seed in ``<home>/receipt.key`` (mode 0600), made on first use;
its public half goes into every station token file so the station can pin it.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from protocol import SigningKey, format_public_key
from protocol.ids import ulid_to_bytes
from protocol.receipts import BundleReceipt, PublicationReceipt, Receipt, sign_receipts

from . import account_limits
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


def collect(
    conn: sqlite3.Connection, since_ms: int, limit: int = DEFAULT_LIMIT, *, station: str | None = None
) -> tuple[list[Receipt], int, bool]:
    """Receipts for everything that changed at or after ``since_ms``, oldest first.

    With ``station``, only what that station uploaded over the live link: its bundles, and
    the publications of the posts they carried (one station never learns of another's posts).
    Returns (receipts, next_since_ms, more). Entries at exactly next_since_ms may come
    again in the next document; applying a receipt twice changes nothing.
    """
    # "?2 IS NULL OR ..." keeps one query for both cases; NULL means every source.
    source = None if station is None else station_source(station)
    out: list[Receipt] = []
    for item_id, account, state, url, err, updated in conn.execute(
        "SELECT p.item_id, p.account, p.state, p.url, p.last_error, p.updated_ms FROM publications p "
        "JOIN items i ON i.id = p.item_id JOIN bundles b ON b.bundle_id = i.bundle_id "
        "WHERE p.updated_ms >= ?1 AND (?2 IS NULL OR b.source = ?2) ORDER BY p.updated_ms LIMIT ?3",
        (since_ms, source, limit + 1),
    ):
        out.append(
            PublicationReceipt(
                item_id=item_id, account=account, state=state, url=url, error=err, updated_ms=updated
            )
        )
    for bundle_id, sha_hex, received in conn.execute(
        "SELECT bundle_id, sha256, received_ms FROM bundles WHERE received_ms >= ?1 "
        "AND (?2 IS NULL OR source = ?2) ORDER BY received_ms LIMIT ?3",
        (since_ms, source, limit + 1),
    ):
        ids = tuple(
            i for (i,) in conn.execute("SELECT id FROM items WHERE bundle_id = ? ORDER BY id", (bundle_id,))
        )
        out.append(
            BundleReceipt(
                bundle_sha256=bytes.fromhex(sha_hex),
                bundle_id=bundle_id,
                accepted=True,
                code="",
                message="",
                item_ids=ids,
                updated_ms=received,
            )
        )
    for sha_hex, received, code, message in conn.execute(
        "SELECT sha256, received_ms, code, message FROM rejections WHERE received_ms >= ?1 "
        "AND (?2 IS NULL OR source = ?2) ORDER BY received_ms LIMIT ?3",
        (since_ms, source, limit + 1),
    ):
        out.append(
            BundleReceipt(
                bundle_sha256=bytes.fromhex(sha_hex),
                bundle_id=None,
                accepted=False,
                code=code,
                message=message,
                item_ids=(),
                updated_ms=received,
            )
        )
    out.extend(account_limits.changed_since(conn, since_ms, limit + 1))
    out.sort(key=lambda r: r.updated_ms)
    more = len(out) > limit
    out = out[:limit]
    next_since = out[-1].updated_ms if out else since_ms
    if more and next_since == since_ms:
        next_since += 1  # more than `limit` changes in one millisecond: move on regardless
    return out, next_since, more


def build_document(
    home: GroundHome, since_ms: int, now_ms: int, limit: int = DEFAULT_LIMIT, *, station: str | None = None
) -> tuple[bytes, int, bool]:
    """A signed receipts document (bytes), the cursor for the next one, and whether more remain.

    ``station`` scopes it to what that station uploaded (see ``collect``); None: everything.
    """
    receipts, next_since, more = collect(home.conn, since_ms, limit, station=station)
    return sign_receipts(ground_key(home), now_ms, receipts), next_since, more


def item_id_bytes(item_id: str) -> bytes:
    return ulid_to_bytes(item_id)
