"""The `mastodon` platform: Mastodon's REST API (docs.joinmastodon.org/methods/).

- media: ``POST /api/v2/media`` (multipart ``file`` + ``description`` = alt text). A 202
  means the server is still processing it: poll ``GET /api/v1/media/:id`` (206 while
  processing, 200 when ready) before attaching it.
- status: ``POST /api/v1/statuses`` with an ``Idempotency-Key`` derived from post id and
  account, so a repeated request (retry after a timeout, restart after a crash) returns the
  status created the first time instead of a second one. Mastodon remembers a key for only
  one hour, so after a crash or timeout ``lookup`` first searches the account's own statuses
  newer than the post (``GET /api/v1/accounts/:id/statuses``, then each candidate's exact text
  from ``GET /api/v1/statuses/:id/source`` — the rendered HTML is not the text we sent).
- read back: after posting, ``GET /api/v1/statuses/:id/source`` again, compared with the
  signed text and recorded (``fidelity_note``); photos are re-encoded by every instance.
- limits: ``GET /api/v2/instance`` → ``configuration.statuses`` / ``media_attachments``.
- retract: ``DELETE /api/v1/statuses/:id`` (404 = already gone).

Credentials: an access token with ``read:accounts read:statuses write:statuses write:media`` (``ground account add
mastodon:alice@example.social --token-file F``); the instance URL defaults from the account.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from datetime import datetime
from typing import Any

import aiohttp

from protocol.rules import MASTODON, PlatformRules, with_limits

from ..credentials import Credential, CredentialStore
from ..errors import PublishError
from .base import Published, PublishRequest, lookup_exhausted, require_credential
from .http import Response, photo_form, raise_for_status, raise_unless_gone, request
from .readback import read_back_note

# How far back a lookup reads the account's statuses (40 per page, Mastodon's maximum); an
# account that posted more than this since the uncertain attempt needs an operator's eye.
LOOKUP_PAGE = 40
LOOKUP_MAX_PAGES = 5
# Mastodon remembers an Idempotency-Key for an hour; trust it for a little less.
KEY_TRUSTED_MS = 50 * 60 * 1000
# Instance and ground clocks may disagree a little; look this much further back.
CLOCK_SKEW_MS = 10 * 60 * 1000
# Media processing normally takes seconds; past this we give up and retry later.
MEDIA_POLL_LIMIT_S = 120.0
INSTANCE_CACHE_S = 3600.0


def _created_ms(status: dict[str, Any]) -> int:
    """A status's ``created_at`` (ISO 8601) in ms; unparseable counts as new (keep looking)."""
    try:
        return int(
            datetime.fromisoformat(str(status["created_at"]).replace("Z", "+00:00")).timestamp() * 1000
        )
    except (KeyError, ValueError):
        return 2**62


def _int(d: dict[str, Any], key: str, default: int | None) -> int | None:
    """A positive integer setting from the instance, or our default if absent or malformed."""
    v = d.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else default


def idempotency_key(post_id: str, target: str) -> str:
    """Stable per (post, account): the same request always carries the same key."""
    return hashlib.sha256(f"orbitpost:{post_id}:{target}".encode()).hexdigest()


class MastodonPlatform:
    name = "mastodon"

    def __init__(self, credentials: CredentialStore, *, poll_interval_s: float = 0.5) -> None:
        self.credentials = credentials
        self.poll_interval_s = poll_interval_s
        self._instances: dict[str, tuple[float, PlatformRules]] = {}

    def _cred(self, account: str) -> Credential:
        return require_credential(self.credentials, f"mastodon:{account}")

    @staticmethod
    def _auth(cred: Credential) -> dict[str, str]:
        return {"Authorization": f"Bearer {cred.secret}"}

    async def _call(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        method: str,
        path: str,
        *,
        what: str,
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> Response:
        """One call to the instance's API (``path`` under its URL) with the account's token."""
        auth = {**self._auth(cred), **(headers or {})}
        return await request(session, method, f"{cred.service_url}{path}", what=what, headers=auth, **kw)

    async def rules(self, target: str, session: aiohttp.ClientSession) -> PlatformRules | None:
        """This instance's limits, from ``/api/v2/instance`` (cached for an hour)."""
        cred = self._cred(target.partition(":")[2])
        cached = self._instances.get(cred.service_url)
        if cached and time.monotonic() - cached[0] < INSTANCE_CACHE_S:
            return cached[1]
        resp = await request(session, "GET", f"{cred.service_url}/api/v2/instance", what="instance limits")
        raise_for_status(resp, "instance limits")
        data = resp.json() or {}
        conf = data.get("configuration") or {}
        st = conf.get("statuses") or {}
        media = conf.get("media_attachments") or {}
        types = media.get("supported_mime_types")
        rules = with_limits(
            MASTODON,
            max_text=_int(st, "max_characters", MASTODON.max_text),
            max_media=_int(st, "max_media_attachments", MASTODON.max_media),
            url_length=_int(st, "characters_reserved_per_url", MASTODON.url_length) or MASTODON.url_length,
            max_media_bytes=_int(media, "image_size_limit", MASTODON.max_media_bytes),
            media_types=frozenset(t for t in types if str(t).startswith("image/"))
            if isinstance(types, list) and types
            else MASTODON.media_types,
            max_alt=_int(media, "description_limit", MASTODON.max_alt),
        )
        self._instances[cred.service_url] = (time.monotonic(), rules)
        return rules

    async def _upload(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        index: int,
        media_type: str,
        data: bytes,
        alt: str,
    ) -> str:
        form = photo_form("file", data, media_type, index)
        if alt:
            form.add_field("description", alt)
        what = f"upload photo {index}"
        resp = await self._call(session, cred, "POST", "/api/v2/media", what=what, data=form)
        raise_for_status(resp, what)
        body = resp.json() or {}
        media_id = str(body.get("id", ""))
        if not media_id:
            raise PublishError(f"{what}: the instance returned no media id", retryable=True)
        if resp.status == 200 and body.get("url"):
            return media_id
        # 202 Accepted: processing continues asynchronously; poll until 200.
        deadline = time.monotonic() + MEDIA_POLL_LIMIT_S
        delay = self.poll_interval_s
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            poll = await self._call(session, cred, "GET", f"/api/v1/media/{media_id}", what=what)
            if poll.status == 200:
                return media_id
            if poll.status != 206:
                raise_for_status(poll, what)
            delay = min(delay * 1.5, 5.0)
        raise PublishError(f"{what}: still processing after {MEDIA_POLL_LIMIT_S:.0f} s", retryable=True)

    async def publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        cred = self._cred(req.account)
        media_ids = [
            await self._upload(session, cred, i, ref.media_type, data, ref.alt)
            for i, (ref, data) in enumerate(req.media, start=1)
        ]
        payload: dict[str, Any] = {"status": req.post.text}
        if media_ids:
            payload["media_ids"] = media_ids
        resp = await self._call(
            session,
            cred,
            "POST",
            "/api/v1/statuses",
            what="post status",
            json=payload,
            headers={"Idempotency-Key": idempotency_key(req.post.id, cred.target)},
        )
        raise_for_status(resp, "post status")
        status = resp.json() or {}
        if not status.get("id"):
            raise PublishError(
                "post status: the instance returned no status id", retryable=True, ambiguous=True
            )
        note = await self._read_back(session, cred, str(status["id"]), req.post.text)
        return Published(
            url=str(status.get("url") or status.get("uri") or ""),
            remote_id=str(status["id"]),
            fidelity_note=note + ("; photos re-encoded by the instance" if req.media else ""),
        )

    async def _read_back(
        self, session: aiohttp.ClientSession, cred: Credential, status_id: str, text: str
    ) -> str:
        """``GET /api/v1/statuses/:id/source``: the text as stored (the rendered HTML is not it)."""
        try:
            src = await self._call(
                session, cred, "GET", f"/api/v1/statuses/{status_id}/source", what="read back"
            )
            raise_for_status(src, "read back")
        except PublishError as exc:
            return f"text not read back ({exc})"
        return read_back_note("the instance", text, (src.json() or {}).get("text"))

    async def check(self, account: str, session: aiohttp.ClientSession) -> str:
        """Ask the instance who the stored token belongs to, and its limits."""
        cred = self._cred(account)
        me = await self._call(session, cred, "GET", "/api/v1/accounts/verify_credentials", what="check token")
        raise_for_status(me, "check token")
        rules = await self.rules(cred.target, session)
        limits = f"{rules.max_text} characters, {rules.max_media} media" if rules else "default limits"
        return f"token works on {cred.service_url} for @{(me.json() or {}).get('acct', '?')}; {limits}"

    async def lookup(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published | None:
        """Find this post among the account's recent statuses (exact text and photo count).

        Within the key's hour, returns None: re-sending with the same Idempotency-Key is the
        exact lookup. Later, reads the statuses made since the uncertain attempt; returns None
        only after reading back past it, and raises a permanent PublishError if it could not
        look that far (an operator checks by hand).
        """
        cred = self._cred(req.account)
        since = req.ambiguous_since_ms
        if since is not None and req.now_ms is not None and req.now_ms - since < KEY_TRUSTED_MS:
            # The instance still remembers the Idempotency-Key: sending the same request again
            # returns the status if it exists — an exact lookup that costs one request.
            return None
        me = await self._call(session, cred, "GET", "/api/v1/accounts/verify_credentials", what="look up")
        raise_for_status(me, "look up: verify credentials")
        account_id = str((me.json() or {}).get("id", ""))
        # Only statuses made since the uncertain attempt began can be it.
        oldest_ms = (since if since is not None else req.post.created_ms) - CLOCK_SKEW_MS
        max_id = ""
        for _ in range(LOOKUP_MAX_PAGES):
            path = f"/api/v1/accounts/{account_id}/statuses?limit={LOOKUP_PAGE}" + (
                f"&max_id={max_id}" if max_id else ""
            )
            page = await self._call(session, cred, "GET", path, what="look up: recent statuses")
            raise_for_status(page, "look up: recent statuses")
            statuses = page.json()
            if not isinstance(statuses, list) or not statuses:
                return None
            for st in statuses:
                if _created_ms(st) < oldest_ms:
                    return None  # newest first: everything further is older than the post
                if len(st.get("media_attachments") or []) != len(req.media):
                    continue
                src = await self._call(
                    session, cred, "GET", f"/api/v1/statuses/{st['id']}/source", what="look up: status source"
                )
                raise_for_status(src, "look up: status source")
                if (src.json() or {}).get("text") == req.post.text:
                    return Published(
                        url=str(st.get("url") or st.get("uri") or ""),
                        remote_id=str(st["id"]),
                        fidelity_note="text read back: exact"
                        + ("; photos re-encoded by the instance" if req.media else ""),
                    )
            if len(statuses) < LOOKUP_PAGE:
                return None  # a short page is the last one: the account holds nothing older
            max_id = str(statuses[-1]["id"])
        raise lookup_exhausted(req.post.id, cred.target, f"{LOOKUP_MAX_PAGES * LOOKUP_PAGE} newer statuses")

    async def delete(self, account: str, remote_id: str, session: aiohttp.ClientSession) -> None:
        cred = self._cred(account)
        resp = await self._call(
            session, cred, "DELETE", f"/api/v1/statuses/{remote_id}", what="delete status"
        )
        raise_unless_gone(resp, "delete status")
