"""The `bluesky` platform: AT Protocol XRPC against the account's PDS.

1. ``com.atproto.server.createSession`` with the handle and an *app password* (kept per
   account on ground, ``ground account add bluesky:alice.test --app-password-file F``);
   the session is reused until the PDS says the token expired.
2. ``com.atproto.repo.uploadBlob`` for each photo (exact bytes, its own media type).
3. ``com.atproto.repo.putRecord`` of an ``app.bsky.feed.post`` at a record key derived from
   the post id (``atproto.tid_for_post``) with ``swapRecord: null`` — "create only if absent" —
   so a retry can never produce a second record; if one is already there we return it.
4. Retract: ``com.atproto.repo.deleteRecord``. Lookup: ``com.atproto.repo.getRecord``.
5. Read back after publishing: ``getRecord`` (the text) and ``com.atproto.sync.getBlob`` for
   each photo (sha256 against the signed photo's); what was found is recorded (``fidelity_note``;
   a blob that differs makes the record's fidelity re-encoded).

A post's lasting name is its ``at://`` URI (the remote id, kept and shown everywhere). Its web
address depends on which app shows the PDS's posts: a per-service setting
(``ground account bluesky-web SERVICE_URL WEB_URL``, kept in ``<home>/bluesky-web-apps.json``);
only https://bsky.social maps to https://bsky.app by default. A service with no web app gets
the at:// URI as its URL: a bsky.app link to a post on another PDS would not work.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from ..credentials import Credential, CredentialStore
from ..errors import PublishError
from . import atproto
from .base import Published, PublishRequest, require_credential
from .http import Response, error_text, raise_for_status, request
from .readback import bytes_note, read_back_note

_EXPIRED = {"ExpiredToken", "InvalidToken"}
# The web app that shows each service's posts; anything else has none unless configured.
DEFAULT_WEB_APPS = {"https://bsky.social": "https://bsky.app"}
WEB_APPS_FILE = "bluesky-web-apps.json"


def _web_apps_path(home_root: Path) -> Path:
    return home_root / WEB_APPS_FILE


def web_apps(home_root: Path) -> dict[str, str]:
    """Service URL → web app URL: the defaults, then what ``set_web_app`` stored."""
    out = dict(DEFAULT_WEB_APPS)
    try:
        saved = json.loads(_web_apps_path(home_root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return out
    if isinstance(saved, dict):
        for k, v in saved.items():
            if isinstance(k, str):
                if v is None:
                    out.pop(k.rstrip("/"), None)
                elif isinstance(v, str):
                    out[k.rstrip("/")] = v.rstrip("/")
    return out


def set_web_app(home_root: Path, service_url: str, web_url: str | None) -> None:
    """Remember (or with None, forget: at:// URIs only) the web app for ``service_url``."""
    from durable.files import write_atomic

    path = _web_apps_path(home_root)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    if not isinstance(saved, dict):
        saved = {}
    saved[service_url.rstrip("/")] = None if web_url is None else web_url.rstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(saved, indent=1, sort_keys=True).encode())


def post_url(web_app: str | None, handle: str, rkey: str, uri: str) -> str:
    """The post's web address on ``web_app``, or its at:// URI when the service has none."""
    return f"{web_app}/profile/{handle}/post/{rkey}" if web_app else uri


@dataclass(frozen=True, slots=True)
class _Session:
    did: str
    handle: str
    access_jwt: str
    refresh_jwt: str
    service_url: str


class BlueskyPlatform:
    name = "bluesky"

    def __init__(self, credentials: CredentialStore, web_apps: Mapping[str, str] | None = None) -> None:
        self.credentials = credentials
        self._sessions: dict[str, _Session] = {}
        # None: read the home's setting each time (an operator may change it while serving).
        self._web_apps = web_apps

    def _cred(self, account: str) -> Credential:
        return require_credential(self.credentials, f"bluesky:{account}")

    def _keep(self, cred: Credential, body: dict[str, Any]) -> _Session:
        sess = _Session(
            did=str(body["did"]),
            handle=str(body.get("handle") or cred.identifier),
            access_jwt=str(body["accessJwt"]),
            refresh_jwt=str(body.get("refreshJwt", "")),
            service_url=cred.service_url,
        )
        self._sessions[cred.target] = sess
        # Saved so a restart (or `ground publish` run by hand) does not log in again: PDSes
        # rate-limit createSession hard (bsky.social: 30 per 5 minutes per account).
        self.credentials.save_session(
            cred.target,
            {"did": sess.did, "handle": sess.handle, "accessJwt": sess.access_jwt,
             "refreshJwt": sess.refresh_jwt, "service_url": sess.service_url},
        )  # fmt: skip
        return sess

    async def _login(self, http: aiohttp.ClientSession, cred: Credential) -> _Session:
        """The account's session: from memory, from its saved file, or a new createSession."""
        cached = self._sessions.get(cred.target)
        if cached is not None and cached.service_url == cred.service_url:
            return cached
        saved = self.credentials.load_session(cred.target)
        if saved and saved.get("service_url") == cred.service_url and saved.get("accessJwt"):
            sess = _Session(
                did=saved["did"],
                handle=saved.get("handle", cred.identifier),
                access_jwt=saved["accessJwt"],
                refresh_jwt=saved.get("refreshJwt", ""),
                service_url=cred.service_url,
            )
            self._sessions[cred.target] = sess
            return sess
        resp = await request(
            http,
            "POST",
            f"{cred.service_url}/xrpc/com.atproto.server.createSession",
            what=f"log in to {cred.service_url} as {cred.identifier}",
            json={"identifier": cred.identifier, "password": cred.secret},
        )
        if resp.status in (400, 401):
            raise PublishError(
                f"log in as {cred.identifier} at {cred.service_url} refused: {error_text(resp)} "
                f"(check the app password: ground account add {cred.target} --app-password-file F)",
                retryable=False,
            )
        raise_for_status(resp, "log in")
        return self._keep(cred, resp.json() or {})

    async def check(self, account: str, session: aiohttp.ClientSession) -> str:
        """Log in with the stored app password now (not a saved session): does it work?"""
        cred = self._cred(account)
        self._sessions.pop(cred.target, None)
        self.credentials.drop_session(cred.target)
        sess = await self._login(session, cred)
        return f"logged in to {cred.service_url} as {sess.handle} ({sess.did})"

    async def _renew(self, http: aiohttp.ClientSession, cred: Credential, old: _Session) -> _Session:
        """After ExpiredToken: refreshSession with the refresh token, else log in afresh."""
        self._sessions.pop(cred.target, None)
        self.credentials.drop_session(cred.target)
        if old.refresh_jwt:
            resp = await request(
                http,
                "POST",
                f"{cred.service_url}/xrpc/com.atproto.server.refreshSession",
                what="refresh session",
                headers={"Authorization": f"Bearer {old.refresh_jwt}"},
            )
            if resp.status == 200 and isinstance(resp.json(), dict):
                return self._keep(cred, resp.json())
        return await self._login(http, cred)

    async def _xrpc(
        self,
        http: aiohttp.ClientSession,
        cred: Credential,
        method: str,
        nsid: str,
        *,
        what: str,
        **kwargs: Any,
    ) -> tuple[_Session, Response]:
        """Call ``nsid`` with the account's session, renewing it once if it expired."""
        extra_headers = kwargs.pop("headers", {})
        sess = await self._login(http, cred)
        for attempt in range(2):
            if isinstance(kwargs.get("data"), io.BytesIO):
                kwargs["data"].seek(0)  # the same body again after renewing the session
            headers = {**extra_headers, "Authorization": f"Bearer {sess.access_jwt}"}
            resp = await request(
                http, method, f"{cred.service_url}/xrpc/{nsid}", what=what, headers=headers, **kwargs
            )
            data = resp.json()
            expired = resp.status in (400, 401) and isinstance(data, dict) and data.get("error") in _EXPIRED
            if expired and attempt == 0:
                sess = await self._renew(http, cred, sess)
                continue
            return sess, resp
        raise AssertionError("unreachable")

    async def _resolve_handles(
        self, http: aiohttp.ClientSession, cred: Credential, handles: set[str]
    ) -> dict[str, str]:
        dids = {}
        for handle in sorted(handles):
            resp = await request(
                http,
                "GET",
                f"{cred.service_url}/xrpc/com.atproto.identity.resolveHandle?handle={quote(handle)}",
                what=f"resolve @{handle}",
            )
            data = resp.json()
            if resp.status == 200 and isinstance(data, dict) and str(data.get("did", "")).startswith("did:"):
                dids[handle] = data["did"]
            elif resp.status == 429 or resp.status >= 500:
                raise_for_status(resp, f"resolve @{handle}")
            # Unknown handle: the mention stays plain text (the text itself is never changed).
        return dids

    def _url(self, sess: _Session, rkey: str, uri: str) -> str:
        apps = self._web_apps if self._web_apps is not None else web_apps(self.credentials.root.parent)
        return post_url(apps.get(sess.service_url.rstrip("/")), sess.handle, rkey, uri)

    async def publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        cred = self._cred(req.account)
        rkey = atproto.tid_for_post(req.post.id)
        images = []
        # Every photo's size first, from its header: a photo that cannot be read fails the
        # publication before anything is uploaded, with a reason, never an exception.
        ratios = [atproto.aspect_ratio(data) for _ref, data in req.media]
        for i, ((ref, _data), ratio) in enumerate(zip(req.media, ratios, strict=True), start=1):
            if ratio is None:
                raise PublishError(
                    f"photo {i} ({ref.media_type}, {ref.sha256.hex()[:12]}) has no readable image header "
                    "(width and height); Bluesky shows only images it can read. Publish it elsewhere, "
                    "or re-send the post with the photo saved again by a camera or editor",
                    retryable=False,
                )
        for i, (ref, data) in enumerate(req.media, start=1):
            _, resp = await self._xrpc(
                session,
                cred,
                "POST",
                "com.atproto.repo.uploadBlob",
                what=f"upload photo {i}",
                # A file-like body is streamed; raw bytes over ~1 MB would block the event loop.
                data=io.BytesIO(data),
                headers={"Content-Type": ref.media_type},
            )
            raise_for_status(resp, f"upload photo {i}")
            blob = (resp.json() or {}).get("blob")
            if not isinstance(blob, dict):
                raise PublishError(f"upload photo {i}: the PDS returned no blob reference", retryable=True)
            images.append((blob, ref.alt, ratios[i - 1]))
        spans = atproto.find_spans(req.post.text)
        dids = await self._resolve_handles(session, cred, {s.value for s in spans if s.kind == "mention"})
        record = atproto.post_record(
            req.post.text, req.post.created_ms, facet_list=atproto.facets(spans, dids), images=images
        )
        sess, resp = await self._xrpc(
            session,
            cred,
            "POST",
            "com.atproto.repo.putRecord",
            what="put post record",
            json={
                "repo": (await self._login(session, cred)).did,
                "collection": atproto.POST_COLLECTION,
                "rkey": rkey,
                "record": record,
                "swapRecord": None,  # create only: never overwrite, never duplicate
            },
        )
        data = resp.json()
        if resp.status == 400 and isinstance(data, dict) and data.get("error") == "InvalidSwap":
            existing = await self.lookup(req, session)
            if existing is not None:
                return existing
        raise_for_status(resp, "put post record")
        uri = str((data or {}).get("uri", f"at://{sess.did}/{atproto.POST_COLLECTION}/{rkey}"))
        published = Published(url=self._url(sess, rkey, uri), remote_id=uri)
        return await self._read_back(session, cred, sess.did, rkey, req, published)

    async def _read_back(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        did: str,
        rkey: str,
        req: PublishRequest,
        published: Published,
    ) -> Published:
        """Read the record (``getRecord``) and each photo blob (``sync.getBlob``) back; record what was found.

        Never fails a publication that happened: an unreadable copy is noted as not read back."""
        base = f"{cred.service_url}/xrpc"
        try:
            got = await request(
                session,
                "GET",
                f"{base}/com.atproto.repo.getRecord?repo={quote(did)}"
                f"&collection={atproto.POST_COLLECTION}&rkey={rkey}",
                what="read back record",
            )
            raise_for_status(got, "read back record")
            value = (got.json() or {}).get("value") or {}
            notes = [read_back_note("Bluesky", req.post.text, value.get("text"))]
            images = (value.get("embed") or {}).get("images") or []
            exact = len(images) == len(req.media)
            for i, ((_, data), img) in enumerate(zip(req.media, images, strict=False), start=1):
                cid = str(((img.get("image") or {}).get("ref") or {}).get("$link") or "")
                blob = await request(
                    session,
                    "GET",
                    f"{base}/com.atproto.sync.getBlob?did={quote(did)}&cid={quote(cid)}",
                    what=f"read back photo {i}",
                )
                raise_for_status(blob, f"read back photo {i}")
                same, note = bytes_note("the PDS", data, blob.body)
                exact = exact and same
                notes.append(f"photo {i}: blob {note}")
        except PublishError as exc:
            return replace(published, fidelity_note=f"not read back ({exc})")
        if req.media and not exact:
            return replace(published, fidelity="re-encoded", fidelity_note="; ".join(notes))
        return replace(published, fidelity_note="; ".join(notes))

    async def lookup(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published | None:
        cred = self._cred(req.account)
        rkey = atproto.tid_for_post(req.post.id)
        sess = await self._login(session, cred)
        resp = await request(
            session,
            "GET",
            f"{cred.service_url}/xrpc/com.atproto.repo.getRecord?repo={quote(sess.did)}"
            f"&collection={atproto.POST_COLLECTION}&rkey={rkey}",
            what="look up post record",
        )
        data = resp.json()
        if resp.status in (400, 404) and isinstance(data, dict) and data.get("error") == "RecordNotFound":
            return None
        raise_for_status(resp, "look up post record")
        value = (data or {}).get("value") or {}
        if value.get("text") != req.post.text:
            raise PublishError(
                f"record {rkey} exists on {cred.service_url} with different text; not overwriting it",
                retryable=False,
            )
        found = Published(url=self._url(sess, rkey, str(data["uri"])), remote_id=str(data["uri"]))
        return await self._read_back(session, cred, sess.did, rkey, req, found)

    async def delete(self, account: str, remote_id: str, session: aiohttp.ClientSession) -> None:
        cred = self._cred(account)
        rkey = remote_id.rstrip("/").rsplit("/", 1)[-1]
        sess = await self._login(session, cred)
        _, resp = await self._xrpc(
            session,
            cred,
            "POST",
            "com.atproto.repo.deleteRecord",
            what="delete post record",
            json={"repo": sess.did, "collection": atproto.POST_COLLECTION, "rkey": rkey},
        )
        raise_for_status(resp, "delete post record")
