"""The `linkedin` platform: LinkedIn's versioned REST API (Posts API + Images API).

Pages read (search tool, docs corpus), all under
https://learn.microsoft.com/en-us/linkedin/marketing/community-management/shares/ :
- ``images-api``: ``POST /rest/images?action=initializeUpload``
  {"initializeUploadRequest": {"owner": URN}} → {"value": {"uploadUrl", "image", "uploadUrlExpiresAt"}};
  ``PUT`` the bytes to ``uploadUrl``; ``GET /rest/images/{urn}`` → ``status`` WAITING_UPLOAD,
  PROCESSING, AVAILABLE or PROCESSING_FAILED. JPG, GIF, PNG.
- ``posts-api``: ``POST /rest/posts`` {"author", "commentary", "visibility", "distribution",
  "content": {"media": {"id", "altText"}} or {"multiImage": {"images": [...]}}, "lifecycleState":
  "PUBLISHED"} → 201 with the post's URN in ``x-restli-id``; ``GET /rest/posts?q=author&author=URN``
  (newest first); ``DELETE /rest/posts/{urn}``. Every call carries ``LinkedIn-Version: YYYYMM``
  and ``X-Restli-Protocol-Version: 2.0.0``. Commentary is limited to 3,000 characters.
- ``little-text-format``: commentary is "little" text, where ``\\ | { } @ [ ] ( ) < > # * _ ~``
  are reserved and must be backslash-escaped to be plain text — unescaped, LinkedIn silently
  cuts the post at the first one. We escape every one, so what readers see is the signed text
  exactly (a ``#tag`` shows as text, not as a hashtag link); the lookup compares unescaped.
- Authentication: https://learn.microsoft.com/en-us/linkedin/shared/authentication/programmatic-refresh-tokens
  (access tokens 60 days, refresh tokens 365 days; ground/platforms/oauth2.py) and
  ``GET /v2/userinfo`` (OpenID ``sub`` → ``urn:li:person:{sub}``).
- Limits: 429 when throttled (no reset header; daily limits reset at midnight UTC); a member
  may create 150 posts a day, counted here (quota.py) so the 151st waits instead of failing.

No duplicates: the Posts API has no idempotency key. Each image URN is saved (handles.py)
before its bytes are sent and reused while LinkedIn keeps it; after a crash or an ambiguous
timeout ``lookup`` reads the author's newest posts and recognises ours by those image URNs, or
for a text-only post by its exact (unescaped) commentary.

Read back: after publishing, ``GET /rest/posts/{urn}``; its commentary, unescaped, must be the
signed text — the result goes in the record's ``fidelity_note``.

Fidelity (protocol/rules.py): text byte-exact; photos RE_ENCODED — LinkedIn re-encodes images.

Credentials: ``ground account add linkedin:NAME --token-file grant.json`` (``client_id``,
``client_secret``, ``access_token``, ``refresh_token``, ``expires_in``,
``refresh_token_expires_in``); service URL default https://api.linkedin.com.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse
from typing import Any

import aiohttp

from ..credentials import Credential, CredentialStore, expiry_text
from ..errors import PublishError, QuotaWait, ReconnectNeeded
from .base import Published, PublishRequest, lookup_exhausted, require_credential
from .handles import HandleStore
from .http import Response, error_text, raise_for_status, raise_unless_gone, request
from .oauth2 import TokenEndpoint, TokenKeeper, cached_keeper
from .quota import QuotaBook
from .readback import reencoded_post

API_VERSION = "202411"
# The oauth host is separate from the API host on LinkedIn; a fake serves both.
TOKEN_URL = "https://www.linkedin.com/oauth/v2/accessToken"
DAILY_POSTS = 150
MEDIA_POLL_LIMIT_S = 300.0
LOOKUP_COUNT = 50
# Pages of LOOKUP_COUNT read (Rest.li ``start``) before an operator must look: a burst of posts
# since the uncertain attempt must not read as "cannot tell".
LOOKUP_PAGES = 10
_RESERVED = re.compile(r"([\\|{}@\[\]()<>#*_~])")
_ESCAPED = re.compile(r"\\([\\|{}@\[\]()<>#*_~])")


def escape_little(text: str) -> str:
    """``text`` as little-format plain text: every reserved character backslash-escaped."""
    return _RESERVED.sub(r"\\\1", text)


def unescape_little(text: str) -> str:
    return _ESCAPED.sub(r"\1", text)


class LinkedInPlatform:
    name = "linkedin"
    title = "LinkedIn"

    def __init__(
        self,
        credentials: CredentialStore,
        handles: HandleStore,
        quotas: QuotaBook,
        *,
        poll_interval_s: float = 1.0,
        token_url: str | None = None,
        clock: Any = time.time,
    ) -> None:
        self.credentials = credentials
        self.handles = handles
        self.quotas = quotas
        self.poll_interval_s = poll_interval_s
        self.token_url = token_url
        self.clock = clock
        self._keepers: dict[str, TokenKeeper] = {}

    def _cred(self, account: str) -> Credential:
        return require_credential(self.credentials, f"linkedin:{account}")

    def _keeper(self, cred: Credential) -> TokenKeeper:
        # A service URL on loopback is a local fake, which also serves the token endpoint.
        default = (
            TOKEN_URL if "linkedin.com" in cred.service_url else f"{cred.service_url}/oauth/v2/accessToken"
        )
        return cached_keeper(
            self._keepers,
            self.credentials,
            cred,
            self.clock,
            lambda app: TokenEndpoint(
                url=self.token_url or default,
                client_id=str(app.get("client_id", "")),
                client_secret=str(app.get("client_secret", "")),
            ),
        )

    async def _call(
        self, session: aiohttp.ClientSession, cred: Credential, method: str, url: str, *, what: str, **kw: Any
    ) -> Response:
        """An authorised, versioned Rest.li call; a 401 refreshes once and repeats (nothing was created)."""
        keeper = self._keeper(cred)
        token = await keeper.access_token(session)
        full = url if url.startswith("http") else f"{cred.service_url}{url}"
        extra = kw.pop("headers", {})
        for attempt in (1, 2):
            headers = {
                **extra,
                "Authorization": f"Bearer {token}",
                "LinkedIn-Version": API_VERSION,
                "X-Restli-Protocol-Version": "2.0.0",
            }
            resp = await request(session, method, full, what=what, headers=headers, **kw)
            if resp.status != 401 or attempt == 2:
                break
            token = await keeper.after_unauthorized(session, token)
        if resp.status == 401:
            raise ReconnectNeeded(
                cred.target, f"LinkedIn refused a freshly refreshed token ({error_text(resp)})"
            )
        if resp.status == 429:
            raise QuotaWait(
                f"waiting for LinkedIn's rate limit on {what} (HTTP 429; LinkedIn's daily limits reset at midnight UTC)",
                retry_after_s=_until_midnight_utc(self.clock()) if "post" in what else 60.0,
            )
        return resp

    async def _person(self, session: aiohttp.ClientSession, cred: Credential) -> str:
        me = await self._call(session, cred, "GET", "/v2/userinfo", what="who am I")
        raise_for_status(me, "who am I")
        sub = (me.json() or {}).get("sub")
        if not sub:
            raise PublishError("who am I: LinkedIn returned no member id (sub)", retryable=True)
        return f"urn:li:person:{sub}"

    async def _upload(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        owner: str,
        index: int,
        data: bytes,
        post_id: str,
    ) -> str:
        """initializeUpload (URN saved at once), PUT the bytes, wait until AVAILABLE."""
        what = f"upload photo {index}"
        init = await self._call(
            session,
            cred,
            "POST",
            "/rest/images?action=initializeUpload",
            what=what,
            json={"initializeUploadRequest": {"owner": owner}},
        )
        raise_for_status(init, what)
        value = (init.json() or {}).get("value") or {}
        urn, upload_url = str(value.get("image") or ""), str(value.get("uploadUrl") or "")
        if not urn or not upload_url:
            raise PublishError(f"{what}: LinkedIn returned no upload URL", retryable=True)
        put = await self._call(
            session,
            cred,
            "PUT",
            upload_url,
            what=what,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        raise_for_status(put, what)
        deadline = time.monotonic() + MEDIA_POLL_LIMIT_S
        while True:
            st = await self._call(
                session, cred, "GET", f"/rest/images/{urllib.parse.quote(urn, safe='')}", what=what
            )
            raise_for_status(st, what)
            status = (st.json() or {}).get("status")
            if status == "AVAILABLE":
                return urn
            if status == "PROCESSING_FAILED":
                raise PublishError(f"{what}: LinkedIn could not process the photo", retryable=False)
            if time.monotonic() > deadline:
                raise PublishError(f"{what}: still {status} after {MEDIA_POLL_LIMIT_S:.0f} s", retryable=True)
            await asyncio.sleep(self.poll_interval_s)

    async def publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        cred = self._cred(req.account)
        self.quotas.check(cred.target, self.title, self.clock(), daily_cap=DAILY_POSTS)
        owner = await self._person(session, cred)
        saved = self.handles.get(cred.target, req.post.id)
        urns: list[str] = list(saved.get("image_urns") or [])
        for i, (_ref, data) in enumerate(req.media):
            if i < len(urns):
                continue  # uploaded before a crash: LinkedIn keeps it, attach it again
            urns.append(await self._upload(session, cred, owner, i + 1, data, req.post.id))
            self.handles.put(cred.target, req.post.id, image_urns=urns)
        urns = urns[: len(req.media)]
        body: dict[str, Any] = {
            "author": owner,
            "commentary": escape_little(req.post.text),
            "visibility": "PUBLIC",
            "distribution": {
                "feedDistribution": "MAIN_FEED",
                "targetEntities": [],
                "thirdPartyDistributionChannels": [],
            },
            "lifecycleState": "PUBLISHED",
            "isReshareDisabledByAuthor": False,
        }
        alts = [ref.alt for ref, _ in req.media]
        if len(urns) == 1:
            body["content"] = {"media": {"id": urns[0], **({"altText": alts[0]} if alts[0] else {})}}
        elif urns:
            body["content"] = {
                "multiImage": {
                    "images": [
                        {"id": u, **({"altText": a} if a else {})} for u, a in zip(urns, alts, strict=True)
                    ]
                }
            }
        self.handles.put(cred.target, req.post.id, post_started_ms=int(self.clock() * 1000))
        resp = await self._call(session, cred, "POST", "/rest/posts", what="post", json=body)
        raise_for_status(resp, "post")
        post_urn = {k.lower(): v for k, v in resp.headers.items()}.get("x-restli-id", "")
        if not post_urn:
            raise PublishError("post: LinkedIn returned no post URN", retryable=True, ambiguous=True)
        self.quotas.record_post(cred.target, self.clock())
        self.handles.drop(cred.target, req.post.id)
        checked = await self._read_back(session, cred, post_urn, req.post.text)
        return self._published(post_urn, bool(urns), checked)

    async def _read_back(self, session: aiohttp.ClientSession, cred: Credential, urn: str, text: str) -> str:
        """``GET /rest/posts/{urn}``: is the commentary, unescaped, our exact text? Never fails a publication."""
        try:
            resp = await self._call(
                session, cred, "GET", f"/rest/posts/{urllib.parse.quote(urn, safe='')}", what="read back"
            )
            raise_for_status(resp, "read back")
        except PublishError as exc:
            return f"text not read back ({exc})"
        theirs = unescape_little(str((resp.json() or {}).get("commentary", "")))
        if theirs == text:
            return "text read back: exact"
        return f"text read back DIFFERS: LinkedIn holds {theirs[:200]!r}"

    @staticmethod
    def _published(urn: str, has_media: bool, checked: str = "") -> Published:
        return reencoded_post(
            url=f"https://www.linkedin.com/feed/update/{urn}/",
            remote_id=urn,
            title="LinkedIn",
            checked=checked,
            has_media=has_media,
        )

    async def lookup(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published | None:
        """Find this post among the author's newest posts: by saved image URNs, else by exact text."""
        cred = self._cred(req.account)
        saved = self.handles.get(cred.target, req.post.id)
        ours = set(saved.get("image_urns") or [])
        owner = await self._person(session, cred)
        since = int(saved.get("post_started_ms") or req.ambiguous_since_ms or req.post.created_ms) - 600_000
        for n in range(LOOKUP_PAGES):
            page = await self._call(
                session,
                cred,
                "GET",
                f"/rest/posts?q=author&author={urllib.parse.quote(owner, safe='')}&count={LOOKUP_COUNT}"
                f"&start={n * LOOKUP_COUNT}&sortBy=CREATED",
                what="look up: recent posts",
            )
            raise_for_status(page, "look up: recent posts")
            elements = (page.json() or {}).get("elements") or []
            for el in elements:
                content = el.get("content") or {}
                images = [content.get("media", {}).get("id")] if "media" in content else []
                images += [i.get("id") for i in (content.get("multiImage") or {}).get("images") or []]
                if (ours and ours & set(images)) or (
                    len(images) == len(req.media)
                    and unescape_little(str(el.get("commentary", ""))) == req.post.text
                ):
                    self.handles.drop(cred.target, req.post.id)
                    return self._published(str(el["id"]), bool(req.media))
            oldest = min((int(el.get("createdAt") or 0) for el in elements), default=0)
            if len(elements) < LOOKUP_COUNT or oldest <= since:
                return None  # read back past the attempt: it is not there
        raise lookup_exhausted(req.post.id, cred.target, f"{LOOKUP_PAGES * LOOKUP_COUNT} newer posts")

    async def delete(self, account: str, remote_id: str, session: aiohttp.ClientSession) -> None:
        cred = self._cred(account)
        resp = await self._call(
            session,
            cred,
            "DELETE",
            f"/rest/posts/{urllib.parse.quote(remote_id, safe='')}",
            what="delete post",
        )
        raise_unless_gone(resp, "delete post")

    async def check(self, account: str, session: aiohttp.ClientSession) -> str:
        cred = self._cred(account)
        owner = await self._person(session, cred)
        expiry = expiry_text(self.credentials.load_tokens(cred.target), int(self.clock() * 1000))
        return f"token works on {cred.service_url} for {owner}" + (f"; {expiry}" if expiry else "")


def _until_midnight_utc(now_s: float) -> float:
    return 86_400 - (now_s % 86_400) + 1
