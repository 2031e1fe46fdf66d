"""A local Graph API server for Instagram, Threads and Facebook Pages, written from Meta's docs.

The pages each adapter cites (ground/platforms/instagram.py, threads.py, facebook.py,
meta_graph.py) are what this models; one ``FakeMeta(kind=...)`` per platform:

- **auth**: ``Authorization: Bearer`` or ``access_token``; unknown token → 400 with Graph
  error code 190; expired → code 190 / subcode 463. ``GET /refresh_access_token``
  (``ig_refresh_token`` / ``th_refresh_token``) refuses a token younger than 24 h or expired,
  otherwise issues a new 60-day token (``expires_in``); the old one keeps its own expiry.
- **containers** (Instagram ``/media``, Threads ``/threads``): the fake *downloads*
  ``image_url`` over HTTP like Meta's crawler — Instagram while creating the container (a URL
  it cannot fetch: code 9004 / 2207052), Threads in the background — so the tests prove
  ground's public URL works (bytes and Content-Type are kept for comparison); it answers
  ``IN_PROGRESS`` for ``processing_polls`` status reads before ``FINISHED``; a failed
  download or a wrong type → ``ERROR``; 24 h unpublished → ``EXPIRED``; published →
  ``PUBLISHED``. Publishing an unfinished container: code 9007 / 2207027; a container twice:
  refused. Carousels: 2..10 (Threads 20) finished children marked ``is_carousel_item``.
- **quota**: ``content_publishing_limit`` / ``threads_publishing_limit`` over a 24-hour
  moving window; publishing past it → code 9 / subcode 2207042.
- **rate-limit headers**: ``X-App-Usage`` on every answer and ``X-Business-Use-Case-Usage``
  (Instagram, Pages) with ``estimated_time_to_regain_access``; past ``call_limit`` calls in
  an hour every call fails with code 4 (Threads) / 80002 (Instagram) / 80001 (Pages).
- **Facebook Pages**: ``/photos`` (multipart ``source``, ``published=false``), ``/feed``
  with ``message`` and ``attached_media[n]``, ``/posts`` with ``attachments``, ``DELETE``.
- **faults** scripted by tests: an error instead of the answer, or *after* doing the work
  (the ambiguous case), or a delay (a client timeout).

A clock offset (``advance(seconds)``) moves token ages, expiry and the quota window.
Run standalone for subprocess tests: ``python tests/fake_meta.py --kind instagram --token T``
prints ``{"url": ...}``; ``GET /_fake/posts`` lists what was published.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fake_server import serve_standalone  # noqa: E402

from protocol.rules import graphemes, threads_length  # noqa: E402

DAY_S = 86400.0
LONG_LIVED_S = 60 * DAY_S


@dataclass
class Token:
    user: str
    issued_s: float
    expires_s: float


@dataclass
class Fault:
    """Answer ``status``/``error`` to the next ``times`` requests whose path ends with ``path``."""

    method: str
    path: str
    status: int = 500
    error: dict[str, Any] = field(
        default_factory=lambda: {
            "message": "An unexpected error has occurred. Please retry your request later.",
            "type": "OAuthException",
            "is_transient": True,
            "code": 2,
        }
    )
    after: bool = False  # do the work, then answer the error
    delay_s: float = 0.0  # sleep first (longer than the client's timeout: an ambiguous timeout)
    times: int = 1
    then: Fault | None = None  # armed once this one fires (e.g. the read right after a publish)


@dataclass
class FakeMeta:
    kind: str = "instagram"  # instagram | threads | facebook
    tokens: dict[str, Token] = field(default_factory=dict)
    user_id: str = "17841400000000001"
    username: str = "alice"
    processing_polls: int = 2
    quota_total: int = 0  # 0: the platform's documented default
    call_limit: int = 100_000
    regain_minutes: int = 7
    max_items: int = 0
    base_url: str = "http://127.0.0.1"
    clock_offset_s: float = 0.0
    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    posts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Tokens a reader holds (orbitpost-verify --read-token): GET a post's fields, nothing else.
    readers: set[str] = field(default_factory=set)
    photos: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetches: list[tuple[str, int, str]] = field(default_factory=list)  # url, status, content type
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    _next: int = 1000
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        if not self.quota_total:
            self.quota_total = {"instagram": 50, "threads": 250}.get(self.kind, 10_000)
        if not self.max_items:
            self.max_items = 20 if self.kind == "threads" else 10
        if not self.tokens:
            self.tokens = {"token-alice": Token("alice", self.now(), self.now() + LONG_LIVED_S)}

    def now(self) -> float:
        return time.time() + self.clock_offset_s

    def advance(self, seconds: float) -> None:
        self.clock_offset_s += seconds

    def new_id(self) -> str:
        self._next += 1
        return str(17_900_000_000_000_000 + self._next)

    def _stamp(self, t: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(t))

    # --- app, middleware, errors ------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_get("/_fake/posts", self.dump)
        app.router.add_get("/refresh_access_token", self.refresh)
        app.router.add_route("*", "/{v:v[0-9.]+}/{node}", self.node)
        app.router.add_route("*", "/{v:v[0-9.]+}/{node}/{edge}", self.edge)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        for t in list(self._tasks):
            t.cancel()

    def _fault(self, method: str, path: str) -> Fault | None:
        for f in self.faults:
            if f.method == method and path.endswith(f.path) and f.times > 0:
                f.times -= 1
                if f.then is not None:
                    self.faults.append(f.then)
                return f
        return None

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/_fake/"):
            resp: web.StreamResponse = await handler(request)
            return resp
        fault = self._fault(request.method, request.path)
        if fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        now = self.now()
        self.calls = [t for t in self.calls if t > now - 3600] + [now]
        if len(self.calls) > self.call_limit:
            code = {"threads": 4, "instagram": 80002, "facebook": 80001}[self.kind]
            resp = self.error(400, "Application request limit reached", code, kind="OAuthException")
        elif fault is not None and not fault.after:
            resp = web.json_response({"error": fault.error}, status=fault.status)
        else:
            resp = await handler(request)
            if fault is not None:  # done, but the client hears an error
                resp = web.json_response({"error": fault.error}, status=fault.status)
        self._usage_headers(resp)
        self.log.append((request.method, request.path, resp.status))
        return resp

    def _usage_headers(self, resp: web.StreamResponse) -> None:
        pct = min(100, len(self.calls) * 100 // max(1, self.call_limit))
        usage = {"call_count": pct, "total_cputime": pct // 2, "total_time": pct // 2}
        resp.headers["X-App-Usage"] = json.dumps(usage)
        if self.kind in ("instagram", "facebook"):
            regain = self.regain_minutes if pct >= 100 else 0
            buc_type = "instagram" if self.kind == "instagram" else "pages"
            resp.headers["X-Business-Use-Case-Usage"] = json.dumps(
                {self.user_id: [{"type": buc_type, **usage, "estimated_time_to_regain_access": regain}]}
            )

    def error(
        self, status: int, message: str, code: int, subcode: int | None = None, kind: str = "OAuthException"
    ) -> web.Response:
        err: dict[str, Any] = {
            "message": message,
            "type": kind,
            "code": code,
            "fbtrace_id": secrets.token_urlsafe(8),
        }
        if subcode is not None:
            err["error_subcode"] = subcode
        return web.json_response({"error": err}, status=status)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.method == "POST":
            params.update(await request.post())
        return params

    def _user(self, request: web.Request, params: dict[str, Any]) -> str | web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else str(params.get("access_token") or "")
        t = self.tokens.get(token)
        if t is None:
            return self.error(400, "Invalid OAuth access token - Cannot parse access token", 190)
        if self.now() >= t.expires_s:
            return self.error(
                400,
                f"Error validating access token: Session has expired on {self._stamp(t.expires_s)}.",
                190,
                463,
            )
        return t.user

    # --- tokens --------------------------------------------------------------------------------

    async def refresh(self, request: web.Request) -> web.Response:
        grant = {"instagram": "ig_refresh_token", "threads": "th_refresh_token"}.get(self.kind)
        if grant is None or request.query.get("grant_type") != grant:
            return self.error(400, "Unsupported grant_type", 100, kind="IGApiException")
        tok = request.query.get("access_token", "")
        t = self.tokens.get(tok)
        if t is None or self.now() >= t.expires_s:
            return self.error(400, "Error validating access token: Session has expired", 190, 463)
        if self.now() - t.issued_s < DAY_S:
            return self.error(400, "The access token is too new to be refreshed (at least 24 hours old)", 100)
        new = "tok-" + secrets.token_urlsafe(16)
        self.tokens[new] = Token(t.user, self.now(), self.now() + LONG_LIVED_S)
        return web.json_response(
            {"access_token": new, "token_type": "bearer", "expires_in": int(LONG_LIVED_S)}
        )

    # --- routing -------------------------------------------------------------------------------

    async def node(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        auth = request.headers.get("Authorization", "")
        if (
            request.method == "GET"
            and auth[7:].strip() in self.readers
            and request.match_info["node"] in self.posts
        ):
            return self.post_fields(request.match_info["node"])  # a reader's token: read a post, nothing else
        user = self._user(request, params)
        if isinstance(user, web.Response):
            return user
        node = request.match_info["node"]
        if node == "me" and request.method == "GET":
            return self.me()
        if request.method == "GET" and node in self.containers:
            return self.container_status(node)
        if request.method == "GET" and node in self.posts:
            return self.post_fields(node)
        if request.method == "DELETE" and node in self.posts:
            if self.kind == "instagram":
                return self.error(400, "Unsupported delete request", 100, kind="GraphMethodException")
            del self.posts[node]
            return web.json_response({"success": True})
        return self.error(
            400 if request.method != "GET" else 404,
            f"Unsupported {request.method.lower()} request. Object with ID '{node}' does not exist",
            100,
            33,
            kind="GraphMethodException",
        )

    async def edge(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        user = self._user(request, params)
        if isinstance(user, web.Response):
            return user
        node, edge = request.match_info["node"], request.match_info["edge"]
        if node not in (self.user_id, "me"):
            return self.error(
                400, f"Object with ID '{node}' does not exist", 100, 33, kind="GraphMethodException"
            )
        routes = {
            ("POST", "media"): self.create_container,
            ("POST", "threads"): self.create_container,
            ("POST", "media_publish"): self.publish,
            ("POST", "threads_publish"): self.publish,
            ("GET", "content_publishing_limit"): self.quota,
            ("GET", "threads_publishing_limit"): self.quota,
            ("GET", "media"): self.list_posts,
            ("GET", "threads"): self.list_posts,
            ("POST", "photos"): self.fb_photo,
            ("POST", "feed"): self.fb_feed,
            ("GET", "posts"): self.fb_posts,
        }
        handler = routes.get((request.method, edge))
        ours = {
            "instagram": {"media", "media_publish", "content_publishing_limit"},
            "threads": {"threads", "threads_publish", "threads_publishing_limit"},
            "facebook": {"photos", "feed", "posts"},
        }[self.kind]
        if handler is None or edge not in ours:
            return self.error(400, f"Unknown path components: /{edge}", 2500)
        return await handler(params)

    def me(self) -> web.Response:
        if self.kind == "instagram":
            return web.json_response(
                {"id": "app-scoped-1", "user_id": self.user_id, "username": self.username}
            )
        if self.kind == "threads":
            return web.json_response({"id": self.user_id, "username": self.username})
        return web.json_response({"id": self.user_id, "name": "Alice in Orbit"})

    # --- containers (Instagram, Threads) -----------------------------------------------------------

    def _text_key(self) -> str:
        return "caption" if self.kind == "instagram" else "text"

    async def create_container(self, params: dict[str, Any]) -> web.Response:
        text = str(params.get(self._text_key()) or "")
        media_type = str(params.get("media_type") or ("IMAGE" if self.kind == "instagram" else ""))
        limit = 2200 if self.kind == "instagram" else 500
        # Threads: "Emojis are counted as the number of UTF-8 bytes" (Threads Posts, Limitations).
        if (graphemes(text) if self.kind == "instagram" else threads_length(text)) > limit:
            return self.error(
                400, f"The {self._text_key()} is too long (max {limit} characters)", 100, 2207010
            )
        c: dict[str, Any] = {
            "id": self.new_id(),
            "type": media_type,
            "text": text,
            "alt": str(params.get("alt_text") or ""),
            "carousel_item": str(params.get("is_carousel_item") or "").lower() == "true",
            "created_s": self.now(),
            "polls_left": self.processing_polls,
            "state": "IN_PROGRESS",
            "detail": "",
            "data": None,
            "content_type": None,
            "children": [],
        }
        if media_type == "TEXT" and self.kind == "threads":
            if not text:
                return self.error(400, "The parameter text is required for TEXT posts", 100)
            c["state"] = "READY"
        elif media_type == "CAROUSEL":
            kids = [k for k in str(params.get("children") or "").split(",") if k]
            if not 2 <= len(kids) <= self.max_items:
                return self.error(400, f"A carousel takes 2 to {self.max_items} children", 100, 2207028)
            for k in kids:
                child = self.containers.get(k)
                if child is None or not child["carousel_item"]:
                    return self.error(400, f"Child {k} is not a carousel item container", 100, 2207028)
                if self._status(child, poll=False) != "FINISHED":
                    return self.error(
                        400, "The media is not ready for publishing, please wait", 9007, 2207027
                    )
            c["children"] = kids
            c["state"] = "READY"
        elif media_type == "IMAGE":
            url = str(params.get("image_url") or "")
            if not url:
                return self.error(400, "The parameter image_url is required", 100)
            if self.kind == "instagram":
                # Instagram downloads the image while the container is created: a URL it cannot
                # fetch is refused at once (code 9004, subcode 2207052).
                await self._fetch(c, url)
                if c["state"] == "ERROR":
                    return self.error(
                        400, f"The media could not be fetched from this URI: {url}", 9004, 2207052
                    )
            else:
                task = asyncio.ensure_future(self._fetch(c, url))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        else:
            return self.error(400, f"Unsupported media_type {media_type!r}", 100)
        self.containers[c["id"]] = c
        return web.json_response({"id": c["id"]})

    async def _fetch(self, c: dict[str, Any], url: str) -> None:
        """Download the image like Meta's crawler: a public URL, an image type, whole bytes."""
        allowed = {"image/jpeg"} if self.kind == "instagram" else {"image/jpeg", "image/png"}
        try:
            async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=30)) as r:
                data = await r.read()
                ctype = r.headers.get("Content-Type", "").split(";")[0].strip()
                self.fetches.append((url, r.status, ctype))
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.fetches.append((url, 0, ""))
            c["state"], c["detail"] = (
                "ERROR",
                f"Media download has failed ({exc.__class__.__name__}). (2207052)",
            )
            return
        if r.status != 200:
            c["state"], c["detail"] = "ERROR", f"Media download has failed: HTTP {r.status}. (2207052)"
        elif ctype not in allowed:
            c["state"], c["detail"] = (
                "ERROR",
                f"Only photo or video can be accepted as media type ({ctype}). (2207026)",
            )
        else:
            c["data"], c["content_type"], c["state"] = data, ctype, "READY"

    def _status(self, c: dict[str, Any], *, poll: bool = True) -> str:
        """IN_PROGRESS while downloading and for ``processing_polls`` reads after; then FINISHED."""
        if c["state"] in ("ERROR", "PUBLISHED"):
            return str(c["state"])
        if self.now() - c["created_s"] > DAY_S:
            return "EXPIRED"
        if c["state"] == "IN_PROGRESS":
            return "IN_PROGRESS"
        if c["polls_left"] > 0:
            if poll:
                c["polls_left"] -= 1
            return "IN_PROGRESS"
        return "FINISHED"

    def container_status(self, cid: str) -> web.Response:
        c = self.containers[cid]
        status = self._status(c)
        if self.kind == "instagram":
            detail = c["detail"] or (
                "Finished: Media has been uploaded and it is ready to be published."
                if status == "FINISHED"
                else status.title()
            )
            return web.json_response({"id": cid, "status_code": status, "status": detail})
        out = {"id": cid, "status": status}
        if c["detail"]:
            out["error_message"] = c["detail"]
        return web.json_response(out)

    async def publish(self, params: dict[str, Any]) -> web.Response:
        cid = str(params.get("creation_id") or "")
        c = self.containers.get(cid)
        if c is None:
            return self.error(400, f"Media ID {cid!r} is not available", 9007, 2207006)
        if c["carousel_item"]:
            return self.error(400, "A carousel item cannot be published on its own", 100, 2207028)
        status = self._status(c, poll=False)
        if status == "PUBLISHED":
            return self.error(400, "This media has already been published", 100, 2207008)
        if status == "IN_PROGRESS":
            return self.error(
                400, "The media is not ready for publishing, please wait for a moment", 9007, 2207027
            )
        if status != "FINISHED":
            return self.error(400, f"The media container is {status}", 9007, 2207027)
        now = self.now()
        if sum(1 for p in self.posts.values() if p["created_s"] > now - DAY_S) >= self.quota_total:
            return self.error(
                400,
                "The maximum number of posts that can be published in 24 hours has been reached",
                9,
                2207042,
            )
        items = [self.containers[k] for k in c["children"]] or ([c] if c["data"] is not None else [])
        pid = self.new_id()
        self.posts[pid] = {
            "id": pid,
            "text": c["text"],
            "media": [i["data"] for i in items],
            "content_types": [i["content_type"] for i in items],
            "alts": [i["alt"] for i in items],
            "created_s": now,
            "container": cid,
        }
        c["state"] = "PUBLISHED"
        return web.json_response({"id": pid})

    async def quota(self, params: dict[str, Any]) -> web.Response:
        now = self.now()
        used = sum(1 for p in self.posts.values() if p["created_s"] > now - DAY_S)
        return web.json_response(
            {
                "data": [
                    {
                        "quota_usage": used,
                        "config": {"quota_total": self.quota_total, "quota_duration": 86400},
                    }
                ]
            }
        )

    def _permalink(self, pid: str) -> str:
        if self.kind == "instagram":
            return f"https://www.instagram.com/p/{pid[-8:]}/"
        if self.kind == "threads":
            return f"https://www.threads.net/@{self.username}/post/{pid[-8:]}"
        return f"https://www.facebook.com/{pid}"

    def post_fields(self, pid: str) -> web.Response:
        p = self.posts[pid]
        key = "permalink_url" if self.kind == "facebook" else "permalink"
        text_key = {"instagram": "caption", "threads": "text", "facebook": "message"}[self.kind]
        out = {"id": pid, key: self._permalink(pid), "timestamp": self._stamp(p["created_s"])}
        if p["text"]:
            out[text_key] = p["text"]
        return web.json_response(out)

    async def list_posts(self, params: dict[str, Any]) -> web.Response:
        limit = min(100, int(params.get("limit") or 25))
        newest = sorted(self.posts.values(), key=lambda p: (-p["created_s"], -int(p["id"])))[:limit]
        return web.json_response(
            {
                "data": [
                    {
                        "id": p["id"],
                        self._text_key(): p["text"],
                        "timestamp": self._stamp(p["created_s"]),
                        "permalink": self._permalink(p["id"]),
                    }
                    for p in newest
                ]
            }
        )

    # --- Facebook Pages ---------------------------------------------------------------------------

    async def fb_photo(self, params: dict[str, Any]) -> web.Response:
        src = params.get("source")
        if not isinstance(src, web.FileField):
            return self.error(400, "(#324) Requires upload file", 324)
        if src.content_type not in ("image/jpeg", "image/png", "image/gif", "image/bmp", "image/tiff"):
            return self.error(400, "(#324) Missing or invalid image file", 324)
        if str(params.get("published", "true")).lower() != "false":
            return self.error(400, "this fake only models unpublished photos", 100)
        pid = self.new_id()
        self.photos[pid] = {
            "data": src.file.read(),
            "content_type": src.content_type,
            "alt": str(params.get("alt_text_custom") or ""),
            "attached_to": None,
        }
        return web.json_response({"id": pid})

    async def fb_feed(self, params: dict[str, Any]) -> web.Response:
        message = str(params.get("message") or "")
        attached: list[str] = []
        i = 0
        while f"attached_media[{i}]" in params:
            try:
                attached.append(str(json.loads(str(params[f"attached_media[{i}]"]))["media_fbid"]))
            except (ValueError, KeyError, TypeError):
                return self.error(400, f'(#100) attached_media[{i}] must be {{"media_fbid": …}}', 100)
            i += 1
        if not message and not attached:
            return self.error(400, "(#100) Missing message or attachment", 100)
        for a in attached:
            ph = self.photos.get(a)
            if ph is None or ph["attached_to"] is not None:
                return self.error(400, f"(#100) Photo {a} cannot be attached", 100)
        pid = f"{self.user_id}_{self.new_id()}"
        for a in attached:
            self.photos[a]["attached_to"] = pid
        self.posts[pid] = {
            "id": pid,
            "text": message,
            "photo_ids": attached,
            "media": [self.photos[a]["data"] for a in attached],
            "content_types": [self.photos[a]["content_type"] for a in attached],
            "alts": [self.photos[a]["alt"] for a in attached],
            "created_s": self.now(),
        }
        return web.json_response({"id": pid})

    async def fb_posts(self, params: dict[str, Any]) -> web.Response:
        limit = min(100, int(params.get("limit") or 25))
        newest = sorted(self.posts.values(), key=lambda p: -p["created_s"])[:limit]
        out = []
        for p in newest:
            item: dict[str, Any] = {
                "id": p["id"],
                "created_time": self._stamp(p["created_s"]),
                "permalink_url": self._permalink(p["id"]),
            }
            if p["text"]:
                item["message"] = p["text"]
            ids = p["photo_ids"]
            if len(ids) == 1:
                item["attachments"] = {"data": [{"type": "photo", "target": {"id": ids[0]}}]}
            elif ids:
                item["attachments"] = {
                    "data": [
                        {
                            "type": "album",
                            "target": {"id": "album-" + p["id"]},
                            "subattachments": {"data": [{"type": "photo", "target": {"id": i}} for i in ids]},
                        }
                    ]
                }
            out.append(item)
        return web.json_response({"data": out})

    # --- test view ----------------------------------------------------------------------------------

    async def dump(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "posts": [
                    {
                        "id": p["id"],
                        "text": p["text"],
                        "media_sha256": [hashlib.sha256(m).hexdigest() for m in p["media"]],
                    }
                    for p in self.posts.values()
                ],
                "fetches": [list(f) for f in self.fetches[-20:]],
            }
        )


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeMeta(kind=args.kind, processing_polls=1, quota_total=args.quota)
    fake.tokens = {args.token: Token("alice", fake.now(), fake.now() + LONG_LIVED_S)}
    # "grant": what `ground account add --token-file` takes (Meta's long-lived token answer).
    grant: dict[str, Any] = {"access_token": args.token, "token_type": "bearer"}
    if args.kind != "facebook":  # Page tokens from a long-lived user token do not expire
        grant["expires_in"] = int(LONG_LIVED_S)
    await serve_standalone(fake, args.port, grant=grant)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--kind", choices=["instagram", "threads", "facebook"], default="instagram")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default="token-alice")
    p.add_argument(
        "--quota", type=int, default=0, help="posts per 24 h (0: the platform's documented default)"
    )
    asyncio.run(_serve(p.parse_args()))
