"""URL templates: how receipts version 4 names a published post in a few bytes (docs/PROTOCOL.md §9.5).

A publication's URL and platform id repeat per account all but a short part: Bluesky's
``https://bsky.app/profile/<did>/post/<rkey>`` beside ``at://<did>/app.bsky.feed.post/<rkey>``,
Mastodon's ``https://<instance>/@<user>/<status id>`` beside the status id, the archive's
``file:///…/.packs/<post id>-<8 hex>.jsonl#<post id>`` beside the post id. A *template* is that
account's fixed parts, sent once; a receipt then carries the template's number and the *key*
(the rkey, the status id, the pack's 8 hex), and the reader rebuilds both strings.

A template is a tuple of parts: a non-empty string is itself, ``POST_ID`` (0) is the post's id
(which the station sent), ``KEY`` (1) is the receipt's key. ``expand`` is the one rule both
sides use; ground signs the compact bytes, so what a reader checks is what ground signed, and
the full strings are a function of signed bytes and the post id.

``infer`` guesses a template from one publication and ``fit`` finds the key that makes a
template give exactly a publication's URL and id (or says none does): ground uses a template
only where ``fit`` reproduces the strings exactly, else it spells them out, so a bad guess
costs bytes, never a wrong URL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from .errors import ErrorCode, RemoteProtocolError

POST_ID = 0
KEY = 1
Parts = tuple[str | int, ...]
# A template is a URL's fixed pieces around at most a few slots.
MAX_PARTS = 16
# Rkeys, status ids and pack names are tens of characters; a longer key saves nothing.
MAX_KEY_CHARS = 256
# The longest URL or platform id a template may rebuild (URLs beyond 8 KiB are not URLs).
MAX_EXPANDED_CHARS = 8192
# Where ground looks for a key when the platform id is the post id itself (the archive, a
# webhook): the last path segment's first run of these (URL-unreserved but '.' and '~').
_KEY_RUN = re.compile(r"[A-Za-z0-9_-]+")


def parts_to_text(parts: Parts | None) -> str:
    """Template parts as the JSON text both sides store them in ('null': none)."""
    return json.dumps(None if parts is None else list(parts), ensure_ascii=False, separators=(",", ":"))


def parts_from_text(text: str) -> Parts | None:
    """Template parts from :func:`parts_to_text`'s JSON text."""
    v = json.loads(text)
    return None if v is None else tuple(v)


def expand(parts: Parts | None, post_id: str, key: str) -> str | None:
    """The string ``parts`` stands for, with ``post_id`` and ``key`` in their slots (None: none)."""
    if parts is None:
        return None
    return "".join(post_id if p == POST_ID else key if p == KEY else str(p) for p in parts)


def check_parts(v: object, what: str) -> Parts | None:
    """A template's parts as read from the wire, or raise RemoteProtocolError (nil: None)."""
    if v is None:
        return None
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_PARTS:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"{what} must be an array of 1..{MAX_PARTS} parts")
    for p in v:
        ok = (isinstance(p, str) and 0 < len(p) <= MAX_EXPANDED_CHARS) or (
            type(p) is int and p in (POST_ID, KEY)
        )
        if not ok:
            raise RemoteProtocolError(
                ErrorCode.MALFORMED, f"{what}: a part is a non-empty string, 0 (the post id) or 1 (the key)"
            )
    return tuple(v)


def _pattern(parts: Parts, post_id: str) -> re.Pattern[str]:
    out, seen = [], False
    for p in parts:
        if p == KEY:
            out.append("(?P=k)" if seen else "(?P<k>.*)")
            seen = True
        else:
            out.append(re.escape(post_id if p == POST_ID else str(p)))
    return re.compile("".join(out), re.DOTALL)


def fit(
    url_parts: Parts | None, remote_parts: Parts | None, post_id: str, url: str | None, remote_id: str | None
) -> str | None:
    """The key with which the two templates give exactly ``url`` and ``remote_id``, or None."""
    key = ""
    for parts, s in ((url_parts, url), (remote_parts, remote_id)):
        if parts is not None and s is not None and KEY in parts:
            m = _pattern(parts, post_id).fullmatch(s)
            if m is None:
                return None
            key = m.group("k")
            break
    if len(key) > MAX_KEY_CHARS:
        return None
    if expand(url_parts, post_id, key) != url or expand(remote_parts, post_id, key) != remote_id:
        return None
    return key


def _split(s: str, post_id: str, key: str, *, last_only: bool) -> list[str | int]:
    """``s`` as parts: every occurrence of the post id a POST_ID slot, the key (its last
    occurrence, or every one) a KEY slot."""
    out: list[str | int] = []
    for i, piece in enumerate(s.split(post_id) if post_id else [s]):
        if i:
            out.append(POST_ID)
        if key and key in piece:
            if last_only:
                head, _, tail = piece.rpartition(key)
                out.extend([*([head] if head else []), KEY, *([tail] if tail else [])])
                continue
            for j, bit in enumerate(piece.split(key)):
                out.extend([*([KEY] if j else []), *([bit] if bit else [])])
            continue
        if piece:
            out.append(piece)
    return out


def _url_key(url: str, post_id: str) -> str:
    """The archive's and a webhook's key: the last path segment's first run of unreserved
    characters, the post id left out (it has its own slot)."""
    segment = url.rsplit("/", 1)[-1]
    for piece in segment.split(post_id) if post_id else [segment]:
        for m in _KEY_RUN.finditer(piece.split(".", 1)[0].split("#", 1)[0].split("?", 1)[0]):
            return m.group(0)
    return ""


def infer(post_id: str, url: str | None, remote_id: str | None) -> tuple[Parts | None, Parts | None] | None:
    """A template guessed from one publication (None: no useful one): the key is the platform
    id's last path segment (Bluesky's rkey, a status id), or else a run of the URL's last
    segment (the archive's pack); the post id gets its own slot. Checked with ``fit``."""
    if url is None and remote_id is None:
        return None
    if remote_id is not None and remote_id != post_id:
        key = remote_id.rsplit("/", 1)[-1]
    else:
        key = _url_key(url, post_id) if url is not None else ""
    url_parts = None if url is None else tuple(_split(url, post_id, key, last_only=True))
    remote_parts = None if remote_id is None else tuple(_split(remote_id, post_id, key, last_only=True))
    for parts in (url_parts, remote_parts):
        # A template with no slot would fit this post only: it would cost, not save.
        if parts is not None and (POST_ID not in parts and KEY not in parts or len(parts) > MAX_PARTS):
            return None
    if fit(url_parts, remote_parts, post_id, url, remote_id) != key:
        return None
    return url_parts, remote_parts


def best(
    templates: Sequence[tuple[int, Parts | None, Parts | None]],
    post_id: str,
    url: str | None,
    remote_id: str | None,
) -> tuple[int, str] | None:
    """Of ``(number, url_parts, remote_parts)``, the one giving the shortest key, and that key."""
    found = None
    for number, u, r in templates:
        key = fit(u, r, post_id, url, remote_id)
        if key is not None and (found is None or len(key) < len(found[1])):
            found = (number, key)
    return found
