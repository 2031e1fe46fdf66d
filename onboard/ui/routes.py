"""The page's HTTP API. Every action goes through the functions the CLI uses:
onboard.compose.compose_post / compose_command (rules, signing, queue), onboard.keystore."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from protocol import ProtocolError, SigningKey
from protocol.model import Cancel, Retract

from .. import keystore, queue
from ..compose import DEFAULT_MAX_MEDIA_BYTES, PhotoInput, compose_command, compose_post
from ..errors import OnboardError
from ..home import Home
from . import views
from .drafts import MAX_PHOTOS_PER_DRAFT, Draft, DraftError, DraftStore, draft_from_json
from .security import GATE_KEY, SESSION_KEY, Session, refuse

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# One request body: a photo up to compose's own limit, plus multipart framing.
MAX_BODY_BYTES = DEFAULT_MAX_MEDIA_BYTES + 64 * 1024

HOME_KEY = web.AppKey("onboard_ui_home", Home)
CONN_KEY = web.AppKey("onboard_ui_conn", sqlite3.Connection)
DRAFTS_KEY = web.AppKey("onboard_ui_drafts", DraftStore)
# Bumped by every action (a one-element list: app state is frozen once the server runs).
ACTIONS_KEY = web.AppKey("onboard_ui_actions", list)

routes = web.RouteTableDef()


def _session(request: web.Request) -> Session:
    s: Session = request[SESSION_KEY]
    return s


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise DraftError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise DraftError("the request body must be a JSON object")
    return body


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Onboard's own errors (a refused post, a wrong passphrase) reach the page as one line."""
    if request.method not in ("GET", "HEAD") and ACTIONS_KEY in request.app:
        request.app[ACTIONS_KEY][0] += 1
    try:
        resp: web.StreamResponse = await handler(request)
        return resp
    except keystore.KeyLocked as exc:
        return refuse(403, str(exc))
    except (OnboardError, ProtocolError) as exc:
        return refuse(400, str(exc))


@routes.get("/login")
async def login(request: web.Request) -> web.StreamResponse:
    gate = request.app[GATE_KEY]
    s = gate.login(request.query.get("secret", ""))
    if s is None:
        return refuse(401, "wrong or missing secret: open the address `onboard ui` printed")
    resp = web.Response(status=303, headers={"Location": "/"})
    resp.set_cookie(gate.cookie, s.token, httponly=True, samesite="Strict", path="/")
    return resp


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Content-Type": "text/html; charset=utf-8"})


@routes.get("/static/{name}")
async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    return web.FileResponse(STATIC / name, headers={"Content-Type": STATIC_FILES[name] + "; charset=utf-8"})


def _change_token(request: web.Request, s: Session) -> str:
    """Changes whenever anything /api/state shows may have: another process committed to the
    queue (PRAGMA data_version), this one did (total_changes, every action), keys or the
    link were set up, or this session's keys locked."""
    home, conn = request.app[HOME_KEY], request.app[CONN_KEY]
    (data_version,) = conn.execute("PRAGMA data_version").fetchone()
    marks = [str(data_version), str(conn.total_changes), str(request.app[ACTIONS_KEY][0])]
    for p in (home.keys_dir, home.root / "link.json", request.app[DRAFTS_KEY].dir):
        try:
            marks.append(str(p.stat().st_mtime_ns))
        except OSError:
            marks.append("-")
    marks += [s.astronaut or "", s.keys.unlocked() or "", s.keys.locked_reason]
    return "|".join(marks)


@routes.get("/api/state")
async def state(request: web.Request) -> web.StreamResponse:
    """Everything the page shows; 304 when nothing changed since the page's last copy.

    Light on CPU: the page polls every 2 s, so the document is rebuilt only when its inputs
    changed (``_change_token``), and each item's body is decoded once (views.rows).
    """
    s = _session(request)
    token = _change_token(request, s)
    if s.state_cache is None or s.state_cache[0] != token:
        s.state_cache = (token, *_build_state(request, s))
    _, etag, body = s.state_cache
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    return web.Response(body=body, content_type="application/json", headers={"ETag": etag})


def _build_state(request: web.Request, s: Session) -> tuple[str, bytes]:
    home, conn, store = request.app[HOME_KEY], request.app[CONN_KEY], request.app[DRAFTS_KEY]
    who = s.astronaut
    all_rows = views.rows(conn)
    accounts, confirmed = views.accounts_for(conn, who, all_rows) if who else ([], False)
    doc = {
        "csrf": s.csrf,
        "astronauts": views.astronauts(home, s.keys.unlocked(), who),
        "selected": who,
        "locked_reason": s.keys.locked_reason,
        "accounts": accounts,
        "accounts_confirmed": confirmed,
        "drafts": views.drafts_view(store),
        "queue": views.queue_view(conn, all_rows),
        "link": views.link_view(home, conn, all_rows),
    }
    body = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"', body


def _key_for(request: web.Request, author: str) -> SigningKey | None:
    """``author``'s key if it may sign now: unlocked in this session, or unprotected."""
    s = _session(request)
    home = request.app[HOME_KEY]
    if not keystore.is_protected(home, author):
        return None  # compose loads it itself, as the CLI does
    key = s.keys.key_for(author)
    if key is None:
        raise keystore.KeyLocked(
            f"{author}'s key is locked: type {author}'s passphrase to unlock it"
            + (f" ({s.keys.locked_reason})" if s.keys.locked_reason else "")
        )
    return key


@routes.post("/api/select")
async def select(request: web.Request) -> web.StreamResponse:
    """Switch astronaut: whoever was unlocked is locked (a crew shares the laptop)."""
    name = str((await _json(request)).get("astronaut", ""))
    keystore.public_key(request.app[HOME_KEY], name)  # exists?
    s = _session(request)
    if s.astronaut != name:
        s.keys.lock_all()
    s.astronaut = name
    return web.json_response({"selected": name})


@routes.post("/api/unlock")
async def unlock(request: web.Request) -> web.StreamResponse:
    body = await _json(request)
    name, passphrase = str(body.get("astronaut", "")), body.get("passphrase")
    if not isinstance(passphrase, str) or not passphrase:
        raise keystore.KeyLocked("type the passphrase")
    s = _session(request)
    s.keys.lock_all()
    key = await asyncio.to_thread(keystore.load_key, request.app[HOME_KEY], name, passphrase.encode())
    s.keys.unlock(name, key)
    s.astronaut = name
    return web.json_response({"unlocked": name})


@routes.post("/api/lock")
async def lock(request: web.Request) -> web.StreamResponse:
    _session(request).keys.lock_all("locked")
    return web.json_response({"unlocked": None})


def _draft_doc(request: web.Request, d: Draft) -> dict[str, Any]:
    store = request.app[DRAFTS_KEY]
    photos = []
    for p in d.photos:
        meta = store.meta(p.sha) or {"sha": p.sha, "missing": True}
        photos.append({**meta, "alt": p.alt, "name": p.name or meta.get("name", "")})
    doc = d.to_json()
    doc["photos"] = photos
    doc["check"] = views.check(request.app[CONN_KEY], store, d)
    return doc


@routes.post("/api/drafts")
async def new_draft(request: web.Request) -> web.StreamResponse:
    d = request.app[DRAFTS_KEY].new()
    d.author = _session(request).astronaut or ""
    request.app[DRAFTS_KEY].save(d)
    return web.json_response(_draft_doc(request, d))


@routes.get("/api/drafts/{id}")
async def get_draft(request: web.Request) -> web.StreamResponse:
    return web.json_response(_draft_doc(request, request.app[DRAFTS_KEY].get(request.match_info["id"])))


@routes.put("/api/drafts/{id}")
async def save_draft(request: web.Request) -> web.StreamResponse:
    """Autosave: the whole draft, written atomically; answers with the live counters."""
    store = request.app[DRAFTS_KEY]
    store.get(request.match_info["id"])  # exists
    d = draft_from_json(request.match_info["id"], await _json(request))
    store.save(d)
    return web.json_response(_draft_doc(request, d))


@routes.delete("/api/drafts/{id}")
async def delete_draft(request: web.Request) -> web.StreamResponse:
    request.app[DRAFTS_KEY].delete(request.match_info["id"])
    return web.json_response({"deleted": request.match_info["id"]})


@routes.post("/api/drafts/{id}/photos")
async def add_photos(request: web.Request) -> web.StreamResponse:
    """Photos picked or dropped: staged as chosen (hash, thumbnail, size on the wire) and
    added to the draft at once, so a closed tab keeps them."""
    store = request.app[DRAFTS_KEY]
    d = store.get(request.match_info["id"])
    ground = views.peer(request.app[HOME_KEY])
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name != "photo":
            continue
        if len(d.photos) >= MAX_PHOTOS_PER_DRAFT:
            raise DraftError(f"at most {MAX_PHOTOS_PER_DRAFT} photos in a draft")
        data = await _read_limited(part, DEFAULT_MAX_MEDIA_BYTES)
        name = part.filename or "photo"
        meta = await asyncio.to_thread(_stage, store, data, name, ground)
        if not any(p.sha == meta["sha"] for p in d.photos):
            d.photos.append(_photo(meta["sha"], meta["name"]))
    store.save(d)
    return web.json_response(_draft_doc(request, d))


async def _read_limited(part: BodyPartReader, limit: int) -> bytes:
    """One photo, refused as soon as it passes ``limit`` (multipart parts are streamed: the
    request's client_max_size does not bound them)."""
    buf = bytearray()
    while chunk := await part.read_chunk(256 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise DraftError(f"{part.filename or 'a photo'} is over {limit:,} bytes, the most a photo may be")
    return bytes(buf)


def _stage(store: DraftStore, data: bytes, name: str, ground: Any) -> dict[str, Any]:
    from protocol.mediatype import sniff_media_type

    mt = sniff_media_type(data[:64]) or ""
    return store.stage(data, name, views.wire_size(data, mt, ground))


def _photo(sha: str, name: str) -> Any:
    from .drafts import DraftPhoto

    return DraftPhoto(sha=sha, name=name)


@routes.get("/api/photos/{sha}/thumb")
async def thumb(request: web.Request) -> web.StreamResponse:
    path = request.app[DRAFTS_KEY].thumb_path(request.match_info["sha"])
    if not path.exists():
        raise web.HTTPNotFound()
    return web.FileResponse(path, headers={"Content-Type": "image/jpeg"})


@routes.post("/api/drafts/{id}/queue")
async def queue_draft(request: web.Request) -> web.StreamResponse:
    """Sign and queue the draft with compose_post, exactly as `onboard post` would."""
    home, conn, store = request.app[HOME_KEY], request.app[CONN_KEY], request.app[DRAFTS_KEY]
    d = store.get(request.match_info["id"])
    if not d.author:
        raise DraftError("choose who is posting first")
    key = _key_for(request, d.author)
    post = compose_post(
        home,
        conn,
        author=d.author,
        text=d.text,
        targets=list(d.targets),
        photos=[PhotoInput(path=store.photo_path(p.sha), alt=p.alt) for p in d.photos],
        publish_at_ms=views.parse_publish_at(d.publish_at) if d.publish_at else None,
        key=key,
        # Only consents for accounts still ticked: unticking an account drops its consent.
        renditions=[t for t in d.renditions if t in d.targets],
    )
    store.delete(d.id)
    return web.json_response({"queued": post.id, "targets": list(post.targets)})


async def _command(request: web.Request, kind: type[Cancel] | type[Retract]) -> web.StreamResponse:
    home, conn = request.app[HOME_KEY], request.app[CONN_KEY]
    target = queue.get(conn, request.match_info["id"])
    if target is None:
        raise OnboardError(f"no post {request.match_info['id']} in this queue")
    key = _key_for(request, target.item.author)
    cmd = compose_command(home, conn, kind=kind, target_id=target.item.id, key=key)
    return web.json_response({"queued": cmd.id, "kind": kind.__name__.lower(), "of": target.item.id})


@routes.post("/api/items/{id}/cancel")
async def cancel(request: web.Request) -> web.StreamResponse:
    return await _command(request, Cancel)


@routes.post("/api/items/{id}/retract")
async def retract(request: web.Request) -> web.StreamResponse:
    return await _command(request, Retract)
