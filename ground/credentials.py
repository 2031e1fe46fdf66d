"""Platform credentials, per account, on ground only: one file of mode 0600 per account.

A credential never travels in a bundle, is never written to the database or the audit
trail, and its ``repr`` hides the secret so it cannot leak into a log line or traceback.
Layout: ``<home>/credentials/<quoted platform:account>.json`` holding
``{"target", "service_url", "identifier", "secret"}``, and ``….session`` holding a platform
session's tokens (Bluesky) so a restart does not log in again; the folder is mode 0700.

OAuth 2.0 accounts (X, LinkedIn, the Meta platforms) keep their current tokens in
``….tokens`` (:class:`TokenSet`): the refresh token rotates on every refresh, so the new one is
written atomically (temp file, fsync, rename) *before* the new access token is used. A crash
then leaves either the old pair or the new one on disk, never neither
(ground/platforms/oauth2.py drives the refresh).
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from durable.files import fsync_dir
from protocol import LocalProtocolError
from protocol.model import parse_target

from .errors import GroundError

# Where an account lives when the operator does not say; a Mastodon account
# "alice@example.social" lives on https://example.social.
DEFAULT_SERVICE = {
    "bluesky": "https://bsky.social",
    "x": "https://api.x.com",
    "linkedin": "https://api.linkedin.com",
    "flickr": "https://api.flickr.com",
    # Meta's Graph API hosts (ground/platforms/instagram.py, threads.py, facebook.py).
    "instagram": "https://graph.instagram.com",
    "threads": "https://graph.threads.net",
    "facebook": "https://graph.facebook.com",
}
SECRET_MAX_BYTES = 4096  # app passwords and tokens are tens of bytes; refuse a pasted file


class CredentialError(GroundError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenSet:
    """An OAuth 2.0 account's current tokens and when they stop working (Unix ms; None = unknown).

    ``reconnect_by_ms`` is when ground can no longer renew access by itself and an operator
    must reconnect the account: the refresh token's expiry, or without a refresh token the
    access token's own.
    """

    access_token: str = field(repr=False)
    refresh_token: str = field(default="", repr=False)
    expires_at_ms: int | None = None
    refresh_expires_at_ms: int | None = None
    scope: str = ""
    updated_ms: int = 0

    @property
    def reconnect_by_ms(self) -> int | None:
        return self.refresh_expires_at_ms if self.refresh_token else self.expires_at_ms

    def to_json(self) -> dict[str, str | int | None]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "expires_at_ms": self.expires_at_ms,
            "refresh_expires_at_ms": self.refresh_expires_at_ms,
            "scope": self.scope,
            "updated_ms": self.updated_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> TokenSet:
        def ms(key: str) -> int | None:
            v = data.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        return cls(
            access_token=str(data.get("access_token") or ""),
            refresh_token=str(data.get("refresh_token") or ""),
            expires_at_ms=ms("expires_at_ms"),
            refresh_expires_at_ms=ms("refresh_expires_at_ms"),
            scope=str(data.get("scope") or ""),
            updated_ms=ms("updated_ms") or 0,
        )


def expiry_text(tokens: TokenSet | None, now_ms: int) -> str:
    """``"expires in 12 days"``, ``"EXPIRED: reconnect this account"`` — for lists and the dashboard."""
    if tokens is None:
        return ""
    when = tokens.reconnect_by_ms
    if when is None:
        return "renews itself" if tokens.refresh_token else "no expiry known"
    left_ms = when - now_ms
    if left_ms <= 0:
        return "EXPIRED: reconnect this account"
    days = left_ms // 86_400_000
    if days >= 1:
        return f"expires in {days} day{'s' if days != 1 else ''}"
    return f"expires in {max(1, left_ms // 3_600_000)} h: reconnect this account soon"


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """How ground logs in as one account. ``secret`` is an app password, token or HMAC key."""

    target: str
    service_url: str
    identifier: str
    secret: str = field(repr=False)

    @property
    def platform(self) -> str:
        return parse_target(self.target)[0]


def default_service_url(target: str) -> str | None:
    platform, account = parse_target(target)
    if platform == "mastodon" and "@" in account:
        return "https://" + account.rsplit("@", 1)[1]
    return DEFAULT_SERVICE.get(platform)


class CredentialStore:
    """The credential files under ``root`` (``<ground home>/credentials``)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, target: str) -> Path:
        return self.root / (urllib.parse.quote(target, safe="") + ".json")

    def add(
        self,
        target: str,
        secret: str,
        *,
        service_url: str | None = None,
        identifier: str | None = None,
    ) -> Credential:
        """Store (or replace) ``target``'s credential in a new 0600 file; returns it."""
        try:
            platform, account = parse_target(target)
        except LocalProtocolError as exc:
            raise CredentialError(str(exc)) from exc
        target = f"{platform}:{account}"
        secret = secret.strip()
        if not secret:
            raise CredentialError(f"the secret for {target} is empty")
        if len(secret.encode()) > SECRET_MAX_BYTES or "\n" in secret:
            raise CredentialError(
                f"the secret for {target} must be one line of at most {SECRET_MAX_BYTES} bytes"
            )
        url = (service_url or default_service_url(target) or "").rstrip("/")
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise CredentialError(
                f"{target} needs --service-url (the PDS, instance or webhook URL, e.g. https://bsky.social)"
            )
        cred = Credential(target=target, service_url=url, identifier=identifier or account, secret=secret)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        data = json.dumps(
            {"target": target, "service_url": url, "identifier": cred.identifier, "secret": secret}
        ).encode()
        _write_private(self._path(target), data)
        self.drop_session(target)  # a session of the old credentials must not outlive them
        self._tokens_path(target).unlink(missing_ok=True)
        return cred

    def _tokens_path(self, target: str) -> Path:
        return self.root / (urllib.parse.quote(target, safe="") + ".tokens")

    def load_tokens(self, target: str) -> TokenSet | None:
        """``target``'s current OAuth 2.0 tokens, or None if none were saved."""
        try:
            data = json.loads(self._tokens_path(target).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CredentialError(f"token file of {target} is unreadable: {exc}") from exc
        if not isinstance(data, dict) or not data.get("access_token"):
            raise CredentialError(f"token file of {target} holds no access token: reconnect this account")
        return TokenSet.from_json(data)

    def save_tokens(self, target: str, tokens: TokenSet) -> None:
        """Replace ``target``'s tokens atomically and durably (a rotated refresh token must survive)."""
        self.root.mkdir(parents=True, exist_ok=True)
        _write_private(self._tokens_path(target), json.dumps(tokens.to_json()).encode())

    def _session_path(self, target: str) -> Path:
        return self.root / (urllib.parse.quote(target, safe="") + ".session")

    def load_session(self, target: str) -> dict[str, str] | None:
        """Tokens of a platform session saved by :meth:`save_session`, or None."""
        try:
            data = json.loads(self._session_path(target).read_bytes())
        except (OSError, ValueError):
            return None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None

    def save_session(self, target: str, tokens: dict[str, str]) -> None:
        """Keep session tokens (as secret as the password: same 0600 file rules) across restarts."""
        self.root.mkdir(parents=True, exist_ok=True)
        _write_private(self._session_path(target), json.dumps(tokens).encode())

    def drop_session(self, target: str) -> None:
        self._session_path(target).unlink(missing_ok=True)

    def get(self, target: str) -> Credential | None:
        """``target``'s credential, or None if the operator has not added one."""
        path = self._path(target)
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise CredentialError(f"credential file {path} is unreadable: {exc}") from exc
        return Credential(
            target=raw["target"],
            service_url=raw["service_url"],
            identifier=raw.get("identifier") or parse_target(raw["target"])[1],
            secret=raw["secret"],
        )

    def require(self, target: str) -> Credential:
        cred = self.get(target)
        if cred is None:
            raise CredentialError(
                f"no credentials for {target}: run `ground account add {target} --app-password-file FILE`"
            )
        return cred

    def remove(self, target: str) -> bool:
        self.drop_session(target)
        self._tokens_path(target).unlink(missing_ok=True)
        try:
            self._path(target).unlink()
        except FileNotFoundError:
            return False
        return True

    def all(self) -> list[Credential]:
        if not self.root.exists():
            return []
        out = []
        for p in sorted(self.root.glob("*.json")):
            cred = self.get(urllib.parse.unquote(p.name[: -len(".json")]))
            if cred is not None:
                out.append(cred)
        return out


def _write_private(final: Path, data: bytes) -> None:
    """Atomically write ``data`` to a file created 0600 from its first byte, then fsync its folder."""
    # One temp name per process: `ground serve` and `ground account check` may write at once.
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also if the temp file existed with looser bits
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(final.parent)  # the rename itself must survive a power cut (rotated tokens)


def store_for(home_root: Path) -> CredentialStore:
    return CredentialStore(home_root / "credentials")
