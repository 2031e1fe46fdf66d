"""The `facebook` platform: posts on a Facebook Page with a Page access token (Graph API).

Written from Meta's documentation:
- Pages API, getting started: https://developers.facebook.com/docs/pages/getting-started
  (``POST /{page-id}/feed`` with ``message`` and a Page access token; ``pages_manage_posts``);
- Page Feed reference: https://developers.facebook.com/docs/graph-api/reference/page/feed/
  (``attached_media[n]={"media_fbid": …}`` for a multi-photo post; reading the Page's posts);
- Page Photos reference: https://developers.facebook.com/docs/graph-api/reference/page/photos
  (``POST /{page-id}/photos`` with the file as ``source``; ``published=false`` makes an
  unpublished photo to attach to one feed post);
- errors and rate limits (Page tokens count against Business Use Case limits,
  ``X-Business-Use-Case-Usage``): see ``meta_graph.py``.

Photos are uploaded (multipart ``source``), so Facebook needs no public URL; it re-encodes
them. A post is: unpublished photos (their ids committed one by one), then one feed post
attaching them. Exactly once: the photo ids and the moment the feed post began are committed
before it is sent; after a crash or an ambiguous answer ``lookup`` reads the Page's recent
posts and matches the one that attaches exactly our photo ids (text-only: exact message,
dated after the attempt began) — the Graph API has no idempotency key.

Tokens: a Page token obtained from a long-lived user token has no expiry; when Meta revokes
it (password change, removed permission) every call fails with code 190 and the post fails
with "reconnect this account". Credentials: ``ground account add facebook:PAGE --token-file F``
(host ``https://graph.facebook.com``), then ``ground account check facebook:PAGE``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ..credentials import CredentialStore
from ..errors import PublishError
from .base import Published, PublishRequest
from .handles import HandleStore
from .http import photo_form
from .meta_graph import GraphAdapter, check_usage, parse_time_ms, reencoded
from .quota import QuotaBook

VERSION = "v21.0"
CLOCK_SKEW_MS = 10 * 60 * 1000
LIST_PAGE = 25


def _attached_ids(post: dict[str, Any]) -> set[str]:
    """Photo ids a feed post attaches (``attachments{target,subattachments}``)."""
    out: set[str] = set()
    for a in (post.get("attachments") or {}).get("data") or []:
        tid = (a.get("target") or {}).get("id")
        subs = (a.get("subattachments") or {}).get("data") or []
        if subs:
            out.update(str((s.get("target") or {}).get("id")) for s in subs)
        elif tid:
            out.add(str(tid))
    return out


class FacebookPlatform(GraphAdapter):
    name = "facebook"
    version = VERSION
    gone_subcodes = frozenset({33})  # "object does not exist": deleted already

    def __init__(
        self,
        credentials: CredentialStore,
        handles: HandleStore,
        quotas: QuotaBook,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Page tokens made from a long-lived user token do not expire: nothing to refresh.
        super().__init__(credentials, handles, quotas, refresh_grant=None, clock=clock)

    async def _page_id(self, session: aiohttp.ClientSession, target: str, token: str) -> str:
        st = self.tokens.state(target)
        if st.get("user_id"):
            return st["user_id"]
        me = await self._call(session, target, "GET", "me", "which Page", token, params={"fields": "id,name"})
        if not me.get("id"):
            raise PublishError(f"{target}: the token does not say which Page it is for", retryable=True)
        self.tokens.save(target, user_id=str(me["id"]), username=str(me.get("name") or ""))
        return str(me["id"])

    async def publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        """Publish ``req`` once: photos (ids kept), then one feed post; a retry looks first."""
        out = await self._publish(req, session)
        if not req.media:
            return out
        return reencoded(out, "photos uploaded byte-exact; Facebook re-encodes every photo")

    async def _publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        target = f"facebook:{req.account}"
        check_usage(self.quotas, target, "Facebook", self.clock())
        token = await self.tokens.token(target, session)
        page = await self._page_id(session, target, token)
        h = self.handles.get(target, req.post.id)
        if h.get("published_id"):
            return await self._published(session, target, token, str(h["published_id"]), req.post.text)
        if h.get("feed_started_ms"):
            found = await self._find(session, target, token, page, req, h)
            if found is not None:
                return found
        photos: list[str] = list(h.get("photos") or [])
        for i, (ref, data) in enumerate(req.media):
            if i < len(photos):
                continue  # uploaded by an earlier attempt (unpublished: invisible until attached)
            photos.append(await self._upload(session, target, token, page, i, ref.media_type, data, ref.alt))
            h["photos"] = photos
            self.handles.put(target, req.post.id, **h)
        form: dict[str, str] = {}
        if req.post.text:
            form["message"] = req.post.text
        for i, pid in enumerate(photos):
            form[f"attached_media[{i}]"] = json.dumps({"media_fbid": pid})
        h["feed_started_ms"] = self._now()
        self.handles.put(target, req.post.id, **h)  # before the post can exist
        out = await self._call(session, target, "POST", f"{page}/feed", "post to the Page", token, data=form)
        post_id = str(out.get("id") or "")
        if not post_id:
            raise PublishError(
                f"{target}: the Page post was answered without an id", retryable=True, ambiguous=True
            )
        h["published_id"] = post_id
        self.handles.put(target, req.post.id, **h)
        return await self._published(session, target, token, post_id, req.post.text)

    async def _upload(
        self,
        session: aiohttp.ClientSession,
        target: str,
        token: str,
        page: str,
        index: int,
        media_type: str,
        data: bytes,
        alt: str,
    ) -> str:
        form = photo_form("source", data, media_type, index + 1)
        form.add_field("published", "false")
        if alt:
            form.add_field("alt_text_custom", alt)
        out = await self._call(
            session, target, "POST", f"{page}/photos", f"upload photo {index + 1}", token, data=form
        )
        if not out.get("id"):
            raise PublishError(f"{target}: photo {index + 1} uploaded without an id", retryable=True)
        return str(out["id"])

    async def _published(
        self, session: aiohttp.ClientSession, target: str, token: str, post_id: str, text: str
    ) -> Published:
        """The Page post's link, and its message read back and compared with what was signed."""
        return await self._read_back(
            session,
            target,
            token,
            post_id,
            text,
            title="Facebook",
            link_field="permalink_url",
            text_field="message",
        )

    async def _find(
        self,
        session: aiohttp.ClientSession,
        target: str,
        token: str,
        page: str,
        req: PublishRequest,
        h: dict[str, Any],
    ) -> Published | None:
        since = int(h.get("feed_started_ms") or req.post.created_ms) - CLOCK_SKEW_MS
        out = await self._call(
            session,
            target,
            "GET",
            f"{page}/posts",
            "look up the Page's posts",
            token,
            params={
                "fields": "id,message,created_time,permalink_url,attachments{target,subattachments}",
                "limit": str(LIST_PAGE),
            },
        )
        photos = set(h.get("photos") or [])
        for p in out.get("data") or []:
            ts = parse_time_ms(p.get("created_time"))
            if ts is not None and ts < since:
                break  # newest first
            same = _attached_ids(p) == photos if photos else (p.get("message") or "") == req.post.text
            if same and (not photos or (p.get("message") or "") == req.post.text):
                h["published_id"] = str(p["id"])
                self.handles.put(target, req.post.id, **h)
                return Published(url=str(p.get("permalink_url") or ""), remote_id=str(p["id"]))
        return None

    async def lookup(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published | None:
        """The Page post an earlier attempt made, or None if its feed post was never sent."""
        target = f"facebook:{req.account}"
        h = self.handles.get(target, req.post.id)
        if not h.get("feed_started_ms"):
            return None  # the feed post was never sent: unpublished photos are invisible
        token = await self.tokens.token(target, session)
        if h.get("published_id"):
            return await self._published(session, target, token, str(h["published_id"]), req.post.text)
        return await self._find(session, target, token, await self._page_id(session, target, token), req, h)

    async def delete(self, account: str, remote_id: str, session: aiohttp.ClientSession) -> None:
        await self._delete(session, f"facebook:{account}", remote_id)

    async def check(self, account: str, session: aiohttp.ClientSession) -> str:
        target = f"facebook:{account}"
        token = await self.tokens.token(target, session)
        self.tokens.save(target, user_id="")
        page = await self._page_id(session, target, token)
        name = self.tokens.state(target).get("username") or "?"
        return (
            f"Page token works for {name!r} (page id {page}); Page tokens made from a long-lived user "
            "token do not expire — if Meta revokes it, posts fail with 'reconnect this account'"
        )
