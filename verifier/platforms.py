"""Read a copy back from a platform with an API a reader can call, and compare it with the signed post.

What each platform lets a reader (not the astronaut) read, and so what is checked:

- **Mastodon**: ``GET /api/v1/statuses/:id`` on the instance named in the logged URL, no token
  (docs.joinmastodon.org/methods/statuses/#get). Only the HTML rendering is public: the text is
  compared byte for byte where the rendering can show it, else as Mastodon shows it
  (protocol/rendering.py says exactly what that drops). Photos: re-encoded, counted.
- **X**: API v2 ``GET /2/tweets/:id`` with a reader's own bearer token (app-only works;
  docs.x.com/x-api/posts/lookup); without one, the public oEmbed (``publish.twitter.com/oembed``,
  no authentication). The text must be ours with links shown as t.co; photos are counted.
- **Instagram, Threads, Facebook Pages**: ``GET /<version>/<id>?fields=…`` on the Graph API with
  a token the reader holds for it; the object's permalink must be the logged URL, and its
  caption/text/message our exact text.
- **Flickr** (keeps originals): ``flickr.photos.getInfo`` and ``flickr.photos.getSizes`` with
  a reader's API key (public photos need no login); every photo must carry this post's machine
  tags, its description must be our text, and each ``Original`` file our photo's exact bytes.

A copy that differs raises VerificationFailed naming it; a copy that cannot be read without a
token the reader did not give is reported as unchecked, never as verified.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from protocol.model import Post
from protocol.rendering import (
    mastodon_html_text,
    mastodon_shown_form,
    x_embed_matches,
    x_embed_text,
    x_text_matches,
)

from .proof import VerificationFailed

DEFAULT_APIS = {
    "x": "https://api.x.com",
    "x-oembed": "https://publish.twitter.com",
    "instagram": "https://graph.instagram.com",
    "threads": "https://graph.threads.net",
    "facebook": "https://graph.facebook.com",
    "flickr": "https://api.flickr.com",
}
GRAPH = {  # platform: (API version, text field, permalink field)
    "instagram": ("v21.0", "caption", "permalink"),
    "threads": ("v1.0", "text", "permalink"),
    "facebook": ("v21.0", "message", "permalink_url"),
}
TITLES = {
    "x": "X",
    "instagram": "Instagram",
    "threads": "Threads",
    "facebook": "Facebook",
    "flickr": "Flickr",
}
TOKEN_NAMES = {"flickr": "an API key"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Readers:
    """What the reader lends the verifier: tokens per platform and API base URLs (tests: loopback)."""

    tokens: Mapping[str, str] = field(default_factory=dict)
    apis: Mapping[str, str] = field(default_factory=dict)

    def api(self, platform: str) -> str:
        return (self.apis.get(platform) or DEFAULT_APIS[platform]).rstrip("/")


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyCheck:
    """One publication: ``checked`` False means nothing was claimed about it (``detail`` says why)."""

    checked: bool
    detail: str


def _get_json(url: str, fetch: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    try:
        value = json.loads(fetch(url, headers=dict(headers or {})))
    except ValueError as exc:
        raise VerificationFailed(f"{url} did not answer JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise VerificationFailed(f"{url} did not answer a JSON object")
    return value


def _last_segment(url: str) -> str:
    return urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def _photos_note(post: Post, shown: int | None, title: str) -> str:
    if not post.media:
        return ""
    if shown is not None and shown != len(post.media):
        raise VerificationFailed(f"{title} shows {shown} photo(s); the astronaut signed {len(post.media)}")
    return f"; {len(post.media)} photo(s) re-encoded by {title} (not comparable byte for byte)"


def _need_token(platform: str, url: str) -> CopyCheck:
    what = TOKEN_NAMES.get(platform, "a reader's token")
    return CopyCheck(
        checked=False,
        detail=f"{url}: cannot read back from {TITLES[platform]} without {what} "
        f"(--read-token {platform}=…); nothing claimed about this copy",
    )


def mastodon(post: Post, pub: Mapping[str, Any], readers: Readers, fetch: Any) -> CopyCheck:
    url = str(pub.get("url") or "")
    parts = urllib.parse.urlsplit(url)
    base = (readers.apis.get("mastodon") or f"{parts.scheme}://{parts.netloc}").rstrip("/")
    status = _get_json(f"{base}/api/v1/statuses/{urllib.parse.quote(_last_segment(url))}", fetch)
    shown = mastodon_html_text(str(status.get("content") or ""))
    if shown == post.text:
        how = "text byte-identical"
    elif shown == mastodon_shown_form(post.text):
        how = (
            "text matches as Mastodon shows it (HTML: line ends, outer spaces and mention domains not shown)"
        )
    else:
        raise VerificationFailed(
            f"Mastodon status {url}: text differs from the signed text: the instance shows {shown[:200]!r}"
        )
    attachments = status.get("media_attachments")
    count = len(attachments) if isinstance(attachments, list) else None
    return CopyCheck(
        checked=True, detail=f"Mastodon status {url}: {how}{_photos_note(post, count, 'the instance')}"
    )


def x(post: Post, pub: Mapping[str, Any], readers: Readers, fetch: Any) -> CopyCheck:
    url = str(pub.get("url") or "")
    token = readers.tokens.get("x")
    if not token:
        return x_embed(post, url, readers, fetch)
    body = _get_json(
        f"{readers.api('x')}/2/tweets/{urllib.parse.quote(_last_segment(url))}?tweet.fields=attachments",
        fetch,
        {"Authorization": f"Bearer {token}"},
    )
    data = body.get("data")
    if not isinstance(data, dict):
        raise VerificationFailed(f"X post {url}: X does not show it ({json.dumps(body.get('errors'))[:200]})")
    if not x_text_matches(post.text, str(data.get("text", ""))):
        raise VerificationFailed(
            f"X post {url}: text differs from the signed text: X shows {str(data.get('text'))[:200]!r}"
        )
    keys = (data.get("attachments") or {}).get("media_keys")
    count = len(keys) if isinstance(keys, list) else None
    return CopyCheck(
        checked=True,
        detail=f"X post {url}: text matches (links shown as t.co; their targets not compared)"
        + _photos_note(post, count, "X"),
    )


def x_embed(post: Post, url: str, readers: Readers, fetch: Any) -> CopyCheck:
    """X without a token: the public oEmbed of the post's URL."""
    q = urllib.parse.urlencode({"url": url, "omit_script": "1", "hide_thread": "1"})
    embed = _get_json(f"{readers.api('x-oembed')}/oembed?{q}", fetch)
    shown, photos = x_embed_text(str(embed.get("html") or ""))
    if not x_embed_matches(post.text, shown):
        raise VerificationFailed(
            f"X post {url}: text differs from the signed text: X's embed shows {shown[:200]!r}"
        )
    return CopyCheck(
        checked=True,
        detail=f"X post {url}: text matches as X's public embed shows it (links as t.co; their "
        "targets not compared)" + _photos_note(post, photos, "X"),
    )


def graph(platform: str, post: Post, pub: Mapping[str, Any], readers: Readers, fetch: Any) -> CopyCheck:
    url = str(pub.get("url") or "")
    token, pid = readers.tokens.get(platform), str(pub.get("remote_id") or "")
    if not token:
        return _need_token(platform, url)
    if not pid:
        return CopyCheck(checked=False, detail=f"{url}: the proof names no {TITLES[platform]} id to read")
    version, text_field, link_field = GRAPH[platform]
    q = urllib.parse.urlencode({"fields": f"id,{link_field},{text_field}"})
    obj = _get_json(
        f"{readers.api(platform)}/{version}/{urllib.parse.quote(pid)}?{q}",
        fetch,
        {"Authorization": f"Bearer {token}"},
    )
    title = TITLES[platform]
    if obj.get(link_field) != url:
        raise VerificationFailed(
            f"{title} object {pid} is not the logged post {url} (it is {obj.get(link_field)!r})"
        )
    if obj.get(text_field, "") != post.text:
        raise VerificationFailed(
            f"{title} post {url}: text differs from the signed text: {title} shows {str(obj.get(text_field))[:200]!r}"
        )
    return CopyCheck(
        checked=True, detail=f"{title} post {url}: text byte-identical" + _photos_note(post, None, title)
    )


def flickr(post: Post, pub: Mapping[str, Any], readers: Readers, fetch: Any) -> CopyCheck:
    url = str(pub.get("url") or "")
    key = readers.tokens.get("flickr")
    if not key:
        return _need_token("flickr", url)
    ids = [i for i in str(pub.get("remote_id") or _last_segment(url)).split(",") if i]
    if not ids or ids[0] != _last_segment(url):
        raise VerificationFailed(
            f"Flickr copy {url}: the proof's photo ids do not start with the logged photo"
        )
    if len(ids) != len(post.media):
        raise VerificationFailed(
            f"Flickr copy {url}: {len(ids)} photo(s); the astronaut signed {len(post.media)}"
        )

    def rest(method: str, photo_id: str) -> dict[str, Any]:
        q = urllib.parse.urlencode(
            {"method": method, "api_key": key, "photo_id": photo_id, "format": "json", "nojsoncallback": "1"}
        )
        out = _get_json(f"{readers.api('flickr')}/services/rest/?{q}", fetch)
        if out.get("stat") != "ok":
            raise VerificationFailed(f"Flickr {method} {photo_id}: {out.get('message', 'failed')}")
        return out

    for n, (pid, ref) in enumerate(zip(ids, post.media, strict=True), start=1):
        info = rest("flickr.photos.getInfo", pid).get("photo") or {}
        tags = {t.get("raw") for t in (info.get("tags") or {}).get("tag") or []}
        if not {f"orbitpost:post={post.id.lower()}", f"orbitpost:photo={n}"} <= tags:
            raise VerificationFailed(f"Flickr photo {pid} is not tagged as photo {n} of post {post.id}")
        shown = (info.get("description") or {}).get("_content")
        if shown != post.text:
            raise VerificationFailed(
                f"Flickr photo {pid}: text differs from the signed text: Flickr shows {str(shown)[:200]!r}"
            )
        sizes = (rest("flickr.photos.getSizes", pid).get("sizes") or {}).get("size") or []
        original = next((s for s in sizes if s.get("label") == "Original"), None)
        if original is None:
            raise VerificationFailed(f"Flickr photo {pid}: no Original size is offered to read")
        if hashlib.sha256(fetch(str(original["source"]))).digest() != ref.sha256:
            raise VerificationFailed(f"Flickr photo {pid}: the Original differs from signed photo {n}")
    return CopyCheck(
        checked=True, detail=f"Flickr copy {url}: text and {len(ids)} original photo(s) byte-identical"
    )
