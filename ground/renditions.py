"""Ground's side of renditions: which photos of a (post, account) need one, making them, and
the record that keeps both hashes (docs/platforms.md "Renditions", docs/PROTOCOL.md §3.1).

Before publishing to an account the engine calls :func:`prepare`. For each photo it checks
the account's limits (bytes, format, and the pixel limits read from the photo's header):

- within them: the photo goes out exactly as signed;
- over them, and the signed post lists this account in ``renditions``: ground makes the
  rendition with ``rendition/v1`` (photocodec/rendition.py), stores it once in the blob
  store (content-addressed, so every account and retry shares it) and hands the adapter the
  rendition's bytes *for this account only*; the record names both hashes;
- over them without that consent: the (post, account) is refused, alone, with the limit and
  the remedy (every other account goes on, §16).

The record of one rendition (publications.renditions, receipts, archive, transparency log,
public page) is a :class:`Record`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from durable.files import BlobStore
from photocodec.rendition import RenditionError, make_rendition, photo_size
from protocol import MediaRef
from protocol.errors import ErrorCode
from protocol.rules import PlatformRules, Violation, check_target_photos, split_renditions

from .platforms import PublishRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One photo ground sent as a rendition: what was signed, what was sent, how it was made."""

    photo: int  # 1-based, in the post's order
    original_sha256: str  # hex: the photo as signed
    sha256: str  # hex: the rendition as sent
    size_bytes: int
    media_type: str
    width: int
    height: int
    source_width: int
    source_height: int
    quality: int
    recipe: str
    encoder: str

    def summary(self) -> str:
        return (
            f"photo {self.photo}: rendition {self.recipe} {self.source_width}×{self.source_height} → "
            f"{self.width}×{self.height} JPEG q{self.quality}, sha256 {self.sha256[:16]}… "
            f"(signed original {self.original_sha256[:16]}…)"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """What to publish to one account: the request (rendition bytes substituted where made),
    the rule problems that still refuse it, and the renditions made."""

    request: PublishRequest
    problems: tuple[str, ...] = ()
    records: tuple[Record, ...] = ()


def problems_and_cures(
    req: PublishRequest, target: str, rules: PlatformRules, sizes: Sequence[tuple[int, int] | None]
) -> tuple[list[Violation], list[Violation]]:
    """``(refusals, renditions)`` for ``target``: its rules, pixel limits included, split by
    the post's signed consents (protocol.rules.split_renditions)."""
    return split_renditions(req.post, check_target_photos(req.post, target, rules, sizes))


def _size(data: bytes) -> tuple[int, int] | None:
    try:
        return photo_size(data)
    except RenditionError:
        return None  # no readable header: only bytes and format can be checked


def refusal_text(v: Violation, post_renditions: Sequence[str]) -> str:
    """A refused (post, account) in the words §16 uses: code, the limit, the way forward."""
    text = f"[{ErrorCode.RULE_VIOLATION}] {v}"
    if v.renditionable and v.target not in post_renditions:
        text += (
            f"; the signed post allows no rendition for {v.target} (post it again with "
            f"`onboard post --allow-rendition {v.target}`, or within the limit)"
        )
    return text


def _make(data: bytes, rules: PlatformRules, photo: int, ref: MediaRef) -> tuple[Record, bytes] | str:
    """Run the recipe on one photo: its record and bytes, or the reason it cannot."""
    try:
        r = make_rendition(data, rules)
    except RenditionError as exc:
        return f"[{ErrorCode.RULE_VIOLATION}] photo {photo}: {exc}"
    record = Record(
        photo=photo,
        original_sha256=ref.sha256.hex(),
        sha256=r.sha256.hex(),
        size_bytes=len(r.data),
        media_type=r.media_type,
        width=r.width,
        height=r.height,
        source_width=r.source_width,
        source_height=r.source_height,
        quality=r.quality,
        recipe=r.recipe,
        encoder=r.encoder,
    )
    return record, r.data


async def prepare(
    blobs: BlobStore, req: PublishRequest, target: str, rules: PlatformRules | None
) -> Prepared:
    """Check ``req`` against ``rules`` for ``target`` and make the renditions the post allows.

    The recipe runs in a worker thread (decoding a 50 MP photo takes a while) and its
    output is stored in ``blobs`` before anything is published, so the rendition the
    record names is always there to be served and checked.
    """
    if rules is None:
        return Prepared(request=req)
    sizes = [_size(data) for _ref, data in req.media]
    refusals, cures = problems_and_cures(req, target, rules, sizes)
    if refusals:
        return Prepared(request=req, problems=tuple(refusal_text(v, req.post.renditions) for v in refusals))
    media = list(req.media)
    made: list[tuple[Record, bytes]] = []
    for i in sorted({v.photo for v in cures}):
        ref, data = media[i - 1]
        result = await asyncio.to_thread(_make, data, rules, i, ref)
        if isinstance(result, str):
            return Prepared(request=req, problems=(result,))
        made.append(result)
    if not made:
        return Prepared(request=req)
    # Stored and substituted only once every photo succeeded: nothing half-made goes out.
    for record, data in made:
        blobs.put(data)
        ref = media[record.photo - 1][0]
        sent = MediaRef(
            sha256=bytes.fromhex(record.sha256),
            size_bytes=record.size_bytes,
            media_type=record.media_type,
            alt=ref.alt,
        )
        media[record.photo - 1] = (sent, data)
    records = tuple(r for r, _ in made)
    return Prepared(request=replace(req, media=tuple(media), renditions=records), records=records)


def to_json(records: Sequence[Record]) -> str | None:
    """The ``publications.renditions`` column: a JSON list, or NULL when none was made."""
    return json.dumps([asdict(r) for r in records], sort_keys=True) if records else None


def from_json(text: str | None) -> list[dict[str, Any]]:
    """The column back as plain dicts (what receipts, the log and pages show)."""
    if not text:
        return []
    value = json.loads(text)
    return value if isinstance(value, list) else []
