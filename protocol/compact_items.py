"""The compact, batch-signed items section of bundle format 2 (docs/PROTOCOL.md §14).

A tweet-length post is ~70 bytes of text; format 1 sends ~180 bytes of framing with it
(a 64-byte signature, a 16-byte id with 80 random bits, the author, the targets, ...).
Format 2 sends what the receiver cannot work out for itself, laid out in columns so zstd
sees all texts back to back:

- one signature per astronaut per bundle, over a statement of their item bodies' sha256;
- no author (the signing key names the astronaut), no id when it is the content-derived
  one (``model.derived_id``), times as whole-second deltas (milliseconds only where an
  item has them), each distinct target list once.

The receiver rebuilds every canonical format-1 body byte for byte, so what is stored,
audited and published is exactly what format 1 carries; only the proof differs.

Format 3 (§17) is this same section; only what each signer's signature covers differs: a
Merkle tree root over their body hashes (``batch_tree.py``) instead of the list of them, so
each item's proof is an audit path of ⌈log₂ n⌉ hashes.

A post with a rendition consent (body version 2, §3.1) has its list in a 15th field, a sparse
``[index, [target, ...]]`` list (§14.8). The field is present only when some post has one, so
every section without one is the 14 fields of before, byte for byte; a writer adds it only for
a receiver whose capability token lists ``compact_bodies=…,2`` (older ones refuse 15 fields).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .batch_tree import BatchTree, sign_tree, verify_tree_signature
from .canonical import expect, expect_list, pack, unpack
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .ids import ulid_from_bytes, ulid_to_bytes
from .keys import KEY_ID_BYTES, KnownKey, SigningKey, verify_signature
from .limits import DEFAULT_LIMITS, Limits
from .model import (
    MAX_TIME_MS,
    Cancel,
    Item,
    ItemKind,
    MediaRef,
    Post,
    Retract,
    blank_id,
    check_item,
    check_renditions,
    checked_body,
    derived_id,
    encode_item,
    id_entropy,
    media_from_wire,
)
from .signing import BATCH_DOMAIN, SignedItem, VerifiedItem, batch_statement, sign_batch
from .varints import read_varints, varint, zigzag_varint

FIELDS = 14
# The 15th field, present only when some post allows a rendition (§14.8).
RENDITIONS_FIELD = 14
MAX_SIGNERS = 255
# Item body versions this section carries: 2 in the rendition field (capability ``compact_bodies``).
COMPACT_BODY_VERSIONS = frozenset({1, 2})
# The bundle formats whose items section this is: 2 signs statements (§14.3), 3 tree roots (§17).
COMPACT_FORMATS = frozenset({2, 3})


def encode_compact_items(
    items: Sequence[Item],
    keys: Mapping[str, SigningKey],
    limits: Limits = DEFAULT_LIMITS,
    *,
    format_version: int = 2,
) -> bytes:
    """The raw (uncompressed) format-2 or format-3 items section for ``items``, each author's
    items signed as one batch with ``keys[author]``."""
    if format_version not in COMPACT_FORMATS:
        raise LocalProtocolError(f"bundle format {format_version} has no compact items section")
    if not items:
        raise LocalProtocolError("a bundle needs at least one item")
    authors: list[str] = []
    for it in items:
        if it.author not in authors:
            authors.append(it.author)
        if it.author not in keys:
            raise LocalProtocolError(f"no signing key for {it.author!r}, who wrote item {it.id}")
    if len(authors) > MAX_SIGNERS:
        raise LocalProtocolError(f"at most {MAX_SIGNERS} astronauts per bundle")
    bodies = [encode_item(it, limits) for it in items]
    signers = []
    for a in authors:
        mine = [b for it, b in zip(items, bodies, strict=True) if it.author == a]
        batch = sign_batch(keys[a], mine) if format_version == 2 else sign_tree(keys[a], mine)
        signers.append([batch.key_id, batch.signature])
    target_sets: list[list[str]] = []
    kinds = bytearray()
    signer_of = bytearray()
    created = bytearray()
    targets_of = bytearray()
    text_lengths = bytearray()
    texts: list[str] = []
    ids: list[list[Any]] = []
    media: list[list[Any]] = []
    publish_at: list[list[int]] = []
    renditions: list[list[Any]] = []
    command_targets = bytearray()
    # Times travel as whole seconds (onboard composes whole-second times, §14): a delta of a
    # few minutes is then 2 varint bytes, not 3, and the rare millisecond part goes sparse.
    prev = items[0].created_ms // 1000
    millis: list[list[int]] = []
    for i, it in enumerate(items):
        kinds.append(int(it.kind))
        signer_of.append(authors.index(it.author))
        created += zigzag_varint(it.created_ms // 1000 - prev)
        prev = it.created_ms // 1000
        if it.created_ms % 1000:
            millis.append([i, it.created_ms % 1000])
        if it.id != derived_id(it, limits):
            ids.append([i, ulid_to_bytes(it.id)])
        if isinstance(it, Post):
            tset = list(it.targets)
            if tset not in target_sets:
                target_sets.append(tset)
            targets_of += varint(target_sets.index(tset))
            text_lengths += varint(len(it.text.encode()))
            texts.append(it.text)
            if it.media:
                media.append([i, [[m.sha256, m.size_bytes, m.media_type, m.alt] for m in it.media]])
            if it.publish_at_ms is not None:
                publish_at.append([i, it.publish_at_ms])
            if it.renditions:
                renditions.append([i, list(it.renditions)])
        else:
            command_targets += ulid_to_bytes(it.target_id)
    # Left out when empty: a section without consents is the 14 fields every reader knows.
    tail: list[Any] = [renditions] if renditions else []
    return pack(
        [
            items[0].created_ms // 1000,
            signers,
            target_sets,
            bytes(kinds),
            bytes(signer_of),
            bytes(created),
            bytes(targets_of),
            bytes(text_lengths),
            "".join(texts),
            ids,
            media,
            publish_at,
            bytes(command_targets),
            millis,
            *tail,
        ]
    )


def decode_compact_items(
    raw: bytes,
    count: int,
    keyring: Mapping[bytes, KnownKey],
    limits: Limits = DEFAULT_LIMITS,
    *,
    format_version: int = 2,
) -> list[VerifiedItem]:
    """Rebuild and verify every item of a format-2 or -3 items section, or raise RemoteProtocolError.

    Checks, in order: shape and canonical form, every signer is an enrolled key, each rebuilt
    body, each signer's batch signature, then revocation (as format 1 does per item). A
    format-3 item comes back with its inclusion proof (``SignedItem.inclusion``).
    """
    if format_version not in COMPACT_FORMATS:
        raise LocalProtocolError(f"bundle format {format_version} has no compact items section")
    section = _parse(raw, count, keyring, limits)
    items, bodies = _rebuild(section, count, limits)
    if format_version == 3:
        return _verify_trees(section, items, bodies)
    return _verify_batches(section, items, bodies)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Section:
    """A format-2 items section whose shape and canonical form checked out; nothing rebuilt yet."""

    base_s: int
    signers: list[tuple[bytes, bytes, KnownKey]]
    target_sets: list[list[str]]
    kinds: bytes
    signer_of: bytes
    created: list[int]
    targets_of: list[int]
    text_lengths: list[int]
    texts: bytes
    explicit_ids: dict[int, bytes]
    media: dict[int, tuple[MediaRef, ...]]
    publish_at: dict[int, int]
    command_targets: bytes
    millis: dict[int, int]
    renditions: dict[int, tuple[str, ...]]


def section_bounds(count: int, limits: Limits) -> tuple[int, int]:
    """(longest array, most values) a format-2 items section of ``count`` items can hold.

    From the layout (§14.4): the 14 fields; a [key id, signature] row per signer; at most one
    target list per post, each of max_targets_per_post; an [index, value] row per item in the
    sparse id, publish time and millisecond lists, an [index, media list] row per post
    with up to max_media_per_post 4-field entries, and an [index, target list] row per post in
    the rendition field (§14.8). canonical.unpack refuses anything bigger before building it,
    so a small compressed section cannot unpack into millions of values.
    """
    longest = max(FIELDS + 1, count, limits.max_targets_per_post, limits.max_media_per_post)
    signers = 3 * min(count, MAX_SIGNERS)
    per_item = (
        (1 + limits.max_targets_per_post)
        + 3 * 3
        + (3 + 5 * limits.max_media_per_post)
        + (3 + limits.max_targets_per_post)
    )
    return longest, FIELDS + 2 + signers + count * per_item


def _parse(raw: bytes, count: int, keyring: Mapping[bytes, KnownKey], limits: Limits) -> _Section:
    """Decode the 14 fields and enforce every canonical-form rule (docs/PROTOCOL.md §14.4)."""
    longest, values = section_bounds(count, limits)
    v = expect_list(
        unpack(
            raw,
            what="items section",
            max_bytes=limits.max_items_bytes,
            max_array_len=longest,
            max_values=values,
        ),
        what="items section",
        min_len=FIELDS,
        max_len=FIELDS + 1,
    )
    base_s = expect(v[0], int, what="base time")
    signers = _signers(v[1], count, keyring)
    target_sets = _target_sets(v[2], limits)
    kinds = _column(v[3], count, "kinds")
    signer_of = _column(v[4], count, "signer column")
    created = read_varints(expect(v[5], bytes, what="created column"), count, "created column", signed=True)
    posts = [i for i, k in enumerate(kinds) if k == ItemKind.POST]
    commands = [i for i, k in enumerate(kinds) if k != ItemKind.POST]
    targets_of = read_varints(expect(v[6], bytes, what="targets column"), len(posts), "targets column")
    text_lengths = read_varints(expect(v[7], bytes, what="text lengths"), len(posts), "text lengths")
    texts = expect(v[8], str, what="texts").encode()
    explicit_ids = dict(_sparse(v[9], count, "id list", lambda x: expect(x, bytes, what="item id")))
    post_set = frozenset(posts)
    media = dict(_sparse(v[10], count, "media list", lambda x: _media_list(x, limits), only=post_set))
    publish_at = dict(
        _sparse(
            v[11], count, "publish time list", lambda x: expect(x, int, what="publish time"), only=post_set
        )
    )
    command_targets = expect(v[12], bytes, what="command targets")
    millis = dict(_sparse(v[13], count, "millisecond list", lambda x: expect(x, int, what="milliseconds")))
    renditions: dict[int, tuple[str, ...]] = {}
    if len(v) > RENDITIONS_FIELD:
        renditions = dict(
            _sparse(
                v[RENDITIONS_FIELD],
                count,
                "rendition list",
                lambda x: _rendition_list(x, limits),
                only=post_set,
            )
        )
        if not renditions:
            raise _malformed("the rendition field is present but empty; leave it out (§14.8)")
    for i, ms in millis.items():
        if not 0 < ms < 1000:
            raise _malformed(f"item {i} milliseconds {ms} must be 1..999 (whole seconds are left out)")
    if len(command_targets) != 16 * len(commands):
        raise _malformed(
            f"command targets are {len(command_targets)} bytes, expected 16 × {len(commands)} commands"
        )

    for i, k in enumerate(kinds):
        if k not in (ItemKind.POST, ItemKind.CANCEL, ItemKind.RETRACT):
            raise _malformed(f"item {i} has unknown kind {k}")
    for i, s in enumerate(signer_of):
        if s >= len(signers):
            raise _malformed(f"item {i} names signer {s}, but the bundle has {len(signers)}")
    first_use = list(dict.fromkeys(signer_of))
    if first_use != list(range(len(signers))):
        raise _malformed("signers must be listed in the order their first item appears, each used")
    if sum(text_lengths) != len(texts):
        raise _malformed(f"text lengths add up to {sum(text_lengths)} bytes, the texts are {len(texts)}")
    for i, t in enumerate(targets_of):
        if t >= len(target_sets):
            raise _malformed(f"post {posts[i]} names target list {t}, but the bundle has {len(target_sets)}")
    if list(dict.fromkeys(targets_of)) != list(range(len(target_sets))):
        raise _malformed("target lists must be listed in the order they are first used, each used")
    if created and created[0] != 0 or base_s < 0:
        raise _malformed("the first item's created second must equal the base time")

    return _Section(
        base_s=base_s,
        signers=signers,
        target_sets=target_sets,
        kinds=kinds,
        signer_of=signer_of,
        created=created,
        targets_of=targets_of,
        text_lengths=text_lengths,
        texts=texts,
        explicit_ids=explicit_ids,
        media=media,
        publish_at=publish_at,
        command_targets=command_targets,
        millis=millis,
        renditions=renditions,
    )


def _rebuild(sec: _Section, count: int, limits: Limits) -> tuple[list[Item], list[bytes]]:
    """Every item as the astronaut wrote it (author from the signer, id derived unless given)
    and its body: what the signatures cover."""
    items: list[Item] = []
    bodies: list[bytes] = []
    second = sec.base_s
    pos = 0
    post_no = 0
    cmd_no = 0
    for i in range(count):
        second += sec.created[i]
        now = second * 1000 + sec.millis.get(i, 0)
        if not 0 <= now <= MAX_TIME_MS:
            raise _malformed(f"item {i} created time {now} is outside 0..{MAX_TIME_MS} ms")
        author = sec.signers[sec.signer_of[i]][2].astronaut
        placeholder = blank_id(now)  # the id the body that derives the real one is written with
        it: Item
        if sec.kinds[i] == ItemKind.POST:
            n = sec.text_lengths[post_no]
            if n > limits.max_text_bytes:  # the code format 1 gives (§3), not check_item's malformed
                raise RemoteProtocolError(
                    ErrorCode.LIMIT_EXCEEDED, f"post {i} text exceeds {limits.max_text_bytes} bytes"
                )
            try:
                text = sec.texts[pos : pos + n].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _malformed(f"post {i} text is not valid UTF-8 ({exc.reason})") from exc
            pos += n
            it = Post(
                id=placeholder,
                author=author,
                created_ms=now,
                text=text,
                media=sec.media.get(i, ()),
                targets=tuple(sec.target_sets[sec.targets_of[post_no]]),
                publish_at_ms=sec.publish_at.get(i),
                renditions=sec.renditions.get(i, ()),
            )
            if it.renditions:
                # The codes format 1 gives a bad consent (§3.1), not derived_id's malformed, and
                # in format 1's order: the rest of the post first, then its rendition list.
                try:
                    check_item(replace(it, renditions=()), limits)
                except LocalProtocolError as exc:
                    raise _malformed(f"item {i}: {exc}") from exc
                check_renditions(it.renditions, it.targets, functools.partial(_post_error, i))
            post_no += 1
        else:
            target_id = ulid_from_bytes(sec.command_targets[16 * cmd_no : 16 * cmd_no + 16])
            cmd_no += 1
            cls = Cancel if sec.kinds[i] == ItemKind.CANCEL else Retract
            it = cls(id=placeholder, author=author, created_ms=now, target_id=target_id)
        # derived_id, with the check (encode_item's) done once for both bodies and each id
        # written as bytes once (issue 18).
        try:
            check_item(it, limits)
        except LocalProtocolError as exc:
            raise _malformed(f"item {i}: {exc}") from exc
        stamp = now.to_bytes(6, "big")  # in range: checked above
        raw_id = stamp + id_entropy(checked_body(it, stamp + bytes(10)))  # the derived id
        explicit = sec.explicit_ids.get(i)
        if explicit is not None:
            if len(explicit) != 16:
                raise _malformed(f"item {i} id must be 16 bytes, got {len(explicit)}")
            if explicit == raw_id:
                raise _malformed(f"item {i} carries the id the receiver derives; leave it out")
            raw_id = explicit
        it = replace(it, id=ulid_from_bytes(raw_id))
        items.append(it)
        bodies.append(checked_body(it, raw_id))  # checked above
    return items, bodies


def _verify_batches(sec: _Section, items: list[Item], bodies: list[bytes]) -> list[VerifiedItem]:
    """Each signer's batch signature over its items' rebuilt bodies, then revocation.

    The bodies were checked against the limits by check_item when _rebuild derived each id
    (the rules and limits a format-1 body meets in decode_item)."""
    signers, signer_of = sec.signers, sec.signer_of
    statements: list[bytes] = []
    for s, (kid, sig, known) in enumerate(signers):
        mine = [b for b, who in zip(bodies, signer_of, strict=True) if who == s]
        statement = batch_statement(mine)
        if not verify_signature(known.public_key, sig, BATCH_DOMAIN + statement):
            raise RemoteProtocolError(
                ErrorCode.BAD_SIGNATURE,
                f"bad batch signature by key {kid.hex()} ({known.astronaut}) over {len(mine)} item(s): "
                f"they were altered, or written under another author name than {known.astronaut!r}",
            )
        if known.revoked:
            raise RemoteProtocolError(
                ErrorCode.REVOKED_KEY,
                f"{len(mine)} item(s) signed by revoked key {kid.hex()} ({known.astronaut})",
            )
        statements.append(statement)
    return [
        VerifiedItem(
            item=it,
            signed=SignedItem(
                body=body, key_id=signers[s][0], signature=signers[s][1], statement=statements[s]
            ),
            astronaut=signers[s][2].astronaut,
        )
        for it, body, s in zip(items, bodies, signer_of, strict=True)
    ]


def _verify_trees(sec: _Section, items: list[Item], bodies: list[bytes]) -> list[VerifiedItem]:
    """Format 3: each signer's signature over the Merkle root of its items' rebuilt bodies
    (docs/PROTOCOL.md §17), then revocation; every item gets its audit path."""
    proofs: list[SignedItem | None] = [None] * len(items)
    for s, (kid, sig, known) in enumerate(sec.signers):
        mine = [i for i, who in enumerate(sec.signer_of) if who == s]
        tree = BatchTree.of([bodies[i] for i in mine])
        if not verify_tree_signature(known.public_key, sig, tree.size, tree.root):
            raise RemoteProtocolError(
                ErrorCode.BAD_SIGNATURE,
                f"bad batch signature by key {kid.hex()} ({known.astronaut}) over the tree of "
                f"{len(mine)} item(s): they were altered, or written under another author name "
                f"than {known.astronaut!r}",
            )
        if known.revoked:
            raise RemoteProtocolError(
                ErrorCode.REVOKED_KEY,
                f"{len(mine)} item(s) signed by revoked key {kid.hex()} ({known.astronaut})",
            )
        for i, inclusion in zip(mine, tree.inclusions(), strict=True):
            proofs[i] = SignedItem(body=bodies[i], key_id=kid, signature=sig, inclusion=inclusion)
    return [
        VerifiedItem(item=it, signed=signed, astronaut=sec.signers[s][2].astronaut)
        for it, signed, s in zip(items, proofs, sec.signer_of, strict=True)
        if signed is not None
    ]


def _post_error(index: int, code: ErrorCode, message: str) -> RemoteProtocolError:
    return RemoteProtocolError(code, f"post {index}: {message}")


def _malformed(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.MALFORMED, message)


def _signers(
    value: Any, count: int, keyring: Mapping[bytes, KnownKey]
) -> list[tuple[bytes, bytes, KnownKey]]:
    rows = expect_list(value, what="signer list", min_len=1, max_len=min(count, MAX_SIGNERS))
    out = []
    seen: set[bytes] = set()
    for row in rows:
        r = expect_list(row, what="signer", min_len=2, max_len=2)
        kid = expect(r[0], bytes, what="signer key id")
        sig = expect(r[1], bytes, what="batch signature")
        if len(kid) != KEY_ID_BYTES or len(sig) != 64:
            raise _malformed("a signer's key id must be 8 bytes and its signature 64 bytes")
        if kid in seen:
            raise _malformed(f"key {kid.hex()} is listed twice as a signer")
        seen.add(kid)
        known = keyring.get(kid)
        if known is None:
            raise RemoteProtocolError(
                ErrorCode.UNKNOWN_KEY, f"signature by unknown key {kid.hex()}: enroll it with `ground enroll`"
            )
        out.append((kid, sig, known))
    return out


def _target_sets(value: Any, limits: Limits) -> list[list[str]]:
    rows = expect_list(value, what="target lists", min_len=0)
    out: list[list[str]] = []
    for row in rows:
        ts = expect_list(row, what="target list", min_len=1, max_len=limits.max_targets_per_post)
        t = [expect(x, str, what="target") for x in ts]
        if t in out:
            raise _malformed("a target list appears twice")
        out.append(t)
    return out


def _column(value: Any, count: int, what: str) -> bytes:
    col: bytes = expect(value, bytes, what=what)
    if len(col) != count:
        raise _malformed(f"{what} has {len(col)} entries, the bundle has {count} items")
    return col


def _sparse(
    value: Any, count: int, what: str, conv: Callable[[Any], Any], only: frozenset[int] | None = None
) -> list[tuple[int, Any]]:
    rows = expect_list(value, what=what, min_len=0, max_len=count)
    out = []
    last = -1
    for row in rows:
        r = expect_list(row, what=f"{what} entry", min_len=2, max_len=2)
        i = expect(r[0], int, what=f"{what} index")
        if not last < i < count:
            raise _malformed(f"{what} indexes must increase and be below {count}, got {i} after {last}")
        if only is not None and i not in only:
            raise _malformed(f"{what} entry {i} is not a post")
        last = i
        out.append((i, conv(r[1])))
    return out


def _rendition_list(value: Any, limits: Limits) -> tuple[str, ...]:
    rows = expect_list(value, what="rendition list", min_len=1, max_len=limits.max_targets_per_post)
    return tuple(expect(t, str, what="rendition target") for t in rows)


def _media_list(value: Any, limits: Limits) -> tuple[MediaRef, ...]:
    rows = expect_list(value, what="media list", min_len=1, max_len=limits.max_media_per_post)
    return tuple(media_from_wire(m, limits) for m in rows)
