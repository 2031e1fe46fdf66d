"""The `webhook` platform: POST the signed post and its media to a URL, for anything else.

Request: ``POST <service_url>`` with a JSON body::

    {"event": "publish", "account": ..., "post": {id, author, created_ms, text, targets,
     publish_at_ms}, "media": [{sha256, media_type, size_bytes, alt, data (base64)}],
     "signed_body": base64, "signature": base64, "batch_statement": base64 or null,
     "signer_fingerprint": hex, "batch_proof": {tree_size, leaf_index, path (base64)} or null}

Headers: ``X-Orbitpost-Delivery`` (stable per post and account: receivers deduplicate on it,
which makes a retry safe), ``X-Orbitpost-Timestamp`` (Unix seconds) and
``X-Orbitpost-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``.
The astronaut's own Ed25519 signature over ``signed_body`` travels too, so the receiver
can check the words are the astronaut's: over the body itself when ``batch_statement`` and
``batch_proof`` are null; over ``orbitpost/batch/v1\0`` + the statement, which lists
sha256(body) among its 32-byte entries (docs/PROTOCOL.md §14); or over ``orbitpost/batch/v2\0``
+ tree size (u64 big-endian) + the Merkle root the audit path leads to from sha256(body) (§17). A 2xx answer may carry ``{"url", "id"}``.
Retract sends ``{"event": "retract", "account", "post_id", "remote_id"}`` the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import time
from typing import Any

import aiohttp

from ..credentials import Credential, CredentialStore
from .base import Published, PublishRequest, require_credential
from .http import raise_for_status, request


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Orbitpost-Signature value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Receiver side: constant-time check of a signature made by :func:`sign`."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookPlatform:
    name = "webhook"

    def __init__(self, credentials: CredentialStore) -> None:
        self.credentials = credentials

    def _cred(self, account: str) -> Credential:
        return require_credential(self.credentials, f"webhook:{account}")

    async def _send(
        self, session: aiohttp.ClientSession, cred: Credential, delivery: str, doc: dict[str, Any], what: str
    ) -> Any:
        body = json.dumps(doc, ensure_ascii=False).encode()
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Orbitpost-Delivery": delivery,
            "X-Orbitpost-Timestamp": ts,
            "X-Orbitpost-Signature": sign(cred.secret, ts, body),
        }
        # A file-like body is streamed; raw bytes over ~1 MB would block the event loop.
        resp = await request(
            session, "POST", cred.service_url, what=what, data=io.BytesIO(body), headers=headers
        )
        raise_for_status(resp, what)
        return resp.json()

    async def publish(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published:
        cred = self._cred(req.account)
        p = req.post
        doc = {
            "event": "publish",
            "account": req.account,
            "post": {
                "id": p.id,
                "author": p.author,
                "created_ms": p.created_ms,
                "text": p.text,
                "targets": list(p.targets),
                "publish_at_ms": p.publish_at_ms,
            },
            "media": [
                {
                    "sha256": ref.sha256.hex(),
                    "media_type": ref.media_type,
                    "size_bytes": ref.size_bytes,
                    "alt": ref.alt,
                    "data": base64.b64encode(data).decode(),
                }
                for ref, data in req.media
            ],
            "signed_body": base64.b64encode(req.body).decode(),
            "signature": base64.b64encode(req.signature).decode(),
            "batch_statement": base64.b64encode(req.statement).decode() if req.statement else None,
            "signer_fingerprint": req.signer_fingerprint,
            "batch_proof": None if req.inclusion is None else req.inclusion.to_json(),
        }
        answer = await self._send(session, cred, f"{p.id}:{req.account}", doc, "webhook publish")
        answer = answer if isinstance(answer, dict) else {}
        return Published(
            url=str(answer.get("url") or cred.service_url), remote_id=str(answer.get("id") or p.id)
        )

    async def lookup(self, req: PublishRequest, session: aiohttp.ClientSession) -> Published | None:
        # Receivers deduplicate on X-Orbitpost-Delivery, so sending again is the lookup.
        return None

    async def delete(self, account: str, remote_id: str, session: aiohttp.ClientSession) -> None:
        cred = self._cred(account)
        doc = {"event": "retract", "account": account, "remote_id": remote_id}
        await self._send(session, cred, f"retract:{remote_id}:{account}", doc, "webhook retract")
