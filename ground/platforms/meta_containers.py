"""Meta's media-container publishing, shared by Instagram and Threads (the two differ in names).

One post = create a container (text and/or ``image_url``; several images: one child container
each with ``is_carousel_item=true``, then a ``CAROUSEL`` container naming them), wait until
its status is ``FINISHED``, then publish it (``media_publish`` / ``threads_publish`` with
``creation_id``). Status values: ``IN_PROGRESS``, ``FINISHED``, ``PUBLISHED``, ``ERROR``,
``EXPIRED`` (a container unpublished for 24 h).

Exactly once: the container id is committed (``HandleStore``) before ``*_publish`` is called,
and a container can be published only once. After a crash or an ambiguous answer the
container's status says what happened: ``PUBLISHED`` → find the post among the account's
recent posts (exact text, newest after the publish began) and return it; ``FINISHED`` →
publish that same container; ``ERROR``/``EXPIRED`` → nothing went out, start again. No
container id stored → nothing can have been published.

Photos are fetched by Meta from ground's public URLs (``ground/public_media.py``); the grants
end as soon as the container is processed. Before publishing, the account's publishing quota
is read; a post that would exceed it waits until the oldest post in the window leaves it,
and says so.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ..credentials import CredentialStore, expiry_text
from ..errors import PublishError, QuotaWait
from ..public_media import PublicMedia, PublicMediaError
from .base import Published, PublishRequest
from .handles import HandleStore
from .meta_graph import GraphAdapter, check_usage, parse_time_ms, reencoded
from .quota import QuotaBook

# Container processing takes seconds for a photo; past this we stop polling and retry later
# with the same container (its id is stored).
POLL_LIMIT_S = 300.0
# How far before the publish began a post found in the account's list may be dated
# (platform and ground clocks differ a little).
CLOCK_SKEW_MS = 10 * 60 * 1000
LIST_PAGE = 50


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerApi:
    """The names one platform gives to the same container model."""

    platform: str
    title: str
    version: str
    create_edge: str
    publish_edge: str
    status_field: str
    status_detail_field: str
    text_param: str
    list_edge: str
    list_text_field: str
    quota_edge: str
    refresh_grant: str
    me_fields: str
    id_field: str
    image_type: str | None  # media_type for a single image (None: the platform infers it)
    text_type: str | None  # media_type of a text-only post (None: not allowed)
    max_items: int
    can_delete: bool


class ContainerPlatform(GraphAdapter):
    """An adapter for one ``ContainerApi`` (see ``instagram.py`` and ``threads.py``)."""

    api: ContainerApi

    def __init__(
        self,
        credentials: CredentialStore,
        handles: HandleStore,
        quotas: QuotaBook,
        home_root: Path,
        *,
        # First re-read soon (a photo is often processed in well under a second), then back off.
        poll_interval_s: float = 0.25,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(credentials, handles, quotas, refresh_grant=self.api.refresh_grant, clock=clock)
        self.name = self.api.platform
        self.version = self.api.version
        self.public = PublicMedia(home_root)
        self.poll_interval_s = poll_interval_s

    # --- plumbing ---------------------------------------------------------------------------

    def _target(self, account: str) -> str:
        return f"{self.api.platform}:{account}"

    async def _user_id(self, session: aiohttp.ClientSession, target: str, token: str) -> str:
        st = self.tokens.state(target)
        if st.get("user_id"):
            return st["user_id"]
        me = await self._call(
            session, target, "GET", "me", "who am I", token, params={"fields": self.api.me_fields}
        )
        uid = str(me.get(self.api.id_field) or me.get("id") or "")
        if not uid:
            raise PublishError(
                f"{target}: the platform did not say which account the token is for", retryable=True
            )
        self.tokens.save(target, user_id=uid, username=str(me.get("username") or ""))
        return uid

    # --- publish ------------------------------------------------------------------------------

    async def publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        """Publish ``req`` once (see the module docstring for how a retry finds earlier work)."""
        out = await self._publish(req, session)
        if not req.media:
            return out
        return reencoded(
            out,
            f"photos sent byte-exact (fetched from ground's public link); {self.api.title} re-encodes every photo",
        )

    async def _publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        target = self._target(req.account)
        check_usage(self.quotas, target, self.api.title, self.clock())
        if not req.media and self.api.text_type is None:
            raise PublishError(f"{self.api.title} posts need at least one photo", retryable=False)
        if len(req.media) > self.api.max_items:
            raise PublishError(f"{self.api.title} takes at most {self.api.max_items} photos", retryable=False)
        token = await self.tokens.token(target, session)
        uid = await self._user_id(session, target, token)
        h = self.handles.get(target, req.post.id)
        if h.get("published_id"):
            return await self._published(session, target, token, str(h["published_id"]), req.post.text)
        if h.get("container"):
            status, _ = await self._status(session, target, token, str(h["container"]))
            if status == "PUBLISHED":
                found = await self._find(session, target, token, uid, req, h)
                if found is not None:
                    return found
                raise PublishError(
                    f"{target}: container {h['container']} is published but the post is not among the "
                    "account's recent posts; check the account, then `ground retry`",
                    retryable=False,
                )
            if status in ("ERROR", "EXPIRED"):
                self.handles.drop(target, req.post.id)
                h = {}
        if not h.get("container"):
            try:
                h = {"container": await self._create(session, target, token, uid, req)}
            except PublishError:
                self.public.revoke(self._purpose(target, req))  # no link outlives a failed attempt
                raise
            self.handles.put(target, req.post.id, **h)  # before anything can publish it
        await self._wait_finished(session, target, token, req, str(h["container"]))
        await self._check_quota(session, target, token, uid)
        h["publish_started_ms"] = self._now()
        self.handles.put(target, req.post.id, **h)
        try:
            out = await self._call(
                session,
                target,
                "POST",
                f"{uid}/{self.api.publish_edge}",
                "publish",
                token,
                data={"creation_id": str(h["container"])},
            )
        except PublishError as exc:
            try:
                status, _ = await self._status(session, target, token, str(h["container"]))
            except PublishError:
                raise exc from None  # the publish's own error says more (and whether it is ambiguous)
            if status == "PUBLISHED":  # it went out; the error was about the answer
                found = await self._find(session, target, token, uid, req, h)
                if found is not None:
                    return found
            raise
        pid = str(out.get("id") or "")
        if not pid:
            raise PublishError(f"{target}: publish answered without an id", retryable=True, ambiguous=True)
        h["published_id"] = pid
        self.handles.put(target, req.post.id, **h)
        return await self._published(session, target, token, pid, req.post.text)

    def _purpose(self, target: str, req: PublishRequest) -> str:
        return f"{target}/{req.post.id}"

    async def _create(
        self, session: aiohttp.ClientSession, target: str, token: str, uid: str, req: PublishRequest
    ) -> str:
        api = self.api
        text = req.post.text
        edge = f"{uid}/{api.create_edge}"
        if not req.media:
            form = {"media_type": str(api.text_type), api.text_param: text}
            return await self._container(session, target, token, edge, form)
        urls = []
        for ref, _data in req.media:
            try:
                urls.append(
                    self.public.grant(
                        ref.sha256, ref.media_type, purpose=self._purpose(target, req), now_ms=self._now()
                    )
                )
            except PublicMediaError as exc:
                raise PublishError(f"{target}: {exc}", retryable=True, retry_after_s=600.0) from exc
        if len(req.media) == 1:
            form = {"image_url": urls[0], api.text_param: text}
            if api.image_type:
                form["media_type"] = api.image_type
            if req.media[0][0].alt:
                form["alt_text"] = req.media[0][0].alt
            return await self._container(session, target, token, edge, form)
        children = []
        for (ref, _), url in zip(req.media, urls, strict=True):
            form = {"image_url": url, "is_carousel_item": "true"}
            if api.image_type:
                form["media_type"] = api.image_type
            if ref.alt:
                form["alt_text"] = ref.alt
            children.append(await self._container(session, target, token, edge, form))
        # Every child must be processed before the carousel container is made of them.
        for child in children:
            await self._wait_status(session, target, token, child)
        form = {"media_type": "CAROUSEL", "children": ",".join(children), api.text_param: text}
        return await self._container(session, target, token, edge, form)

    async def _container(
        self, session: aiohttp.ClientSession, target: str, token: str, edge: str, form: dict[str, str]
    ) -> str:
        out = await self._call(session, target, "POST", edge, "create media container", token, data=form)
        cid = str(out.get("id") or "")
        if not cid:
            raise PublishError(f"{target}: container created without an id", retryable=True)
        return cid

    async def _status(
        self, session: aiohttp.ClientSession, target: str, token: str, container: str
    ) -> tuple[str, str]:
        fields = f"{self.api.status_field},{self.api.status_detail_field}"
        out = await self._call(
            session, target, "GET", container, "container status", token, params={"fields": fields}
        )
        return str(out.get(self.api.status_field) or ""), str(out.get(self.api.status_detail_field) or "")

    async def _wait_status(
        self, session: aiohttp.ClientSession, target: str, token: str, container: str
    ) -> str:
        """Poll until the container leaves IN_PROGRESS; returns FINISHED or PUBLISHED, else raises."""
        deadline = time.monotonic() + POLL_LIMIT_S
        delay = self.poll_interval_s
        while True:
            status, detail = await self._status(session, target, token, container)
            if status in ("FINISHED", "PUBLISHED"):
                return status
            if status in ("ERROR", "EXPIRED"):
                raise PublishError(
                    f"{target}: {self.api.title} could not process the media (container {status}: "
                    f"{detail or 'no reason given'}); if it could not fetch the photo, check that "
                    "`ground serve --public-base-url` reaches this ground",
                    retryable=True,
                )
            if time.monotonic() >= deadline:
                raise PublishError(
                    f"{target}: container still processing after {POLL_LIMIT_S:.0f} s", retryable=True
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    async def _wait_finished(
        self, session: aiohttp.ClientSession, target: str, token: str, req: PublishRequest, container: str
    ) -> None:
        try:
            await self._wait_status(session, target, token, container)
        except PublishError:
            # An errored container is dropped so the next try makes a new one.
            status, _ = await self._status(session, target, token, container)
            if status in ("ERROR", "EXPIRED"):
                self.handles.drop(target, req.post.id)
                self.public.revoke(self._purpose(target, req))
            raise
        # Processed: Meta has the photo; nothing stays reachable longer than it must.
        self.public.revoke(self._purpose(target, req))

    async def _check_quota(self, session: aiohttp.ClientSession, target: str, token: str, uid: str) -> None:
        out = await self._call(
            session,
            target,
            "GET",
            f"{uid}/{self.api.quota_edge}",
            "publishing quota",
            token,
            params={"fields": "quota_usage,config"},
        )
        data = out.get("data") or [{}]
        entry = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
        usage, conf = entry.get("quota_usage"), entry.get("config") or {}
        total, duration = conf.get("quota_total"), conf.get("quota_duration") or 86400
        if not isinstance(usage, int) or not isinstance(total, int) or usage < total:
            return
        wait = await self._quota_wait_s(session, target, token, uid, total, int(duration))
        raise QuotaWait(
            f"{target}: publishing quota reached ({usage} of {total} posts in {int(duration) // 3600} h); "
            f"this post waits {wait / 60:.0f} min for a slot, then is published",
            retry_after_s=wait,
        )

    async def _quota_wait_s(
        self, session: aiohttp.ClientSession, target: str, token: str, uid: str, total: int, duration: int
    ) -> float:
        """Until the ``total``-th newest post leaves the window (an hour if the list cannot tell)."""
        out = await self._call(
            session,
            target,
            "GET",
            f"{uid}/{self.api.list_edge}",
            "recent posts",
            token,
            params={"fields": "id,timestamp", "limit": str(total)},
        )
        times = sorted(
            (t for p in out.get("data") or [] if (t := parse_time_ms(p.get("timestamp")))), reverse=True
        )
        if total <= 0 or len(times) < total:
            return 3600.0
        return max(60.0, (times[total - 1] + duration * 1000 - self._now()) / 1000 + 60)

    async def _published(
        self, session: aiohttp.ClientSession, target: str, token: str, pid: str, text: str
    ) -> Published:
        """The published post's link, and its text read back and compared with what was signed."""
        return await self._read_back(
            session,
            target,
            token,
            pid,
            text,
            title=self.api.title,
            link_field="permalink",
            text_field=self.api.list_text_field,
        )

    async def _find(
        self,
        session: aiohttp.ClientSession,
        target: str,
        token: str,
        uid: str,
        req: PublishRequest,
        h: dict[str, Any],
    ) -> Published | None:
        """The post among the account's newest ones: exact text, dated after the publish began."""
        since = int(h.get("publish_started_ms") or req.post.created_ms) - CLOCK_SKEW_MS
        out = await self._call(
            session,
            target,
            "GET",
            f"{uid}/{self.api.list_edge}",
            "look up recent posts",
            token,
            params={"fields": f"id,{self.api.list_text_field},timestamp,permalink", "limit": str(LIST_PAGE)},
        )
        for p in out.get("data") or []:
            ts = parse_time_ms(p.get("timestamp"))
            if ts is not None and ts < since:
                break  # newest first: the rest is older than the attempt
            if (p.get(self.api.list_text_field) or "") == req.post.text:
                h["published_id"] = str(p["id"])
                self.handles.put(target, req.post.id, **h)
                return Published(url=str(p.get("permalink") or ""), remote_id=str(p["id"]))
        return None

    # --- lookup, delete, check ----------------------------------------------------------------

    async def lookup(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published | None:
        """What an earlier attempt published, from the stored container; None if nothing went out."""
        target = self._target(req.account)
        h = self.handles.get(target, req.post.id)
        if not h.get("container") and not h.get("published_id"):
            return None  # no container was ever stored: nothing could have been published
        token = await self.tokens.token(target, session)
        if h.get("published_id"):
            return await self._published(session, target, token, str(h["published_id"]), req.post.text)
        status, _ = await self._status(session, target, token, str(h["container"]))
        if status != "PUBLISHED":
            return None  # publish() resumes with the same container: still at most one post
        uid = await self._user_id(session, target, token)
        found = await self._find(session, target, token, uid, req, h)
        if found is None:
            raise PublishError(
                f"{target}: container {h['container']} is published but the post is not among the account's "
                "recent posts; check the account, then `ground retry`",
                retryable=False,
            )
        return found

    async def delete(self, account: str, remote_id: str, session: aiohttp.ClientSession) -> None:
        target = self._target(account)
        if not self.api.can_delete:
            raise PublishError(
                f"{self.api.title}'s API cannot delete posts: delete {remote_id} in the app", retryable=False
            )
        await self._delete(session, target, remote_id)

    async def check(self, account: str, session: aiohttp.ClientSession) -> str:
        """Who the token belongs to, how long it lives, and the publishing quota left."""
        target = self._target(account)
        token = await self.tokens.token(target, session)
        self.tokens.save(target, user_id="")  # ask again: the operator may have changed the token
        uid = await self._user_id(session, target, token)
        st = self.tokens.state(target)
        quota = await self._call(
            session,
            target,
            "GET",
            f"{uid}/{self.api.quota_edge}",
            "quota",
            token,
            params={"fields": "quota_usage,config"},
        )
        entry = (quota.get("data") or [{}])[0]
        conf = entry.get("config") or {}
        tokens = self.tokens.tokens(target)
        life = (
            f"token {expiry_text(tokens, self._now())} (refreshed automatically)"
            if tokens.expires_at_ms is not None
            else "token expiry not known yet (learned at its first refresh, once it is a day old)"
        )
        return (
            f"token works for @{st.get('username') or '?'} (id {uid}); {life}; "
            f"publishing quota {entry.get('quota_usage', '?')} of {conf.get('quota_total', '?')} used"
        )
