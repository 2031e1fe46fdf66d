"""The OpenAPI 3.1 document for the operators' API, served at /api/openapi.json.

Kept beside the handlers and checked by tests: every route in ``api.ROUTES`` appears
here with the same method, every response the tests fetch validates against its schema.
"""

from __future__ import annotations

from typing import Any

_INT = {"type": "integer"}
_NINT = {"type": ["integer", "null"]}
_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_NNUM = {"type": ["number", "null"]}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required if required is not None else list(props),
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(key: str, item: str) -> dict[str, Any]:
    return _obj({key: {"type": "array", "items": _ref(item)}})


SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _STR}),
    "AuthError": _obj(
        {
            "error": _STR,
            "reason": {
                "enum": ["idle", "expired", "logged-out", "operator-removed"],
                "description": "Why a session that was live no longer is (absent for a token never issued)",
            },
        },
        required=["error"],
    ),
    "Ok": {"type": "object", "properties": {"ok": {"const": True}}, "required": ["ok"]},
    "Login": _obj({"name": _STR, "password": {"type": "string", "format": "password"}}),
    "Me": _obj(
        {
            "operator": _STR,
            "role": {"enum": ["admin", "read-only"]},
            "can_act": {"type": "boolean"},
            "csrf_token": _STR,
            "expires_ms": _INT,
        }
    ),
    "Transfer": _obj(
        {
            "transfer_id": _STR,
            "station": _STR,
            "kind": {"type": "string", "description": "blob (a photo) or bundle"},
            "source": _NSTR,
            "state": {"type": "string", "description": "receiving, complete or failed"},
            "total_bytes": _NINT,
            "received_bytes": _INT,
            "progress": _NNUM,
            "bytes_per_s": {"type": "number"},
            "code": _NSTR,
            "message": _NSTR,
            "started_ms": _INT,
            "updated_ms": _INT,
        }
    ),
    "Station": _obj(
        {
            "station": _STR,
            "last_seen_ms": _INT,
            "requests": _INT,
            "bytes_in": _INT,
            "bytes_out": _INT,
            "last_addr": _NSTR,
        }
    ),
    "Link": _obj(
        {
            "last_contact_ms": _NINT,
            "seconds_since_contact": _NNUM,
            "bytes_today": _INT,
            "bytes_total": _INT,
            "bytes_per_s": {
                "type": ["number", "null"],
                "description": "Link rate over the last one to two minutes",
            },
            "stations": {"type": "array", "items": _ref("Station")},
            "active_transfers": {"type": "array", "items": _ref("Transfer")},
        }
    ),
    "Summary": _obj(
        {
            "now_ms": _INT,
            "link": _ref("Link"),
            "publications": {"type": "object", "additionalProperties": _INT},
            "queue_depth": _INT,
            "scheduled": _INT,
            "bundles_accepted": _INT,
            "bundles_rejected": _INT,
            "astronauts": _INT,
            "paused_platforms": {"type": "array", "items": _STR},
        }
    ),
    "Bundle": _obj(
        {
            "received_ms": _INT,
            "bundle_id": _NSTR,
            "source": _STR,
            "size_bytes": _INT,
            "item_count": _NINT,
            "status": {"enum": ["verified", "rejected"]},
            "code": _NSTR,
            "message": _NSTR,
            "sha256": _STR,
        }
    ),
    "Transfers": _obj(
        {
            "link": _ref("Link"),
            "transfers": {"type": "array", "items": _ref("Transfer")},
            "bundles": {"type": "array", "items": _ref("Bundle")},
        }
    ),
    "Publication": _obj(
        {
            "account": _STR,
            "platform": _STR,
            "state": {"type": "string", "description": "pending, publishing, published, failed, …"},
            "display_state": _STR,
            "url": _NSTR,
            "attempts": _INT,
            "last_error": _NSTR,
            "retryable": {"type": ["boolean", "null"]},
            "next_attempt_ms": _NINT,
            "published_ms": _NINT,
            "updated_ms": _INT,
            "fidelity": {
                "type": ["string", "null"],
                "description": "photos: exact or re-encoded (null: no photos)",
            },
            "fidelity_note": _NSTR,
            "renditions": {
                "type": "array",
                "description": "photos sent as a rendition the signed post allowed: photo, original_sha256, "
                "sha256, recipe, width, height, … (docs/platforms.md)",
                "items": {"type": "object"},
            },
        }
    ),
    "Post": _obj(
        {
            "id": _STR,
            "astronaut": _STR,
            "bundle_id": _STR,
            "created_ms": _INT,
            "received_ms": _INT,
            "publish_at_ms": _NINT,
            "text_preview": _STR,
            "media_count": _INT,
            "publications": {"type": "array", "items": _ref("Publication")},
        }
    ),
    "SecurityEvent": _obj(
        {
            "ts_ms": _INT,
            "kind": {
                "type": "string",
                "description": "bundle-rejected, transfer-failed, link-unauthorized, link-rate-limited, "
                "link-bad-request, "
                "security (a refused command), login-failed, login-limited",
            },
            "code": _NSTR,
            "message": _STR,
            "source": _STR,
            "sha256": _NSTR,
            "size_bytes": _NINT,
        }
    ),
    "Account": _obj(
        {
            "account": _STR,
            "by_state": {"type": "object", "additionalProperties": _INT},
            "last_success_ms": _NINT,
            "attempts": _INT,
            "error_rate": _NNUM,
            "paused": {"type": "boolean"},
            "astronauts": {"type": "array", "items": _STR},
            # OAuth accounts: "expires in N days" / "EXPIRED: reconnect this account"; null otherwise.
            "token": _NSTR,
        }
    ),
    "Platform": _obj(
        {
            "platform": _STR,
            "paused": {"type": "boolean"},
            "last_success_ms": _NINT,
            "published": _INT,
            "failed": _INT,
            "error_rate": _NNUM,
            "accounts": {"type": "array", "items": _ref("Account")},
        }
    ),
    "Astronaut": _obj(
        {
            "name": _STR,
            "keys": {
                "type": "array",
                "items": _obj({"fingerprint": _STR, "enrolled_ms": _INT, "revoked_ms": _NINT}),
            },
            "accounts": {"type": "array", "items": _obj({"account": _STR, "paused": {"type": "boolean"}})},
        }
    ),
    "AuditEvent": _obj({"id": _INT, "ts_ms": _INT, "actor": _STR, "kind": _STR, "detail": _STR}),
    "Posts": _list_of("posts", "Post"),
    "SecurityEvents": _list_of("events", "SecurityEvent"),
    "Platforms": _list_of("platforms", "Platform"),
    "Astronauts": _list_of("astronauts", "Astronaut"),
    "AuditEvents": _list_of("events", "AuditEvent"),
}


def _json_resp(desc: str, schema: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": _ref(schema)}}}


_ERR = {
    "401": _json_resp(
        "Not logged in (no data is returned); for a session that ended, `reason` says why", "AuthError"
    ),
}
_ACT_ERR = {
    **_ERR,
    "403": _json_resp("Read-only operator, or missing/wrong X-CSRF-Token on a cookie session", "Error"),
    "404": _json_resp("No such publication, platform, account or key", "Error"),
    "409": _json_resp("Not possible in the current state (e.g. retrying a published post)", "Error"),
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 500},
    "description": "How many rows, newest first.",
}
_BAD = {"400": _json_resp("Bad query parameter", "Error")}


def _get(summary: str, schema: str, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": _json_resp(summary, schema), **_ERR, **(_BAD if params else {})},
    }
    if params:
        op["parameters"] = params
    return {"get": op}


def _action(summary: str, params: list[str]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": "Admin only. Appends the action, with the operator's name, to the audit log.",
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in params
            ],
            "responses": {"200": _json_resp("Done", "Ok"), **_ACT_ERR},
        }
    }


def openapi_document() -> dict[str, Any]:
    """The document as a dict (served as JSON)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orbitpost ground operators' API",
            "version": "1.0.0",
            "description": (
                "Watch the link, bundles, publications and security events; retry, pause/resume, revoke. "
                "No endpoint edits a post or publishes on an astronaut's behalf. Authenticate with the session "
                "cookie from POST /api/login (and send X-CSRF-Token on POST) or with "
                "`Authorization: Bearer <token>` from `ground operator token NAME`. A browser session ends "
                "after 12 h, or sooner after 30 min without use (`ground serve --session-idle-min`); a request "
                "sent with `X-Orbitpost-Background: 1` (the page's own polling) does not count as use. "
                "Failed logins are limited per name and per address (10 within 15 min, then 429), "
                "across restarts."
            ),
        },
        "security": [{"cookie": []}, {"bearer": []}],
        "components": {
            "securitySchemes": {
                "cookie": {"type": "apiKey", "in": "cookie", "name": "orbitpost_session"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
            "schemas": SCHEMAS,
        },
        "paths": {
            "/api/login": {
                "post": {
                    "summary": "Log in; sets the session cookie and returns the CSRF token",
                    "security": [],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Login")}},
                    },
                    "responses": {
                        "200": _json_resp("Logged in", "Me"),
                        "400": _json_resp("Missing name or password", "Error"),
                        "401": _json_resp("Wrong name or password", "Error"),
                        "413": _json_resp("Body too large", "Error"),
                        "415": _json_resp("Body is not JSON", "Error"),
                        "429": _json_resp("Too many failed logins; see Retry-After", "Error"),
                    },
                }
            },
            "/api/logout": {
                "post": {
                    "summary": "End this session",
                    "responses": {"200": _json_resp("Logged out", "Ok"), **_ERR},
                }
            },
            "/api/me": _get("The logged-in operator, role and CSRF token", "Me"),
            "/api/summary": _get("Status strip: link, queue depth, counts", "Summary"),
            "/api/transfers": _get(
                "Link status, transfers in progress and recent bundles", "Transfers", [_LIMIT]
            ),
            "/api/posts": _get(
                "Posts with per-account publication state",
                "Posts",
                [
                    _LIMIT,
                    {"name": "astronaut", "in": "query", "required": False, "schema": {"type": "string"}},
                ],
            ),
            "/api/security": _get(
                "Security events: rejected bundles and failed logins", "SecurityEvents", [_LIMIT]
            ),
            "/api/platforms": _get("Health per platform and account", "Platforms"),
            "/api/astronauts": _get("Astronauts, their keys and accounts", "Astronauts"),
            "/api/audit": _get(
                "The append-only audit log, newest first",
                "AuditEvents",
                [
                    _LIMIT,
                    {"name": "before_id", "in": "query", "required": False, "schema": {"type": "integer"}},
                    {
                        "name": "operators_only",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean"},
                    },
                ],
            ),
            "/api/stream": {
                "get": {
                    "summary": "Server-sent events: `change` whenever anything shown changes, `logout` when the session ends",
                    "responses": {
                        "200": {
                            "description": "An event stream",
                            "content": {"text/event-stream": {"schema": _STR}},
                        },
                        **_ERR,
                        "503": _json_resp("Too many open streams", "Error"),
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {"description": "OpenAPI document", "content": {"application/json": {}}}
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (exposition format)",
                    "responses": {
                        "200": {"description": "Metrics", "content": {"text/plain": {"schema": _STR}}},
                        **_ERR,
                    },
                }
            },
            "/api/publications/{item_id}/{account}/retry": _action(
                "Retry a failed publication", ["item_id", "account"]
            ),
            "/api/publications/{item_id}/{account}/retry-now": _action(
                "Retry now a publication waiting out a backoff (an ambiguous failure is still looked up "
                "on the platform first; a scheduled post still waits for its time)",
                ["item_id", "account"],
            ),
            "/api/platforms/{platform}/pause": _action("Pause publishing to a platform", ["platform"]),
            "/api/platforms/{platform}/resume": _action("Resume publishing to a platform", ["platform"]),
            "/api/accounts/{account}/pause": _action("Pause publishing to one platform:account", ["account"]),
            "/api/accounts/{account}/resume": _action(
                "Resume publishing to one platform:account", ["account"]
            ),
            "/api/keys/{fingerprint}/revoke": _action("Revoke an astronaut key", ["fingerprint"]),
        },
    }
