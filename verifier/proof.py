"""Check a post's public proof without trusting ground (docs/TRANSPARENCY.md).

``check_proof`` takes the JSON of ``/p/<item>.json`` and the keys the reader pins, and
returns what it established, step by step, or raises ``VerificationFailed`` naming the first
step that failed. It uses protocol/ alone: the same signature and log rules ground applies.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from protocol import ProtocolError, decode_item, key_id, parse_public_key
from protocol.batch_tree import BatchInclusion
from protocol.model import Post
from protocol.signing import SignedItem, check_signature
from protocol.tlog import (
    Checkpoint,
    check_inclusion,
    parse_entry,
    verify_cosignature,
    verify_note,
)


class VerificationFailed(Exception):
    """One check failed; the message says which and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Verified:
    post: Post
    checkpoint: Checkpoint
    steps: tuple[str, ...]
    publications: tuple[dict[str, Any], ...]
    witnesses: tuple[str, ...] = field(default=())


def _b64(value: str | None) -> bytes:
    return b"" if value is None else base64.b64decode(value, validate=True)


def _leaf(
    proof: dict[str, Any], leaf: dict[str, Any] | None, cp: Checkpoint, what: str, **expect: Any
) -> int:
    if not leaf:
        raise VerificationFailed(f"{what} is not in the log checkpoint of size {cp.size}")
    entry_bytes = str(leaf["entry"]).encode()
    try:
        entry = parse_entry(entry_bytes)
        check_inclusion(entry_bytes, int(leaf["index"]), cp, leaf["inclusion"])
    except ProtocolError as exc:
        raise VerificationFailed(f"{what}: {exc}") from exc
    for k, v in expect.items():
        if entry.get(k) != v:
            raise VerificationFailed(f"{what}: the log says {k} = {entry.get(k)!r}, expected {v!r}")
    return int(leaf["index"])


def _checkpoint(proof: dict[str, Any], ground_key: bytes) -> Checkpoint:
    try:
        return verify_note(str(proof["checkpoint"]), str(proof["origin"]), ground_key)
    except ProtocolError as exc:
        raise VerificationFailed(f"ground's checkpoint: {exc}") from exc


def _witnessed(
    proof: dict[str, Any], cp: Checkpoint, witnesses: dict[str, bytes], need: int
) -> tuple[str, ...]:
    ok = tuple(
        c["witness"]
        for c in proof.get("cosignatures", [])
        if c["witness"] in witnesses
        and verify_cosignature(witnesses[c["witness"]], cp, int(c["time_s"]), bytes.fromhex(c["signature"]))
    )
    if len(ok) < need:
        raise VerificationFailed(
            f"checkpoint {cp.size} is cosigned by {len(ok)} of the witnesses you trust; {need} required"
        )
    return ok


def check_proof(
    proof: dict[str, Any],
    *,
    ground_key: bytes | None = None,
    witnesses: dict[str, bytes] | None = None,
    min_witnesses: int = 0,
) -> Verified:
    """Check signature, body, log inclusion, key enrolment and outcomes; raise on the first failure.

    ``ground_key``: the log key the reader pins (None: the one the proof names, reported as unpinned).
    """
    steps: list[str] = []
    try:
        body, sig, statement = _b64(proof["body"]), _b64(proof["signature"]), _b64(proof.get("statement"))
        # Format 3 (docs/PROTOCOL.md §17): tree size, leaf index and audit path to the signed root.
        tree = proof.get("batch_proof")
        inclusion = None if tree is None else BatchInclusion.from_json(tree)
        public_key = parse_public_key(str(proof["public_key"]))
        post = decode_item(body)
    except (KeyError, ValueError, ProtocolError) as exc:
        raise VerificationFailed(f"the proof's signed body or key is malformed: {exc}") from exc
    if not isinstance(post, Post) or post.id != proof.get("item_id"):
        raise VerificationFailed("the signed body is not the post this proof is about")
    kid = key_id(public_key)
    if kid.hex() != proof.get("key_id"):
        raise VerificationFailed("the key id does not name the public key given")
    signed = SignedItem(body=body, key_id=kid, signature=sig, statement=statement, inclusion=inclusion)
    if not check_signature(signed, public_key):
        raise VerificationFailed(f"the astronaut's signature does not cover this body (key {kid.hex()})")
    how = (
        f", through an audit path of {len(inclusion.path)} hash(es) to the root of a batch of {inclusion.tree_size}"
        if inclusion is not None
        else ""
    )
    steps.append(
        f"{post.author}'s Ed25519 signature (key {kid.hex()}) covers the body: text and photo hashes{how}"
    )
    pinned = ground_key is not None
    gk = ground_key if ground_key is not None else parse_public_key(str(proof["ground_key"]))
    cp = _checkpoint(proof, gk)
    steps.append(
        f"ground's checkpoint of {cp.size} leaves is signed by {'the pinned' if pinned else 'its own (unpinned)'} log key"
    )
    leaves = proof.get("leaves", {})
    body_sha = hashlib.sha256(body).hexdigest()
    item_index = _leaf(
        proof, leaves.get("item"), cp, "the post", kind="item", item_id=post.id, body_sha256=body_sha
    )
    steps.append(f"the post is leaf {item_index} of the log")
    _leaf(
        proof,
        leaves.get("key"),
        cp,
        "the key's enrolment",
        kind="key-enrolled",
        key_id=kid.hex(),
        astronaut=post.author,
    )
    steps.append(f"key {kid.hex()} is enrolled for {post.author} in the log")
    if leaves.get("revocation"):
        rev = _leaf(
            proof, leaves["revocation"], cp, "the key's revocation", kind="key-revoked", key_id=kid.hex()
        )
        if rev < item_index:
            raise VerificationFailed(f"key {kid.hex()} was revoked (leaf {rev}) before this post was logged")
        steps.append(f"key {kid.hex()} was revoked later (leaf {rev}), after this post")
    pubs = []
    for p in proof.get("publications", []):
        if p.get("state") == "published":
            _leaf(
                proof,
                p.get("leaf"),
                cp,
                f"the publication on {p['account']}",
                kind="publication",
                item_id=post.id,
                account=p["account"],
                url=p.get("url"),
                state="published",
            )
            pubs.append(p)
    steps.append(f"{len(pubs)} publication(s) are in the log with their links")
    witnessed = _witnessed(proof, cp, witnesses or {}, min_witnesses)
    return Verified(
        post=post, checkpoint=cp, steps=tuple(steps), publications=tuple(pubs), witnesses=witnessed
    )


def load(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise VerificationFailed(f"the proof is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise VerificationFailed("the proof is not a JSON object")
    return value
