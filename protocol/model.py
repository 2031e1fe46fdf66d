"""Post, Cancel and Retract: what an astronaut signs, and their canonical byte form.

Body layout (docs/PROTOCOL.md §3): a msgpack array
``[version, kind, id(16), author, created_ms, ...kind fields]``.
New fields may only be appended, with defaults; nothing is ever reordered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any, TypeVar

from .canonical import expect, expect_list, pack, unpack
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .ids import derived_ulid, new_ulid, ulid_from_bytes, ulid_to_bytes
from .limits import DEFAULT_LIMITS, Limits

# Version 1 is what every post without a rendition consent is written as (docs/PROTOCOL.md §3);
# version 2 appends field 9, ``renditions`` (§3.1), and is written only when that list is not
# empty, so a post has exactly one body and every version-1 body, vector and derived id stays.
BODY_VERSION = 1
BODY_VERSION_RENDITIONS = 2
BODY_VERSIONS = frozenset({BODY_VERSION, BODY_VERSION_RENDITIONS})

# Times are ms since the epoch in the ULID range (48 bits, until year 10889): anything larger
# is nonsense, and would not fit the signed 64-bit integers ground stores times in.
MAX_TIME_MS = 2**48 - 1

# Formats we carry; platforms accept these and nothing in them needs re-encoding.
MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/avif"})


class ItemKind(IntEnum):
    POST = 1
    CANCEL = 2
    RETRACT = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaRef:
    """A photo as the astronaut signed it: its sha256, exact size, type and alt text."""

    sha256: bytes
    size_bytes: int
    media_type: str
    alt: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Post:
    """One post: byte-exact text, photos by hash, target accounts, optional publish time."""

    id: str
    author: str
    created_ms: int
    text: str
    media: tuple[MediaRef, ...] = ()
    targets: tuple[str, ...] = ()
    publish_at_ms: int | None = None
    # Targets (each one of ``targets``) for which the astronaut allows ground to publish a
    # rendition of a photo that is over that platform's limits (docs/PROTOCOL.md §3.1).
    # Empty: every photo goes out exactly as signed, or not at all.
    renditions: tuple[str, ...] = ()

    kind = ItemKind.POST

    @property
    def body_version(self) -> int:
        """The body version this post is written as: 2 only if it allows a rendition."""
        return BODY_VERSION_RENDITIONS if self.renditions else BODY_VERSION


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """Withdraw ``target_id`` before it is published (no effect on what is already out)."""

    id: str
    author: str
    created_ms: int
    target_id: str

    kind = ItemKind.CANCEL


@dataclass(frozen=True, slots=True, kw_only=True)
class Retract:
    """Delete ``target_id`` from every platform it was published to."""

    id: str
    author: str
    created_ms: int
    target_id: str

    kind = ItemKind.RETRACT


Item = Post | Cancel | Retract


def parse_target(target: str) -> tuple[str, str]:
    """Split ``platform:account`` (e.g. ``bluesky:alice.test``) or raise LocalProtocolError."""
    platform, sep, account = target.partition(":")
    if not sep or not platform or not account or not platform.isascii() or not platform.isalnum():
        raise LocalProtocolError(f"target {target!r} must look like platform:account, e.g. archive:alice")
    return platform.lower(), account


def check_item(item: Item, limits: Limits = DEFAULT_LIMITS) -> None:
    """Raise LocalProtocolError if ``item`` could never be a valid post on the wire."""
    _check_common(item.author, item.created_ms, limits, LocalProtocolError)
    if isinstance(item, Post):
        _check_utf8(item.text, "post text")
        for t in item.targets:
            _check_utf8(t, "target")
        for m in item.media:
            _check_utf8(m.alt, "alt text")
        if item.publish_at_ms is not None and not 0 <= item.publish_at_ms <= MAX_TIME_MS:
            raise LocalProtocolError(f"publish time {item.publish_at_ms} is outside 0..{MAX_TIME_MS} ms")
        if not item.text and not item.media:
            raise LocalProtocolError("a post needs text or at least one photo")
        if len(item.text.encode("utf-8", "surrogatepass")) > limits.max_text_bytes:
            raise LocalProtocolError(f"text is longer than {limits.max_text_bytes} bytes")
        if len(item.media) > limits.max_media_per_post:
            raise LocalProtocolError(f"at most {limits.max_media_per_post} photos per post")
        if not item.targets:
            raise LocalProtocolError("a post needs at least one target account")
        if len(item.targets) > limits.max_targets_per_post:
            raise LocalProtocolError(f"at most {limits.max_targets_per_post} targets per post")
        for t in item.targets:
            parse_target(t)
        _check_renditions(item.renditions, item.targets, lambda _code, m: LocalProtocolError(m))
        for m in item.media:
            if len(m.sha256) != 32:
                raise LocalProtocolError("media sha256 must be 32 bytes")
            if m.media_type not in MEDIA_TYPES:
                raise LocalProtocolError(f"media type {m.media_type} is not one we can publish")
            if len(m.alt.encode()) > limits.max_alt_bytes:
                raise LocalProtocolError(f"alt text is longer than {limits.max_alt_bytes} bytes")
            if not 0 < m.size_bytes <= limits.max_blob_bytes:
                raise LocalProtocolError(
                    f"photo is {m.size_bytes} bytes, the limit is {limits.max_blob_bytes}"
                )


def _check_renditions(
    renditions: tuple[str, ...], targets: tuple[str, ...], err: Callable[[ErrorCode, str], Exception]
) -> None:
    """Each rendition consent names one of the post's own targets, once (§3.1)."""
    for i, t in enumerate(renditions):
        if t not in targets:
            raise err(
                ErrorCode.RENDITION_NOT_A_TARGET,
                f"rendition allowed for {t!r}, which is not one of the post's targets ({', '.join(targets)})",
            )
        if t in renditions[:i]:
            raise err(ErrorCode.RENDITION_DUPLICATE, f"rendition allowed for {t!r} twice")


# Public name: the compact items section (compact_items.py, §14.8) checks consents the same way.
check_renditions = _check_renditions


def _check_utf8(value: str, what: str) -> None:
    # A lone surrogate (e.g. an undecodable byte from the command line) has no UTF-8 form,
    # so it could never be signed byte-exactly.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{what} is not valid Unicode text ({exc.reason} at {exc.start})") from exc


def _check_common(author: str, created_ms: int, limits: Limits, err: Callable[[str], Exception]) -> None:
    if not author or len(author.encode("utf-8", "surrogatepass")) > limits.max_name_bytes:
        raise err(f"author name must be 1..{limits.max_name_bytes} bytes")
    if err is LocalProtocolError:
        _check_utf8(author, "author name")
    if not 0 <= created_ms <= MAX_TIME_MS:
        raise err(f"created time {created_ms} is outside 0..{MAX_TIME_MS} ms")


def encode_item(item: Item, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The canonical body bytes of ``item`` (what gets signed), checked against ``limits``."""
    check_item(item, limits)
    return checked_body(item)


def checked_body(item: Item, id_bytes: bytes | None = None) -> bytes:
    """The canonical body bytes of an item :func:`check_item` already accepted (its id aside).

    For a caller that checks once and then needs the bodies of the same item under two ids
    (compact_items: the all-zero one that derives the id, then the item's own); ``id_bytes``
    is ``ulid_to_bytes(item.id)`` when the caller already has it.
    """
    version = item.body_version if isinstance(item, Post) else BODY_VERSION
    raw_id = ulid_to_bytes(item.id) if id_bytes is None else id_bytes
    head: list[Any] = [version, int(item.kind), raw_id, item.author, item.created_ms]
    if isinstance(item, Post):
        media = [[m.sha256, m.size_bytes, m.media_type, m.alt] for m in item.media]
        fields = [*head, item.text, media, list(item.targets), item.publish_at_ms]
        if item.renditions:
            fields.append(list(item.renditions))
        return pack(fields)
    return pack([*head, ulid_to_bytes(item.target_id)])


# Domain tag for derived ids, so the id hash can never collide with a signature's input.
ID_DOMAIN = b"orbitpost/id/v1\x00"


def derived_id(item: Item, limits: Limits = DEFAULT_LIMITS) -> str:
    """The content-derived id of ``item``: its created time, then 80 bits of the sha256 of
    its body written with an all-zero id (docs/PROTOCOL.md §14). Ignores ``item.id``."""
    blank = replace(item, id=blank_id(item.created_ms))
    return derived_ulid(item.created_ms, id_entropy(encode_item(blank, limits)))


def blank_id(created_ms: int) -> str:
    """The all-zero id an item's body is written with to derive its id (docs/PROTOCOL.md §14)."""
    return new_ulid(created_ms, bytes(10))


def id_entropy(blank_body: bytes) -> bytes:
    """The 80 bits a derived id takes after its time: from the body written with :func:`blank_id`."""
    return hashlib.sha256(ID_DOMAIN + blank_body).digest()[:10]


ItemT = TypeVar("ItemT", bound=Item)


def with_derived_id(item: ItemT) -> ItemT:
    """``item`` with its id replaced by :func:`derived_id` (what onboard composes)."""
    return replace(item, id=derived_id(item))


def body_bounds(limits: Limits) -> tuple[int, int]:
    """(longest array, most values) canonical.unpack lets an item body hold: ten fields, a
    media list, a target list and a rendition list no longer than the longest array, each
    media entry four fields. Loose enough that a body over a limit gets the precise error of
    its own check."""
    longest = max(10, limits.max_media_per_post, limits.max_targets_per_post)
    return longest, 10 + 7 * longest


def decode_item(body: bytes, limits: Limits = DEFAULT_LIMITS) -> Item:
    """Decode canonical body bytes, or raise RemoteProtocolError saying what is wrong."""
    longest, values = body_bounds(limits)
    v = expect_list(
        unpack(
            body, what="item body", max_bytes=limits.max_items_bytes, max_array_len=longest, max_values=values
        ),
        what="item body",
        min_len=5,
    )
    version = expect(v[0], int, what="item version")
    if version not in BODY_VERSIONS:
        raise RemoteProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"item body version {version} is not supported (this ground reads versions "
            f"{', '.join(map(str, sorted(BODY_VERSIONS)))}); upgrade ground",
        )
    kind = expect(v[1], int, what="item kind")
    item_id = _id(v[2], "item id")
    author = expect(v[3], str, what="author")
    created_ms = expect(v[4], int, what="created time")
    _check_common(author, created_ms, limits, lambda m: RemoteProtocolError(ErrorCode.MALFORMED, m))
    if kind == ItemKind.POST:
        n_fields = 10 if version == BODY_VERSION_RENDITIONS else 9
        expect_list(v, what=f"version-{version} post body", min_len=n_fields, max_len=n_fields)
        text = expect(v[5], str, what="post text")
        if len(text.encode()) > limits.max_text_bytes:
            raise RemoteProtocolError(
                ErrorCode.LIMIT_EXCEEDED, f"post {item_id} text exceeds {limits.max_text_bytes} bytes"
            )
        media_v = expect_list(v[6], what="media list", min_len=0, max_len=limits.max_media_per_post)
        media = tuple(media_from_wire(m, limits) for m in media_v)
        targets_v = expect_list(v[7], what="target list", min_len=1, max_len=limits.max_targets_per_post)
        targets = tuple(expect(t, str, what="target") for t in targets_v)
        for t in targets:
            try:
                parse_target(t)
            except LocalProtocolError as exc:
                raise RemoteProtocolError(ErrorCode.MALFORMED, str(exc)) from exc
        publish_at = v[8]
        if publish_at is not None and not 0 <= expect(publish_at, int, what="publish time") <= MAX_TIME_MS:
            raise RemoteProtocolError(
                ErrorCode.MALFORMED,
                f"post {item_id} publish time {publish_at} is outside 0..{MAX_TIME_MS} ms",
            )
        if not text and not media:
            raise RemoteProtocolError(ErrorCode.MALFORMED, f"post {item_id} has neither text nor media")
        renditions = _renditions_from_wire(v[9], targets, item_id, limits) if n_fields == 10 else ()
        return Post(
            id=item_id,
            author=author,
            created_ms=created_ms,
            text=text,
            media=media,
            targets=targets,
            publish_at_ms=publish_at,
            renditions=renditions,
        )
    if kind in (ItemKind.CANCEL, ItemKind.RETRACT):
        if version != BODY_VERSION:
            # Version 2 only appends a post field: a command is always written as version 1.
            raise RemoteProtocolError(
                ErrorCode.MALFORMED, f"a command body is version {BODY_VERSION}, not {version}"
            )
        expect_list(v, what="command body", min_len=6, max_len=6)
        target_id = _id(v[5], "command target id")
        cls = Cancel if kind == ItemKind.CANCEL else Retract
        return cls(id=item_id, author=author, created_ms=created_ms, target_id=target_id)
    raise RemoteProtocolError(ErrorCode.MALFORMED, f"unknown item kind {kind}")


def _renditions_from_wire(
    value: Any, targets: tuple[str, ...], item_id: str, limits: Limits
) -> tuple[str, ...]:
    """Field 9 of a version-2 post: 1..targets strings, each one of ``targets``, no repeats."""
    v = expect_list(value, what="rendition list", min_len=0, max_len=limits.max_targets_per_post)
    if not v:
        # An empty list means "no rendition", which is what a version-1 body says: one post,
        # one body (a format-2 bundle rebuilds bodies, so two spellings would not verify).
        raise RemoteProtocolError(
            ErrorCode.MALFORMED,
            f"post {item_id} is a version-2 body with no rendition; write it as version 1",
        )
    out = tuple(expect(t, str, what="rendition target") for t in v)
    _check_renditions(out, targets, lambda code, m: RemoteProtocolError(code, f"post {item_id}: {m}"))
    return out


def _id(value: Any, what: str) -> str:
    raw = expect(value, bytes, what=what)
    if len(raw) != 16:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} must be 16 bytes, got {len(raw)}")
    return ulid_from_bytes(raw)


def media_from_wire(value: Any, limits: Limits) -> MediaRef:
    """Shape- and limit-check one ``[sha256, size, type, alt]`` media entry."""
    m = expect_list(value, what="media entry", min_len=4, max_len=4)
    sha = expect(m[0], bytes, what="media sha256")
    if len(sha) != 32:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "media sha256 must be 32 bytes")
    size = expect(m[1], int, what="media size")
    if not 0 < size <= limits.max_blob_bytes:
        raise RemoteProtocolError(
            ErrorCode.LIMIT_EXCEEDED, f"media size {size} outside 1..{limits.max_blob_bytes}"
        )
    media_type = expect(m[2], str, what="media type")
    if media_type not in MEDIA_TYPES:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"media type {media_type!r} is not allowed")
    alt = expect(m[3], str, what="alt text")
    if len(alt.encode()) > limits.max_alt_bytes:
        raise RemoteProtocolError(ErrorCode.LIMIT_EXCEEDED, f"alt text exceeds {limits.max_alt_bytes} bytes")
    return MediaRef(sha256=sha, size_bytes=size, media_type=media_type, alt=alt)
