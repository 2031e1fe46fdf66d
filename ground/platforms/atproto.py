"""Pure AT Protocol helpers for the Bluesky adapter: record keys, facets, the post record.

- Record key: a TID (atproto.com/specs/tid): 64 bits, top bit 0, 53 bits of microseconds
  since the epoch, 10 bits of clock id, written as 13 characters of base32-sortable. Ours is
  derived from the post id (a ULID: its millisecond time and random bits), so every attempt
  for one post writes the same key and a retry can never make a second record.
- Facets (app.bsky.richtext.facet): links, mentions and hashtags, located by UTF-8 *byte*
  offsets into the unchanged text. Facets annotate; they never alter a byte of the text.
"""

from __future__ import annotations

import io
import warnings
from datetime import UTC, datetime
from typing import Any

import regex

from protocol.ids import ulid_to_bytes

from . import richtext
from .richtext import Span

TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
TID_RE = regex.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
POST_COLLECTION = "app.bsky.feed.post"


def tid_from_int(n: int) -> str:
    """Encode a 64-bit TID value (top bit clear) as 13 base32-sortable characters."""
    if not 0 <= n < 2**63:
        raise ValueError("a TID value must fit in 63 bits")
    chars = []
    for _ in range(13):
        chars.append(TID_ALPHABET[n & 31])
        n >>= 5
    return "".join(reversed(chars))


def tid_for_post(post_id: str) -> str:
    """The record key of ``post_id`` on Bluesky: a valid TID, the same on every call."""
    raw = ulid_to_bytes(post_id)
    ms = int.from_bytes(raw[:6], "big")
    rand = int.from_bytes(raw[6:], "big")
    micros = ms * 1000 + rand % 1000  # sub-millisecond part from the id's random bits
    micros %= 2**53  # a TID holds 53 bits of microseconds (until year 2255); ids may go further
    clock_id = (rand >> 10) & 0x3FF
    return tid_from_int((micros << 10) | clock_id)


def datetime_ms(ms: int) -> str:
    """RFC 3339 with milliseconds and 'Z', the lexicon's datetime format."""
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def find_spans(text: str) -> list[Span]:
    """Links, @mentions and #hashtags in ``text`` with UTF-8 byte offsets, as the Bluesky app finds them."""
    return richtext.detect(text)


def facets(spans: list[Span], dids: dict[str, str]) -> list[dict[str, Any]]:
    """app.bsky.richtext.facet objects; mentions whose handle did not resolve are left plain."""
    out: list[dict[str, Any]] = []
    for s in spans:
        if s.kind == "link":
            feature = {"$type": "app.bsky.richtext.facet#link", "uri": s.value}
        elif s.kind == "tag":
            feature = {"$type": "app.bsky.richtext.facet#tag", "tag": s.value}
        elif s.value in dids:
            feature = {"$type": "app.bsky.richtext.facet#mention", "did": dids[s.value]}
        else:
            continue
        out.append({"index": {"byteStart": s.byte_start, "byteEnd": s.byte_end}, "features": [feature]})
    return out


# The formats Bluesky takes (protocol/rules.py BLUESKY.media_types), as Pillow's plugins name them.
_HEADER_FORMATS = ("JPEG", "PNG", "GIF", "WEBP")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as displayed (EXIF rotation applied), from the header alone; None if
    the bytes are no readable JPEG, PNG, GIF or WebP header.

    The format's Pillow plugin parses the header and decodes no pixel. ``Image.open`` is not
    used: its decompression-bomb guard raises for ~179 MP and more, which is a question for
    whoever decodes pixels — nothing here does, and the photo is published unchanged.
    """
    from PIL import Image

    Image.init()
    for fmt in _HEADER_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None and not accept(data[:16]):
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with factory(io.BytesIO(data), "") as img:
                    width, height = img.size
                    orientation = img.getexif().get(0x0112, 1)
        except Exception:  # any parser failure on these bytes means "unreadable"
            return None
        if orientation in (5, 6, 7, 8):  # rotated 90°: the displayed picture is transposed
            width, height = height, width
        return (width, height) if width > 0 and height > 0 else None
    return None


def aspect_ratio(data: bytes) -> dict[str, int] | None:
    """``{"width", "height"}`` for app.bsky.embed.defs#aspectRatio, or None if unreadable
    (``image_size``: header only, the photo bytes are never decoded or re-encoded)."""
    size = image_size(data)
    return None if size is None else {"width": size[0], "height": size[1]}


def post_record(
    text: str,
    created_ms: int,
    *,
    facet_list: list[dict[str, Any]],
    images: list[tuple[dict[str, Any], str, dict[str, int] | None]],
) -> dict[str, Any]:
    """The app.bsky.feed.post record; ``images`` is (blob ref, alt text, aspect ratio) each."""
    record: dict[str, Any] = {"$type": POST_COLLECTION, "text": text, "createdAt": datetime_ms(created_ms)}
    if facet_list:
        record["facets"] = facet_list
    if images:
        embedded = []
        for blob, alt, ratio in images:
            img: dict[str, Any] = {"alt": alt, "image": blob}
            if ratio:
                img["aspectRatio"] = ratio
            embedded.append(img)
        record["embed"] = {"$type": "app.bsky.embed.images", "images": embedded}
    return record
