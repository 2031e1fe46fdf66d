"""The crew's own check of ground's public transparency log (docs/TRANSPARENCY.md).

Every signed receipts document carries ground's latest log checkpoint; onboard keeps each one
(signature checked with the pinned ground key). Later, ``check`` asks ground's public log for
its newest checkpoint and a consistency proof from every checkpoint ground showed the crew, and
fetches the public proof of every post the crew saw published: what the public is shown must
extend what ground told the station, and hold exactly the bodies the astronauts signed here.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from dataclasses import dataclass

from protocol import ProtocolError
from protocol.tlog import Checkpoint, check_consistency, parse_note, verify_note
from verifier.proof import VerificationFailed, check_proof, load
from verifier.readback import fetch

from .errors import OnboardError

SCHEMA = """
CREATE TABLE IF NOT EXISTS tree_heads (
    size        INTEGER NOT NULL,
    root        BLOB NOT NULL,
    note        TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (size, root)
);
"""


def ensure_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def keep(conn: sqlite3.Connection, note: str, ground_key: bytes, now_ms: int) -> None:
    """Store a checkpoint from a receipts document once its signature checks (else ignore it)."""
    if not note:
        return
    try:
        cp = verify_note(note, note.split("\n", 1)[0], ground_key)
    except ProtocolError:
        return  # the document itself was signed by ground; a bad note inside is simply not kept
    conn.execute(
        "INSERT OR IGNORE INTO tree_heads (size, root, note, received_ms) VALUES (?, ?, ?, ?)",
        (cp.size, cp.root, note, now_ms),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogCheck:
    public: Checkpoint
    heads_checked: int
    posts_checked: int


def check(conn: sqlite3.Connection, ground_url: str, ground_key: bytes) -> LogCheck:
    """Raise OnboardError naming the first disagreement between the public log and the station's view."""
    ensure_schema(conn)
    base = ground_url.rstrip("/")
    try:
        head = json.loads(fetch(f"{base}/log/checkpoint"))
        note = str(head["checkpoint"])
        public = verify_note(note, note.split("\n", 1)[0], ground_key)
        heads = [
            parse_note(n).checkpoint for (n,) in conn.execute("SELECT note FROM tree_heads ORDER BY size")
        ]
        sizes: dict[int, bytes] = {}
        for cp in heads:
            if sizes.setdefault(cp.size, cp.root) != cp.root:
                raise OnboardError(
                    f"ground sent this station two different logs of size {cp.size} (a split view)"
                )
            proof = None
            if 0 < cp.size < public.size:
                proof = json.loads(fetch(f"{base}/log/proof/consistency?old={cp.size}&new={public.size}"))[
                    "proof"
                ]
            check_consistency(cp, public, proof)
        posts = _check_posts(conn, base, ground_key)
    except VerificationFailed as exc:
        if str(exc).startswith("could not fetch"):
            raise OnboardError(f"could not check ground's public log: {exc}") from exc
        raise OnboardError(f"ground's public log disagrees with what it told this station: {exc}") from exc
    except (ProtocolError, KeyError, ValueError) as exc:
        raise OnboardError(f"ground's public log disagrees with what it told this station: {exc}") from exc
    return LogCheck(public=public, heads_checked=len(heads), posts_checked=posts)


def _check_posts(conn: sqlite3.Connection, base: str, ground_key: bytes) -> int:
    rows = conn.execute(
        "SELECT DISTINCT i.id, i.body FROM items i JOIN deliveries d ON d.item_id = i.id WHERE d.state = 'published'"
    ).fetchall()
    for item_id, body in rows:
        proof = load(fetch(f"{base}/p/{item_id}.json"))
        if base64.b64decode(proof["body"]) != bytes(body):
            raise OnboardError(
                f"post {item_id}: the public proof shows a body other than the one signed here"
            )
        check_proof(proof, ground_key=ground_key)
    return len(rows)
