"""What onboard says about renditions before a byte is sent (docs/platforms.md "Renditions").

A photo over a platform's limits is refused unless the astronaut allowed a rendition for that
account (``onboard post --allow-rendition x:alice``, signed into the post, docs/PROTOCOL.md
§3.1). Refused: the exact limit and the remedy. Allowed: what ground will make, per account
("X will receive a rendition of photo 1 (9000×1200 → 8192×1092 JPEG); Bluesky keeps it
exactly"). The sizes come from the photos' headers (photocodec.rendition.photo_size).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from durable.files import BlobStore
from photocodec.rendition import MEDIA_TYPE, RECIPE, RenditionError, photo_size, plan_size
from protocol import Post
from protocol.rules import (
    MediaFidelity,
    PlatformRules,
    Violation,
    media_fidelity,
    rules_for,
    size_violations,
    split_renditions,
    violations,
)

from .home import Home
from .receipts import known_rules

Size = tuple[int, int] | None


def photo_sizes(photos: Sequence[bytes]) -> list[Size]:
    """Each photo's displayed (width, height), None where its header cannot be read (such a
    photo goes out exactly as signed; only a rendition would need its pixels)."""
    out: list[Size] = []
    for data in photos:
        try:
            out.append(photo_size(data))
        except RenditionError:
            out.append(None)
    return out


def check(
    post: Post, sizes: Sequence[Size], overrides: Mapping[str, PlatformRules] | None = None
) -> tuple[list[Violation], list[Violation]]:
    """``(refusals, renditions)`` for ``post``: every rule broken on any target (text, count,
    bytes, pixels, aspect, format), split by the post's signed rendition consents. A consent
    cannot cure a photo the recipe cannot read (no decoder, e.g. HEIC): that stays refused."""
    found = violations(post, overrides) + size_violations(post, sizes, overrides)
    refusals, cured = split_renditions(post, found)
    unreadable = [v for v in cured if not readable(v.photo, sizes)]
    return refusals + unreadable, [v for v in cured if readable(v.photo, sizes)]


def readable(photo: int, sizes: Sequence[Size]) -> bool:
    """Whether the recipe can read photo number ``photo`` (its size was read from its header)."""
    return 0 < photo <= len(sizes) and sizes[photo - 1] is not None


def refusal_text(
    post: Post,
    refusals: Sequence[Violation],
    sizes: Sequence[Size],
    overrides: Mapping[str, PlatformRules] | None = None,
) -> str:
    """The refusals, one per line; a photo a rendition could cure names the remedy."""
    lines = []
    for v in refusals:
        line = str(v)
        if v.renditionable and not readable(v.photo, sizes):
            line += (
                f" — ground cannot make a rendition of photo {v.photo}: {RECIPE} cannot read its pixels "
                "(convert it to JPEG and post it again)"
            )
        elif v.renditionable and v.target not in post.renditions:
            rules = rules_for(v.target, overrides)
            title = rules.title if rules is not None else v.target
            line += f" — add --allow-rendition {v.target} to let ground make a JPEG within {title}'s limits"
        lines.append(line)
    return "; ".join(lines)


def plan_text(
    post: Post,
    cured: Sequence[Violation],
    sizes: Sequence[Size],
    overrides: Mapping[str, PlatformRules] | None = None,
) -> str:
    """One sentence: which accounts get a rendition of which photo, and who keeps it exactly.

    ``"X (x:alice) will receive a rendition of photo 1 (9000×1200 → 8192×1092 JPEG, rendition/v1);
    Bluesky keeps it exactly"``; empty when no rendition will be made.
    """
    parts: list[str] = []
    done: set[tuple[str, int]] = set()
    for v in cured:
        if (v.target, v.photo) in done:
            continue
        done.add((v.target, v.photo))
        rules = rules_for(v.target, overrides)
        if rules is None:
            continue
        size = sizes[v.photo - 1] if v.photo <= len(sizes) else None
        if size is None:
            how = f"{MEDIA_TYPE.removeprefix('image/').upper()}, {RECIPE}"
        else:
            w, h = plan_size(*size, rules)
            # Over the byte limit the recipe may also shrink (docs/platforms.md): say "at most".
            by_bytes = any(
                c.target == v.target and c.photo == v.photo and c.rule.endswith(".media_bytes") for c in cured
            )
            how = f"{size[0]}×{size[1]} → {'at most ' if by_bytes else ''}{w}×{h} JPEG, {RECIPE}"
        if rules.max_media_bytes is not None:
            how += f", at most {rules.max_media_bytes:,} bytes"
        parts.append(f"{rules.title} ({v.target}) will receive a rendition of photo {v.photo} ({how})")
    if not parts:
        return ""
    rendered = {v.target for v in cured}
    exact = []
    for t in post.targets:
        rules = rules_for(t, overrides)
        title = rules.title if rules is not None else t
        if (
            t not in rendered
            and media_fidelity(t.partition(":")[0]) is MediaFidelity.EXACT
            and title not in exact
        ):
            exact.append(title)
    out = "; ".join(parts)
    if exact:
        keeps = "keeps" if len(exact) == 1 else "keep"
        out += f"; {', '.join(exact[:-1]) + ' and ' if len(exact) > 1 else ''}{exact[-1]} {keeps} the photos exactly"
    return out


def plan_for(home: Home, conn: sqlite3.Connection, post: Post) -> str:
    """:func:`plan_text` for a queued post, its photos read from the laptop's content store."""
    if not post.renditions or not post.media:
        return ""
    store = BlobStore(home.blobs_dir)
    sizes = photo_sizes([store.get(m.sha256) for m in post.media])
    overrides = known_rules(conn)
    _, cured = check(post, sizes, overrides)
    return plan_text(post, cured, sizes, overrides)
