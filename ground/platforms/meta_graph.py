"""What Instagram, Threads and Facebook Pages share: Meta's Graph API conventions.

- **Errors** come as ``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``
  (https://developers.facebook.com/docs/graph-api/guides/error-handling). Code 190 (or an
  ``OAuthException`` with subcode 458/459/460/463/464/467) means the token expired or was
  revoked: the account must be reconnected, retrying cannot help. Codes 4, 17, 32, 613 and
  80001–80014 are throttling; 1 and 2 are transient; 368 is a temporary block; 506 is
  "duplicate post" (the post may already be there: look it up); IG's 9 / 2207042 is the
  24-hour publishing limit.
- **Rate-limit headers** (https://developers.facebook.com/docs/graph-api/overview/rate-limiting/):
  ``X-App-Usage`` / ``X-Page-Usage`` (``call_count``, ``total_cputime``, ``total_time`` as
  percentages of the allowance) and ``X-Business-Use-Case-Usage`` (per business id, with
  ``estimated_time_to_regain_access`` in minutes). At 100 % or with a regain estimate the
  account waits that long in the shared quota book (``quota.QuotaBook``, persisted), and the
  next attempt is held before anything is sent (``QuotaWait``, not counted as an attempt).
- **Tokens**: long-lived Instagram and Threads user tokens live 60 days and are refreshed with
  ``GET /refresh_access_token`` (``grant_type=ig_refresh_token`` / ``th_refresh_token``) once
  they are at least 24 h old
  (https://developers.facebook.com/documentation/instagram-platform/reference/refresh_access_token);
  ``MetaTokens`` refreshes ahead of expiry and writes the new token atomically (0600, fsynced)
  as the account's ``TokenSet`` (credentials.py), so a restart never goes back to an older
  token and ``ground account list`` shows "expires in N days". Unlike an OAuth 2.0 refresh
  token, the old access token stays valid until its own expiry, so two processes refreshing
  at once cost nothing and need no lock (ground/platforms/oauth2.py's keeper is for rotating
  refresh tokens). Facebook Page tokens made from a long-lived user token do not expire.
- **Handles**: the platform's ids for one (post, account) — container id, photo ids, the
  published id — are written durably (handles.HandleStore) *before* the step that
  publishes, so a crash or timeout is followed by a look at those ids, never a repost.

Tokens travel in the ``Authorization: Bearer`` header (Graph API accepts it like the
``access_token`` parameter), so they never appear in a URL, a log line or an error message;
only ``refresh_access_token`` takes the token as a query parameter, as documented.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import aiohttp

from ..credentials import Credential, CredentialStore, TokenSet
from ..errors import PublishError, ReconnectNeeded
from .base import Published, require_credential
from .handles import HandleStore
from .http import MAX_ERROR_TEXT, Response, request
from .quota import QuotaBook, meta_usage_wait_s
from .readback import read_back_note

RATE_CODES = frozenset({4, 17, 32, 613, *range(80001, 80015)})
TOKEN_SUBCODES = frozenset({458, 459, 460, 463, 464, 467})
QUOTA = (9, 2207042)  # IG: "reached the maximum number of posts ... within 24 hours"
# IG media fetch failures (the platform could not download ground's public URL in time) and
# "not ready yet": worth another try, with a hint at the public URL.
FETCH_SUBCODES = frozenset({2207003, 2207052})
NOT_READY = (9007, 2207027)
DAY_MS = 24 * 3600 * 1000
# Refresh a 60-day token once it has less than this left (and is a day old: Meta's rule).
REFRESH_WHEN_LEFT_MS = 30 * DAY_MS
# Without Meta's estimate, a throttled app waits this long (the app window is one rolling hour).
THROTTLE_DEFAULT_S = 600.0


def now_ms_from(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


# --- errors and rate-limit headers -----------------------------------------------------------


def graph_error(resp: Response) -> dict[str, Any]:
    data = resp.json()
    err = data.get("error") if isinstance(data, dict) else None
    return err if isinstance(err, dict) else {}


def _detail(resp: Response, err: dict[str, Any]) -> str:
    if err:
        msg = str(err.get("error_user_msg") or err.get("message") or "")[:MAX_ERROR_TEXT]
        code = f"code {err.get('code')}" + (f"/{err['error_subcode']}" if err.get("error_subcode") else "")
        return f"{msg} ({code})"
    return resp.body[:MAX_ERROR_TEXT].decode("utf-8", "replace") or f"HTTP {resp.status}"


def raise_for_graph(resp: Response, what: str, target: str) -> None:
    """Raise the PublishError a Graph API answer means; return quietly on success."""
    err = graph_error(resp)
    if 200 <= resp.status < 300 and not err:
        return
    code, sub = err.get("code"), err.get("error_subcode")
    detail = _detail(resp, err)
    if code == 190 or (err.get("type") == "OAuthException" and sub in TOKEN_SUBCODES) or code == 102:
        raise ReconnectNeeded(target, detail)
    if code in RATE_CODES or resp.status == 429:
        wait = meta_usage_wait_s(resp.headers) or THROTTLE_DEFAULT_S
        raise PublishError(
            f"{what}: rate limited by the Graph API: {detail}; waiting {wait:.0f} s",
            retryable=True,
            retry_after_s=wait,
        )
    if (code, sub) == QUOTA:
        raise PublishError(
            f"{what}: the account's 24-hour publishing limit is reached: {detail}; the post waits",
            retryable=True,
            retry_after_s=3600.0,
        )
    if sub in FETCH_SUBCODES or code == 9004:
        raise PublishError(
            f"{what}: the platform could not fetch the photo from ground's public URL: {detail}; "
            "check that `ground serve --public-base-url` is reachable from the internet",
            retryable=True,
            retry_after_s=300.0,
        )
    if (code, sub) == NOT_READY:
        raise PublishError(f"{what}: {detail}", retryable=True, retry_after_s=30.0)
    if code == 506:
        # "Duplicate post": the platform may already hold it; the engine looks it up first.
        raise PublishError(f"{what}: {detail}", retryable=True, ambiguous=True)
    if code == 368:
        raise PublishError(f"{what}: temporarily blocked: {detail}", retryable=True, retry_after_s=3600.0)
    if code in (1, 2) or resp.status >= 500 or err.get("is_transient"):
        raise PublishError(f"{what}: platform error: {detail}", retryable=True, ambiguous=True)
    raise PublishError(f"{what}: refused (HTTP {resp.status}): {detail}", retryable=False)


def note_usage(quotas: QuotaBook, target: str, resp: Response, now_s: float) -> None:
    """Remember a usage header saying "throttled": the account waits before its next call."""
    wait = meta_usage_wait_s(resp.headers)
    if wait:
        quotas.hold(target, "Graph API rate limit (usage headers)", now_s + wait)


async def graph_call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    what: str,
    target: str,
    token: str,
    quotas: QuotaBook,
    now_s: float,
    **kwargs: Any,
) -> dict[str, Any]:
    """One Graph API call: the usage headers noted, an error raised as a PublishError, the JSON object."""
    resp = await request(session, method, url, what=what, headers=bearer(token), **kwargs)
    note_usage(quotas, target, resp, now_s)
    raise_for_graph(resp, what, target)
    data = resp.json()
    return data if isinstance(data, dict) else {}


def check_usage(quotas: QuotaBook, target: str, title: str, now_s: float) -> None:
    """Raise QuotaWait (nothing sent, no attempt counted) while the account is held."""
    quotas.check(target, title, now_s)


# --- tokens --------------------------------------------------------------------------------------


class MetaTokens:
    """The current token of each Meta account, refreshed ahead of expiry and persisted atomically.

    The token lives in the account's ``TokenSet`` (``access_token``, ``expires_at_ms`` when
    known); an account added with a bare token and no TokenSet uses the credential's secret.
    Small facts about the account (``user_id``, ``username``, ``refresh_tried_ms``) live in its
    session file. ``refresh_grant`` None: tokens are not refreshable (Facebook Page tokens).
    """

    def __init__(
        self,
        credentials: CredentialStore,
        *,
        refresh_grant: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.credentials = credentials
        self.refresh_grant = refresh_grant
        self.clock = clock

    def cred(self, target: str) -> Credential:
        return require_credential(self.credentials, target)

    def state(self, target: str) -> dict[str, str]:
        return self.credentials.load_session(target) or {}

    def save(self, target: str, **changes: str) -> None:
        self.credentials.save_session(target, {**self.state(target), **changes})

    def tokens(self, target: str) -> TokenSet:
        try:
            stored = self.credentials.load_tokens(target)
        except Exception as exc:
            raise ReconnectNeeded(target, f"the stored token is unreadable: {exc}") from exc
        return stored or TokenSet(access_token=self.cred(target).secret)

    async def token(self, target: str, session: aiohttp.ClientSession) -> str:
        """A usable token for ``target``; refreshes it first when it is due. Raises ReconnectNeeded."""
        self.cred(target)
        ts = self.tokens(target)
        now = now_ms_from(self.clock)
        exp = ts.expires_at_ms
        if exp is not None and now >= exp:
            raise ReconnectNeeded(target, f"the access token expired {(now - exp) / DAY_MS:.1f} days ago")
        tried = int(self.state(target).get("refresh_tried_ms") or 0)
        due = exp is None or exp - now < REFRESH_WHEN_LEFT_MS
        if self.refresh_grant and due and now - tried >= DAY_MS:
            return await self._refresh(target, ts, session, now)
        return ts.access_token

    async def _refresh(self, target: str, ts: TokenSet, session: aiohttp.ClientSession, now: int) -> str:
        self.save(target, refresh_tried_ms=str(now))
        try:
            resp = await request(
                session,
                "GET",
                f"{self.cred(target).service_url}/refresh_access_token",
                what="refresh token",
                params={"grant_type": str(self.refresh_grant), "access_token": ts.access_token},
            )
        except PublishError:
            return ts.access_token  # the platform is unreachable: the current token still works for now
        err = graph_error(resp)
        if err.get("code") == 190:
            raise ReconnectNeeded(target, f"the access token was refused: {_detail(resp, err)}")
        data = resp.json()
        if resp.status != 200 or not isinstance(data, dict) or not data.get("access_token"):
            # Meta refuses to refresh a token younger than 24 h: keep it, try again tomorrow.
            return ts.access_token
        expires_in = data.get("expires_in")
        fresh = replace(
            ts,
            access_token=str(data["access_token"]),
            expires_at_ms=now + expires_in * 1000 if isinstance(expires_in, int) and expires_in > 0 else None,
            updated_ms=now,
        )
        self.credentials.save_tokens(target, fresh)  # durable before the new token is used
        return fresh.access_token


# --- what every Meta adapter does the same way ------------------------------------------------


class GraphAdapter:
    """The parts of a Meta adapter (Facebook Pages, the container platforms) that do not
    depend on the platform: its tokens, handles, quota book and clock, and how it calls the
    Graph API (``version`` in every path), reads a post back and deletes one."""

    version: str  # the Graph API version in every path, e.g. "v21.0"
    # Error subcodes that mean "that object does not exist" on delete (besides HTTP 404).
    gone_subcodes: frozenset[int] = frozenset()

    def __init__(
        self,
        credentials: CredentialStore,
        handles: HandleStore,
        quotas: QuotaBook,
        *,
        refresh_grant: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.tokens = MetaTokens(credentials, refresh_grant=refresh_grant, clock=clock)
        self.handles = handles
        self.quotas = quotas
        self.clock = clock

    def _now(self) -> int:
        return now_ms_from(self.clock)

    def _url(self, target: str, path: str) -> str:
        return f"{self.tokens.cred(target).service_url}/{self.version}/{path}"

    async def _call(
        self,
        session: aiohttp.ClientSession,
        target: str,
        method: str,
        path: str,
        what: str,
        token: str,
        **kwargs: Any,
    ) -> dict[str, Any]:
        return await graph_call(
            session,
            method,
            self._url(target, path),
            what=what,
            target=target,
            token=token,
            quotas=self.quotas,
            now_s=self.clock(),
            **kwargs,
        )

    async def _read_back(
        self,
        session: aiohttp.ClientSession,
        target: str,
        token: str,
        post_id: str,
        text: str,
        *,
        title: str,
        link_field: str,
        text_field: str,
    ) -> Published:
        """The published post's link (``link_field``), and its text (``text_field``) read back
        and compared with what was signed. A failed read-back never fails the publication."""
        try:
            out = await self._call(
                session,
                target,
                "GET",
                post_id,
                "read back",
                token,
                params={"fields": f"id,{link_field},{text_field}"},
            )
        except PublishError as exc:
            # Published all the same: the link and the read-back can wait.
            return Published(url="", remote_id=post_id, fidelity_note=f"text not read back ({exc})")
        return Published(
            url=str(out.get(link_field) or ""),
            remote_id=post_id,
            fidelity_note=read_back_note(title, text, out.get(text_field)),
        )

    async def _delete(self, session: aiohttp.ClientSession, target: str, remote_id: str) -> None:
        """Delete ``remote_id``; one already gone (404, or a ``gone_subcodes`` error) is fine."""
        token = await self.tokens.token(target, session)
        resp = await request(
            session, "DELETE", self._url(target, remote_id), what="delete", headers=bearer(token)
        )
        sub = graph_error(resp).get("error_subcode")
        if resp.status == 404 or (isinstance(sub, int) and sub in self.gone_subcodes):
            return  # already gone
        raise_for_graph(resp, "delete", target)


def reencoded(out: Published, note: str) -> Published:
    """``out`` marked re-encoded by the platform, ``note`` added to its fidelity note."""
    return replace(
        out, fidelity="re-encoded", fidelity_note="; ".join(n for n in (out.fidelity_note, note) if n)
    )


def meta_token_file(text: str, now_ms: int) -> tuple[str, TokenSet]:
    """What `ground account add` stores for a Meta account: (credential secret, TokenSet).

    ``text`` is the long-lived token on one line, or a JSON object with ``access_token`` and
    ``expires_in`` (seconds, as Meta's token exchange answers) or ``expires_at_ms``. The
    secret kept in the credential file is the token as given (the TokenSet holds the current one).
    """
    text = text.strip()
    data: Any = None
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"the token file looks like JSON but is not: {exc}") from exc
    if not isinstance(data, dict):
        if not text or "\n" in text or " " in text:
            raise ValueError("the token file must hold the long-lived access token on one line (or JSON)")
        return text, TokenSet(access_token=text, updated_ms=now_ms)
    token = str(data.get("access_token") or "")
    if not token:
        raise ValueError('the token file needs "access_token"')
    exp = data.get("expires_at_ms")
    if not isinstance(exp, int) and isinstance(data.get("expires_in"), int):
        exp = now_ms + int(data["expires_in"]) * 1000
    return token, TokenSet(
        access_token=token, expires_at_ms=exp if isinstance(exp, int) else None, updated_ms=now_ms
    )


def parse_time_ms(value: Any) -> int | None:
    """A Graph API timestamp (``2024-05-01T10:00:00+0000``) in ms, or None."""
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z").timestamp() * 1000)
    except ValueError:
        return None


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
