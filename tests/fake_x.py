"""A local X API v2 server written to X's public documentation, for adapter and crash tests.

Written from the same pages as ground/platforms/x.py (docs.x.com: media-upload-chunked,
rate-limits, OAuth 2.0 authorization code; developer.x.com FINALIZE / STATUS references):

- OAuth 2.0: ``POST /2/oauth2/token`` (``grant_type=refresh_token``; HTTP Basic for a
  confidential client). Refresh tokens rotate: each works once. Access tokens expire after
  ``token_lifetime_s``; an expired or unknown token gets 401 with an RFC 7807 body.
- ``POST /2/media/upload`` ``command=INIT|APPEND|FINALIZE`` and ``GET …?command=STATUS``:
  segments must cover ``total_bytes`` exactly; images over 5 MB are refused at INIT;
  FINALIZE answers ``processing_info`` (pending) and STATUS moves pending → in_progress →
  succeeded over ``processing_polls`` polls (a media id cannot be posted before succeeded).
- ``POST /2/media/metadata`` alt text (≤ 1000 characters).
- ``POST /2/tweets``: 280 weighted characters, ≤ 4 media; an exact duplicate of a recent post
  is a 403 "duplicate content"; ``x-rate-limit-*`` on every answer and
  ``x-user-limit-24hour-*`` on post creation; 429 once the user's daily posts are spent.
- ``GET /2/users/me``, ``GET /2/users/:id/tweets`` (``start_time``; text rendered the way X
  renders it: URLs as t.co links, ``&``, ``<``, ``>`` HTML-escaped), ``DELETE /2/tweets/:id``.
- Faults: ``faults`` answers instead of acting, or (``after=True``) acts then answers 503 or
  drops the connection — the ambiguous case.

Standalone (``ground demo --with-fakes``, the crash test): ``python tests/fake_x.py`` prints
``{"url": ..., "grant": {...}}`` and serves ``GET /_fake/tweets``.
"""

from __future__ import annotations

import base64
import html
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fake_server import Fault, drop_connection, serve_main, take_fault  # noqa: E402

from protocol.rules import URL_RE, x_weighted_length  # noqa: E402

MAX_IMAGE_BYTES = 5 * 1024 * 1024


@dataclass
class FakeX:
    client_id: str = "client-1"
    client_secret: str = ""
    username: str = "alice"
    user_id: str = "2244994945"
    token_lifetime_s: float = 7200
    daily_posts: int = 100
    processing_polls: int = 2
    clock: Any = time.time
    access: dict[str, float] = field(default_factory=dict)  # token -> expires at (s)
    refresh: set[str] = field(default_factory=set)
    tweets: dict[str, dict[str, Any]] = field(default_factory=dict)
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    refreshes: int = 0
    # A reader's own bearer tokens (app-only): they may read a post (GET /2/tweets/:id), nothing else.
    readers: set[str] = field(default_factory=set)
    posts_today: list[float] = field(default_factory=list)
    _next: int = 1880000000000000000

    def grant(self) -> dict[str, Any]:
        """A fresh authorization-code grant (what an operator puts in --token-file)."""
        self._next += 1
        access, rt = f"at-{self._next}", f"rt-{self._next}"
        self.access[access] = self.clock() + self.token_lifetime_s
        self.refresh.add(rt)
        out = {
            "client_id": self.client_id,
            "access_token": access,
            "refresh_token": rt,
            "expires_in": int(self.token_lifetime_s),
            "token_type": "bearer",
            "scope": "tweet.read tweet.write users.read media.write offline.access",
        }
        if self.client_secret:
            out["client_secret"] = self.client_secret
        return out

    def new_id(self) -> str:
        self._next += 1
        return str(self._next)

    def fault_for(self, method: str, path: str) -> Fault | None:
        return take_fault(self.faults, method, path)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_post("/2/oauth2/token", self.token)
        app.router.add_post("/2/media/upload", self.upload)
        app.router.add_get("/2/media/upload", self.status)
        app.router.add_post("/2/media/metadata", self.metadata)
        app.router.add_post("/2/tweets", self.create)
        app.router.add_delete("/2/tweets/{id}", self.delete)
        app.router.add_get("/2/tweets/{id}", self.get_tweet)
        app.router.add_get("/2/users/me", self.me)
        app.router.add_get("/2/users/{id}/tweets", self.timeline)
        app.router.add_get("/oembed", self.oembed)  # publish.twitter.com's, here on the same address
        app.router.add_get("/_fake/tweets", self.dump)
        return app

    @staticmethod
    def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
        body = {"title": title, "detail": detail, "type": "about:blank", "status": status}
        return web.json_response(body, status=status, headers=headers)

    def _rate_headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": "900",
            "x-rate-limit-remaining": "899",
            "x-rate-limit-reset": str(int(self.clock()) + 900),
        }

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        fault = self.fault_for(request.method, request.path)
        if fault is not None and not fault.after:
            self.log.append((request.method, request.path, fault.status))
            return self.problem(fault.status, "Fault", "scripted", fault.headers)
        if request.path not in ("/2/oauth2/token", "/oembed") and not request.path.startswith("/_fake"):
            auth = request.headers.get("Authorization", "")
            token = auth.removeprefix("Bearer ")
            reading = request.method == "GET" and re.fullmatch(r"/2/tweets/\d+", request.path) is not None
            if not (reading and token in self.readers) and (
                not auth.startswith("Bearer ") or self.access.get(token, 0) <= self.clock()
            ):
                self.log.append((request.method, request.path, 401))
                return self.problem(401, "Unauthorized", "Unauthorized")
        resp = await handler(request)
        if fault is not None:
            self.log.append((request.method, request.path, fault.status))
            if fault.status == 0:
                drop_connection(request)  # acted, then the answer is lost
            return self.problem(fault.status, "Service Unavailable", "scripted after acting", fault.headers)
        resp.headers.update(self._rate_headers())
        self.log.append((request.method, request.path, resp.status))
        return resp

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self.client_secret:
            want = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
            if request.headers.get("Authorization") != f"Basic {want}":
                return web.json_response({"error": "unauthorized_client"}, status=401)
        elif form.get("client_id") != self.client_id:
            return web.json_response(
                {"error": "invalid_request", "error_description": "client_id"}, status=400
            )
        rt = str(form.get("refresh_token", ""))
        if form.get("grant_type") != "refresh_token" or rt not in self.refresh:
            body = {
                "error": "invalid_request",
                "error_description": "Value passed for the token was invalid.",
            }
            return web.json_response(body, status=400)
        self.refresh.discard(rt)  # rotation: the old refresh token is dead now
        self.refreshes += 1
        g = self.grant()
        return web.json_response({k: g[k] for k in ("access_token", "refresh_token", "expires_in", "scope")})

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        cmd = form.get("command")
        if cmd == "INIT":
            total = int(str(form.get("total_bytes", "0")))
            if str(form.get("media_type", "")).split("/")[0] != "image":
                return self.problem(400, "Invalid Request", "media_type must be an image")
            if total > MAX_IMAGE_BYTES:
                return self.problem(400, "Invalid Request", "File size exceeds 5242880 bytes.")
            mid = self.new_id()
            self.media[mid] = {"total": total, "segments": {}, "state": None, "polls": 0, "alt": None}
            return web.json_response(
                {"data": {"id": mid, "media_key": f"3_{mid}", "expires_after_secs": 86400}}, status=202
            )
        mid = str(form.get("media_id", ""))
        m = self.media.get(mid)
        if m is None:
            return self.problem(400, "Invalid Request", "unknown media_id")
        if cmd == "APPEND":
            part = form.get("media")
            data = part.file.read() if hasattr(part, "file") else bytes(str(part), "latin-1")
            m["segments"][int(str(form.get("segment_index")))] = data
            return web.Response(status=204)
        if cmd == "FINALIZE":
            data = b"".join(m["segments"][i] for i in sorted(m["segments"]))
            if len(data) != m["total"] or sorted(m["segments"]) != list(range(len(m["segments"]))):
                return self.problem(
                    400, "Invalid Request", "Segments do not add up to provided total file size."
                )
            m["data"] = data
            m["state"] = "pending" if self.processing_polls else "succeeded"
            body: dict[str, Any] = {
                "id": mid,
                "media_key": f"3_{mid}",
                "size": len(data),
                "expires_after_secs": 86400,
            }
            if self.processing_polls:
                body["processing_info"] = {"state": "pending", "check_after_secs": 1}
            return web.json_response({"data": body})
        return self.problem(400, "Invalid Request", f"unknown command {cmd!r}")

    async def status(self, request: web.Request) -> web.Response:
        mid = request.query.get("media_id", "")
        m = self.media.get(mid)
        if request.query.get("command") != "STATUS" or m is None or m["state"] is None:
            return self.problem(400, "Invalid Request", "unknown media_id")
        m["polls"] += 1
        m["state"] = "succeeded" if m["polls"] >= self.processing_polls else "in_progress"
        info = {
            "state": m["state"],
            "check_after_secs": 1,
            "progress_percent": 100 if m["state"] == "succeeded" else 50,
        }
        return web.json_response({"data": {"id": mid, "media_key": f"3_{mid}", "processing_info": info}})

    async def metadata(self, request: web.Request) -> web.Response:
        body = await request.json()
        m = self.media.get(str(body.get("id")))
        text = ((body.get("metadata") or {}).get("alt_text") or {}).get("text")
        if m is None or not isinstance(text, str) or len(text) > 1000:
            return self.problem(400, "Invalid Request", "alt_text must be at most 1000 characters")
        m["alt"] = text
        return web.json_response({"data": {"id": body["id"], "associated_metadata": True}})

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        text = body.get("text", "")
        ids = list((body.get("media") or {}).get("media_ids") or [])
        now = self.clock()
        self.posts_today = [t for t in self.posts_today if t > now - 86400]
        reset = str(int((self.posts_today[0] if self.posts_today else now) + 86400))
        daily = {
            "x-user-limit-24hour-limit": str(self.daily_posts),
            "x-user-limit-24hour-reset": reset,
        }
        if len(self.posts_today) >= self.daily_posts:
            daily["x-user-limit-24hour-remaining"] = "0"
            return self.problem(429, "Too Many Requests", "Too Many Requests", daily)
        if x_weighted_length(text) > 280:
            return self.problem(400, "Invalid Request", "The text is too long.")
        if len(ids) > 4 or any(self.media.get(i, {}).get("state") != "succeeded" for i in ids):
            return self.problem(400, "Invalid Request", "Your media IDs are invalid.")
        for t in self.tweets.values():
            if t["text"] == text and t["media_ids"] == ids and not t.get("deleted"):
                return self.problem(
                    403, "Forbidden", "You are not allowed to create a Tweet with duplicate content."
                )
        tid = self.new_id()
        self.tweets[tid] = {"id": tid, "text": text, "media_ids": ids, "created": now}
        self.posts_today.append(now)
        daily["x-user-limit-24hour-remaining"] = str(self.daily_posts - len(self.posts_today))
        return web.json_response({"data": {"id": tid, "text": text}}, status=201, headers=daily)

    async def delete(self, request: web.Request) -> web.Response:
        t = self.tweets.get(request.match_info["id"])
        if t is None or t.get("deleted"):
            return self.problem(404, "Not Found Error", "Could not find tweet")
        t["deleted"] = True
        return web.json_response({"data": {"deleted": True}})

    async def get_tweet(self, request: web.Request) -> web.Response:
        t = self.tweets.get(request.match_info["id"])
        if t is None or t.get("deleted"):
            return web.json_response(
                {"errors": [{"message": "Could not find tweet", "title": "Not Found Error"}]}, status=200
            )
        data: dict[str, Any] = {"id": t["id"], "text": self.rendered(t["text"])}
        if "attachments" in request.query.get("tweet.fields", "") and t["media_ids"]:
            data["attachments"] = {"media_keys": [f"3_{i}" for i in t["media_ids"]]}
        return web.json_response({"data": data})

    async def me(self, request: web.Request) -> web.Response:
        return web.json_response({"data": {"id": self.user_id, "name": "Alice", "username": self.username}})

    @staticmethod
    def rendered(text: str) -> str:
        """How X shows a post's text: each URL a t.co link, &, <, > escaped."""
        n = iter(range(10**6))
        linked = URL_RE.sub(lambda m: f"https://t.co/Ab{next(n)}Cd", text)
        return html.escape(linked, quote=False)

    async def oembed(self, request: web.Request) -> web.Response:
        """``GET https://publish.twitter.com/oembed?url=…`` (no authentication; GET statuses/oembed):
        the post as an embeddable ``<blockquote class="twitter-tweet">``: its text in ``<p>``, each
        link an ``<a>`` showing its t.co URL, line ends ``<br>``, each photo a ``pic.x.com`` link."""
        tid = request.query.get("url", "").rstrip("/").rsplit("/", 1)[-1]
        t = self.tweets.get(tid)
        if t is None or t.get("deleted"):
            return web.Response(status=404, text="")
        body = self.embed_html(t)
        return web.json_response(
            {
                "url": f"https://twitter.com/{self.username}/status/{tid}",
                "author_name": "Alice",
                "author_url": f"https://twitter.com/{self.username}",
                "html": body,
                "type": "rich",
                "version": "1.0",
                "provider_name": "Twitter",
                "provider_url": "https://twitter.com",
                "cache_age": "3153600000",
                "width": 550,
                "height": None,
            }
        )

    def embed_html(self, t: dict[str, Any]) -> str:
        """The oEmbed ``html`` of tweet ``t``."""
        shown = re.sub(
            r"https://t\.co/\w+",
            lambda m: f'<a href="{m.group(0)}">{m.group(0)}</a>',
            self.rendered(t["text"]),
        ).replace("\n", "<br>")
        pics = "".join(f' <a href="https://t.co/P{i}">pic.x.com/P{i}</a>' for i in t["media_ids"])
        when = datetime.fromtimestamp(t["created"], UTC).strftime("%B %d, %Y")
        return (
            f'<blockquote class="twitter-tweet"><p lang="en" dir="ltr">{shown}{pics}</p>&mdash; Alice '
            f'(@{self.username}) <a href="https://twitter.com/{self.username}/status/{t["id"]}?ref_src=twsrc%5Etfw">'
            f"{when}</a></blockquote>\n"
        )

    async def timeline(self, request: web.Request) -> web.Response:
        if request.match_info["id"] != self.user_id:
            return self.problem(404, "Not Found Error", "user")
        start = request.query.get("start_time")
        since = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp() if start else 0
        out = []
        for t in sorted(self.tweets.values(), key=lambda t: -t["created"]):
            if t.get("deleted") or t["created"] < since:
                continue
            tw: dict[str, Any] = {"id": t["id"], "text": self.rendered(t["text"])}
            if t["media_ids"]:
                tw["attachments"] = {"media_keys": [f"3_{i}" for i in t["media_ids"]]}
            out.append(tw)
        page = out[:100]
        meta: dict[str, Any] = {"result_count": len(page)}
        return web.json_response({"data": page, "meta": meta} if page else {"meta": meta})

    async def dump(self, request: web.Request) -> web.Response:
        return web.json_response([t for t in self.tweets.values() if not t.get("deleted")])


if __name__ == "__main__":
    fake = FakeX(processing_polls=1, daily_posts=100_000)
    serve_main(__doc__, fake, grant=fake.grant())
