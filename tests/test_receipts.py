"""Receipts: ground-signed documents, verified against the pinned key, applied idempotently."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onboard import queue
from onboard.receipts import apply_document
from protocol import RemoteProtocolError, SigningKey
from protocol.ids import new_ulid
from protocol.receipts import BundleReceipt, PublicationReceipt, sign_receipts, verify_receipts

GROUND = SigningKey.from_seed(hashlib.sha256(b"ground receipt key").digest())
OTHER = SigningKey.from_seed(hashlib.sha256(b"someone else").digest())
ID1 = new_ulid(1_790_000_000_000, b"\x01" * 10)
ID2 = new_ulid(1_790_000_000_001, b"\x02" * 10)

RECEIPTS = (
    PublicationReceipt(
        item_id=ID1, account="archive:alice", state="published", url="https://x/1", error=None, seq=5
    ),
    PublicationReceipt(
        item_id=ID2, account="archive:alice", state="failed", url=None, error="text too long", seq=6
    ),
    BundleReceipt(
        bundle_sha256=b"\3" * 32,
        bundle_id=ID1,
        accepted=True,
        code="",
        message="",
        item_ids=(ID1,),
        seq=4,
    ),
    BundleReceipt(
        bundle_sha256=b"\4" * 32,
        bundle_id=None,
        accepted=False,
        code="bad_signature",
        message="altered",
        item_ids=(),
        seq=7,
    ),
)
DOC = sign_receipts(GROUND, 10, RECEIPTS)


def test_round_trip() -> None:
    doc = verify_receipts(DOC, GROUND.public_key)
    assert doc.issued_ms == 10 and doc.receipts == RECEIPTS


def test_other_key_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="pinned"):
        verify_receipts(sign_receipts(OTHER, 10, RECEIPTS), GROUND.public_key)


def test_every_single_byte_flip_is_rejected() -> None:
    for i in range(len(DOC)):
        bad = bytearray(DOC)
        bad[i] ^= 0x01
        with pytest.raises(RemoteProtocolError):
            verify_receipts(bytes(bad), GROUND.public_key)


def test_truncations_and_trailing_bytes_are_rejected() -> None:
    for n in range(len(DOC)):
        with pytest.raises(RemoteProtocolError):
            verify_receipts(DOC[:n], GROUND.public_key)
    with pytest.raises(RemoteProtocolError):
        verify_receipts(DOC + b"\0", GROUND.public_key)


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_garbage_verifies_or_raises_remote_error(data: bytes) -> None:
    try:
        verify_receipts(data, GROUND.public_key)
    except RemoteProtocolError:
        pass


def _queue_with_deliveries(tmp_path: Path) -> sqlite3.Connection:
    conn = queue.connect(tmp_path / "q.db")
    for i in (ID1, ID2):
        conn.execute(
            "INSERT INTO items (id, kind, author, body, key_id, signature, created_ms, status) "
            "VALUES (?, 'post', 'alice', x'00', x'00', x'00', 0, 'sending')",
            (i,),
        )
        conn.execute(
            "INSERT INTO deliveries (item_id, target, state) VALUES (?, 'archive:alice', 'sending')", (i,)
        )
    return conn


def test_apply_is_idempotent_and_never_moves_backwards(tmp_path: Path) -> None:
    conn = _queue_with_deliveries(tmp_path)
    doc = verify_receipts(DOC, GROUND.public_key)
    first = apply_document(conn, doc)
    assert first.changed > 0
    rows = conn.execute("SELECT item_id, state, url, detail FROM deliveries ORDER BY item_id").fetchall()
    assert rows[0] == (ID1, "published", "https://x/1", None)
    assert rows[1][:3] == (ID2, "failed", None)
    assert rows[1][3].startswith("text too long; to resolve: ") and f"onboard cancel {ID2}" in rows[1][3]
    assert apply_document(conn, doc).changed == 0
    older = verify_receipts(
        sign_receipts(
            GROUND,
            11,
            [
                PublicationReceipt(
                    item_id=ID1, account="archive:alice", state="pending", url=None, error=None, seq=1
                )
            ],
        ),
        GROUND.public_key,
    )
    apply_document(conn, older)
    assert conn.execute("SELECT state FROM deliveries WHERE item_id = ?", (ID1,)).fetchone() == ("published",)
    assert conn.execute("SELECT status FROM items WHERE id = ?", (ID1,)).fetchone() == ("published",)
