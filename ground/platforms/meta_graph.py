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
  ``estimated_time_to_regain_access`` in minutes). At 100 % or with a regain estimate, the
  account waits that long (``RateGate``) instead of hammering a throttled API.
- **Tokens**: long-lived Instagram and Threads user tokens live 60 days and are refreshed with
  ``GET /refresh_access_token`` (``grant_type=ig_refresh_token`` / ``th_refresh_token``) once
  they are at least 24 h old
  (https://developers.facebook.com/documentation/instagram-platform/reference/refresh_access_token);
  ``TokenKeeper`` refreshes ahead of expiry and writes the rotated token atomically (0600) to
  the account's session file, so a restart never goes back to an older token.
- **Handles**: the platform's ids for one (post, account) — container id, photo ids, the
  published id — are committed to ``platform_handles`` in ``ground.db`` *before* the step
  that publishes, so a crash or timeout is followed by a look at those ids, never a repost.

Tokens travel in the ``Authorization: Bearer`` header (Graph API accepts it like the
``access_token`` parameter), so they never appear in a URL, a log line or an error message;
only ``refresh_access_token`` takes the token as a query parameter, as documented.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from durable.sqlitedb import open_db, transaction

from ..credentials import Credential, CredentialStore
from ..errors import PublishError
from .http import MAX_ERROR_TEXT, Response, request

RATE_CODES = frozenset({4, 17, 32, 613, *range(80001, 80015)})
TOKEN_SUBCODES = frozenset({458, 459, 460, 463, 464, 467})
QUOTA = (9, 2207042)  # IG: "reached the maximum number of posts ... within 24 hours"
DAY_MS = 24 * 3600 * 1000
# Refresh a 60-day token once it has less than this left (and is a day old: Meta's rule).
REFRESH_WHEN_LEFT_MS = 30 * DAY_MS
# Without Meta's estimate, a throttled app waits this long (the app window is one rolling hour).
THROTTLE_DEFAULT_S = 600.0
# Handles of posts published (or abandoned) this long ago are swept.
HANDLE_KEEP_MS = 30 * DAY_MS

HANDLES_SCHEMA = """
CREATE TABLE IF NOT EXISTS platform_handles (
    target     TEXT NOT NULL,       -- platform:account
    post_id    TEXT NOT NULL,
    data       TEXT NOT NULL,       -- JSON: container / photo ids, publish start, published id
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (target, post_id)
);
"""


class ReconnectNeeded(PublishError):
    """The account's token is expired or revoked: an operator must reconnect the account."""

    def __init__(self, target: str, detail: str) -> None:
        super().__init__(
            f"{target}: the access token has expired or was revoked ({detail}); reconnect this account: "
            f"get a new long-lived token, run `ground account add {target} --token-file FILE`, then `ground retry`",
            retryable=False,
        )


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


def usage_wait_s(headers: dict[str, str]) -> float | None:
    """Seconds to hold back according to Graph API usage headers, or None if below the limits.

    Meta's own estimate (``estimated_time_to_regain_access``) wins; a header at 100 % without
    one means ``THROTTLE_DEFAULT_S``.
    """
    estimate: float | None = None
    over = False
    buc = headers.get("X-Business-Use-Case-Usage")
    if buc:
        try:
            entries = [e for v in json.loads(buc).values() for e in v]
        except (ValueError, AttributeError, TypeError):
            entries = []
        for e in entries:
            if not isinstance(e, dict):
                continue
            regain = e.get("estimated_time_to_regain_access")
            if isinstance(regain, int | float) and regain > 0:
                estimate = max(estimate or 0.0, float(regain) * 60)
            over = over or _over(e)
    for name in ("X-App-Usage", "X-Page-Usage"):
        raw = headers.get(name)
        if raw:
            try:
                over = over or _over(json.loads(raw))
            except (ValueError, TypeError):
                pass
    if estimate is not None:
        return estimate
    return THROTTLE_DEFAULT_S if over else None


def _over(usage: Any) -> bool:
    if not isinstance(usage, dict):
        return False
    return any(
        isinstance(usage.get(k), int | float) and usage[k] >= 100
        for k in ("call_count", "total_cputime", "total_time")
    )


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
        wait = usage_wait_s(resp.headers) or THROTTLE_DEFAULT_S
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
    if code == 506:
        # "Duplicate post": the platform may already hold it; the engine looks it up first.
        raise PublishError(f"{what}: {detail}", retryable=True, ambiguous=True)
    if code == 368:
        raise PublishError(f"{what}: temporarily blocked: {detail}", retryable=True, retry_after_s=3600.0)
    if code in (1, 2) or resp.status >= 500 or err.get("is_transient"):
        raise PublishError(f"{what}: platform error: {detail}", retryable=True, ambiguous=True)
    raise PublishError(f"{what}: refused (HTTP {resp.status}): {detail}", retryable=False)


class RateGate:
    """Per-account "do not call before" times learned from usage headers (in memory)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._until: dict[str, float] = {}

    def note(self, target: str, resp: Response) -> None:
        wait = usage_wait_s(resp.headers)
        if wait:
            self._until[target] = max(self._until.get(target, 0.0), self.clock() + wait)

    def check(self, target: str) -> None:
        left = self._until.get(target, 0.0) - self.clock()
        if left > 0:
            raise PublishError(
                f"{target}: the Graph API reported its rate limit reached (usage headers); "
                f"waiting {left:.0f} s before calling again",
                retryable=True,
                retry_after_s=left,
            )


# --- handles ------------------------------------------------------------------------------------


class HandleStore:
    """Per (target, post) platform ids, committed before each step that depends on them."""

    def __init__(self, home_root: Path) -> None:
        self.home_root = home_root
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.home_root.mkdir(parents=True, exist_ok=True)
            self._conn = open_db(self.home_root / "ground.db", HANDLES_SCHEMA)
        return self._conn

    def get(self, target: str, post_id: str) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT data FROM platform_handles WHERE target = ? AND post_id = ?", (target, post_id)
        ).fetchone()
        return dict(json.loads(row[0])) if row else {}

    def put(self, target: str, post_id: str, data: dict[str, Any], now_ms: int) -> None:
        with transaction(self.conn) as c:
            c.execute(
                "INSERT INTO platform_handles (target, post_id, data, updated_ms) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(target, post_id) DO UPDATE SET data = excluded.data, updated_ms = excluded.updated_ms",
                (target, post_id, json.dumps(data), now_ms),
            )
            c.execute("DELETE FROM platform_handles WHERE updated_ms < ?", (now_ms - HANDLE_KEEP_MS,))

    def drop(self, target: str, post_id: str) -> None:
        with transaction(self.conn) as c:
            c.execute("DELETE FROM platform_handles WHERE target = ? AND post_id = ?", (target, post_id))


# --- tokens --------------------------------------------------------------------------------------


class TokenKeeper:
    """The current token of each account, refreshed ahead of expiry and persisted atomically.

    State lives in the credential store's session file (0600, atomic replace):
    ``access_token`` (absent: the token the operator added), ``expires_ms`` (known after the
    first refresh, or from the operator), ``refresh_tried_ms``, ``user_id``, ``username``.
    ``refresh_grant`` None: tokens are not refreshable (Facebook Page tokens).
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
        try:
            return self.credentials.require(target)
        except PublishError:
            raise
        except Exception as exc:
            raise PublishError(str(exc), retryable=False) from exc

    def state(self, target: str) -> dict[str, str]:
        return self.credentials.load_session(target) or {}

    def save(self, target: str, **changes: str) -> None:
        self.credentials.save_session(target, {**self.state(target), **changes})

    def expires_in_days(self, target: str) -> float | None:
        exp = self.state(target).get("expires_ms")
        return None if not exp else (int(exp) - now_ms_from(self.clock)) / DAY_MS

    async def token(self, target: str, session: aiohttp.ClientSession) -> str:
        """A usable token for ``target``; refreshes it first when it is due. Raises ReconnectNeeded."""
        cred = self.cred(target)
        st = self.state(target)
        tok = st.get("access_token") or cred.secret
        now = now_ms_from(self.clock)
        exp = int(st["expires_ms"]) if st.get("expires_ms") else None
        if exp is not None and now >= exp:
            raise ReconnectNeeded(target, f"it expired {(now - exp) / DAY_MS:.1f} days ago")
        tried = int(st.get("refresh_tried_ms") or 0)
        due = exp is None or exp - now < REFRESH_WHEN_LEFT_MS
        if self.refresh_grant and due and now - tried >= DAY_MS:
            tok = await self._refresh(target, cred, tok, session, now)
        return tok

    async def _refresh(
        self, target: str, cred: Credential, tok: str, session: aiohttp.ClientSession, now: int
    ) -> str:
        self.save(target, refresh_tried_ms=str(now))
        try:
            resp = await request(
                session,
                "GET",
                f"{cred.service_url}/refresh_access_token",
                what="refresh token",
                params={"grant_type": str(self.refresh_grant), "access_token": tok},
            )
        except PublishError:
            return tok  # the platform is unreachable: the current token still works for now
        err = graph_error(resp)
        if err.get("code") == 190:
            raise ReconnectNeeded(target, _detail(resp, err))
        data = resp.json()
        if resp.status != 200 or not isinstance(data, dict) or not data.get("access_token"):
            # Meta refuses to refresh a token younger than 24 h: keep it, try again tomorrow.
            return tok
        new = str(data["access_token"])
        expires_in = data.get("expires_in")
        changes = {"access_token": new, "refreshed_ms": str(now)}
        if isinstance(expires_in, int) and expires_in > 0:
            changes["expires_ms"] = str(now + expires_in * 1000)
        self.save(target, **changes)
        return new


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
