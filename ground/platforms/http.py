"""One place that turns HTTP outcomes into PublishError, the same way for every adapter.

- could not connect (nothing was sent): retryable, not ambiguous;
- timeout or connection lost after sending, 5xx: retryable and *ambiguous* (the platform
  may have acted), so the engine looks the post up before trying again;
- 429 (and 503 with Retry-After): retryable, honouring Retry-After (RFC 9110 §10.2.3) or,
  from a Bluesky PDS, RateLimit-Reset (a Unix time);
- other 4xx: permanent, with the platform's own error message.
"""

from __future__ import annotations

import email.utils
import io
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from protocol.mediatype import EXTENSIONS

from ..errors import PublishError

# A photo upload over a slow ground uplink still finishes well within this.
DEFAULT_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=15)
MAX_ERROR_TEXT = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def retry_after_s(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))


def ratelimit_reset_s(value: str | None, now_s: float | None = None) -> float | None:
    """Seconds until a ``RateLimit-Reset`` (Unix time, as Bluesky's PDS sends it) passes."""
    if not value or not value.strip().isdigit():
        return None
    return max(0.0, int(value) - (time.time() if now_s is None else now_s))


def error_text(resp: Response) -> str:
    """The platform's own words for an error (XRPC ``error``/``message``, Mastodon ``error``,
    X's RFC 7807 ``title``/``detail`` or ``errors[].message``, LinkedIn's ``message``)."""
    data = resp.json()
    if isinstance(data, dict):
        parts = [
            str(data[k]) for k in ("error", "message", "error_description", "title", "detail") if data.get(k)
        ]
        errors = data.get("errors")
        if not parts and isinstance(errors, list):
            parts = [str(e.get("message")) for e in errors if isinstance(e, dict) and e.get("message")]
        if parts:
            return ": ".join(parts)[:MAX_ERROR_TEXT]
    return resp.body[:MAX_ERROR_TEXT].decode("utf-8", "replace") or f"HTTP {resp.status}"


async def request(
    session: aiohttp.ClientSession, method: str, url: str, *, what: str, **kwargs: Any
) -> Response:
    """Send one request and read the whole answer; transport failures become PublishError."""
    kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
    try:
        async with session.request(method, url, **kwargs) as r:
            body = await r.read()
            return Response(status=r.status, headers=dict(r.headers), body=body)
    except aiohttp.ClientConnectorError as exc:
        raise PublishError(f"{what}: cannot connect to {url}: {exc.os_error}", retryable=True) from exc
    except TimeoutError as exc:
        raise PublishError(f"{what}: no answer from {url} in time", retryable=True, ambiguous=True) from exc
    except aiohttp.ClientError as exc:
        raise PublishError(
            f"{what}: connection to {url} failed: {exc}", retryable=True, ambiguous=True
        ) from exc


def photo_form(field: str, data: bytes, media_type: str, number: int) -> aiohttp.FormData:
    """A multipart form holding one photo as ``field``, named ``photo-NUMBER.ext``; streamed
    (raw bytes over ~1 MB would block the event loop). The caller adds the other fields."""
    form = aiohttp.FormData()
    form.add_field(
        field,
        io.BytesIO(data),
        filename=f"photo-{number}.{EXTENSIONS.get(media_type, 'bin')}",
        content_type=media_type,
    )
    return form


def raise_unless_gone(resp: Response, what: str) -> None:
    """For a delete: 404 means the post is already gone (done); any other error as raise_for_status."""
    if resp.status != 404:
        raise_for_status(resp, what)


def raise_for_status(resp: Response, what: str) -> None:
    """Raise the PublishError an HTTP error status means; return quietly on 2xx."""
    if 200 <= resp.status < 300:
        return
    detail = error_text(resp)
    wait = retry_after_s(resp.headers.get("Retry-After"))
    if wait is None and resp.status == 429:
        low = {k.lower(): v for k, v in resp.headers.items()}
        # Bluesky's PDS: RateLimit-Reset; X: x-rate-limit-reset (both a Unix time in seconds).
        wait = ratelimit_reset_s(low.get("ratelimit-reset") or low.get("x-rate-limit-reset"))
    if resp.status == 429:
        raise PublishError(f"{what}: rate limited (HTTP 429): {detail}", retryable=True, retry_after_s=wait)
    if resp.status >= 500:
        raise PublishError(
            f"{what}: platform error HTTP {resp.status}: {detail}",
            retryable=True,
            retry_after_s=wait,
            ambiguous=True,
        )
    if resp.status == 408:
        raise PublishError(f"{what}: request timeout (HTTP 408)", retryable=True, ambiguous=True)
    raise PublishError(f"{what}: refused (HTTP {resp.status}): {detail}", retryable=False)
