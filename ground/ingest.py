"""Where bundles are verified and accepted: the only way content enters ground.

Accepting is all or nothing: blobs are fsynced into the store first (harmless if we
crash: content-addressed, unreferenced), then one transaction records the bundle, its
items and one publication per (post, account). A rejected bundle is recorded with its
reason and its file is left untouched.

A bundle is refused whole only for what makes all of it untrustworthy (signatures, hashes,
format, replay). A policy failure of one post, an account its author is not enrolled for,
refuses that (post, account) alone: its publication is recorded 'rejected' with the code
and reason, and every other one goes on (docs/PROTOCOL.md §16).
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from durable.files import FileBatch
from protocol import ErrorCode, Post, RemoteProtocolError, VerifiedBundle, VerifiedItem, verify_bundle
from protocol.codecs import DEFAULT_DECODERS, Decoder
from protocol.limits import DEFAULT_LIMITS, Limits
from protocol.model import Cancel, Retract

from . import changes, db, decoded
from .db import audit, transaction
from .enroll import accounts_of, keyring
from .errors import BundleRejected
from .home import GroundHome


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # the very same bundle again: nothing to do, not an error


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestResult:
    outcome: Outcome
    bundle_id: str
    sha256: str
    post_ids: tuple[str, ...]
    command_ids: tuple[str, ...]
    publications: int
    size_bytes: int


def decoders() -> dict[int, Decoder]:
    """Blob decoders this ground has; transport codecs register themselves here."""
    found: dict[int, Decoder] = dict(DEFAULT_DECODERS)
    try:
        from protocol.dictionary import DECODERS as dict_decoders  # type: ignore[import-not-found,unused-ignore]

        found.update(dict_decoders)
    except ImportError:
        pass
    try:
        from ground.jxl import DECODERS as jxl_decoders  # type: ignore[import-not-found,unused-ignore]

        found.update(jxl_decoders)
    except ImportError:
        pass
    return found


def check_bundle(
    home: GroundHome,
    data: bytes,
    limits: Limits = DEFAULT_LIMITS,
    *,
    store_blobs: bool = False,
    batch: FileBatch | None = None,
) -> VerifiedBundle:
    """Verify signatures, hashes and ground policy without changing anything.

    ``store_blobs``: put each blob into the blob store as soon as it is verified instead of
    returning it (``ingest_bytes``), so memory holds one decoded photo at a time. A bundle
    refused later leaves those blobs stored but unreferenced (content-addressed, harmless).
    With ``batch``, each blob is written at once but durable and visible only when the
    caller syncs the batch (one flush for the bundle's photos, not one per photo).
    """
    conn = home.conn
    store = home.blobs

    def put(_sha: bytes, raw: bytes) -> None:
        # Its name is the sha256 verify_bundle just checked.
        if batch is None:
            store.put(raw)  # fsynced
        else:
            store.put_in(batch, raw)

    try:
        vb = verify_bundle(
            data,
            keyring(conn),
            limits=limits,
            decoders=decoders(),
            have_blob=store.has,
            store_blob=put if store_blobs else None,
        )
    except RemoteProtocolError as exc:
        raise BundleRejected(exc.code, str(exc)) from exc
    _check_policy(conn, vb)
    return vb


def _check_policy(conn: sqlite3.Connection, vb: VerifiedBundle) -> None:
    """Rules that need ground's state: replays and accounts the signer may not use."""
    if conn.execute("SELECT 1 FROM bundles WHERE sha256 = ?", (vb.sha256,)).fetchone():
        return  # an identical re-delivery; the caller reports it as a duplicate
    same_id = conn.execute(
        "SELECT sha256 FROM bundles WHERE bundle_id = ?", (vb.header.bundle_id,)
    ).fetchone()
    if same_id:
        raise BundleRejected(
            ErrorCode.REPLAY, f"bundle id {vb.header.bundle_id} was already used by a different bundle"
        )
    # Items already here, looked up 500 at a time (one query per item was a tenth of
    # accepting a 10,000-post bundle); the first in bundle order is the one reported.
    ids = [v.item.id for v in vb.items]
    seen: dict[str, tuple[str, str | None]] = {}
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        for item_id, bundle_id, states in conn.execute(
            "SELECT i.id, i.bundle_id, COALESCE(group_concat(p.state), i.kind) FROM items i "
            f"LEFT JOIN publications p ON p.item_id = i.id WHERE i.id IN ({','.join('?' * len(part))}) "
            "GROUP BY i.id",
            part,
        ):
            seen[item_id] = (bundle_id, states)
    for item_id in ids:
        if item_id in seen:
            bundle_id, states = seen[item_id]
            state = "already published" if "published" in (states or "") else "already accepted"
            raise BundleRejected(
                ErrorCode.REPLAY, f"post {item_id} {state} (from bundle {bundle_id}); replay refused"
            )


def refusal(conn: sqlite3.Connection, author: str, account: str) -> str | None:
    """Why ``author`` may not publish to ``account`` here (code and reason), or None (§16)."""
    if account in accounts_of(conn, author):
        return None
    return (
        f"[{ErrorCode.UNKNOWN_ACCOUNT}] {author} is not enrolled for account {account} "
        f"(ground enroll {author} --account {account})"
    )


def record_rejection(home: GroundHome, data: bytes, source: str, exc: BundleRejected, now_ms: int) -> None:
    conn = home.conn
    sha = hashlib.sha256(data).hexdigest()
    with transaction(conn):
        conn.execute(
            "INSERT INTO rejections (received_ms, source, sha256, size_bytes, code, message) VALUES (?,?,?,?,?,?)",
            (now_ms, source, sha, len(data), str(exc.code), exc.message),
        )
        audit(conn, now_ms, "ingest", "reject", f"{source}: {exc.code}: {exc.message}")


def ingest_bytes(
    home: GroundHome, data: bytes, *, source: str, now_ms: int, limits: Limits = DEFAULT_LIMITS
) -> IngestResult:
    """Verify and durably accept one bundle; raises BundleRejected (and records it) on failure.

    Durability is paid once per bundle (issue 18): the bundle's photos are written as they
    are verified and made durable together, then one transaction records everything.
    """
    home.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # anchors the file batch
    with FileBatch(home.root) as batch:
        try:
            vb = check_bundle(home, data, limits, store_blobs=True, batch=batch)
        except BundleRejected as exc:
            record_rejection(home, data, source, exc, now_ms)
            raise
        for raw in vb.blobs.values():
            home.blobs.put_in(batch, raw)
        batch.sync()  # before the transaction that references them
        return _accept(home, vb, data, source=source, now_ms=now_ms)


def _accept(home: GroundHome, vb: VerifiedBundle, data: bytes, *, source: str, now_ms: int) -> IngestResult:
    """The one transaction that accepts a verified bundle whose photos are stored."""
    conn = home.conn
    posts = [v.item for v in vb.items if isinstance(v.item, Post)]
    commands = [v.item for v in vb.items if isinstance(v.item, Cancel | Retract)]

    def result(outcome: Outcome, publications: int) -> IngestResult:
        return IngestResult(
            outcome=outcome,
            bundle_id=vb.header.bundle_id,
            sha256=vb.sha256,
            post_ids=tuple(p.id for p in posts),
            command_ids=tuple(c.id for c in commands),
            publications=publications,
            size_bytes=len(data),
        )

    if conn.execute("SELECT 1 FROM bundles WHERE sha256 = ?", (vb.sha256,)).fetchone():
        return result(Outcome.DUPLICATE, 0)
    # A format-2 signer's statement is one object shared by all their items: hash and store it
    # once per bundle, not once per item (that was quadratic in the bundle size; issue 18).
    statement_sha: dict[bytes, bytes | None] = {}
    refusals: dict[tuple[str, str], str | None] = {}
    with transaction(conn):
        conn.execute(
            "INSERT INTO bundles (bundle_id, sha256, received_ms, source, size_bytes, item_count) VALUES (?,?,?,?,?,?)",
            (vb.header.bundle_id, vb.sha256, now_ms, source, len(data), len(vb.items)),
        )
        item_rows, pub_rows = [], []
        for v in vb.items:
            proof = None if v.signed.inclusion is None else v.signed.inclusion.to_bytes()
            item_rows.append(
                _item_row(
                    vb.header.bundle_id,
                    v,
                    _statement_sha(conn, statement_sha, v.signed.statement),
                    proof,
                    now_ms,
                )
            )
            if isinstance(v.item, Post):
                decoded.remember(v.signed.body, v.item, proof, v.signed.inclusion)  # publishing reuses them
                pub_rows += _publication_rows(conn, v.item, refusals, now_ms)
        n_pubs = sum(1 for r in pub_rows if r[2] == "pending")
        # All rows in two statements (one INSERT per row was most of this transaction's time).
        conn.executemany(
            "INSERT INTO items (id, bundle_id, kind, author, key_id, body, signature, statement_sha256, "
            "created_ms, publish_at_ms, target_id, received_ms, batch_proof) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            item_rows,
        )
        # The change log stamped once for the group, not by a trigger per row.
        with changes.stamping_inserts_by_group(conn, [r[:2] for r in pub_rows]):
            conn.executemany(
                "INSERT INTO publications (item_id, account, state, updated_ms, next_attempt_ms, "
                "last_error, retryable) VALUES (?, ?, ?, ?, ?, ?, ?)",
                pub_rows,
            )
        audit(
            conn,
            now_ms,
            "ingest",
            "accept",
            f"bundle {vb.header.bundle_id} from {source}: {len(posts)} post(s), {len(commands)} command(s)",
        )
    return result(Outcome.ACCEPTED, n_pubs)


def _item_row(
    bundle_id: str, v: VerifiedItem, statement_sha256: bytes | None, proof: bytes | None, now_ms: int
) -> tuple[Any, ...]:
    """The items row of one verified item."""
    it = v.item
    return (
        it.id,
        bundle_id,
        it.kind.name.lower(),
        it.author,
        v.signed.key_id,
        v.signed.body,
        v.signed.signature,
        statement_sha256,
        it.created_ms,
        it.publish_at_ms if isinstance(it, Post) else None,
        None if isinstance(it, Post) else it.target_id,
        now_ms,
        proof,  # format 3: this item's own proof, bounded (docs/PROTOCOL.md §17)
    )


def _publication_rows(
    conn: sqlite3.Connection, post: Post, refusals: dict[tuple[str, str], str | None], now_ms: int
) -> list[tuple[Any, ...]]:
    """A post's publications rows: pending, or rejected (and audited) where the account refuses its author."""
    rows = []
    for account in post.targets:
        if (post.author, account) not in refusals:  # one query per signer and account
            refusals[post.author, account] = refusal(conn, post.author, account)
        why = refusals[post.author, account]
        rows.append(
            (
                post.id,
                account,
                "pending" if why is None else "rejected",
                now_ms,
                post.publish_at_ms if why is None else None,
                why,
                None if why is None else 0,
            )
        )
        if why is not None:
            audit(conn, now_ms, "ingest", "reject-item", f"{post.id} → {account}: {why}")
    return rows


def _statement_sha(
    conn: sqlite3.Connection, seen: dict[bytes, bytes | None], statement: bytes
) -> bytes | None:
    """:func:`db.store_statement` once per distinct statement of the bundle being accepted."""
    if statement not in seen:
        seen[statement] = db.store_statement(conn, statement)
    return seen[statement]
