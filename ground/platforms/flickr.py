"""The `flickr` platform: Flickr's upload and REST APIs, OAuth 1.0a signed with oauthlib.

Pages read (search tool, docs corpus):
- Upload: https://www.flickr.com/services/api/upload.api.html — ``POST
  https://up.flickr.com/services/upload/`` multipart with ``photo`` plus ``title``,
  ``description`` ("may contain some limited HTML"), ``tags`` ("a space-separated list"),
  ``is_public``…; every argument but ``photo`` is part of the OAuth signature. Answers XML:
  ``<rsp stat="ok"><photoid>…</photoid></rsp>`` or ``<rsp stat="fail"><err code=… msg=…/></rsp>``.
  (upload.async.html: ``async=1`` answers a ticket for ``flickr.photos.upload.checkTickets``
  instead; we upload synchronously, the photo id in the answer is the handle we keep.)
- REST (``https://api.flickr.com/services/rest/?method=…&format=json&nojsoncallback=1``):
  ``flickr.test.login``; ``flickr.photos.getSizes`` (the ``Original`` size's ``source`` is the
  file as uploaded); ``flickr.photos.getInfo`` (description, owner); ``flickr.people.getPhotos``
  (``user_id=me``, ``min_upload_date``, ``extras=machine_tags``, ``per_page`` ≤ 500, ``page``)
  for the lookup; ``flickr.photos.delete``. Errors are ``{"stat": "fail", "code": N, "message":
  …}``; code 98 "Invalid auth token" / 99 "User not logged in / insufficient permissions" mean
  the account must be reconnected.
- Machine tags (``namespace:predicate=value``, flickr.com/groups/api/discuss/72157594497877875):
  Flickr parses, keeps and lists them (``extras=machine_tags``, search ``machine_tags=``).
- Authentication: https://www.flickr.com/services/api/auth.oauth.html (OAuth 1.0a, HMAC-SHA1;
  tokens do not expire until revoked). Signing is oauthlib's (RFC 5849), never ours.

One post → one Flickr photo per image, each with the post's text as its description and no
title (we do not invent one), tagged ``orbitpost:post=<post id> orbitpost:photo=<n>``. Alt text
has no field in Flickr's upload API: it is not published there (docs/platforms.md says so).

Fidelity (protocol/rules.py): EXACT — Flickr keeps the uploaded file as the photo's Original.
Verified, not assumed: after upload ground reads every Original back and compares its sha256
with the signed photo's, and reads the description back; the result is recorded
(``fidelity_note``), and a mismatch is recorded as RE_ENCODED with both hashes.

No duplicates: uploads have no idempotency key. Each photo id is saved (handles.py) as soon as
Flickr answers, and the index of the upload in flight before it is sent. After a crash or an
ambiguous timeout the account's uploads since the attempt are read and this post's photos
recognised by their machine tags — not by description: another post may carry the same words,
and Flickr may change a description's HTML — then adopted instead of uploaded again. The
lookup does not depend on the handles, which are dropped just before the engine records the
publication (a crash in that gap once doubled a photo when it did).

Credentials: ``ground account add flickr:NAME --secret-file flickr.json`` with
``consumer_key``, ``consumer_secret``, ``oauth_token``, ``oauth_token_secret``.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import xml.etree.ElementTree as ET
from typing import Any

import aiohttp
from oauthlib.oauth1 import Client

from protocol.mediatype import EXTENSIONS
from protocol.model import Post

from ..credentials import Credential, CredentialStore
from ..errors import PublishError, ReconnectNeeded
from .base import Published, PublishRequest, lookup_exhausted, require_credential
from .handles import HandleStore
from .http import Response, raise_for_status, request
from .quota import QuotaBook
from .readback import bytes_note, read_back_note

AUTH_ERRORS = {96, 97, 98, 99}  # invalid signature, missing signature, invalid token, no permission
CLOCK_SKEW_S = 600
# flickr.people.getPhotos returns at most 500 a page; 10 pages reach far past any crash window.
LOOKUP_PER_PAGE = 500
LOOKUP_PAGES = 10
# Each photo carries two machine tags (namespace:predicate=value, flickr.com/groups/api/discuss/
# 72157594497877875): which post, and which of its photos. Flickr keeps them and lists them
# (extras=machine_tags), so they identify our uploads exactly, whatever it does to the description.
TAG_NAMESPACE = "orbitpost"
# Reading an original back: Flickr's Original is at most the 200 MB upload limit.
READBACK_MAX_BYTES = 200 * 1024 * 1024


def machine_tags(post_id: str, index: int) -> str:
    """The upload's ``tags``: ``orbitpost:post=<post id> orbitpost:photo=<n>`` (n from 1).

    Lower case: Flickr lists a tag in its "clean" form, lower-cased (a ULID is upper-case
    Crockford base32, so nothing is lost)."""
    return f"{TAG_NAMESPACE}:post={post_id.lower()} {TAG_NAMESPACE}:photo={index + 1}"


def photo_index(listed: str, post_id: str) -> int | None:
    """Which photo (0-based) of ``post_id`` a photo is, from its listed machine tags; None if not ours."""
    tags = dict(t.partition("=")[::2] for t in listed.lower().split() if "=" in t)
    n = tags.get(f"{TAG_NAMESPACE}:photo", "")
    if tags.get(f"{TAG_NAMESPACE}:post") != post_id.lower() or not n.isdigit() or int(n) < 1:
        return None
    return int(n) - 1


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
        cred = require_credential(self.credentials, f"flickr:{account}")
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
        post: Post,
    ) -> str:
        """Upload photo ``index`` (0-based) of ``post``, tagged so a lookup recognises it; its id."""
        what = f"upload photo {index + 1}"
        params = {
            "description": post.text,
            "title": "",
            "tags": machine_tags(post.id, index),
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
            filename=f"photo-{index + 1}.{EXTENSIONS.get(media_type, 'bin')}",
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
        same, note = bytes_note("Flickr", want, got.body)
        return same, f"original {note}"

    # --- publish, lookup, delete ---------------------------------------------------------------

    async def publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        cred, client = self._cred(req.account)
        if not req.media:
            raise PublishError("Flickr needs at least one photo", retryable=False)
        saved = self.handles.get(cred.target, req.post.id)
        ids: list[str] = list(saved.get("photo_ids") or [])
        if saved.get("in_flight") is not None:
            # An upload may have reached Flickr before a crash or timeout: adopt it, never repeat it.
            ids = await self._adopt(session, cred, client, req, ids, saved)
        started_s = saved.get("started_s") or int(self.clock())
        for i, (ref, data) in enumerate(req.media):
            if i < len(ids):
                continue
            # Saved before the upload: after a crash, look for it from here (machine tag, _adopt).
            self.handles.put(cred.target, req.post.id, in_flight=i, started_s=started_s)
            ids.append(await self._upload(session, cred, client, i, ref.media_type, data, req.post))
            self.handles.put(cred.target, req.post.id, photo_ids=ids, in_flight=None)
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
        text_note, nsid = await self._read_back_text(session, cred, client, ids[0], req.post.text)
        # Dropped before the engine records the outcome: a crash in between is found by lookup
        # (the machine tags), not by these handles.
        self.handles.drop(cred.target, req.post.id)
        notes = [text_note, *(f"photo {i}: {note}" for i, (_, note) in enumerate(checks, start=1))]
        return Published(
            url=f"https://www.flickr.com/photos/{nsid}/{ids[0]}/",
            remote_id=",".join(ids),
            fidelity="exact" if exact else "re-encoded",
            fidelity_note="; ".join(notes),
        )

    async def _read_back_text(
        self, session: aiohttp.ClientSession, cred: Credential, client: Client, photo_id: str, text: str
    ) -> tuple[str, str]:
        """``flickr.photos.getInfo``: (what the description read back shows, the owner's NSID)."""
        try:
            info = await self._rest(
                session, cred, client, "flickr.photos.getInfo", "read back text", photo_id=photo_id
            )
        except PublishError as exc:
            if isinstance(exc, ReconnectNeeded):
                raise
            me = await self._rest(session, cred, client, "flickr.test.login", "who am I")
            return f"text not read back ({exc})", str((me.get("user") or {}).get("id") or "me")
        photo = info.get("photo") or {}
        nsid = str((photo.get("owner") or {}).get("nsid") or "me")
        return read_back_note("Flickr", text, (photo.get("description") or {}).get("_content")), nsid

    async def _adopt(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        client: Client,
        req: PublishRequest,
        ids: list[str],
        saved: dict[str, Any],
    ) -> list[str]:
        """``ids`` extended with this post's photos found on the account, in order; saved."""
        since_ms = req.ambiguous_since_ms or req.post.created_ms
        since_s = min(int(saved.get("started_s") or since_ms // 1000), since_ms // 1000)
        found = await self._find_uploads(session, cred, client, req, since_s)
        out = list(ids)
        while len(out) < len(req.media) and len(out) in found:
            out.append(found[len(out)])
        self.handles.put(cred.target, req.post.id, photo_ids=out, in_flight=None)
        return out

    async def _find_uploads(
        self,
        session: aiohttp.ClientSession,
        cred: Credential,
        client: Client,
        req: PublishRequest,
        since_s: int,
    ) -> dict[int, str]:
        """This post's photos on the account (photo index → id), recognised by their machine tags.

        Reads the account's uploads since ``since_s`` (``flickr.people.getPhotos``, which lists a
        new upload at once; search results can lag), page by page; raises a permanent error if
        there are more than it may read (an operator checks by hand).
        """
        found: dict[int, str] = {}
        for page in range(1, LOOKUP_PAGES + 1):
            data = await self._rest(
                session,
                cred,
                client,
                "flickr.people.getPhotos",
                "look up: recent uploads",
                user_id="me",
                min_upload_date=str(since_s - CLOCK_SKEW_S),
                extras="machine_tags,date_upload",
                per_page=str(LOOKUP_PER_PAGE),
                page=str(page),
            )
            photos = data.get("photos") or {}
            for p in photos.get("photo") or []:
                index = photo_index(str(p.get("machine_tags") or ""), req.post.id)
                if index is not None:
                    found.setdefault(index, str(p["id"]))
            if page >= int(photos.get("pages") or 1):
                return found
        raise lookup_exhausted(req.post.id, cred.target, f"{LOOKUP_PAGES * LOOKUP_PER_PAGE} newer uploads")

    async def lookup(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published | None:
        """After a crash or ambiguous timeout: complete when every photo is on the account.

        Looks on the account whatever the handles say (they are dropped just before the engine
        records a publication). Otherwise None, and ``publish`` uploads only what is missing.
        """
        cred, client = self._cred(req.account)
        if not req.media:
            return None
        saved = self.handles.get(cred.target, req.post.id)
        ids = await self._adopt(session, cred, client, req, list(saved.get("photo_ids") or []), saved)
        if len(ids) == len(req.media):
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
