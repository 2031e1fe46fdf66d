"""A local LinkedIn REST API (Posts + Images) written to LinkedIn's public documentation.

From the same pages as ground/platforms/linkedin.py (learn.microsoft.com …/shares/posts-api,
images-api, little-text-format; shared/authentication/programmatic-refresh-tokens):

- ``POST /oauth/v2/accessToken`` refresh grant (client id and secret in the form);
  ``expires_in`` and ``refresh_token_expires_in``; expired access tokens get 401
  ``{"status": 401, "serviceErrorCode": 65601, "code": "REVOKED_ACCESS_TOKEN", "message": …}``.
- Every /rest call requires ``LinkedIn-Version`` (426 without it, as LinkedIn answers an
  unversioned call) and ``X-Restli-Protocol-Version: 2.0.0``.
- ``POST /rest/images?action=initializeUpload`` → ``uploadUrl`` + image URN; ``PUT`` the bytes
  (``WAITING_UPLOAD`` → ``PROCESSING`` → ``AVAILABLE`` after ``processing_polls`` GETs).
- ``POST /rest/posts``: commentary ≤ 3,000 characters *after* little-text parsing; an
  unescaped reserved character cuts the published text there (what LinkedIn does, silently);
  images must be AVAILABLE; 201 with ``x-restli-id``. ``GET /rest/posts?q=author`` newest first;
  ``DELETE /rest/posts/{urn}``; ``GET /v2/userinfo``.
- 429 once the member's ``daily_posts`` are spent; scripted faults, also after acting.
"""

from __future__ import annotations

import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_server import Fault, logged, play_fault, serve_main  # noqa: E402

_RESERVED = set("\\|{}@[]()<>#*_~")


def parse_little(text: str) -> str:
    """What LinkedIn shows for little-format ``text``: escapes undone, cut at the first unescaped reserved char."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in _RESERVED:
            out.append(text[i + 1])
            i += 2
            continue
        if ch in _RESERVED:
            break  # LinkedIn truncates silently at an unescaped reserved character
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass
class FakeLinkedIn:
    client_id: str = "li-client"
    client_secret: str = "li-secret"
    sub: str = "abc123"
    token_lifetime_s: float = 60 * 86400
    refresh_lifetime_s: float = 365 * 86400
    daily_posts: int = 150
    processing_polls: int = 1
    clock: Any = time.time
    base_url: str = "http://127.0.0.1"
    access: dict[str, float] = field(default_factory=dict)
    refresh: dict[str, float] = field(default_factory=dict)
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    refreshes: int = 0
    _n: int = 7000000000000000000

    def _id(self) -> str:
        self._n += 1
        return str(self._n)

    def grant(self) -> dict[str, Any]:
        access, rt = f"AQ{self._id()}", f"AQR{self._id()}"
        self.access[access] = self.clock() + self.token_lifetime_s
        self.refresh[rt] = self.clock() + self.refresh_lifetime_s
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "access_token": access,
            "expires_in": int(self.token_lifetime_s),
            "refresh_token": rt,
            "refresh_token_expires_in": int(self.refresh_lifetime_s),
            "scope": "openid profile w_member_social",
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_post("/oauth/v2/accessToken", self.token)
        app.router.add_get("/v2/userinfo", self.userinfo)
        app.router.add_post("/rest/images", self.init_upload)
        app.router.add_put("/dms-uploads/{id}", self.put_bytes)
        app.router.add_get("/rest/images/{urn}", self.get_image)
        app.router.add_post("/rest/posts", self.create)
        app.router.add_get("/rest/posts", self.by_author)
        app.router.add_delete("/rest/posts/{urn}", self.delete)
        app.router.add_get("/rest/posts/{urn}", self.get_post)
        app.router.add_get("/_fake/posts", self.dump)
        return app

    @staticmethod
    def error(status: int, message: str, code: str = "") -> web.Response:
        body = {"status": status, "message": message, **({"code": code} if code else {})}
        return web.json_response(body, status=status)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        faulted = await play_fault(self.faults, self.log, request, handler, self.error)
        if faulted is not None:
            return faulted
        if request.path != "/oauth/v2/accessToken" and not request.path.startswith("/_fake"):
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if self.access.get(token, 0) <= self.clock():
                self.log.append((request.method, request.path, 401))
                return web.json_response(
                    {
                        "status": 401,
                        "serviceErrorCode": 65601,
                        "code": "REVOKED_ACCESS_TOKEN",
                        "message": "The token used in the request has been revoked by the user",
                    },
                    status=401,
                )
            if request.path.startswith("/rest/") and not request.headers.get("LinkedIn-Version"):
                return self.error(
                    426,
                    "A version must be present. Please specify a version by adding the LinkedIn-Version header.",
                )
        return await logged(self.log, request, handler)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return web.json_response({"error": "invalid_client"}, status=401)
        rt = str(form.get("refresh_token", ""))
        if form.get("grant_type") != "refresh_token" or self.refresh.get(rt, 0) <= self.clock():
            return web.json_response(
                {
                    "error": "invalid_grant",
                    "error_description": "The provided authorization grant or refresh token is invalid, expired or revoked",
                },
                status=400,
            )
        self.refreshes += 1
        g = self.grant()
        del self.refresh[g["refresh_token"]]  # LinkedIn keeps the refresh token (no rotation)
        return web.json_response(
            {
                "access_token": g["access_token"],
                "expires_in": g["expires_in"],
                "refresh_token": rt,
                "refresh_token_expires_in": int(self.refresh[rt] - self.clock()),
            }
        )

    async def userinfo(self, request: web.Request) -> web.Response:
        return web.json_response({"sub": self.sub, "name": "Alice", "email_verified": True})

    async def init_upload(self, request: web.Request) -> web.Response:
        if request.query.get("action") != "initializeUpload":
            return self.error(400, "unknown action")
        body = await request.json()
        owner = ((body.get("initializeUploadRequest") or {}).get("owner")) or ""
        if owner != f"urn:li:person:{self.sub}":
            return self.error(403, "Not enough permissions to access: owner")
        iid = self._id()
        urn = f"urn:li:image:C4E{iid}"
        self.images[urn] = {"status": "WAITING_UPLOAD", "data": None, "polls": 0}
        return web.json_response(
            {
                "value": {
                    "uploadUrlExpiresAt": int((self.clock() + 3600) * 1000),
                    "uploadUrl": f"{self.base_url}/dms-uploads/{iid}",
                    "image": urn,
                }
            }
        )

    async def put_bytes(self, request: web.Request) -> web.Response:
        urn = f"urn:li:image:C4E{request.match_info['id']}"
        img = self.images.get(urn)
        if img is None:
            return self.error(404, "no such upload")
        img["data"] = await request.read()
        img["status"] = "PROCESSING"
        return web.Response(status=201)

    async def get_image(self, request: web.Request) -> web.Response:
        urn = urllib.parse.unquote(request.match_info["urn"])
        img = self.images.get(urn)
        if img is None:
            return self.error(404, "Not Found")
        if img["status"] == "PROCESSING":
            img["polls"] += 1
            if img["polls"] >= self.processing_polls:
                img["status"] = "AVAILABLE"
        return web.json_response({"id": urn, "status": img["status"], "owner": f"urn:li:person:{self.sub}"})

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        today = [p for p in self.posts.values() if p["created"] > self.clock() - 86400]
        if len(today) >= self.daily_posts:
            return self.error(429, "Resource level throttle DAY limit for calls to this resource is reached.")
        shown = parse_little(str(body.get("commentary", "")))
        if len(shown) > 3000:
            return self.error(422, "/commentary :: length exceeds 3000")
        content = body.get("content") or {}
        images = (
            [content["media"]]
            if "media" in content
            else list((content.get("multiImage") or {}).get("images") or [])
        )
        if any(self.images.get(i.get("id"), {}).get("status") != "AVAILABLE" for i in images):
            return self.error(422, "image is not AVAILABLE")
        urn = f"urn:li:share:{self._id()}"
        self.posts[urn] = {
            "id": urn,
            "author": body.get("author"),
            "commentary": body.get("commentary"),
            "shown": shown,
            "content": content,
            "images": [i["id"] for i in images],
            "alts": [i.get("altText") for i in images],
            "created": self.clock(),
        }
        return web.Response(status=201, headers={"x-restli-id": urn})

    async def by_author(self, request: web.Request) -> web.Response:
        if request.query.get("q") != "author":
            return self.error(400, "q=author required")
        author = request.query.get("author")
        count, start = int(request.query.get("count", "10")), int(request.query.get("start", "0"))
        mine = sorted(
            (p for p in self.posts.values() if p["author"] == author and not p.get("deleted")),
            key=lambda p: -p["created"],
        )
        els = mine[start : start + count]  # Rest.li paging: start, count; paging.total
        return web.json_response(
            {
                "elements": [
                    {
                        "id": p["id"],
                        "author": p["author"],
                        "commentary": p["commentary"],
                        "content": p["content"],
                        "createdAt": int(p["created"] * 1000),
                        "lifecycleState": "PUBLISHED",
                    }
                    for p in els
                ],
                "paging": {"start": start, "count": count, "total": len(mine)},
            }
        )

    async def get_post(self, request: web.Request) -> web.Response:
        p = self.posts.get(urllib.parse.unquote(request.match_info["urn"]))
        if p is None or p.get("deleted"):
            return self.error(404, "Not Found")
        return web.json_response(
            {
                "id": p["id"],
                "author": p["author"],
                "commentary": p["commentary"],
                "content": p["content"],
                "lifecycleState": "PUBLISHED",
            }
        )

    async def delete(self, request: web.Request) -> web.Response:
        p = self.posts.get(urllib.parse.unquote(request.match_info["urn"]))
        if p is None or p.get("deleted"):
            return self.error(404, "Not Found")
        p["deleted"] = True
        return web.Response(status=204)

    async def dump(self, request: web.Request) -> web.Response:
        return web.json_response(
            [
                {k: v for k, v in p.items() if k != "content"}
                for p in self.posts.values()
                if not p.get("deleted")
            ]
        )


if __name__ == "__main__":
    fake = FakeLinkedIn()
    serve_main(__doc__, fake, grant=fake.grant())
