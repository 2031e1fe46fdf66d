"""Every platform's hard limits, in one place, and the check both sides run.

Onboard calls :func:`violations` before a byte is sent (so no bandwidth is spent on a post
that cannot go out unchanged); ground calls it again before publishing, with limits it
learned from the platform (a Mastodon instance's own configuration). Pure: values in,
values out.

Each platform counts text its own way:

- Bluesky: grapheme clusters (``maxGraphemes: 300``) and UTF-8 bytes (``maxLength: 3000``)
  of ``app.bsky.feed.post#text`` (lexicon ``app/bsky/feed/post.json``).
- Mastodon: grapheme clusters, where every URL counts as ``characters_reserved_per_url``
  (23) and a mention ``@user@domain`` counts as ``@user`` (``StatusLengthValidator``).
- X: twitter-text v3 weighting: code points in the Latin/general-punctuation ranges weigh
  1, everything else (CJK…) 2, an emoji sequence 2, a URL 23; after NFC normalisation.
- Threads: characters, where "emojis are counted as the number of UTF-8 bytes"
  (developers.facebook.com/docs/threads/posts, Limitations).
- Instagram, Facebook, LinkedIn, Flickr: characters (grapheme clusters here; their docs give a
  number, not a counting rule).

What "unchanged" means differs per platform (docs/platforms.md): text is published byte-exact
everywhere, but most platforms re-encode every photo they receive. Each platform's
:class:`MediaFidelity` is declared here, never assumed, so onboard can say it before a byte is
sent and ground can record it beside the original's sha256.

Grapheme clusters come from the ``regex`` module's ``\\X`` (Unicode UAX #29, kept current
with each Unicode release); the standard library has no grapheme segmentation.
"""

from __future__ import annotations

import functools
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import regex

from .model import Post, parse_target

_GRAPHEME = regex.compile(r"\X")
# What the platforms link: an http(s) URL up to whitespace, without trailing punctuation
# (so "see https://x.org." links "https://x.org"). Bare domains are not counted as URLs.
URL_RE = regex.compile(r"https?://[^\s<>\"]+[^\s<>\".,;:!?)\]}'*]")
# Mastodon's account mention: @user or @user@domain, not inside a word.
_MASTODON_MENTION = regex.compile(r"(?<![\w/@])@(\w+)(?:@[\w.-]+\w)?", regex.ASCII)
# twitter-text v3 (config/v3.json): these code point ranges weigh 100, the rest 200.
# twitter-text v3's weights (config/v3.json): these ranges weigh 1, everything else 2.
_X_LIGHT_RANGES = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
# Characters twemoji-parser reads as text unless U+FE0F follows (the port counts them as emoji).
_X_TEXT_DEFAULT = frozenset({"\u00a9", "\u00ae"})


class TextCount(StrEnum):
    """How a platform measures text length."""

    GRAPHEMES = "graphemes"
    MASTODON = "characters"
    X_WEIGHTED = "weighted characters"
    THREADS = "characters (emoji as UTF-8 bytes)"


class MediaFidelity(StrEnum):
    """What a platform does to the photo bytes it is given.

    EXACT: the platform keeps and serves the astronaut's exact file (a content-addressed blob,
    an original kept for download, our own archive/webhook). RE_ENCODED: the platform
    re-encodes or resizes every photo it receives; the published pixels are the platform's
    rendition of the signed original, whose sha256 the record keeps.
    """

    EXACT = "exact"
    RE_ENCODED = "re-encoded"


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformRules:
    """One platform's hard limits; ``None`` means the platform sets no such limit."""

    platform: str
    title: str
    max_text: int | None = None
    text_count: TextCount = TextCount.GRAPHEMES
    max_text_bytes: int | None = None
    max_media: int | None = None
    max_media_bytes: int | None = None
    media_types: frozenset[str] | None = None
    max_alt: int | None = None  # grapheme clusters
    url_length: int = 23
    needs_text: bool = False
    # Appended fields (issue 13); defaults keep every existing construction unchanged.
    media_fidelity: MediaFidelity = MediaFidelity.EXACT
    needs_media: bool = False
    # Where the numbers come from (the platform's documentation page).
    source: str = ""
    # Appended (issue 13, renditions): pixel limits of one photo as displayed (EXIF rotation
    # applied). ``max_side_px``: longest side; ``max_pixels``: width × height;
    # ``aspect_range``: (narrowest, widest) width / height. None: no such limit.
    max_side_px: int | None = None
    max_pixels: int | None = None
    aspect_range: tuple[float, float] | None = None


_COMMON_IMAGES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

BLUESKY = PlatformRules(
    platform="bluesky",
    title="Bluesky",
    max_text=300,
    max_text_bytes=3000,
    max_media=4,
    # Blob limit for app.bsky.embed.images images.
    max_media_bytes=2_000_000,
    media_types=_COMMON_IMAGES,
    # The Bluesky app's alt-text limit; the lexicon itself sets none.
    max_alt=2000,
    # Blobs are content-addressed (a CID of the exact bytes): the file served is the file sent.
    media_fidelity=MediaFidelity.EXACT,
    source="https://atproto.com/specs/blob; lexicon app/bsky/embed/images.json",
)
# Mastodon's defaults; ground replaces them with what the instance's /api/v2/instance says.
MASTODON = PlatformRules(
    platform="mastodon",
    title="Mastodon",
    max_text=500,
    text_count=TextCount.MASTODON,
    max_media=4,
    max_media_bytes=16 * 1024 * 1024,
    media_types=frozenset({*_COMMON_IMAGES, "image/heic", "image/avif"}),
    max_alt=1500,
    # Mastodon strips metadata and re-encodes/resizes images on upload (media processing).
    media_fidelity=MediaFidelity.RE_ENCODED,
    source="https://docs.joinmastodon.org/methods/media/; /api/v2/instance configuration",
)
X = PlatformRules(
    platform="x",
    title="X",
    max_text=280,
    text_count=TextCount.X_WEIGHTED,
    max_media=4,
    # Images up to 5 MB (JPEG, PNG, WEBP, GIF); animated GIFs 15 MB are not carried by orbitpost.
    max_media_bytes=5 * 1024 * 1024,
    media_types=_COMMON_IMAGES,
    max_alt=1000,
    media_fidelity=MediaFidelity.RE_ENCODED,
    # Image dimensions 4×4 up to 8192×8192.
    max_side_px=8192,
    source="https://docs.x.com/x-api/media/quickstart/media-upload-chunked; "
    "https://developer.x.com/en/docs/twitter-api/v1/media/upload-media/uploading-media/media-best-practices",
)
# Flickr keeps the uploaded file as the photo's "Original" size (flickr.photos.getSizes), so the
# astronaut's exact bytes stay downloadable; ground reads the original back to check.
FLICKR = PlatformRules(
    platform="flickr",
    title="Flickr",
    # Flickr's description is free text; 300 graphemes would be a Bluesky figure, Flickr sets none
    # that its API documents. Photo files up to 200 MB (free and Pro accounts).
    max_media_bytes=200 * 1024 * 1024,
    media_types=frozenset({"image/jpeg", "image/png", "image/gif"}),
    needs_media=True,
    media_fidelity=MediaFidelity.EXACT,
    source="https://www.flickr.com/services/api/upload.api.html; "
    "https://www.flickr.com/services/api/flickr.photos.getSizes.html",
)
LINKEDIN = PlatformRules(
    platform="linkedin",
    title="LinkedIn",
    max_text=3000,
    # Posts API multi-image posts take 2-20 images; Images API: JPG, GIF, PNG.
    max_media=20,
    max_media_bytes=5 * 1024 * 1024,
    media_types=frozenset({"image/jpeg", "image/png", "image/gif"}),
    # altText on an image in a Posts API post: 4,086 characters.
    max_alt=4086,
    media_fidelity=MediaFidelity.RE_ENCODED,
    # Images API: "Maximum pixel count: 36,152,320" (6012 × 6012).
    max_pixels=36_152_320,
    source="https://learn.microsoft.com/en-us/linkedin/marketing/community-management/shares/posts-api; "
    "https://learn.microsoft.com/en-us/linkedin/marketing/community-management/shares/images-api",
)
# Meta platforms: the other platform engineer writes the adapters; the rules live here.
INSTAGRAM = PlatformRules(
    platform="instagram",
    title="Instagram",
    max_text=2200,
    # A carousel holds up to 10 images; every Instagram post needs at least one.
    max_media=10,
    max_media_bytes=8 * 1024 * 1024,
    # Image posts: JPEG only ("Format: JPEG" in the image specifications).
    media_types=frozenset({"image/jpeg"}),
    needs_media=True,
    media_fidelity=MediaFidelity.RE_ENCODED,
    # "Aspect ratio: must be within a 4:5 to 1.91:1 range" (wider ones are scaled, not refused).
    aspect_range=(0.8, 1.91),
    source="https://developers.facebook.com/docs/instagram-platform/content-publishing/; "
    "https://developers.facebook.com/docs/instagram-platform/instagram-graph-api/reference/ig-user/media",
)
THREADS = PlatformRules(
    platform="threads",
    title="Threads",
    max_text=500,
    text_count=TextCount.THREADS,
    # Carousel posts: up to 20 images or videos.
    max_media=20,
    max_media_bytes=8 * 1024 * 1024,
    media_types=frozenset({"image/jpeg", "image/png"}),
    media_fidelity=MediaFidelity.RE_ENCODED,
    # Image specifications: "Aspect ratio limit: 10:1".
    aspect_range=(0.1, 10.0),
    source="https://developers.facebook.com/docs/threads/posts/ (Limitations; Media Specifications)",
)
FACEBOOK = PlatformRules(
    platform="facebook",
    title="Facebook",
    # A Page feed post's message: 63,206 characters.
    max_text=63_206,
    max_media_bytes=10 * 1024 * 1024,
    media_types=frozenset({"image/jpeg", "image/png", "image/gif"}),
    media_fidelity=MediaFidelity.RE_ENCODED,
    source="https://developers.facebook.com/docs/graph-api/reference/page/photos/; "
    "https://developers.facebook.com/docs/pages-api/posts/",
)
# Our own outputs take anything the bundle format carries, and keep the exact bytes.
ARCHIVE = PlatformRules(platform="archive", title="archive")
WEBHOOK = PlatformRules(platform="webhook", title="webhook")

DEFAULT_RULES: Mapping[str, PlatformRules] = {
    r.platform: r
    for r in (BLUESKY, MASTODON, X, FLICKR, LINKEDIN, INSTAGRAM, THREADS, FACEBOOK, ARCHIVE, WEBHOOK)
}


def media_fidelity(platform: str) -> MediaFidelity:
    """What ``platform`` does to photo bytes; an unknown platform is assumed to re-encode.

    Assuming the worse case means onboard never promises exact bytes it cannot vouch for.
    """
    rules = DEFAULT_RULES.get(platform)
    return rules.media_fidelity if rules is not None else MediaFidelity.RE_ENCODED


def fidelity_summary(targets: Iterable[str], photos: int = 1) -> str:
    """One sentence for the astronaut: which targets re-encode photos and which keep them.

    ``"x and mastodon will re-encode this photo; flickr and bluesky keep it exactly"``.
    Empty when there are no photos or every target keeps the exact bytes (nothing to warn about).
    """
    platforms: list[str] = []
    for t in targets:
        p = parse_target(t)[0]
        if p not in platforms:
            platforms.append(p)
    changed = [p for p in platforms if media_fidelity(p) is MediaFidelity.RE_ENCODED]
    exact = [p for p in platforms if media_fidelity(p) is MediaFidelity.EXACT]
    if not changed or photos < 1:
        return ""
    what, it = ("this photo", "it") if photos == 1 else ("these photos", "them")
    out = f"{_join(changed)} will re-encode {what}"
    if exact:
        out += f"; {_join(exact)} {'keeps' if len(exact) == 1 else 'keep'} {it} exactly"
    return out


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One broken rule: which account, which rule (a stable id) and what to change."""

    target: str
    rule: str
    message: str
    # Appended (renditions): the photo (1-based) this is about, 0 if none.
    photo: int = 0

    def __str__(self) -> str:
        return f"{self.target}: {self.message} [{self.rule}]"

    @property
    def renditionable(self) -> bool:
        """Whether a rendition (docs/platforms.md, rendition/v1) can cure this: a photo over
        the platform's bytes, pixels or aspect ratio, or in a format it does not take."""
        return self.photo > 0 and self.rule.rpartition(".")[2] in RENDITION_RULES


# The photo rules a rendition cures; every other rule (text, counts, alt text) it cannot.
RENDITION_RULES = frozenset({"media_type", "media_bytes", "media_side", "media_pixels", "media_aspect"})


def graphemes(text: str) -> int:
    """Number of extended grapheme clusters (what a reader sees as characters)."""
    return len(_clusters(text))


def _clusters(text: str) -> list[str]:
    found: list[str] = _GRAPHEME.findall(text)
    return found


def mastodon_length(text: str, url_length: int = 23) -> int:
    """Mastodon's count: graphemes, each URL as ``url_length``, ``@user@domain`` as ``@user``."""
    replaced = URL_RE.sub("x" * url_length, text)
    replaced = _MASTODON_MENTION.sub(lambda m: "@" + str(m.group(1)), replaced)
    return graphemes(replaced)


def x_weighted_length(text: str, url_length: int = 23) -> int:
    """twitter-text v3's ``parseTweet`` weighted length (a limit of 280 means 280 light characters).

    The loop is parseTweet's (NFC text; a URL weighs ``url_length``, an emoji sequence 2, other
    characters by the v3 ranges). Finding URLs and emoji is the hard part; it is done by
    twitter-text-parser (a Python port of twitter-text) with four corrections where that port
    strays from the official library: line endings are not rewritten, an emoji is only an
    emoji where twemoji-parser says so (© and ® only with a U+FE0F, which is then part of them;
    after any other emoji a U+FE0F is a character of its own), a domain is checked as
    twitter-text's own idna.toAscii checks it (``_idna_as_twitter_text``), and URLs are found in
    UTF-16 units as JavaScript holds the text. tests/test_official_clients.py checks the result
    against the official library. NFC is Python's Unicode version (14.0 on 3.11): a pair that
    composes only under a later version counts as two characters, more than X counts, never less.
    """
    extract_urls_with_indices, extract_emojis_with_indices = _twitter_text()
    text = unicodedata.normalize("NFC", text)
    # parseTweet walks UTF-16 code units, and twitter-text's URL regexes (no /u flag) see an
    # astral character as two: a URL may begin right after its high surrogate. So the URLs are
    # found, and the loop runs, on the text's UTF-16 units (one str character each).
    units = _utf16_units(text)
    offset = _utf16_offsets(text)
    entities = {
        e["indices"][0]: (e["indices"][1], url_length * 100) for e in extract_urls_with_indices(units)
    }
    for e in extract_emojis_with_indices(text):
        start, end = e["indices"]
        if e["emoji"] in _X_TEXT_DEFAULT:
            if text[end : end + 1] != "\ufe0f":
                continue
            end += 1
        entities.setdefault(offset[start], (offset[end], 200))
    total, i = 0, 0
    while i < len(units):
        if i in entities:
            i, weight = entities[i]
            total += weight
            continue
        if _is_surrogate_pair(units, i):
            i += 1  # parseTweet weighs a pair by its low surrogate's code unit
        cp = ord(units[i])
        total += 100 if any(lo <= cp <= hi for lo, hi in _X_LIGHT_RANGES) else 200
        i += 1
    return (total + 99) // 100


def _is_surrogate_pair(units: str, i: int) -> bool:
    return "\ud800" <= units[i] <= "\udbff" and i + 1 < len(units) and "\udc00" <= units[i + 1] <= "\udfff"


def _utf16_units(text: str) -> str:
    """``text`` with each astral character as its two surrogates, as a JavaScript string holds it."""
    return "".join(
        c if ord(c) < 0x10000 else chr(0xD7C0 + (ord(c) >> 10)) + chr(0xDC00 + (ord(c) & 0x3FF)) for c in text
    )


def _utf16_offsets(text: str) -> list[int]:
    """For each code point index of ``text`` (and its end), the UTF-16 unit index."""
    out, n = [], 0
    for c in text:
        out.append(n)
        n += 2 if ord(c) >= 0x10000 else 1
    out.append(n)
    return out


@functools.cache
def _twitter_text() -> tuple[Callable[[str], list[dict[str, Any]]], Callable[[str], list[dict[str, Any]]]]:
    """twitter-text-parser's URL and emoji extractors, its domain check made the official
    library's. Imported on first use: the port takes ~1 s to import (pkg_resources, emoji
    tables), a cost every `ground` and `onboard` start paid though only X's posts need it."""
    from twitter_text.extract_emojis import extract_emojis_with_indices
    from twitter_text.extract_urls import extract_urls_with_indices

    # The module itself (the package's attribute of that name is the function extract_urls).
    sys.modules["twitter_text.extract_urls"].idna_to_ascii = _idna_as_twitter_text  # type: ignore[attr-defined]
    return extract_urls_with_indices, extract_emojis_with_indices


def _idna_as_twitter_text(domain: str) -> str | None:
    """twitter-text's ``idna.toAscii``: each label punycoded (RFC 3492, no nameprep) must be
    1-63 characters; the domain comes back as it was. The port used Python's IDNA 2003 codec,
    which refuses what nameprep refuses (a noncharacter such as U+2FFFE before ``-0.AL``), so
    a URL the official library counts as 23 went uncounted; hypothesis found it."""
    from twitter_text.regexp.valid_ascii_domain import valid_ascii_domain  # imported already

    if domain.startswith("xn--") and not valid_ascii_domain.search(domain):
        return None
    for label in domain.split("."):
        # The domain is UTF-16 units (x_weighted_length); punycode.js pairs surrogates first.
        label = label.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
        encoded = label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
        if not 1 <= len(encoded) <= 63:
            return None
    return domain


def text_length(text: str, rules: PlatformRules) -> int:
    """``text``'s length as ``rules.platform`` counts it."""
    if rules.text_count is TextCount.MASTODON:
        return mastodon_length(text, rules.url_length)
    if rules.text_count is TextCount.X_WEIGHTED:
        return x_weighted_length(text, rules.url_length)
    if rules.text_count is TextCount.THREADS:
        return threads_length(text)
    return graphemes(text)


# What Threads calls an emoji: a grapheme cluster holding a pictograph or a flag's regional indicators.
_THREADS_EMOJI = regex.compile(r"\p{Extended_Pictographic}|\p{Regional_Indicator}")


def threads_length(text: str) -> int:
    """Threads' count: characters, an emoji counting as its UTF-8 bytes (a flag is 8)."""
    return sum(
        len(c.encode("utf-8", "surrogatepass")) if _THREADS_EMOJI.search(c) else 1 for c in _clusters(text)
    )


def rules_for(target: str, overrides: Mapping[str, PlatformRules] | None = None) -> PlatformRules | None:
    """The rules for ``platform:account``: an exact-target override, a platform override, the default."""
    platform, _ = parse_target(target)
    if overrides:
        for key in (target, platform):
            if key in overrides:
                return overrides[key]
    return DEFAULT_RULES.get(platform)


def check_target(post: Post, target: str, rules: PlatformRules) -> list[Violation]:
    """Every rule of ``rules`` that ``post`` breaks when published to ``target``."""
    out: list[Violation] = []
    p = rules.platform
    title = rules.title

    def bad(rule: str, message: str) -> None:
        out.append(Violation(target=target, rule=f"{p}.{rule}", message=message))

    if rules.needs_text and not post.text:
        bad("text_required", f"{title} needs some text")
    if rules.needs_media and not post.media:
        bad("media_required", f"{title} needs at least one photo")
    if rules.max_text is not None:
        n = text_length(post.text, rules)
        if n > rules.max_text:
            bad(
                "text_length",
                f"text is {n} {rules.text_count.value}; {title} allows {rules.max_text} "
                f"(shorten it by {n - rules.max_text})",
            )
    if rules.max_text_bytes is not None:
        n = len(post.text.encode("utf-8", "surrogatepass"))
        if n > rules.max_text_bytes:
            bad("text_bytes", f"text is {n} UTF-8 bytes; {title} allows {rules.max_text_bytes}")
    if rules.max_media is not None and len(post.media) > rules.max_media:
        bad("media_count", f"{len(post.media)} photos; {title} allows {rules.max_media} per post")
    for i, m in enumerate(post.media, start=1):
        if rules.media_types is not None and m.media_type not in rules.media_types:
            allowed = ", ".join(sorted(t.removeprefix("image/").upper() for t in rules.media_types))
            out.append(
                Violation(
                    target=target,
                    rule=f"{p}.media_type",
                    message=f"photo {i} is {m.media_type}; {title} takes {allowed}",
                    photo=i,
                )
            )
        if rules.max_media_bytes is not None and m.size_bytes > rules.max_media_bytes:
            out.append(
                Violation(
                    target=target,
                    rule=f"{p}.media_bytes",
                    message=f"photo {i} is {m.size_bytes:,} bytes; {title} allows {rules.max_media_bytes:,}",
                    photo=i,
                )
            )
        if rules.max_alt is not None:
            n = graphemes(m.alt)
            if n > rules.max_alt:
                bad("alt_length", f"alt text of photo {i} is {n} characters; {title} allows {rules.max_alt}")
    return out


def check_photo_size(
    target: str, rules: PlatformRules, photo: int, width: int, height: int
) -> list[Violation]:
    """The pixel rules of ``rules`` that photo number ``photo`` (1-based), ``width`` × ``height``
    as displayed, breaks on ``target``. Separate from :func:`check_target` because a post
    carries photo hashes, not pixels: the caller reads the size from the bytes it holds."""
    out: list[Violation] = []
    p, title = rules.platform, rules.title

    def bad(rule: str, message: str) -> None:
        out.append(Violation(target=target, rule=f"{p}.{rule}", message=message, photo=photo))

    size = f"photo {photo} is {width}×{height}"
    if rules.max_side_px is not None and max(width, height) > rules.max_side_px:
        bad("media_side", f"{size}; {title} allows at most {rules.max_side_px} pixels a side")
    if rules.max_pixels is not None and width * height > rules.max_pixels:
        bad("media_pixels", f"{size} ({width * height:,} pixels); {title} allows {rules.max_pixels:,}")
    if rules.aspect_range is not None and height > 0:
        lo, hi = rules.aspect_range
        if not lo <= width / height <= hi:
            bad(
                "media_aspect",
                f"{size} (aspect {width / height:.3g}:1); {title} takes {_ratio(lo)} to {_ratio(hi)}",
            )
    return out


def _ratio(r: float) -> str:
    """0.8 → '4:5', 1.91 → '1.91:1', 0.1 → '1:10' (how the platforms write them)."""
    if r < 1:
        for den in range(1, 11):
            if abs(r * den - round(r * den)) < 1e-9:
                return f"{round(r * den)}:{den}"
        return f"{r:g}:1"
    return f"{r:g}:1"


def check_target_photos(
    post: Post, target: str, rules: PlatformRules, sizes: Sequence[tuple[int, int] | None]
) -> list[Violation]:
    """:func:`check_target` plus the pixel rules for every photo whose size is known
    (``sizes[i]``: photo i+1's displayed size, None where it could not be read)."""
    found = check_target(post, target, rules)
    for i, size in enumerate(sizes, start=1):
        if size is not None:
            found.extend(check_photo_size(target, rules, i, *size))
    return found


def size_violations(
    post: Post,
    sizes: Sequence[tuple[int, int] | None],
    overrides: Mapping[str, PlatformRules] | None = None,
) -> list[Violation]:
    """:func:`check_photo_size` for every target and photo; ``sizes[i]`` is photo i+1's
    displayed (width, height), None where the caller could not read it."""
    out: list[Violation] = []
    for target in post.targets:
        rules = rules_for(target, overrides)
        if rules is None:
            continue
        for i, size in enumerate(sizes, start=1):
            if size is not None:
                out.extend(check_photo_size(target, rules, i, *size))
    return out


def split_renditions(post: Post, found: Iterable[Violation]) -> tuple[list[Violation], list[Violation]]:
    """``(refusals, renditions)``: the violations a signed rendition consent (``post.renditions``,
    docs/PROTOCOL.md §3.1) cures, and all the others, which still refuse the (post, account)."""
    refusals: list[Violation] = []
    cured: list[Violation] = []
    for v in found:
        (cured if v.renditionable and v.target in post.renditions else refusals).append(v)
    return refusals, cured


def violations(post: Post, overrides: Mapping[str, PlatformRules] | None = None) -> list[Violation]:
    """Every rule ``post`` breaks on any of its targets; empty means it can go out unchanged.

    ``overrides`` maps a target (``mastodon:alice@example.social``) or a platform name to
    rules learned at run time; platforms with no known rules are not checked here.
    """
    out: list[Violation] = []
    for target in post.targets:
        rules = rules_for(target, overrides)
        if rules is not None:
            out.extend(check_target(post, target, rules))
    return out


def with_limits(rules: PlatformRules, **changes: int | frozenset[str] | None) -> PlatformRules:
    """A copy of ``rules`` with some limits replaced (e.g. from an instance's configuration)."""
    return replace(rules, **changes)  # type: ignore[arg-type]
