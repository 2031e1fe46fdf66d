"""OAuth 2.0 access tokens for adapters: refreshed ahead of expiry, rotated tokens never lost.

Shared by every OAuth 2.0 platform (X, LinkedIn; the Meta adapters plug in their own
``Refresher``). The refresh grant is RFC 6749 §6: ``POST token_url`` with
``grant_type=refresh_token``; the answer carries a new access token and, on platforms that
rotate them (X), a new refresh token that replaces the old one at once — the old one is dead.
Hence, in this order:

1. take a per-account file lock (``ground serve`` and ``ground account check`` may both want
   to refresh; two refreshes with one rotating token would strand the loser);
2. re-read the token file: another process may have refreshed already;
3. call the token endpoint; write the new tokens atomically and durably
   (credentials.CredentialStore.save_tokens) *before* the access token is used.

What cannot be fixed here: if the token endpoint rotates the refresh token and its answer is
lost (a cut after sending), the old refresh token is void and the new one never arrived. The
next refresh then fails with ``invalid_grant`` and the account reports "reconnect this
account" — loudly, in the publication's reason, ``ground account list`` and the dashboard.

- X: https://docs.x.com/resources/fundamentals/authentication/oauth-2-0/authorization-code
  (access tokens live 2 h; ``offline.access`` gives a refresh token; confidential clients
  authenticate with HTTP Basic).
- LinkedIn: https://learn.microsoft.com/en-us/linkedin/shared/authentication/programmatic-refresh-tokens
  (access tokens 60 days, refresh tokens 365 days, ``refresh_token_expires_in``; client id and
  secret in the form body).
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from ..credentials import Credential, CredentialStore, TokenSet
from ..errors import PublishError, ReconnectNeeded
from .http import error_text, request

# Refresh when less than this is left (X's tokens live 2 h; a photo upload takes minutes).
DEFAULT_MARGIN_S = 600.0
# Waiting for another process's refresh: it is one HTTP request, so this is generous.
LOCK_WAIT_S = 60.0

# (session, current tokens, now_ms) -> new tokens; raises ReconnectNeeded or PublishError.
Refresher = Callable[[aiohttp.ClientSession, TokenSet, int], Awaitable[TokenSet]]


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenEndpoint:
    """Where and how an app refreshes its users' tokens (RFC 6749 §6 and §2.3.1)."""

    url: str
    client_id: str
    client_secret: str = ""
    # True: client id and secret in an HTTP Basic header (X's confidential clients);
    # False: in the form body (LinkedIn; X's public clients send only client_id).
    basic_auth: bool = False


def tokens_from_grant(data: dict[str, Any], now_ms: int, previous: TokenSet | None = None) -> TokenSet:
    """A :class:`TokenSet` from a token endpoint's JSON answer (RFC 6749 §5.1).

    A refresh answer without ``refresh_token`` keeps the previous one (LinkedIn does not
    rotate by default); one with it replaces it (X rotates every time).
    """
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise PublishError("token endpoint answered without an access_token", retryable=True)

    def at(key: str) -> int | None:
        v = data.get(key)
        return now_ms + int(v) * 1000 if isinstance(v, int | float) and not isinstance(v, bool) else None

    refresh = data.get("refresh_token")
    keep = previous or TokenSet(access_token=access)
    return TokenSet(
        access_token=access,
        refresh_token=refresh if isinstance(refresh, str) and refresh else keep.refresh_token,
        expires_at_ms=at("expires_in"),
        refresh_expires_at_ms=at("refresh_token_expires_in")
        if "refresh_token_expires_in" in data
        else keep.refresh_expires_at_ms,
        scope=str(data.get("scope") or keep.scope),
        updated_ms=now_ms,
    )


def standard_refresher(endpoint: TokenEndpoint, target: str) -> Refresher:
    """The RFC 6749 §6 refresh grant against ``endpoint`` (X, LinkedIn)."""

    async def refresh(session: aiohttp.ClientSession, tokens: TokenSet, now_ms: int) -> TokenSet:
        form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if endpoint.basic_auth:
            pair = f"{urllib.parse.quote(endpoint.client_id)}:{urllib.parse.quote(endpoint.client_secret)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form["client_id"] = endpoint.client_id
            if endpoint.client_secret:
                form["client_secret"] = endpoint.client_secret
        resp = await request(
            session,
            "POST",
            endpoint.url,
            what="refresh access token",
            data=urllib.parse.urlencode(form),
            headers=headers,
        )
        data = resp.json()
        if resp.status in (400, 401) and isinstance(data, dict):
            # invalid_grant: the refresh token is expired, revoked or already rotated away.
            raise ReconnectNeeded(target, f"the platform refused the refresh token ({error_text(resp)})")
        if not 200 <= resp.status < 300 or not isinstance(data, dict):
            raise PublishError(
                f"refresh access token: HTTP {resp.status}: {error_text(resp)}",
                retryable=resp.status >= 500 or resp.status == 429,
            )
        return tokens_from_grant(data, now_ms, tokens)

    return refresh


class TokenKeeper:
    """Hands out a valid access token for one account, refreshing it when due.

    ``clock`` returns Unix seconds (tests step it to cross an expiry).
    """

    def __init__(
        self,
        store: CredentialStore,
        target: str,
        refresher: Refresher,
        *,
        margin_s: float = DEFAULT_MARGIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.target = target
        self.refresher = refresher
        self.margin_s = margin_s
        self.clock = clock
        self._lock = asyncio.Lock()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _load(self) -> TokenSet:
        try:
            tokens = self.store.load_tokens(self.target)
        except Exception as exc:
            raise ReconnectNeeded(self.target, str(exc)) from exc
        if tokens is None:
            raise ReconnectNeeded(self.target, "no OAuth tokens stored")
        return tokens

    def _due(self, tokens: TokenSet, now_ms: int) -> bool:
        return tokens.expires_at_ms is not None and tokens.expires_at_ms - now_ms < self.margin_s * 1000

    async def access_token(self, session: aiohttp.ClientSession) -> str:
        """A token that will not expire within the margin; refreshes (and persists) first if needed."""
        tokens = self._load()
        if not self._due(tokens, self._now_ms()):
            return tokens.access_token
        return (await self._refresh(session, stale=tokens.access_token)).access_token

    async def after_unauthorized(self, session: aiohttp.ClientSession, used: str) -> str:
        """The platform said 401 to ``used``: refresh once (unless someone already did) and return the new token."""
        return (await self._refresh(session, stale=used)).access_token

    async def _refresh(self, session: aiohttp.ClientSession, *, stale: str) -> TokenSet:
        async with self._lock:
            async with _FileLock(self.store.root / f".{self._lock_name()}.refresh-lock"):
                tokens = self._load()  # another process may have refreshed while we waited
                now_ms = self._now_ms()
                if tokens.access_token != stale and not self._due(tokens, now_ms):
                    return tokens
                if not tokens.refresh_token:
                    raise ReconnectNeeded(
                        self.target, "the access token expired and there is no refresh token"
                    )
                if tokens.refresh_expires_at_ms is not None and tokens.refresh_expires_at_ms <= now_ms:
                    raise ReconnectNeeded(self.target, "the refresh token expired")
                fresh = await self.refresher(session, tokens, now_ms)
                fresh = replace(fresh, updated_ms=now_ms)
                # Durable before use: the old refresh token may already be void.
                self.store.save_tokens(self.target, fresh)
                return fresh

    def _lock_name(self) -> str:
        return urllib.parse.quote(self.target, safe="")


def cached_keeper(
    keepers: dict[str, TokenKeeper],
    credentials: CredentialStore,
    cred: Credential,
    clock: Callable[[], float],
    endpoint: Callable[[dict[str, Any]], TokenEndpoint],
) -> TokenKeeper:
    """The one TokenKeeper of ``cred``'s account, made on first use from its app keys (the
    credential's secret: JSON with client_id / client_secret; anything else counts as none)."""
    keeper = keepers.get(cred.target)
    if keeper is None:
        try:
            app = json.loads(cred.secret)
        except ValueError:
            app = {}
        refresher = standard_refresher(endpoint(app), cred.target)
        keeper = keepers[cred.target] = TokenKeeper(credentials, cred.target, refresher, clock=clock)
    return keeper


class _FileLock:
    """An advisory lock across processes, taken without blocking the event loop."""

    def __init__(self, path: os.PathLike[str]) -> None:
        self.path = path
        self.fd = -1

    async def __aenter__(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise PublishError(
                        "another ground process has been refreshing this account's token for "
                        f"{LOCK_WAIT_S:.0f} s",
                        retryable=True,
                    ) from None
                await asyncio.sleep(0.05)

    async def __aexit__(self, *exc: object) -> None:
        os.close(self.fd)  # closing releases the lock


def split_token_file(text: str, now_ms: int) -> tuple[str, TokenSet]:
    """Parse what an operator gives `ground account add` for an OAuth 2.0 account.

    ``text`` is one JSON object: the app's ``client_id`` (and ``client_secret`` for a
    confidential client) plus the grant the authorization flow returned (``access_token``,
    ``refresh_token``, ``expires_in``, ``refresh_token_expires_in``, ``scope``; or
    ``expires_at_ms``). Returns the app part (stored as the credential's secret) and the tokens
    (stored apart, because they rotate). Raises ValueError with what is missing.
    """
    import json

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the token file must be one JSON object: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("the token file must be one JSON object")
    if not data.get("client_id"):
        raise ValueError('the token file needs "client_id" (the app\'s OAuth 2.0 client id)')
    if not data.get("access_token"):
        raise ValueError('the token file needs "access_token" (from the authorization code flow)')
    tokens = tokens_from_grant(data, now_ms)
    if isinstance(data.get("expires_at_ms"), int):
        tokens = replace(tokens, expires_at_ms=int(data["expires_at_ms"]))
    app = {"client_id": str(data["client_id"]), "client_secret": str(data.get("client_secret") or "")}
    return json.dumps(app, separators=(",", ":")), tokens
