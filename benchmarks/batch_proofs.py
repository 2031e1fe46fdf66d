"""Bundle format 3 against format 2 (docs/PROTOCOL.md §17): what one post's proof costs in bytes,
and what signing and verifying a batch cost, for the bundle sizes of bench_scale.py.

Per bundle of N posts by 3 astronauts (round-robin), on the same posts as bench_scale.py:
- **proof of one post**, besides its body: key id (8) + signature (64) + format 2's statement
  (32 B × that astronaut's posts) or format 3's ``BatchInclusion.to_bytes()`` (tree size, leaf
  index, audit path); mean and largest over all posts;
- **sign**: onboard's batch signing (``encode_compact_items`` with format 2 or 3), posts/s;
- **verify**: ground's whole items-section check (``decode_compact_items``: rebuild every body,
  one signature per astronaut; format 3 also makes every post's audit path for storage), posts/s;
- **check one post**: a reader checking a single post from its stored proof (``check_signature``),
  posts/s;
- **signatures alone** (the floor under sign and verify): from the already-encoded bodies,
  format 2 hashes each body, joins the statement and signs / verifies once per astronaut;
  format 3 hashes each body, builds the tree and signs / verifies its root once per astronaut,
  and on the verify side also makes every post's audit path (what ground stores), posts/s.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.corpus import ASTRONAUTS, astronaut_key
from protocol import KnownKey, Post, encode_item, key_id
from protocol.batch_tree import BatchTree, sign_tree, verify_tree_signature
from protocol.compact_items import decode_compact_items, encode_compact_items
from protocol.keys import verify_signature
from protocol.signing import BATCH_DOMAIN, batch_statement, check_signature, sign_batch

KEY_ID_AND_SIGNATURE = 8 + 64


@dataclass(frozen=True, slots=True, kw_only=True)
class ProofRow:
    posts: int
    fmt: int
    proof_mean_bytes: float
    proof_max_bytes: int
    sign_s: float
    verify_s: float
    check_one_s: float  # for ``checked`` posts
    checked: int
    sign_floor_s: float
    verify_floor_s: float


def _proof_bytes(fmt: int, signed: object) -> int:
    from protocol.signing import SignedItem

    assert isinstance(signed, SignedItem)
    extra = len(signed.statement) if fmt == 2 else len(signed.inclusion.to_bytes()) if signed.inclusion else 0
    return KEY_ID_AND_SIGNATURE + extra


def measure_proofs(posts: Sequence[Post], fmt: int, check_sample: int = 300) -> ProofRow:
    keys = {n: astronaut_key(n) for n in ASTRONAUTS}
    ring = {key_id(k.public_key): KnownKey(astronaut=n, public_key=k.public_key) for n, k in keys.items()}
    items = list(posts)
    t0 = time.perf_counter()
    raw = encode_compact_items(items, keys, format_version=fmt)
    sign_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    verified = decode_compact_items(raw, len(items), ring, format_version=fmt)
    verify_s = time.perf_counter() - t0
    sizes = [_proof_bytes(fmt, v.signed) for v in verified]
    step = max(1, len(verified) // check_sample)
    sample = verified[::step]
    t0 = time.perf_counter()
    for v in sample:
        if not check_signature(v.signed, keys[v.astronaut].public_key):
            raise AssertionError(f"format {fmt}: the proof of {v.item.id} does not check")
    check_s = time.perf_counter() - t0
    sign_floor_s, verify_floor_s = _floors(items, fmt)
    return ProofRow(
        posts=len(items),
        fmt=fmt,
        proof_mean_bytes=sum(sizes) / len(sizes),
        proof_max_bytes=max(sizes),
        sign_s=sign_s,
        verify_s=verify_s,
        check_one_s=check_s,
        checked=len(sample),
        sign_floor_s=sign_floor_s,
        verify_floor_s=verify_floor_s,
    )


def _floors(items: Sequence[Post], fmt: int) -> tuple[float, float]:
    """Seconds to sign, then to verify, every astronaut's batch from its encoded bodies alone."""
    keys = {n: astronaut_key(n) for n in ASTRONAUTS}
    mine = {n: [encode_item(p) for p in items if p.author == n] for n in ASTRONAUTS}
    t0 = time.perf_counter()
    sigs = {n: (sign_batch if fmt == 2 else sign_tree)(keys[n], bs).signature for n, bs in mine.items()}
    sign_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for n, bs in mine.items():
        if fmt == 2:
            ok = verify_signature(keys[n].public_key, sigs[n], BATCH_DOMAIN + batch_statement(bs))
        else:
            tree = BatchTree.of(bs)
            ok = verify_tree_signature(keys[n].public_key, sigs[n], tree.size, tree.root)
            tree.inclusions()
        if not ok:
            raise AssertionError(f"format {fmt}: {n}'s batch signature does not verify")
    return sign_s, time.perf_counter() - t0


def proof_table(rows: Sequence[ProofRow]) -> list[str]:
    lines = [
        "| posts | format | proof of one post, mean / max (B) | sign (posts/s) | verify (posts/s) "
        "| check one post (posts/s) | signatures alone: sign / verify (posts/s) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.posts:,} | {r.fmt} | {r.proof_mean_bytes:,.0f} / {r.proof_max_bytes:,} "
            f"| {r.posts / r.sign_s:,.0f} | {r.posts / r.verify_s:,.0f} | {r.checked / r.check_one_s:,.0f} "
            f"| {r.posts / r.sign_floor_s:,.0f} / {r.posts / r.verify_floor_s:,.0f} |"
        )
    return lines
