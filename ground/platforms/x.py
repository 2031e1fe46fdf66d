"""The `x` platform: X API v2, written from X's public documentation.

Pages read (search tool, docs corpus):
- Posts: ``POST /2/tweets`` {"text", "media": {"media_ids": [...]}} → 201 {"data": {"id", "text"}};
  ``DELETE /2/tweets/:id``; ``GET /2/users/:id/tweets`` (``start_time``, ``tweet.fields``,
  ``expansions=attachments.media_keys``) — https://docs.x.com/x-api/posts/manage-tweets/introduction
- Chunked media upload: https://docs.x.com/x-api/media/quickstart/media-upload-chunked —
  ``POST /2/media/upload`` with ``command=INIT`` (media_type, total_bytes, media_category)
  → {"data": {"id", "media_key", "expires_after_secs"}}; ``command=APPEND`` (media_id,
  segment_index, media) per chunk; ``command=FINALIZE``; and, if and only if FINALIZE answers
  ``processing_info``, ``GET …?command=STATUS&media_id=`` until ``state`` goes
  pending → in_progress → succeeded | failed, waiting ``check_after_secs`` between polls
  (https://developer.x.com/en/docs/twitter-api/v1/media/upload-media/api-reference/post-media-upload-finalize,
  …/get-media-upload-status). Alt text: ``POST /2/media/metadata``.
- Rate limits: https://docs.x.com/fundamentals/rate-limits — ``x-rate-limit-limit``,
  ``-remaining``, ``-reset`` (Unix seconds) on every answer, 429 when spent; ``POST /2/tweets``
  also sends ``x-user-limit-24hour-*`` / ``x-app-limit-24hour-*``. ground/platforms/quota.py
  keeps them: a post that would exceed one waits (QuotaWait) instead of failing.
- OAuth 2.0 user context (authorization code with PKCE, ``offline.access`` for a refresh
  token, ``POST /2/oauth2/token`` with ``grant_type=refresh_token``; refresh tokens rotate):
  https://docs.x.com/resources/fundamentals/authentication/oauth-2-0/authorization-code —
  ground/platforms/oauth2.py refreshes and persists.

No duplicates: ``POST /2/tweets`` has no idempotency key. The media ids are saved
(handles.py) before the post is created, so after a crash or an ambiguous timeout ``lookup``
reads the account's posts since the attempt and recognises ours by those media ids, or for
a text-only post by its text (X answers with URLs as t.co links and ``&amp;``-escaped
entities, so both are undone before comparing). X also refuses an exact duplicate with a
403 "duplicate content": we then look it up rather than fail.

Read back: after publishing, ``GET /2/tweets/:id`` and compare its text with ours (t.co links and
entities undone); the result goes in the record's ``fidelity_note``.

Fidelity (protocol/rules.py): text byte-exact; photos RE_ENCODED — X re-encodes every image
(JPEG recompression, resizing). We send the signed bytes unchanged; the record says X
re-encodes them.

Credentials: ``ground account add x:NAME --token-file grant.json`` with the app's ``client_id``
(``client_secret`` for a confidential client) and the user's ``access_token``,
``refresh_token``, ``expires_in``; service URL default https://api.x.com.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from protocol.rendering import x_text_matches

from ..credentials import Credential, CredentialStore
from ..errors import PublishError, QuotaWait, ReconnectNeeded
from .base import Published, PublishRequest, lookup_exhausted, require_credential
from .handles import HandleStore
from .http import Response, error_text, raise_for_status, raise_unless_gone, request
from .oauth2 import TokenEndpoint, TokenKeeper, cached_keeper
from .quota import QuotaBook, x_windows
from .readback import reencoded_post

# APPEND chunk size: X accepts up to 5 MB per chunk; 1 MB keeps a retry after a cut cheap.
CHUNK_BYTES = 1024 * 1024
MEDIA_POLL_LIMIT_S = 300.0
# A media id is usable for expires_after_secs (a day for images); reuse saved ids until then,
# with this much to spare.
MEDIA_REUSE_MARGIN_S = 600
# Look this far before the uncertain attempt (clock skew between ground and X).
CLOCK_SKEW_MS = 10 * 60 * 1000
LOOKUP_PAGES = 5  # of 100 posts each
DUPLICATE = "duplicate content"


def _media_key_id(key: str) -> str:
    """``3_1880028106020515840`` → ``1880028106020515840`` (media_key is type_id)."""
    return key.rpartition("_")[2]


# X's rendering compared with our text: one rule for ground and the reader's verifier.
text_matches = x_text_matches


class XPlatform:
    name = "x"
    title = "X"

    def __init__(
        self,
        credentials: CredentialStore,
        handles: HandleStore,
        quotas: QuotaBook,
        *,
        poll_interval_s: float | None = None,
        clock: Any = time.time,
    ) -> None:
        self.credentials = credentials
        self.handles = handles
        self.quotas = quotas
        self.poll_interval_s = poll_interval_s  # None: what X says (check_after_secs)
        self.clock = clock
        self._keepers: dict[str, TokenKeeper] = {}

    # --- auth and requests ---------------------------------------------------------------------

    def _cred(self, account: str) -> Credential:
        return require_credential(self.credentials, f"x:{account}")

    def _keeper(self, cred: Credential) -> TokenKeeper:
        return cached_keeper(
            self._keepers,
            self.credentials,
            cred,
            self.clock,
            lambda app: TokenEndpoint(
                url=f"{cred.service_url}/2/oauth2/token",
                client_id=str(app.get("client_id", "")),
                client_secret=str(app.get("client_secret", "")),
                basic_auth=bool(app.get("client_secret")),
            ),
        )

    async def _call(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        method: str,
        path: str,
        *,
        what: str,
        **kw: Any,
    ) -> Response:
        """One authorised request; a 401 refreshes the token once and repeats it; headers feed the quota book.

        Repeating after a 401 is safe: X refused the request, so nothing was created.
        """
        keeper = self._keeper(cred)
        token = await keeper.access_token(session)
        make_form = kw.pop("form", None)  # a FormData is consumed by sending: build one per try
        for attempt in (1, 2):
            if make_form is not None:
                kw["data"] = make_form()
            headers = {"Authorization": f"Bearer {token}"}
            resp = await request(
                session, method, f"{cred.service_url}{path}", what=what, headers=headers, **kw
            )
            self.quotas.learn(cred.target, x_windows(resp.headers, what))
            if resp.status != 401 or attempt == 2:
                break
            token = await keeper.after_unauthorized(session, token)
        if resp.status == 401:
            raise ReconnectNeeded(cred.target, f"X refused a freshly refreshed token ({error_text(resp)})")
        if resp.status == 429:
            self._raise_quota(cred, resp, what)
        return resp

    def _raise_quota(self, cred: Credential, resp: Response, what: str) -> None:
        """A 429 with a known reset is a wait, not a failure (X refused: nothing was created)."""
        windows = [w for w in x_windows(resp.headers, what) if w.remaining <= 0]
        now = self.clock()
        if windows:
            w = max(windows, key=lambda w: w.reset_at_s)
            self.quotas.hold(cred.target, w.name, w.reset_at_s)
            at = time.strftime("%H:%M:%S UTC", time.gmtime(w.reset_at_s))
            raise QuotaWait(
                f"waiting for X's {w.name}: 0 left; resets at {at}",
                retry_after_s=max(1.0, w.reset_at_s - now),
            )

    # --- media ----------------------------------------------------------------------------------

    async def _upload(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        index: int,
        media_type: str,
        data: bytes,
        alt: str,
    ) -> tuple[str, int]:
        """INIT, APPEND…, FINALIZE, STATUS until succeeded, then alt text; returns (media id, expiry s)."""
        what = f"upload photo {index}"
        init = await self._call(
            session,
            cred,
            "POST",
            "/2/media/upload",
            what=what,
            data={
                "command": "INIT",
                "media_type": media_type,
                "total_bytes": str(len(data)),
                "media_category": "tweet_image",
            },
        )
        raise_for_status(init, what)
        body = (init.json() or {}).get("data") or {}
        media_id = str(body.get("id") or "")
        if not media_id:
            raise PublishError(f"{what}: X returned no media id", retryable=True)
        expires_at = int(self.clock()) + int(body.get("expires_after_secs") or 86_400)
        for seg, start in enumerate(range(0, len(data), CHUNK_BYTES)):

            def form(seg: int = seg, chunk: bytes = data[start : start + CHUNK_BYTES]) -> aiohttp.FormData:
                f = aiohttp.FormData()
                f.add_field("command", "APPEND")
                f.add_field("media_id", media_id)
                f.add_field("segment_index", str(seg))
                f.add_field("media", chunk, filename="blob", content_type="application/octet-stream")
                return f

            resp = await self._call(session, cred, "POST", "/2/media/upload", what=what, form=form)
            raise_for_status(resp, f"{what} (segment {seg})")
        fin = await self._call(
            session,
            cred,
            "POST",
            "/2/media/upload",
            what=what,
            data={"command": "FINALIZE", "media_id": media_id},
        )
        raise_for_status(fin, what)
        info = ((fin.json() or {}).get("data") or {}).get("processing_info")
        await self._wait_processed(session, cred, media_id, info, what)
        if alt:
            meta = await self._call(
                session,
                cred,
                "POST",
                "/2/media/metadata",
                what=f"alt text of photo {index}",
                json={"id": media_id, "metadata": {"alt_text": {"text": alt}}},
            )
            raise_for_status(meta, f"alt text of photo {index}")
        return media_id, expires_at

    async def _wait_processed(
        self, session: aiohttp.ClientSession, cred: Credential, media_id: str, info: Any, what: str
    ) -> None:
        deadline = time.monotonic() + MEDIA_POLL_LIMIT_S
        while isinstance(info, dict):
            state = info.get("state")
            if state == "succeeded":
                return
            if state == "failed":
                err = info.get("error") or {}
                raise PublishError(
                    f"{what}: X could not process the photo: {err.get('message') or err.get('name') or 'failed'}",
                    retryable=False,
                )
            if time.monotonic() > deadline:
                raise PublishError(
                    f"{what}: still processing after {MEDIA_POLL_LIMIT_S:.0f} s", retryable=True
                )
            wait = (
                self.poll_interval_s
                if self.poll_interval_s is not None
                else float(info.get("check_after_secs") or 1)
            )
            await asyncio.sleep(wait)
            st = await self._call(
                session,
                cred,
                "GET",
                f"/2/media/upload?command=STATUS&media_id={media_id}",
                what=what,
            )
            raise_for_status(st, what)
            info = ((st.json() or {}).get("data") or {}).get("processing_info")

    async def _media_ids(
        self, session: aiohttp.ClientSession, cred: Credential, req: PublishRequest
    ) -> list[str]:
        """Upload each photo once: ids saved per photo survive a crash until X expires them."""
        saved = self.handles.get(cred.target, req.post.id)
        ids: list[str] = list(saved.get("media_ids") or [])
        expires: list[int] = list(saved.get("media_expires_s") or [])
        now = int(self.clock())
        for i, (ref, data) in enumerate(req.media):
            if i < len(ids) and i < len(expires) and expires[i] - MEDIA_REUSE_MARGIN_S > now:
                continue
            media_id, exp = await self._upload(session, cred, i + 1, ref.media_type, data, ref.alt)
            ids, expires = ids[:i] + [media_id], expires[:i] + [exp]
            self.handles.put(cred.target, req.post.id, media_ids=ids, media_expires_s=expires)
        return ids[: len(req.media)]

    # --- publish, lookup, delete ---------------------------------------------------------------

    async def publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        cred = self._cred(req.account)
        self.quotas.check(cred.target, self.title, self.clock())
        media_ids = await self._media_ids(session, cred, req)
        payload: dict[str, Any] = {"text": req.post.text}
        if media_ids:
            payload["media"] = {"media_ids": media_ids}
        # Saved before the call that creates the post: the lookup window starts here.
        self.handles.put(cred.target, req.post.id, post_started_ms=int(self.clock() * 1000))
        resp = await self._call(session, cred, "POST", "/2/tweets", what="post", json=payload)
        if resp.status == 403 and DUPLICATE in error_text(resp).lower():
            found = await self.lookup(req, session)
            if found is not None:
                return found
        raise_for_status(resp, "post")
        data = (resp.json() or {}).get("data") or {}
        if not data.get("id"):
            raise PublishError("post: X returned no post id", retryable=True, ambiguous=True)
        self.quotas.record_post(cred.target, self.clock())
        self.handles.drop(cred.target, req.post.id)
        checked = await self._read_back(session, cred, str(data["id"]), req.post.text)
        return self._published(cred, str(data["id"]), bool(media_ids), checked)

    async def _read_back(
        self, session: aiohttp.ClientSession, cred: Credential, post_id: str, text: str
    ) -> str:
        """``GET /2/tweets/:id`` and compare its text with ours; never fails a publication that happened."""
        try:
            resp = await self._call(session, cred, "GET", f"/2/tweets/{post_id}", what="read back")
            raise_for_status(resp, "read back")
        except PublishError as exc:
            return f"text not read back ({exc})"
        theirs = str(((resp.json() or {}).get("data") or {}).get("text", ""))
        if text_matches(text, theirs):
            return "text read back: exact (links shown as t.co)"
        return f"text read back DIFFERS: X shows {theirs[:200]!r}"

    def _published(self, cred: Credential, post_id: str, has_media: bool, checked: str = "") -> Published:
        return reencoded_post(
            url=f"https://x.com/{cred.identifier}/status/{post_id}",
            remote_id=post_id,
            title="X",
            checked=checked,
            has_media=has_media,
        )

    async def lookup(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published | None:
        """Find this post among the account's posts since the uncertain attempt.

        Recognised by the saved media ids (exact), or for a text-only post by its text.
        Returns None only after reading back past the attempt; raises a permanent
        PublishError if it could not look that far (an operator checks by hand).
        """
        cred = self._cred(req.account)
        saved = self.handles.get(cred.target, req.post.id)
        ours = set(saved.get("media_ids") or [])
        since = saved.get("post_started_ms") or req.ambiguous_since_ms or req.post.created_ms
        start = datetime.fromtimestamp((int(since) - CLOCK_SKEW_MS) / 1000, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        me = await self._call(session, cred, "GET", "/2/users/me", what="look up")
        raise_for_status(me, "look up: who am I")
        user_id = str(((me.json() or {}).get("data") or {}).get("id") or "")
        token = ""
        for _ in range(LOOKUP_PAGES):
            path = (
                f"/2/users/{user_id}/tweets?max_results=100&start_time={start}"
                "&tweet.fields=created_at,attachments&expansions=attachments.media_keys"
                + (f"&pagination_token={token}" if token else "")
            )
            page = await self._call(session, cred, "GET", path, what="look up: recent posts")
            raise_for_status(page, "look up: recent posts")
            body = page.json() or {}
            for tw in body.get("data") or []:
                keys = {_media_key_id(k) for k in (tw.get("attachments") or {}).get("media_keys") or []}
                if (ours and keys & ours) or (
                    len(keys) == len(req.media) and text_matches(req.post.text, str(tw.get("text", "")))
                ):
                    self.handles.drop(cred.target, req.post.id)
                    return self._published(cred, str(tw["id"]), bool(req.media))
            token = str((body.get("meta") or {}).get("next_token") or "")
            if not token:
                return None
        raise lookup_exhausted(req.post.id, cred.target, f"{LOOKUP_PAGES * 100} newer posts")

    async def delete(self, account: str, remote_id: str, session: aiohttp.ClientSession) -> None:
        cred = self._cred(account)
        resp = await self._call(session, cred, "DELETE", f"/2/tweets/{remote_id}", what="delete post")
        raise_unless_gone(resp, "delete post")

    async def check(self, account: str, session: aiohttp.ClientSession) -> str:
        """Who the stored token belongs to (refreshing it if due), and when it must be reconnected."""
        from ..credentials import expiry_text

        cred = self._cred(account)
        me = await self._call(session, cred, "GET", "/2/users/me", what="check token")
        raise_for_status(me, "check token")
        user = (me.json() or {}).get("data") or {}
        expiry = expiry_text(self.credentials.load_tokens(cred.target), int(self.clock() * 1000))
        return f"token works on {cred.service_url} for @{user.get('username', '?')}" + (
            f"; {expiry}" if expiry else ""
        )
