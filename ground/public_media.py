"""Photos at unguessable, expiring public URLs, for platforms that fetch media themselves.

Instagram and Threads take no upload: a media container names an ``image_url`` that Meta's
servers fetch ("We cURL media used in publishing attempts, so the media must be hosted on a
publicly accessible server at the time of the attempt",
https://developers.facebook.com/docs/instagram-platform/content-publishing/; the same for
``image_url`` in https://developers.facebook.com/docs/threads/posts/). So ground serves a
photo at ``<public base>/public/media/<token>`` — only while a publication needs it:

- a **grant** names one blob (by sha256) and its media type, for one purpose (a post on one
  account), until ``expires_ms``; its token is 256 random bits (``secrets.token_urlsafe``),
  and the database keeps only the token's sha256, so a copy of ``ground.db`` opens nothing;
- the adapter revokes the grants once the platform has fetched the photo (container
  processed), and they expire anyway (``DEFAULT_TTL_S``); expired rows are swept;
- ``GET /public/media/<token>`` answers the exact stored bytes with the media type signed by
  the astronaut, ``Cache-Control: no-store``; anything else — an unknown, malformed, revoked
  or expired token, a blob hash in the path, a listing — is the same bare 404.

The base URL is where the operator's reverse proxy (or a public listener) reaches this route;
``ground serve --public-base-url https://media.example.org`` records it in the ground home
(``public-media.json``) so publishers in any process (``ground publish``) build the same URLs.
Nothing else of ground needs to be public: proxy only ``/public/media/``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import sqlite3
import time
import urllib.parse
from pathlib import Path

from aiohttp import web

from durable.files import write_atomic
from durable.sqlitedb import open_db, transaction

from .errors import GroundError
from .home import GroundHome

SCHEMA = """
CREATE TABLE IF NOT EXISTS public_media (
    token_sha256 BLOB PRIMARY KEY,   -- sha256 of the URL token: the token itself is never stored
    blob_sha256  BLOB NOT NULL,
    media_type   TEXT NOT NULL,
    purpose      TEXT NOT NULL,      -- e.g. 'instagram:alice/01J…' (who needs it, for revoking)
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS public_media_purpose ON public_media(purpose);
"""
ROUTE_PREFIX = "/public/media/"
CONFIG_FILE = "public-media.json"
# Meta fetches the image while the container is created and processed (seconds to minutes);
# an hour covers a slow platform without leaving a photo reachable for days.
DEFAULT_TTL_S = 3600.0
# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
# Expired grants are kept this long for the audit of "what was reachable when", then swept.
SWEEP_AFTER_MS = 24 * 3600 * 1000


class PublicMediaError(GroundError):
    pass


def set_base_url(home_root: Path, url: str) -> str:
    """Validate and record the public base URL for this ground home; returns it normalised."""
    url = url.strip().rstrip("/")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise PublicMediaError(
            f"--public-base-url must be an http(s) URL without query, e.g. https://media.example.org (got {url!r})"
        )
    home_root.mkdir(parents=True, exist_ok=True)
    write_atomic(home_root / CONFIG_FILE, json.dumps({"base_url": url}).encode())
    return url


def base_url(home_root: Path) -> str | None:
    """The recorded public base URL, or None if `ground serve --public-base-url` never set one."""
    try:
        data = json.loads((home_root / CONFIG_FILE).read_bytes())
    except (OSError, ValueError):
        return None
    url = data.get("base_url") if isinstance(data, dict) else None
    return str(url) if url else None


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


class PublicMedia:
    """Grants in ``ground.db`` (own connection: adapters and the web handler both use it)."""

    def __init__(self, home_root: Path) -> None:
        self.home_root = home_root
        self._conn: sqlite3.Connection | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.home_root.mkdir(parents=True, exist_ok=True)
            self._conn = open_db(self.home_root / "ground.db", SCHEMA)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def grant(
        self,
        blob_sha256: bytes,
        media_type: str,
        *,
        purpose: str,
        now_ms: int,
        ttl_s: float = DEFAULT_TTL_S,
    ) -> str:
        """Make ``blob_sha256`` fetchable for ``ttl_s``; returns its public URL.

        Raises PublicMediaError if no public base URL is configured (the operator must run
        `ground serve --public-base-url …` so the platform can reach the photo).
        """
        base = base_url(self.home_root)
        if base is None:
            raise PublicMediaError(
                "this platform fetches photos from a public URL, and this ground has none: "
                "run `ground serve --public-base-url https://…` (a URL that reaches /public/media/ here)"
            )
        token = secrets.token_urlsafe(32)
        with transaction(self.conn) as c:
            c.execute("DELETE FROM public_media WHERE expires_ms < ?", (now_ms - SWEEP_AFTER_MS,))
            c.execute(
                "INSERT INTO public_media (token_sha256, blob_sha256, media_type, purpose, created_ms, expires_ms) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (_token_hash(token), blob_sha256, media_type, purpose, now_ms, now_ms + int(ttl_s * 1000)),
            )
        return f"{base}{ROUTE_PREFIX}{token}"

    def revoke(self, purpose: str) -> int:
        """End every grant made for ``purpose`` now; returns how many were live or kept."""
        with transaction(self.conn) as c:
            return c.execute("DELETE FROM public_media WHERE purpose = ?", (purpose,)).rowcount

    def resolve(self, token: str, now_ms: int) -> tuple[bytes, str] | None:
        """(blob sha256, media type) a live token grants, or None."""
        if not _TOKEN_RE.fullmatch(token):
            return None
        row = self.conn.execute(
            "SELECT blob_sha256, media_type, expires_ms FROM public_media WHERE token_sha256 = ?",
            (_token_hash(token),),
        ).fetchone()
        if row is None or now_ms >= row[2]:
            return None
        return bytes(row[0]), str(row[1])

    def live(self, now_ms: int) -> int:
        """How many grants are reachable at ``now_ms`` (for tests and the operator)."""
        return int(
            self.conn.execute("SELECT count(*) FROM public_media WHERE expires_ms > ?", (now_ms,)).fetchone()[
                0
            ]
        )


PUBLIC_MEDIA_KEY: web.AppKey[PublicMedia] = web.AppKey("public_media", PublicMedia)
HOME_KEY: web.AppKey[GroundHome] = web.AppKey("public_media_home", GroundHome)


def _not_found() -> web.Response:
    # One answer for every miss: the response never tells a guesser how close it came.
    return web.Response(status=404, text="not found\n", headers={"Cache-Control": "no-store"})


async def serve_media(request: web.Request) -> web.Response:
    """``GET /public/media/{token}``: the exact bytes of a live grant, else 404."""
    grant = request.app[PUBLIC_MEDIA_KEY].resolve(request.match_info["token"], int(time.time() * 1000))
    if grant is None:
        return _not_found()
    sha, media_type = grant
    blobs = request.app[HOME_KEY].blobs
    try:
        data = await asyncio.to_thread(blobs.get, sha)
    except (OSError, KeyError, ValueError):
        return _not_found()
    return web.Response(
        body=data,
        content_type=media_type,
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )


def setup(app: web.Application, home: GroundHome) -> None:
    """Register ``GET /public/media/{token}`` (HEAD too) on ground's web application."""
    app[PUBLIC_MEDIA_KEY] = PublicMedia(home.root)
    app[HOME_KEY] = home
    app.router.add_get(ROUTE_PREFIX + "{token}", serve_media)

    async def _close(app: web.Application) -> None:
        app[PUBLIC_MEDIA_KEY].close()

    app.on_cleanup.append(_close)
