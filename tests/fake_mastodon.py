"""A local Mastodon-API server written to the documented API, for adapter and crash tests.

What it models (docs.joinmastodon.org/methods/media, /statuses, /instance):
- ``POST /api/v2/media``: 202 with ``url: null`` while "processing"; ``GET /api/v1/media/:id``
  answers 206 until ready, then 200. Attaching unprocessed media to a status is a 422.
- ``POST /api/v1/statuses``: ``Idempotency-Key`` per account remembered for an hour: the
  same key returns the first status again instead of creating another.
- ``GET /api/v2/instance``: ``configuration.statuses`` / ``media_attachments`` limits.
- ``DELETE /api/v1/statuses/:id``; bearer tokens; 422 for over-limit text.
- Faults scripted by tests: an answer to send instead (429 + Retry-After, 503), or a 502
  *after* the status was created (the ambiguous case), and random latency.

Run standalone for subprocess tests: ``python tests/fake_mastodon.py --token T`` prints
``{"url": ...}`` and serves ``GET /_fake/statuses`` with everything created so far.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from fake_server import Fault, serve_standalone, take_fault  # noqa: E402

from protocol.rules import mastodon_length  # noqa: E402

_URL = re.compile(r"https?://[^\s<>\"]+[^\s<>\".,;:!?)\]}'*]")


def _link(url: str) -> str:
    """A link as Mastodon's TextFormatter writes it: scheme hidden, the rest cut at 30 characters."""
    scheme, _, rest = url.partition("://")
    shown, hidden = rest[:30], rest[30:]
    return (
        f'<a href="{html.escape(url)}" target="_blank" rel="nofollow noopener" translate="no">'
        f'<span class="invisible">{html.escape(scheme)}://</span>'
        f'<span class="{"ellipsis" if hidden else ""}">{html.escape(shown)}</span>'
        f'<span class="invisible">{html.escape(hidden)}</span></a>'
    )


def render_html(text: str) -> str:
    """Mastodon's HTML ``content`` for a status (app/lib/text_formatter.rb + Rails simple_format):
    the text stripped, escaped, links wrapped, CR LF as LF, ``<p>`` per paragraph, ``<br />``."""
    text = text.strip().replace("\r\n", "\n").replace("\r", "\n")
    pos, parts = 0, []
    for m in _URL.finditer(text):
        parts += [html.escape(text[pos : m.start()], quote=False), _link(m.group(0))]
        pos = m.end()
    escaped = "".join([*parts, html.escape(text[pos:], quote=False)])
    paragraphs = re.split(r"\n\n+", escaped)
    return "".join(f"<p>{p.replace(chr(10), '<br />')}</p>" for p in paragraphs)


@dataclass
class FakeMastodon:
    tokens: dict[str, str] = field(default_factory=lambda: {"token-alice": "alice"})
    max_characters: int = 500
    max_media: int = 4
    image_size_limit: int = 16 * 1024 * 1024
    processing_polls: int = 2  # 206 answers before a media item is ready
    latency_s: tuple[float, float] = (0.0, 0.0)
    base_url: str = "http://127.0.0.1"
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], tuple[float, str]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    _next_id: int = 100

    def new_id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def fault_for(self, method: str, path: str) -> Fault | None:
        return take_fault(self.faults, method, path)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[self._middleware])
        app.router.add_get("/api/v2/instance", self.instance)
        app.router.add_post("/api/v2/media", self.upload)
        app.router.add_get("/api/v1/media/{id}", self.get_media)
        app.router.add_post("/api/v1/statuses", self.create_status)
        app.router.add_get("/api/v1/statuses/{id}", self.get_status)
        app.router.add_get("/api/v1/statuses/{id}/source", self.status_source)
        app.router.add_get("/api/v1/accounts/verify_credentials", self.verify_credentials)
        app.router.add_get("/api/v1/accounts/{id}/statuses", self.account_statuses)
        app.router.add_delete("/api/v1/statuses/{id}", self.delete_status)
        app.router.add_get("/_fake/statuses", self.dump)
        app.router.add_get("/_fake/media/{id}", self.media_bytes)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        lo, hi = self.latency_s
        if hi > 0:
            await asyncio.sleep(random.uniform(lo, hi))
        fault = self.fault_for(request.method, request.path)
        if fault is not None and not fault.after:
            resp: web.StreamResponse = web.json_response(
                {"error": f"scripted HTTP {fault.status}"}, status=fault.status, headers=fault.headers
            )
        else:
            resp = await handler(request)
            if fault is not None:  # the work is done, but the client hears an error
                resp = web.json_response({"error": "Bad gateway"}, status=fault.status, headers=fault.headers)
        self.log.append((request.method, request.path, resp.status))
        return resp

    def _account(self, request: web.Request) -> str:
        auth = request.headers.get("Authorization", "")
        user = self.tokens.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None
        if user is None:
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "The access token is invalid"}), content_type="application/json"
            )
        return user

    async def instance(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "domain": "fake.example",
                "configuration": {
                    "statuses": {
                        "max_characters": self.max_characters,
                        "max_media_attachments": self.max_media,
                        "characters_reserved_per_url": 23,
                    },
                    "media_attachments": {
                        "supported_mime_types": [
                            "image/jpeg",
                            "image/png",
                            "image/gif",
                            "image/webp",
                            "video/mp4",
                        ],
                        "image_size_limit": self.image_size_limit,
                        "description_limit": 1500,
                    },
                },
            }
        )

    async def upload(self, request: web.Request) -> web.Response:
        user = self._account(request)
        form = await request.post()
        file = form.get("file")
        if not isinstance(file, web.FileField):
            return web.json_response({"error": "Validation failed: File can't be blank"}, status=422)
        data = file.file.read()
        if len(data) > self.image_size_limit:
            return web.json_response(
                {"error": "Validation failed: File file size must be less than"}, status=422
            )
        media_id = self.new_id()
        self.media[media_id] = {
            "id": media_id,
            "owner": user,
            "data": data,
            "content_type": file.content_type,
            "description": str(form.get("description", "")) or None,
            "polls_left": self.processing_polls,
        }
        if self.processing_polls > 0:
            return web.json_response(self._media_json(media_id, ready=False), status=202)
        return web.json_response(self._media_json(media_id, ready=True))

    def _media_json(self, media_id: str, *, ready: bool) -> dict[str, Any]:
        m = self.media[media_id]
        return {
            "id": media_id,
            "type": "image",
            "url": f"{self.base_url}/media/{media_id}" if ready else None,
            "description": m["description"],
        }

    async def get_media(self, request: web.Request) -> web.Response:
        self._account(request)
        m = self.media.get(request.match_info["id"])
        if m is None:
            return web.json_response({"error": "Record not found"}, status=404)
        if m["polls_left"] > 0:
            m["polls_left"] -= 1
            return web.json_response(self._media_json(m["id"], ready=False), status=206)
        return web.json_response(self._media_json(m["id"], ready=True))

    async def create_status(self, request: web.Request) -> web.Response:
        user = self._account(request)
        key = request.headers.get("Idempotency-Key")
        if key:
            seen = self.idempotency.get((user, key))
            if seen and time.monotonic() - seen[0] < 3600 and seen[1] in self.statuses:
                return web.json_response(self._status_json(seen[1]))
        body = (
            await request.json() if request.content_type == "application/json" else dict(await request.post())
        )
        text = str(body.get("status") or "")
        media_ids = [str(m) for m in body.get("media_ids") or []]
        if not text and not media_ids:
            return web.json_response({"error": "Validation failed: Text can't be blank"}, status=422)
        if mastodon_length(text) > self.max_characters:
            return web.json_response(
                {"error": f"Validation failed: Text character limit of {self.max_characters} exceeded"},
                status=422,
            )
        if len(media_ids) > self.max_media:
            return web.json_response({"error": "Validation failed: too many attachments"}, status=422)
        for mid in media_ids:
            m = self.media.get(mid)
            if m is None or m["owner"] != user:
                return web.json_response({"error": "Record not found"}, status=404)
            if m["polls_left"] > 0:
                return web.json_response(
                    {
                        "error": "Cannot attach files that have not finished processing. Try again in a moment!"
                    },
                    status=422,
                )
        sid = self.new_id()
        self.statuses[sid] = {
            "id": sid,
            "account": user,
            "text": text,
            "media_ids": media_ids,
            "key": key,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        if key:
            self.idempotency[(user, key)] = (time.monotonic(), sid)
        return web.json_response(self._status_json(sid))

    def _status_json(self, sid: str) -> dict[str, Any]:
        s = self.statuses[sid]
        return {
            "id": sid,
            "uri": f"{self.base_url}/users/{s['account']}/statuses/{sid}",
            "url": f"{self.base_url}/@{s['account']}/{sid}",
            "content": render_html(s["text"]),  # rendered HTML: not the text as sent
            "created_at": s["created_at"],
            "media_attachments": [self._media_json(m, ready=True) for m in s["media_ids"]],
        }

    async def get_status(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if sid not in self.statuses:
            return web.json_response({"error": "Record not found"}, status=404)
        return web.json_response(self._status_json(sid))

    async def status_source(self, request: web.Request) -> web.Response:
        user = self._account(request)
        s = self.statuses.get(request.match_info["id"])
        if s is None or s["account"] != user:
            return web.json_response({"error": "Record not found"}, status=404)
        return web.json_response({"id": s["id"], "text": s["text"], "spoiler_text": ""})

    async def verify_credentials(self, request: web.Request) -> web.Response:
        user = self._account(request)
        return web.json_response({"id": f"id-{user}", "username": user, "acct": user})

    async def account_statuses(self, request: web.Request) -> web.Response:
        user = request.match_info["id"].removeprefix("id-")
        limit = min(40, int(request.query.get("limit", "20")))
        max_id = request.query.get("max_id")
        mine = sorted(
            (s for s in self.statuses.values() if s["account"] == user), key=lambda s: -int(s["id"])
        )
        if max_id:
            mine = [s for s in mine if int(s["id"]) < int(max_id)]
        return web.json_response([self._status_json(s["id"]) for s in mine[:limit]])

    async def delete_status(self, request: web.Request) -> web.Response:
        user = self._account(request)
        sid = request.match_info["id"]
        s = self.statuses.get(sid)
        if s is None or s["account"] != user:
            return web.json_response({"error": "Record not found"}, status=404)
        out = {**self._status_json(sid), "text": s["text"]}
        del self.statuses[sid]
        return web.json_response(out)

    async def dump(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "statuses": [{k: v for k, v in s.items()} for s in self.statuses.values()],
                "log": self.log[-50:],
            }
        )

    async def media_bytes(self, request: web.Request) -> web.Response:
        m = self.media.get(request.match_info["id"])
        if m is None:
            return web.json_response({"error": "Record not found"}, status=404)
        return web.Response(body=m["data"], content_type=m["content_type"])


async def _serve(args: argparse.Namespace) -> None:
    fake = FakeMastodon(
        tokens={args.token: args.user},
        latency_s=(0.0, args.max_latency),
        processing_polls=1,
        max_characters=args.max_characters,
    )
    await serve_standalone(fake, args.port)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", default="token-alice")
    p.add_argument("--user", default="alice")
    p.add_argument("--max-latency", type=float, default=0.0)
    p.add_argument("--max-characters", type=int, default=500)
    asyncio.run(_serve(p.parse_args()))
