"""A local Flickr (upload + REST) written to Flickr's API documentation, verifying OAuth 1.0a.

From the same pages as ground/platforms/flickr.py (flickr.com/services/api: upload.api.html,
auth.oauth.html, flickr.photos.getSizes, flickr.people.getPhotos, flickr.photos.delete,
flickr.test.login). The OAuth 1.0a HMAC-SHA1 signature is checked here with our own reading
of RFC 5849 §3.4 (hashlib + hmac), *not* oauthlib — so the adapter's signing (oauthlib) is
checked by an independent implementation; a bad signature gets Flickr's error 96.

- ``POST /services/upload/`` multipart: ``photo`` unsigned, every other argument signed;
  answers ``<rsp stat="ok"><photoid>…</photoid></rsp>`` or ``<rsp stat="fail"><err …/></rsp>``.
  Flickr keeps the file: ``getSizes`` lists an ``Original`` whose ``source`` serves the exact
  bytes (``reencode=True`` makes it serve other bytes, to test the read-back).
- REST JSON (``format=json&nojsoncallback=1``): errors ``{"stat": "fail", "code", "message"}``;
  98 for a revoked token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_server import Fault, drop_connection, logged, play_fault, serve_main  # noqa: E402


def _enc(s: str) -> str:
    """RFC 5849 §3.6 percent-encoding: everything but ALPHA, DIGIT, '-', '.', '_', '~'."""
    return urllib.parse.quote(s, safe="-._~")


def hmac_sha1_signature(method: str, url: str, params: list[tuple[str, str]], cs: str, ts: str) -> str:
    """RFC 5849 §3.4.1-3.4.2, written out: base string, then HMAC-SHA1 with key cs&ts."""
    pairs = sorted((_enc(k), _enc(v)) for k, v in params if k != "oauth_signature")
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    parts = urllib.parse.urlsplit(url)
    base_uri = f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path}"
    base = "&".join([method.upper(), _enc(base_uri), _enc(normalized)])
    digest = hmac.new(f"{_enc(cs)}&{_enc(ts)}".encode(), base.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _text_error(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text)


PUBLIC_METHODS = {"flickr.photos.getInfo", "flickr.photos.getSizes"}


def _strip_html(text: str, strip: bool) -> str:
    return re.sub(r"<[^>]*>", "", text) if strip else text


def _is_machine_tag(tag: str) -> bool:
    """namespace:predicate=value, each part non-empty."""
    ns, _, rest = tag.partition(":")
    pred, _, value = rest.partition("=")
    return bool(ns and pred and value)


@dataclass
class FakeFlickr:
    consumer_key: str = "flickr-key"
    consumer_secret: str = "flickr-secret"
    tokens: dict[str, str] = field(default_factory=lambda: {"tok-alice": "tsec-alice"})
    nsid: str = "12345678@N00"
    username: str = "alice_in_orbit"
    reencode: bool = False
    # Flickr's description "may contain some limited HTML" (upload.api.html): True makes the fake
    # drop anything that looks like a tag, to test that we notice and still find our uploads.
    strip_html: bool = False
    base_url: str = "http://127.0.0.1"
    photos: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    # The Nth upload (1-based) is stored, then its answer fails with this status (0: dropped).
    lost_answers: dict[int, int] = field(default_factory=dict)
    uploads: int = 0
    # API keys of readers: the public read methods (getInfo, getSizes: "This method does not
    # require authentication") answer with ``api_key`` alone.
    api_keys: set[str] = field(default_factory=set)
    _n: int = 53000000000

    def secret(self) -> dict[str, str]:
        """What an operator puts in --secret-file."""
        tok, tsec = next(iter(self.tokens.items()))
        return {
            "consumer_key": self.consumer_key,
            "consumer_secret": self.consumer_secret,
            "oauth_token": tok,
            "oauth_token_secret": tsec,
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=256 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_post("/services/upload/", self.upload)
        app.router.add_route("*", "/services/rest/", self.rest)
        app.router.add_get("/originals/{id}", self.original)
        app.router.add_get("/_fake/photos", self.dump)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        faulted = await play_fault(self.faults, self.log, request, handler, _text_error)
        if faulted is not None:
            return faulted
        return await logged(self.log, request, handler)

    def _check_oauth(self, request: web.Request, signed: list[tuple[str, str]]) -> int | None:
        """None if the OAuth 1.0a header is valid for these arguments, else Flickr's error code."""
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("OAuth "):
            return 97  # Missing signature
        oauth = {}
        for item in auth[len("OAuth ") :].split(","):
            k, _, v = item.strip().partition("=")
            oauth[urllib.parse.unquote(k)] = urllib.parse.unquote(v.strip('"'))
        if (
            oauth.get("oauth_consumer_key") != self.consumer_key
            or oauth.get("oauth_signature_method") != "HMAC-SHA1"
        ):
            return 100  # Invalid API Key
        tsec = self.tokens.get(oauth.get("oauth_token", ""))
        if tsec is None:
            return 98  # Invalid auth token
        nonce = oauth.get("oauth_nonce", "") + oauth.get("oauth_timestamp", "")
        if not nonce or nonce in self.nonces:
            return 96
        params = signed + [
            (k, v) for k, v in oauth.items() if k.startswith("oauth_") and k != "oauth_signature"
        ]
        url = f"{self.base_url}{request.path}"
        want = hmac_sha1_signature(request.method, url, params, self.consumer_secret, tsec)
        if not hmac.compare_digest(want, oauth.get("oauth_signature", "")):
            return 96  # Invalid signature
        self.nonces.add(nonce)
        return None

    @staticmethod
    def fail(code: int, message: str) -> web.Response:
        return web.json_response({"stat": "fail", "code": code, "message": message})

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        photo = form.get("photo")
        args = [(k, str(v)) for k, v in form.items() if k != "photo"]
        code = self._check_oauth(request, args)
        if code is not None:
            xml = f'<?xml version="1.0" encoding="utf-8" ?>\n<rsp stat="fail"><err code="{code}" msg="auth" /></rsp>'
            return web.Response(text=xml, content_type="text/xml")
        if photo is None or not hasattr(photo, "file"):
            return web.Response(
                text='<rsp stat="fail"><err code="2" msg="No photo specified" /></rsp>',
                content_type="text/xml",
            )
        data = photo.file.read()
        self._n += 1
        pid = str(self._n)
        self.photos[pid] = {
            "id": pid,
            "data": data,
            "title": str(form.get("title", "")),
            "description": _strip_html(str(form.get("description", "")), self.strip_html),
            # upload.api.html: "A space-seperated list of tags"; Flickr lists each in its clean form.
            "tags": [t.lower() for t in str(form.get("tags", "")).split()],
            "uploaded": int(time.time()),
        }
        self.uploads += 1
        lost = self.lost_answers.pop(self.uploads, None)
        if lost == 0:
            drop_connection(request)
        if lost is not None:
            return web.Response(status=lost, text="Bad Gateway")
        return web.Response(
            text=f'<?xml version="1.0" encoding="utf-8" ?>\n<rsp stat="ok">\n<photoid>{pid}</photoid>\n</rsp>',
            content_type="text/xml",
        )

    async def rest(self, request: web.Request) -> web.Response:
        args = list(request.query.items())
        if request.method == "POST":
            args += [(k, str(v)) for k, v in (await request.post()).items()]
        public = dict(args).get("method") in PUBLIC_METHODS and "Authorization" not in request.headers
        if public and dict(args).get("api_key") not in self.api_keys:
            return self.fail(100, "Invalid API Key (Key not found)")
        code = None if public else self._check_oauth(request, args)
        if code is not None:
            return self.fail(
                code,
                {96: "Invalid signature", 97: "Missing signature", 98: "Invalid auth token"}.get(
                    code, "Invalid API Key"
                ),
            )
        a = dict(args)
        method = a.get("method")
        if method == "flickr.test.login":
            return web.json_response(
                {"user": {"id": self.nsid, "username": {"_content": self.username}}, "stat": "ok"}
            )
        if method == "flickr.photos.getSizes":
            p = self.photos.get(a.get("photo_id", ""))
            if p is None:
                return self.fail(1, "Photo not found")
            sizes = [
                {
                    "label": "Medium",
                    "width": 500,
                    "height": 375,
                    "source": f"{self.base_url}/originals/{p['id']}?s=m",
                    "media": "photo",
                },
                {
                    "label": "Original",
                    "width": 1024,
                    "height": 768,
                    "source": f"{self.base_url}/originals/{p['id']}",
                    "media": "photo",
                },
            ]
            return web.json_response(
                {"sizes": {"canblog": 1, "canprint": 1, "candownload": 1, "size": sizes}, "stat": "ok"}
            )
        if method == "flickr.people.getPhotos":
            return self._get_photos(a)
        if method == "flickr.photos.getInfo":
            p = self.photos.get(a.get("photo_id", ""))
            if p is None:
                return self.fail(1, "Photo not found")
            return web.json_response({"photo": self._info(p), "stat": "ok"})
        if method == "flickr.photos.delete":
            if request.method != "POST":
                return self.fail(99, "Insufficient permissions: delete requires POST")
            if self.photos.pop(a.get("photo_id", ""), None) is None:
                return self.fail(1, "Photo not found")
            return web.json_response({"stat": "ok"})
        return self.fail(112, f'Method "{method}" not found')

    def _get_photos(self, a: dict[str, str]) -> web.Response:
        """flickr.people.getPhotos: newest first, ``min_upload_date``, pages of ``per_page`` (max 500),
        only the ``extras`` asked for (description, date_upload, tags, machine_tags)."""
        since = int(a.get("min_upload_date", "0"))
        per = min(500, int(a.get("per_page", "100")))
        page = max(1, int(a.get("page", "1")))
        extras = set(a.get("extras", "").split(","))
        match = [
            p
            for p in sorted(self.photos.values(), key=lambda p: (-p["uploaded"], -int(p["id"])))
            if p["uploaded"] >= since
        ]
        rows = []
        for p in match[(page - 1) * per : page * per]:
            row: dict[str, Any] = {"id": p["id"], "owner": self.nsid, "title": p["title"], "ispublic": 1}
            if "description" in extras:
                row["description"] = {"_content": p["description"]}
            if "date_upload" in extras:
                row["dateupload"] = str(p["uploaded"])
            if "tags" in extras:
                row["tags"] = " ".join(t for t in p["tags"] if not _is_machine_tag(t))
            if "machine_tags" in extras:
                row["machine_tags"] = " ".join(t for t in p["tags"] if _is_machine_tag(t))
            rows.append(row)
        pages = max(1, -(-len(match) // per))
        return web.json_response(
            {
                "photos": {"page": page, "pages": pages, "perpage": per, "total": len(match), "photo": rows},
                "stat": "ok",
            }
        )

    def _info(self, p: dict[str, Any]) -> dict[str, Any]:
        """flickr.photos.getInfo's ``photo`` (the fields a reader or the adapter uses)."""
        return {
            "id": p["id"],
            "owner": {"nsid": self.nsid, "username": self.username},
            "title": {"_content": p["title"]},
            "description": {"_content": p["description"]},
            "visibility": {"ispublic": 1, "isfriend": 0, "isfamily": 0},
            "dates": {"posted": str(p["uploaded"])},
            "tags": {
                "tag": [
                    {"id": f"{p['id']}-{i}", "raw": t, "_content": t, "machine_tag": int(_is_machine_tag(t))}
                    for i, t in enumerate(p["tags"])
                ]
            },
            "urls": {
                "url": [
                    {"type": "photopage", "_content": f"https://www.flickr.com/photos/{self.nsid}/{p['id']}/"}
                ]
            },
            "media": "photo",
        }

    async def original(self, request: web.Request) -> web.Response:
        p = self.photos.get(request.match_info["id"])
        if p is None:
            return web.Response(status=404)
        data = (
            p["data"]
            if not self.reencode and "s" not in request.query
            else hashlib.sha256(p["data"]).digest()
        )
        return web.Response(body=data, content_type="image/jpeg")

    async def dump(self, request: web.Request) -> web.Response:
        return web.json_response([{k: v for k, v in p.items() if k != "data"} for p in self.photos.values()])


if __name__ == "__main__":
    fake = FakeFlickr()
    serve_main(__doc__, fake, secret=fake.secret())
