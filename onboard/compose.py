"""Turning an astronaut's command into a signed, queued post (or a clear refusal)."""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from durable.files import BlobStore
from protocol import LocalProtocolError, MediaRef, Post, SigningKey, sign_item
from protocol.ids import new_ulid
from protocol.limits import DEFAULT_LIMITS
from protocol.mediatype import sniff_media_type
from protocol.model import (
    BODY_VERSION_RENDITIONS,
    Cancel,
    Item,
    Retract,
    check_item,
    parse_target,
    with_derived_id,
)

from . import queue
from . import renditions as renditions_mod
from .errors import OnboardError, PostRejected, QueueError
from .home import Home
from .keystore import load_key
from .link import load_link
from .receipts import enrolled_accounts, known_rules

# One photo larger than this is refused onboard: no platform we publish to takes more,
# and on a 10 kbit/s link it would block the queue for hours.
DEFAULT_MAX_MEDIA_BYTES = 40 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class PhotoInput:
    path: Path
    alt: str = ""


def _read_photo(photo: PhotoInput, max_bytes: int) -> tuple[bytes, str]:
    p = photo.path
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise PostRejected(f"cannot read photo {p}: {exc.strerror or exc}") from exc
    if not p.is_file():
        raise PostRejected(f"photo {p} is not a regular file")
    if size > max_bytes:
        raise PostRejected(f"photo {p} is {size:,} bytes; the limit is {max_bytes:,} bytes")
    if size == 0:
        raise PostRejected(f"photo {p} is empty")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise PostRejected(f"cannot read photo {p}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:  # it grew between stat and read
        raise PostRejected(f"photo {p} is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    media_type = sniff_media_type(data[:64])
    if media_type is None:
        raise PostRejected(
            f"{p} is not an image we can publish (JPEG, PNG, GIF, WebP, HEIC or AVIF expected)"
        )
    return data, media_type


def _now_ms() -> int:
    return int(time.time() * 1000)


def _created_ms(conn: sqlite3.Connection, author: str) -> int:
    """Now in whole seconds, and after the author's last queued item.

    Whole seconds: nobody reads a post's time to the millisecond, and bundle format 2 then
    carries a time in 1-2 bytes instead of 3 (docs/PROTOCOL.md §14). After the last item:
    ids are derived from content and time, so two identical posts still get two ids.
    """
    row = conn.execute("SELECT MAX(created_ms) FROM items WHERE author = ?", (author,)).fetchone()
    now = _now_ms() // 1000 * 1000
    last = row[0]
    return now if last is None or now > last else (last // 1000 + 1) * 1000


def _placeholder_id(now_ms: int) -> str:
    return new_ulid(now_ms, bytes(10))


def compose_post(
    home: Home,
    conn: sqlite3.Connection,
    *,
    author: str,
    text: str,
    targets: list[str],
    photos: list[PhotoInput],
    publish_at_ms: int | None = None,
    max_media_bytes: int | None = None,
    key: SigningKey | None = None,
    renditions: list[str] | None = None,
) -> Post:
    """Validate, copy photos into the content store, sign and queue one post.

    ``renditions``: targets for which the astronaut allows ground to publish a rendition of a
    photo over that platform's limits (signed into the post, docs/PROTOCOL.md §3.1).

    ``max_media_bytes`` defaults to DEFAULT_MAX_MEDIA_BYTES, read at call time so tests can lower it.
    ``key`` is ``author``'s key when the caller already unlocked it (the compose page), else
    it is loaded here (asking the passphrase source for a protected key).
    """
    if max_media_bytes is None:
        max_media_bytes = DEFAULT_MAX_MEDIA_BYTES
    if key is None:
        key = load_key(home, author)
    if not text and not photos:
        raise PostRejected("nothing to post: give some text or at least one --photo")
    if not targets:
        raise PostRejected("no target account: add --to platform:account (e.g. --to archive:alice)")
    for t in targets:
        try:
            parse_target(t)
        except LocalProtocolError as exc:
            raise PostRejected(str(exc)) from exc
    if len(set(targets)) != len(targets):
        raise PostRejected("the same target account is given twice")
    check_enrolled(conn, author, targets)
    allowed = check_consents(home, renditions or [], targets)
    loaded = [(_read_photo(p, min(max_media_bytes, DEFAULT_LIMITS.max_blob_bytes)), p) for p in photos]
    now = _created_ms(conn, author)
    media = tuple(
        MediaRef(sha256=hashlib.sha256(data).digest(), size_bytes=len(data), media_type=mt, alt=p.alt)
        for (data, mt), p in loaded
    )
    post = Post(
        id=_placeholder_id(now),
        author=author,
        created_ms=now,
        text=text,
        media=media,
        targets=tuple(targets),
        publish_at_ms=publish_at_ms,
        renditions=allowed,
    )
    check_rules(post, conn, renditions_mod.photo_sizes([data for (data, _), _p in loaded]))
    try:
        check_item(post)
    except LocalProtocolError as exc:
        raise PostRejected(str(exc)) from exc
    post = with_derived_id(post)
    store = BlobStore(home.blobs_dir)
    # Copy first, queue second: a queued post never points at a blob we do not hold.
    for (data, _), _p in loaded:
        store.put(data)
    signed = sign_item(key, post)
    queue.add_item(conn, signed, post)
    return post


def check_enrolled(conn: sqlite3.Connection, author: str, targets: list[str]) -> None:
    """Refuse a target ``author`` is not enrolled for on ground, as the last signed receipts
    said (``enrolled_accounts``); before any said, nothing is refused (see ``targets_note``)."""
    known = enrolled_accounts(conn, author)
    if known is None:
        return
    unknown = [t for t in targets if t not in known]
    if unknown:
        valid = ", ".join(known) if known else "none"
        raise PostRejected(
            f"{author} is not enrolled on ground for {', '.join(unknown)}; enrolled accounts: {valid} "
            f"(as ground last said in receipts; an operator adds one with `ground enroll {author} --account …`)"
        )


def targets_note(conn: sqlite3.Connection, author: str) -> str | None:
    """What to tell the astronaut when the targets could not be checked, or None."""
    if enrolled_accounts(conn, author) is None:
        return (
            f"note: ground has not yet said which accounts {author} is enrolled for (it will in the next "
            "receipts), so the targets are unchecked; ground refuses any it does not know, alone"
        )
    return None


def check_rules(
    post: Post, conn: sqlite3.Connection | None = None, sizes: Sequence[tuple[int, int] | None] = ()
) -> None:
    """Refuse onboard what a target platform would refuse, with the per-account limits ground
    sent in signed receipts (a Mastodon instance's own) where known, else the defaults.
    ``sizes``: each photo's displayed size, for the pixel limits; a photo over a limit is
    refused unless the post allows a rendition for that account (docs/platforms.md)."""
    overrides = known_rules(conn) if conn is not None else None
    refusals, _ = renditions_mod.check(post, sizes, overrides)
    if refusals:
        raise PostRejected(renditions_mod.refusal_text(post, refusals, sizes, overrides))


def check_consents(home: Home, renditions: list[str], targets: list[str]) -> tuple[str, ...]:
    """The rendition consents as signed: each one of ``targets``, once, and only for a ground
    that reads body version 2 (when a link is configured, its capability token says)."""
    for r in renditions:
        if r not in targets:
            raise PostRejected(
                f"--allow-rendition {r} is not one of the post's targets ({', '.join(targets)}); "
                "name an account given with --to"
            )
    if len(set(renditions)) != len(renditions):
        raise PostRejected("the same --allow-rendition account is given twice")
    if renditions:
        try:
            peer = load_link(home).peer
        except OnboardError:
            peer = None  # no live link: `onboard export` checks the receiving ground's token
        if peer is not None and not peer.reads_body(BODY_VERSION_RENDITIONS):
            raise PostRejected(
                f"ground (as its capability token says: {peer.to_token()}) does not read posts that allow "
                "a rendition (item body version 2); upgrade ground and run `onboard link add` again, "
                "or post without --allow-rendition"
            )
    return tuple(renditions)


def compose_command(
    home: Home,
    conn: sqlite3.Connection,
    *,
    kind: type[Cancel] | type[Retract],
    target_id: str,
    key: SigningKey | None = None,
) -> Item:
    """Sign and queue a cancel or retract of one of the astronaut's own posts (``key``: the
    author's key if the caller already unlocked it)."""
    target = queue.get(conn, target_id)
    if target is None or not isinstance(target.item, Post):
        raise QueueError(f"no post {target_id} in this queue (see `onboard queue`)")
    if target.status == "rejected" and not _ground_has(conn, target.item.id):
        # Its whole bundle was refused: ground has nothing to cancel, so clear it here.
        queue.cancel_locally(conn, target.item.id)
        return target.item
    if key is None:
        key = load_key(home, target.item.author)
    now = _created_ms(conn, target.item.author)
    cmd = with_derived_id(
        kind(id=_placeholder_id(now), author=target.item.author, created_ms=now, target_id=target.item.id)
    )
    queue.add_item(conn, sign_item(key, cmd), cmd)
    return cmd


def _ground_has(conn: sqlite3.Connection, item_id: str) -> bool:
    """Whether any receipt ever showed ground holding this post."""
    row = conn.execute(
        "SELECT 1 FROM deliveries WHERE item_id = ? AND ground_seq IS NOT NULL", (item_id,)
    ).fetchone()
    return row is not None
