"""Public, read-only proof pages and the transparency log's endpoints (docs/TRANSPARENCY.md).

No login and nothing private: a post is shown only once it is published somewhere (an
embargoed or unpublished post is a 404, and the log itself holds hashes, never text). Every
answer is cacheable (proofs for a fixed tree size never change) and every client address is
rate-limited, so a public page cannot be used to load ground.

Routes:
- ``GET /p/{item_id}``: the proof page (static HTML; its script checks everything itself).
- ``GET /p/{item_id}.json``: the signed body, key, log leaves, inclusion proofs, checkpoint.
- ``GET /p/{item_id}/media/{sha256}``: a published post's original photo bytes.
- ``GET /p/lookup?url=…``: the proof page of the post published at a platform URL.
- ``GET /log/checkpoint``, ``/log/proof/consistency?old=&new=``, ``/log/leaves?start=&end=``.
- ``POST /log/cosign``: a registered witness hands back its cosignature.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import sqlite3
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from aiohttp import web

from protocol import decode_item, format_public_key
from protocol.mediatype import sniff_media_type
from protocol.model import Post
from protocol.signing import BATCH_DOMAIN, SIGNATURE_DOMAIN
from protocol.tlog import parse_note, verify_cosignature

from . import db, translog
from .home import GroundHome
from .receipts import ground_key

STATIC_DIR = Path(__file__).parent / "public_static"
HOME = web.AppKey("public_home", GroundHome)
# Leaves one /log/leaves answer may carry: auditors page through the log.
MAX_LEAVES = 1_000
# How often ground logs what changed and signs a new checkpoint.
CATCH_UP_S = 2.0

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class PublicLimiter:
    """Token bucket per client address (bounded table): public pages cannot load ground."""

    def __init__(self, rate_per_s: float = 20.0, burst: float = 60.0, max_clients: int = 10_000) -> None:
        self.rate, self.burst, self.max_clients = rate_per_s, burst, max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, addr: str, now: float) -> bool:
        tokens, last = self._buckets.pop(addr, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        allowed = tokens >= 1.0
        self._buckets[addr] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed


LIMITER = web.AppKey("public_limiter", PublicLimiter)


def _json(data: Any, *, max_age_s: int, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, headers={"Cache-Control": f"public, max-age={max_age_s}", **PAGE_HEADERS}
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})


@web.middleware
async def _limit(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.startswith(("/p/", "/log/")):
        limiter = request.app[LIMITER]
        if not limiter.allow(request.remote or "?", time.monotonic()):
            return web.json_response(
                {"error": "too many requests; try again in a few seconds"},
                status=429,
                headers={"Retry-After": "5"},
            )
    response: web.StreamResponse = await handler(request)
    return response


def _int_arg(request: web.Request, name: str) -> int:
    raw = request.query.get(name, "")
    if not raw.isdigit() or len(raw) > 18:
        raise web.HTTPBadRequest(
            text=f"query parameter {name} must be a whole number", content_type="text/plain"
        )
    return int(raw)


def _published(home: GroundHome, item_id: str) -> list[tuple[str, str, str | None, str | None, int | None]]:
    return list(
        home.conn.execute(
            "SELECT account, state, url, remote_id, published_ms FROM publications WHERE item_id = ? "
            "ORDER BY account",
            (item_id,),
        )
    )


def _renditions(home: GroundHome, item_id: str) -> dict[str, list[dict[str, Any]]]:
    """account → the renditions published there (ground/renditions.py records), if any."""
    return {
        account: json.loads(made)
        for account, made in home.conn.execute(
            "SELECT account, renditions FROM publications WHERE item_id = ? AND state = 'published' "
            "AND renditions IS NOT NULL",
            (item_id,),
        )
    }


def _visible(pubs: list[tuple[str, str, str | None, str | None, int | None]]) -> bool:
    return any(state == "published" for _, state, _, _, _ in pubs)


def _leaf_with_proof(home: GroundHome, fact: str, size: int) -> dict[str, Any] | None:
    found = translog.leaf(home, fact)
    if found is None or found[0] > size:
        return None
    index, entry = found
    return {"index": index, "entry": entry.decode(), "inclusion": translog.inclusion_proof(home, index, size)}


def _publication(
    home: GroundHome,
    item_id: str,
    size: int,
    account: str,
    state: str,
    url: str | None,
    remote_id: str | None,
    published_ms: int | None,
) -> dict[str, Any]:
    """One publication as the proof shows it; fidelity and read-back as logged, where logged."""
    leaf = _leaf_with_proof(home, f"pub:{item_id}:{account}:{state}", size)
    logged = json.loads(leaf["entry"]) if leaf else {}
    return {
        "account": account,
        "state": state,
        "url": url,
        "uri": remote_id if (remote_id or "").startswith("at://") else None,
        "published_ms": published_ms,
        "text_fidelity": "exact",
        "media_fidelity": logged.get("media_fidelity") or translog.media_fidelity(account.partition(":")[0]),
        "leaf": leaf,
        # Appended (issue 13): what ground found reading the copy back, as logged.
        "read_back": logged.get("read_back"),
        # The platform's public id of the copy (in its URL for most platforms), so a reader's
        # verifier can fetch it; what it fetches is still compared with the signed body.
        "remote_id": remote_id,
    }


def post_proof(home: GroundHome, item_id: str) -> dict[str, Any] | None:
    """Everything a reader needs to check ``item_id`` alone, or None if it is not public."""
    row = home.conn.execute(
        f"SELECT i.author, i.key_id, i.body, i.signature, {db.ITEM_STATEMENT}, k.public_key FROM items i "
        "JOIN keys k ON k.key_id = i.key_id WHERE i.id = ? AND i.kind = 'post'",
        (item_id,),
    ).fetchone()
    pubs = _published(home, item_id)
    if row is None or not _visible(pubs):
        return None
    author, kid, body, signature, statement, public_key = row
    note = translog.latest(home)
    if note is None:
        return None
    size = parse_note(note).checkpoint.size
    post = decode_item(bytes(body))
    assert isinstance(post, Post)
    kid_hex = bytes(kid).hex()
    made = _renditions(home, item_id)
    return {
        "version": 1,
        "item_id": item_id,
        "astronaut": author,
        "body": base64.b64encode(bytes(body)).decode(),
        "signature": base64.b64encode(bytes(signature)).decode(),
        "statement": None if statement is None else base64.b64encode(bytes(statement)).decode(),
        "domain": (BATCH_DOMAIN if statement is not None else SIGNATURE_DOMAIN).decode("latin-1"),
        "public_key": format_public_key(bytes(public_key)),
        "key_id": kid_hex,
        "text": post.text,
        "media": [
            {
                "sha256": m.sha256.hex(),
                "size_bytes": m.size_bytes,
                "media_type": m.media_type,
                "alt": m.alt,
                "url": f"/p/{item_id}/media/{m.sha256.hex()}",
            }
            for m in post.media
        ],
        "publications": [
            {
                **_publication(home, item_id, size, account, state, url, remote_id, published_ms),
                # Photos ground sent to this account as a rendition the signed post allowed:
                # both hashes, the recipe, and where to fetch the rendition (docs/platforms.md).
                "renditions": [
                    {**r, "url": f"/p/{item_id}/media/{r['sha256']}"} for r in made.get(account, [])
                ],
            }
            for account, state, url, remote_id, published_ms in pubs
        ],
        "leaves": {
            "item": _leaf_with_proof(home, f"item:{item_id}", size),
            "key": _leaf_with_proof(home, f"key:{kid_hex}", size),
            "revocation": _leaf_with_proof(home, f"revoke:{kid_hex}", size),
        },
        "checkpoint": note,
        "cosignatures": translog.cosignatures(home, size),
        "witnesses": {n: format_public_key(k) for n, k in translog.witnesses(home).items()},
        "ground_key": format_public_key(ground_key(home).public_key),
        "origin": translog.origin(home),
    }


async def _page(request: web.Request) -> web.StreamResponse:
    item_id = request.match_info["item_id"]
    if item_id.endswith(".json"):
        return await _proof_json(request, item_id[: -len(".json")])
    return web.FileResponse(
        STATIC_DIR / "post.html", headers={"Cache-Control": "public, max-age=300", **PAGE_HEADERS}
    )


async def _proof_json(request: web.Request, item_id: str) -> web.Response:
    proof = post_proof(request.app[HOME], item_id)
    if proof is None:
        return _error(404, f"no published post {item_id[:40]!r}")
    return _json(proof, max_age_s=30)


async def _media(request: web.Request) -> web.StreamResponse:
    home = request.app[HOME]
    item_id, sha_hex = request.match_info["item_id"], request.match_info["sha"]
    row = home.conn.execute("SELECT body FROM items WHERE id = ? AND kind = 'post'", (item_id,)).fetchone()
    if row is None or not _visible(_published(home, item_id)):
        return _error(404, "no such published photo")
    post = decode_item(bytes(row[0]))
    assert isinstance(post, Post)
    ref = next((m for m in post.media if m.sha256.hex() == sha_hex), None)
    sent = [r for rs in _renditions(home, item_id).values() for r in rs if r.get("sha256") == sha_hex]
    if ref is None and not sent:
        return _error(404, "no such published photo")
    data = await asyncio.to_thread(home.blobs.get, bytes.fromhex(sha_hex))
    return web.Response(
        body=data,
        content_type=sniff_media_type(data) or (ref.media_type if ref else "image/jpeg"),
        headers={"Cache-Control": "public, max-age=31536000, immutable", **PAGE_HEADERS},
    )


async def _lookup(request: web.Request) -> web.StreamResponse:
    url = request.query.get("url", "")
    row = (
        request.app[HOME]
        .conn.execute(
            "SELECT item_id FROM publications WHERE state = 'published' AND (url = ? OR remote_id = ?) LIMIT 1",
            (url, url),
        )
        .fetchone()
    )
    if row is None:
        return _error(404, "no post of this ground was published at that URL")
    raise web.HTTPFound(f"/p/{row[0]}" + (".json" if request.query.get("json") else ""))


async def _checkpoint(request: web.Request) -> web.Response:
    home = request.app[HOME]
    size = request.query.get("size")
    note = translog.checkpoint_at(home, _int_arg(request, "size")) if size else translog.latest(home)
    if note is None:
        return _error(404, "no signed checkpoint of that size")
    cp = parse_note(note).checkpoint
    return _json(
        {"checkpoint": note, "cosignatures": translog.cosignatures(home, cp.size), "origin": cp.origin},
        max_age_s=31536000 if size else 2,
    )


async def _consistency(request: web.Request) -> web.Response:
    home = request.app[HOME]
    old, new = _int_arg(request, "old"), _int_arg(request, "new")
    if not 0 < old <= new or translog.checkpoint_at(home, new) is None:
        return _error(400, "need 0 < old <= new, new being a signed checkpoint's size")
    return _json(
        {"old": old, "new": new, "proof": translog.consistency_proof(home, old, new)}, max_age_s=31536000
    )


async def _leaves(request: web.Request) -> web.Response:
    start, end = _int_arg(request, "start"), _int_arg(request, "end")
    if not 0 < start < end or end - start > MAX_LEAVES:
        return _error(400, f"need 0 < start < end and at most {MAX_LEAVES} leaves")
    rows = translog.leaves(request.app[HOME], start, end)
    return _json([{"index": i, "entry": e.decode()} for i, e in rows], max_age_s=31536000 if rows else 2)


async def _cosign(request: web.Request) -> web.Response:
    """A witness hands back ``{witness, size, time_s, signature}``; kept only if it checks."""
    home = request.app[HOME]
    try:
        data = await request.json()
        name, size, time_s = str(data["witness"]), int(data["size"]), int(data["time_s"])
        signature = bytes.fromhex(str(data["signature"]))
    except (ValueError, KeyError, TypeError):
        return _error(400, "need JSON {witness, size, time_s, signature(hex)}")
    key = translog.witnesses(home).get(name)
    note = translog.checkpoint_at(home, size)
    if key is None or note is None:
        return _error(404, "unknown witness or checkpoint size")
    if not verify_cosignature(key, parse_note(note).checkpoint, time_s, signature):
        return _error(400, f"cosignature by {name} does not verify for size {size}")
    translog.add_cosignature(home, size, name, time_s, signature)
    return web.json_response({"ok": True})


async def _catch_up_loop(app: web.Application) -> Any:
    # Off the event loop, with a connection of its own (as uploads commit): a pass that
    # logs a burst of thousands of posts never delays a request.
    worker = GroundHome(app[HOME].root)
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(translog.catch_up, worker, int(time.time() * 1000))
            except (sqlite3.Error, OSError) as exc:  # a locked or full database: next pass
                logging.getLogger(__name__).warning("transparency log catch-up failed, will retry: %s", exc)
            with_timeout = asyncio.wait_for(stop.wait(), CATCH_UP_S)
            try:
                await with_timeout
            except TimeoutError:
                pass

    task = asyncio.ensure_future(loop())
    yield
    stop.set()
    await asyncio.gather(task, return_exceptions=True)
    worker.close()


def setup(app: web.Application, home: GroundHome, *, catch_up: bool = True) -> None:
    """Register the public routes on ``app`` (and keep the log caught up while it runs)."""
    translog.ensure_schema(home.conn)
    app[HOME] = home
    app[LIMITER] = PublicLimiter()
    app.middlewares.append(_limit)
    app.router.add_get("/p/lookup", _lookup)
    app.router.add_get("/p/{item_id}", _page)
    app.router.add_get("/p/{item_id}/media/{sha:[0-9a-f]{64}}", _media)
    app.router.add_static("/p-static", STATIC_DIR)
    app.router.add_get("/log/checkpoint", _checkpoint)
    app.router.add_get("/log/proof/consistency", _consistency)
    app.router.add_get("/log/leaves", _leaves)
    app.router.add_post("/log/cosign", _cosign)
    if catch_up:
        app.cleanup_ctx.append(_catch_up_loop)
