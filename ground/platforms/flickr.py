"""The `flickr` platform: Flickr's upload and REST APIs, OAuth 1.0a signed with oauthlib.

Pages read (search tool, docs corpus):
- Upload: https://www.flickr.com/services/api/upload.api.html — ``POST
  https://up.flickr.com/services/upload/`` multipart with ``photo`` plus ``title``,
  ``description``, ``is_public``…; every argument but ``photo`` is part of the OAuth signature.
  Answers XML: ``<rsp stat="ok"><photoid>…</photoid></rsp>`` or ``<rsp stat="fail"><err code=…
  msg=…/></rsp>``.
- REST (``https://api.flickr.com/services/rest/?method=…&format=json&nojsoncallback=1``):
  ``flickr.test.login``; ``flickr.photos.getSizes`` (the ``Original`` size's ``source`` is the
  file as uploaded); ``flickr.people.getPhotos`` (``user_id=me``, ``min_upload_date``,
  ``extras=description``) for the lookup; ``flickr.photos.delete``. Errors are
  ``{"stat": "fail", "code": N, "message": …}``; code 98 "Invalid auth token" / 99 "User not
  logged in / insufficient permissions" mean the account must be reconnected.
- Authentication: https://www.flickr.com/services/api/auth.oauth.html (OAuth 1.0a, HMAC-SHA1;
  tokens do not expire until revoked). Signing is oauthlib's (RFC 5849), never ours.

One post → one Flickr photo per image, each with the post's text as its description (byte-exact)
and no title (we do not invent one). Alt text has no field in Flickr's upload API: it is not
published there (docs/platforms.md says so).

Fidelity (protocol/rules.py): EXACT — Flickr keeps the uploaded file as the photo's Original.
Verified, not assumed: after upload ground reads the Original back and compares its sha256
with the signed photo's; the result is recorded (``fidelity_note``), and a mismatch is recorded
as RE_ENCODED with both hashes.

No duplicates: uploads have no idempotency key. Each photo id is saved (handles.py) as soon as
Flickr answers, and the index of the upload in flight before it is sent; after a crash or an
ambiguous timeout the in-flight photo is looked for among the account's uploads since the
attempt (same description, not already one of ours) and adopted instead of uploaded again.

Credentials: ``ground account add flickr:NAME --secret-file flickr.json`` with
``consumer_key``, ``consumer_secret``, ``oauth_token``, ``oauth_token_secret``.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp
from oauthlib.oauth1 import Client

from protocol.mediatype import EXTENSIONS

from ..credentials import Credential, CredentialStore
from ..errors import PublishError, ReconnectNeeded
from .base import Published, PublishRequest
from .handles import HandleStore
from .http import Response, raise_for_status, request
from .quota import QuotaBook

AUTH_ERRORS = {96, 97, 98, 99}  # invalid signature, missing signature, invalid token, no permission
CLOCK_SKEW_S = 600
LOOKUP_PER_PAGE = 100
# Reading an original back: Flickr's Original is at most the 200 MB upload limit.
READBACK_MAX_BYTES = 200 * 1024 * 1024


class FlickrPlatform:
    name = "flickr"
    title = "Flickr"

    def __init__(
        self, credentials: CredentialStore, handles: HandleStore, quotas: QuotaBook, *, clock: Any = time.time
    ) -> None:
        self.credentials = credentials
        self.handles = handles
        self.quotas = quotas
        self.clock = clock

    # --- credentials, signing, calls -------------------------------------------------------------

    def _cred(self, account: str) -> tuple[Credential, Client]:
        try:
            cred = self.credentials.require(f"flickr:{account}")
        except PublishError:
            raise
        except Exception as exc:
            raise PublishError(str(exc), retryable=False) from exc
        try:
            keys = json.loads(cred.secret)
            client = Client(
                keys["consumer_key"],
                client_secret=keys["consumer_secret"],
                resource_owner_key=keys["oauth_token"],
                resource_owner_secret=keys["oauth_token_secret"],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ReconnectNeeded(
                cred.target,
                "the secret file must be JSON with consumer_key, consumer_secret, oauth_token, oauth_token_secret",
            ) from exc
        return cred, client

    @staticmethod
    def _rest_url(cred: Credential) -> str:
        return f"{cred.service_url}/services/rest/"

    @staticmethod
    def _upload_url(cred: Credential) -> str:
        # Flickr uploads go to up.flickr.com; a local fake serves both on its one address.
        if cred.service_url == "https://api.flickr.com":
            return "https://up.flickr.com/services/upload/"
        return f"{cred.service_url}/services/upload/"

    async def _rest(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        client: Client,
        method: str,
        what: str,
        **params: str,
    ) -> dict[str, Any]:
        """One signed REST call (GET, or POST for methods that change something); the JSON answer."""
        args = {"method": method, "format": "json", "nojsoncallback": "1", **params}
        verb = "POST" if method in ("flickr.photos.delete",) else "GET"
        if verb == "GET":
            uri, headers, _ = client.sign(
                f"{self._rest_url(cred)}?{urllib.parse.urlencode(args)}", http_method="GET"
            )
            resp = await request(session, "GET", uri, what=what, headers=headers)
        else:
            body = urllib.parse.urlencode(args)
            ctype = {"Content-Type": "application/x-www-form-urlencoded"}
            uri, headers, signed = client.sign(
                self._rest_url(cred), http_method="POST", body=body, headers=ctype
            )
            resp = await request(session, "POST", uri, what=what, headers=headers, data=signed)
        raise_for_status(resp, what)
        data = resp.json()
        if not isinstance(data, dict):
            raise PublishError(f"{what}: Flickr answered something that is not JSON", retryable=True)
        self._raise_fail(cred, data.get("stat"), data.get("code"), data.get("message"), what)
        return data

    @staticmethod
    def _raise_fail(cred: Credential, stat: Any, code: Any, message: Any, what: str) -> None:
        if stat == "ok":
            return
        try:
            n = int(code)
        except (TypeError, ValueError):
            n = -1
        if n in AUTH_ERRORS:
            raise ReconnectNeeded(cred.target, f"Flickr error {n}: {message}")
        if n == 105:  # "Service currently unavailable"
            raise PublishError(f"{what}: Flickr error 105: {message}", retryable=True)
        raise PublishError(f"{what}: Flickr error {n}: {message}", retryable=False)

    # --- upload and verification -------------------------------------------------------------

    async def _upload(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        client: Client,
        index: int,
        media_type: str,
        data: bytes,
        text: str,
    ) -> str:
        what = f"upload photo {index}"
        params = {
            "description": text,
            "title": "",
            "is_public": "1",
            "content_type": "1",
            "safety_level": "1",
        }
        # Sign the arguments as a form body (RFC 5849 §3.4.1.3: ``photo`` is a file part, not signed),
        # then send the same arguments as multipart with the signed header.
        _, headers, _ = client.sign(
            self._upload_url(cred),
            http_method="POST",
            body=urllib.parse.urlencode(params),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        form = aiohttp.FormData()
        for k, v in params.items():
            form.add_field(k, v)
        form.add_field(
            "photo",
            data,
            filename=f"photo-{index}.{EXTENSIONS.get(media_type, 'bin')}",
            content_type=media_type,
        )
        auth = {"Authorization": headers["Authorization"]}
        resp = await request(session, "POST", self._upload_url(cred), what=what, data=form, headers=auth)
        raise_for_status(resp, what)
        return self._photo_id(cred, resp, what)

    def _photo_id(self, cred: Credential, resp: Response, what: str) -> str:
        try:
            root = ET.fromstring(resp.body)
        except ET.ParseError as exc:
            raise PublishError(
                f"{what}: Flickr answered something that is not XML", retryable=True, ambiguous=True
            ) from exc
        err = root.find("err")
        if root.get("stat") != "ok":
            self._raise_fail(
                cred,
                root.get("stat"),
                err.get("code") if err is not None else None,
                err.get("msg") if err is not None else "",
                what,
            )
        pid = (root.findtext("photoid") or "").strip()
        if not pid:
            raise PublishError(f"{what}: Flickr returned no photo id", retryable=True, ambiguous=True)
        return pid

    async def _verify(
        self, session: aiohttp.ClientSession, cred: Credential, client: Client, photo_id: str, want: bytes
    ) -> tuple[bool, str]:
        """Read the Original back; (same bytes?, what was found)."""
        sizes = await self._rest(
            session, cred, client, "flickr.photos.getSizes", "read back", photo_id=photo_id
        )
        original = next(
            (s for s in (sizes.get("sizes") or {}).get("size") or [] if s.get("label") == "Original"), None
        )
        if original is None or not original.get("source"):
            return False, "Flickr lists no Original size"
        got = await request(session, "GET", str(original["source"]), what="read back original")
        raise_for_status(got, "read back original")
        want_hex, got_hex = hashlib.sha256(want).hexdigest(), hashlib.sha256(got.body).hexdigest()
        if want_hex == got_hex:
            return True, f"original read back: sha256 {got_hex[:16]}… matches"
        return False, f"original read back differs: signed sha256 {want_hex}, Flickr serves {got_hex}"

    # --- publish, lookup, delete ---------------------------------------------------------------

    async def publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        cred, client = self._cred(req.account)
        if not req.media:
            raise PublishError("Flickr needs at least one photo", retryable=False)
        saved = self.handles.get(cred.target, req.post.id)
        ids: list[str] = list(saved.get("photo_ids") or [])
        for i, (ref, data) in enumerate(req.media):
            if i < len(ids):
                continue
            if saved.get("in_flight") == i:
                # An upload of this photo may have reached Flickr before a crash or timeout.
                adopted = await self._find_upload(session, cred, client, req, ids, saved.get("in_flight_s"))
                if adopted is not None:
                    ids.append(adopted)
                    saved = self.handles.put(cred.target, req.post.id, photo_ids=ids, in_flight=None)
                    continue
            saved = self.handles.put(cred.target, req.post.id, in_flight=i, in_flight_s=int(self.clock()))
            ids.append(await self._upload(session, cred, client, i + 1, ref.media_type, data, req.post.text))
            saved = self.handles.put(cred.target, req.post.id, photo_ids=ids, in_flight=None)
        return await self._finish(session, cred, client, req, ids)

    async def _finish(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        client: Client,
        req: PublishRequest,
        ids: list[str],
    ) -> Published:
        checks = [
            await self._verify(session, cred, client, pid, data)
            for pid, (_, data) in zip(ids, req.media, strict=True)
        ]
        exact = all(ok for ok, _ in checks)
        me = await self._rest(session, cred, client, "flickr.test.login", "who am I")
        nsid = str((me.get("user") or {}).get("id") or "me")
        self.handles.drop(cred.target, req.post.id)
        return Published(
            url=f"https://www.flickr.com/photos/{nsid}/{ids[0]}/",
            remote_id=",".join(ids),
            fidelity="exact" if exact else "re-encoded",
            fidelity_note="; ".join(f"photo {i}: {note}" for i, (_, note) in enumerate(checks, start=1)),
        )

    async def _find_upload(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        client: Client,
        req: PublishRequest,
        ours: list[str],
        since_s: Any,
    ) -> str | None:
        """A photo uploaded since ``since_s`` with this post's description that is not already ours."""
        since = int(since_s or req.post.created_ms // 1000) - CLOCK_SKEW_S
        data = await self._rest(
            session,
            cred,
            client,
            "flickr.people.getPhotos",
            "look up: recent uploads",
            user_id="me",
            min_upload_date=str(since),
            extras="description,date_upload",
            per_page=str(LOOKUP_PER_PAGE),
        )
        photos = (data.get("photos") or {}).get("photo") or []
        for p in sorted(photos, key=lambda p: int(p.get("dateupload") or 0)):
            desc = (p.get("description") or {}).get("_content")
            if desc == req.post.text and str(p.get("id")) not in ours:
                return str(p["id"])
        if len(photos) >= LOOKUP_PER_PAGE:
            raise PublishError(
                f"cannot tell whether photo {len(ours) + 1} of post {req.post.id} reached {cred.target}: more than "
                f"{LOOKUP_PER_PAGE} newer uploads; check the account, then `ground retry`",
                retryable=False,
            )
        return None

    async def lookup(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published | None:
        """Complete only when every photo is accounted for; otherwise ``publish`` resumes (and adopts)."""
        cred, client = self._cred(req.account)
        saved = self.handles.get(cred.target, req.post.id)
        ids = list(saved.get("photo_ids") or [])
        if (
            len(ids) < len(req.media)
            and saved.get("in_flight") == len(ids)
            and len(ids) == len(req.media) - 1
        ):
            found = await self._find_upload(session, cred, client, req, ids, saved.get("in_flight_s"))
            if found is not None:
                ids.append(found)
                self.handles.put(cred.target, req.post.id, photo_ids=ids, in_flight=None)
        if req.media and len(ids) == len(req.media):
            return await self._finish(session, cred, client, req, ids)
        return None

    async def delete(self, account: str, remote_id: str, session: aiohttp.ClientSession) -> None:
        cred, client = self._cred(account)
        for pid in remote_id.split(","):
            try:
                await self._rest(session, cred, client, "flickr.photos.delete", "delete photo", photo_id=pid)
            except PublishError as exc:
                if "Flickr error 1:" not in str(exc):  # 1: "Photo not found" — already gone
                    raise

    async def check(self, account: str, session: aiohttp.ClientSession) -> str:
        cred, client = self._cred(account)
        me = await self._rest(session, cred, client, "flickr.test.login", "check token")
        user = me.get("user") or {}
        name = (user.get("username") or {}).get("_content", "?")
        return f"OAuth 1.0a token works on {cred.service_url} for {name} ({user.get('id', '?')}); Flickr tokens do not expire"
