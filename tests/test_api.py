"""The operators' JSON API: auth on every route, roles, CSRF, rate limits, actions, OpenAPI, metrics."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer
from dashboard_support import ADMIN, READER, make_app, make_home
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from ground import operators
from ground.dashboard.api import ROUTES
from ground.dashboard.auth import LoginLimiter
from ground.dashboard.openapi import openapi_document
from ground.errors import BundleRejected, PublishError
from ground.home import GroundHome
from ground.ingest import ingest_bytes
from ground.platforms import Published, PublishRequest
from ground.publish import publish_due
from protocol import SigningKey, key_id

PUBLIC = {("POST", "/api/login"), ("GET", "/api/openapi.json")}
ACTIONS = {(m, p) for m, p, h in ROUTES if getattr(h, "auth_required", None) == "admin"}


@pytest.fixture
def home(tmp_path: Path, alice_key: SigningKey) -> GroundHome:
    h = make_home(tmp_path / "G", alice_key)
    yield h
    h.close()


@pytest.fixture
async def client(home: GroundHome) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(make_app(home, LoginLimiter(max_failures=3, window_s=60)))) as c:
        yield c


async def login(c: TestClient, who: tuple[str, str]) -> dict[str, Any]:
    r = await c.post("/api/login", json={"name": who[0], "password": who[1]})
    assert r.status == 200, await r.text()
    return await r.json()  # type: ignore[no-any-return]


def fill(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def schema_validate(doc: dict[str, Any], name: str, data: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    jsonschema.Draft202012Validator(schema).validate(data)


# --- the document ------------------------------------------------------------------------


def test_openapi_document_is_valid_openapi() -> None:
    validate(openapi_document())  # raises on any structural error


def test_every_route_is_documented_and_nothing_else() -> None:
    doc = openapi_document()["paths"]
    routes = {(m.lower(), p) for m, p, _ in ROUTES}
    documented = {(m, p) for p, ops in doc.items() for m in ops}
    assert routes == documented


def test_no_route_can_change_content_or_post() -> None:
    # The operator surface may only retry, pause/resume and revoke: never edit or create content.
    unsafe = {(m, p) for m, p, _ in ROUTES if m != "GET"}
    allowed = {
        ("POST", "/api/login"),
        ("POST", "/api/logout"),
        ("POST", "/api/publications/{item_id}/{account}/retry"),
        ("POST", "/api/publications/{item_id}/{account}/retry-now"),
        ("POST", "/api/platforms/{platform}/pause"),
        ("POST", "/api/platforms/{platform}/resume"),
        ("POST", "/api/accounts/{account}/pause"),
        ("POST", "/api/accounts/{account}/resume"),
        ("POST", "/api/keys/{fingerprint}/revoke"),
    }
    assert unsafe == allowed


async def test_openapi_served_without_login(client: TestClient) -> None:
    r = await client.get("/api/openapi.json")
    assert r.status == 200
    validate(await r.json())


# --- authentication and roles ---------------------------------------------------------------


async def test_every_endpoint_refuses_unauthenticated_calls_without_data(client: TestClient) -> None:
    for method, path, _ in ROUTES:
        if (method, path) in PUBLIC:
            continue
        r = await client.request(method, fill(path))
        assert r.status == 401, (method, path, r.status)
        assert r.headers["Content-Type"].startswith("application/json")
        assert set(await r.json()) == {"error"}, (method, path)
        # A forged or expired token is no better than none.
        r = await client.request(method, fill(path), headers={"Authorization": "Bearer forged"})
        assert r.status == 401, (method, path)


async def test_read_only_operator_can_watch_but_not_act(client: TestClient) -> None:
    me = await login(client, READER)
    assert me["role"] == "read-only" and me["can_act"] is False
    for method, path, _ in ROUTES:
        if method == "GET" and path != "/api/stream":
            r = await client.get(fill(path))
            assert r.status == 200, (path, await r.text())
    for method, path in ACTIONS:
        r = await client.request(method, fill(path), headers={"X-CSRF-Token": me["csrf_token"]})
        assert r.status == 403, (path, r.status)
        assert "read-only" in (await r.json())["error"]


async def test_bearer_token_works_and_read_only_token_cannot_act(
    client: TestClient, home: GroundHome
) -> None:
    op = operators.get_operator(home.conn, READER[0])
    assert op is not None
    token, _ = operators.open_session(home.conn, op, operators_now(), kind="api")
    h = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/summary", headers=h)).status == 200
    r = await client.post("/api/platforms/archive/pause", headers=h)
    assert r.status == 403
    operators.remove_operator(home.conn, READER[0], operators_now())
    assert (await client.get("/api/summary", headers=h)).status == 401


def operators_now() -> int:
    import time

    return int(time.time() * 1000)


async def test_cookie_actions_need_the_csrf_token(client: TestClient) -> None:
    me = await login(client, ADMIN)
    r = await client.post("/api/platforms/archive/pause")
    assert r.status == 403 and "X-CSRF-Token" in (await r.json())["error"]
    r = await client.post("/api/platforms/archive/pause", headers={"X-CSRF-Token": "wrong"})
    assert r.status == 403
    r = await client.post(
        "/api/platforms/archive/pause",
        headers={"X-CSRF-Token": me["csrf_token"], "Origin": "http://evil.example"},
    )
    assert r.status == 403 and "cross-origin" in (await r.json())["error"]
    r = await client.post("/api/platforms/archive/pause", headers={"X-CSRF-Token": me["csrf_token"]})
    assert r.status == 200, await r.text()


async def test_every_state_changing_route_checks_csrf_origin_and_role(client: TestClient) -> None:
    """Issue 16: the CSRF, Origin and role checks on *every* route that changes state, not one."""
    changing = [(m, p) for m, p, _ in ROUTES if m not in ("GET", "HEAD") and (m, p) not in PUBLIC]
    assert len(changing) >= 8  # logout and the seven actions
    rita = await login(client, READER)
    for method, path in changing:
        url = fill(path)
        for headers in (
            {},  # no token at all
            {"X-CSRF-Token": "wrong"},
            {"X-CSRF-Token": rita["csrf_token"] + "x"},
            {"X-CSRF-Token": rita["csrf_token"], "Origin": "http://evil.example"},
            {"X-CSRF-Token": rita["csrf_token"], "Origin": "null"},
        ):
            r = await client.request(method, url, headers=headers)
            assert r.status == 403, (method, path, headers, r.status)
            assert set(await r.json()) == {"error"}
        r = await client.request(method, url, headers={"X-CSRF-Token": rita["csrf_token"]})
        if (method, path) in ACTIONS:
            assert r.status == 403 and "read-only" in (await r.json())["error"], (method, path)
        else:  # logout: any operator may end her own session
            assert r.status == 200, (method, path)
            rita = await login(client, READER)
    # An admin's session with the right token and no Origin gets past every check (404/409/200,
    # never 401/403): the checks refuse the request, not the route.
    ada = await login(client, ADMIN)
    for method, path in changing:
        if path == "/api/logout":
            continue
        r = await client.request(method, fill(path), headers={"X-CSRF-Token": ada["csrf_token"]})
        assert r.status not in (401, 403, 500), (method, path, r.status)


async def test_logout_ends_the_session(client: TestClient) -> None:
    me = await login(client, ADMIN)
    assert (await client.get("/api/me")).status == 200
    r = await client.post("/api/logout", headers={"X-CSRF-Token": me["csrf_token"]})
    assert r.status == 200
    assert (await client.get("/api/me")).status == 401


async def test_login_is_rate_limited_and_failures_are_audited(client: TestClient) -> None:
    for _ in range(3):
        r = await client.post("/api/login", json={"name": ADMIN[0], "password": "wrong guess 1234"})
        assert r.status == 401
    r = await client.post("/api/login", json={"name": ADMIN[0], "password": ADMIN[1]})
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0
    # Another name from the same address is limited too (the address is over its budget).
    r = await client.post("/api/login", json={"name": READER[0], "password": READER[1]})
    assert r.status == 429


async def test_login_rejects_bad_bodies_with_json_errors(client: TestClient) -> None:
    r = await client.post(
        "/api/login", data=b"name=ada", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert r.status == 415
    r = await client.post("/api/login", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and "JSON" in (await r.json())["error"]
    r = await client.post("/api/login", json={"name": "ada"})
    assert r.status == 400
    r = await client.post("/api/login", json=["ada", "pw"])
    assert r.status == 400
    r = await client.post(
        "/api/login", data=b"{" + b" " * 10_000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert r.status == 413
    r = await client.post("/api/login", json={"name": "nobody", "password": "whatever it is"})
    assert r.status == 401 and (await r.json()) == {"error": "wrong operator name or password"}
    # Issue 16 item 10: 2,000 nested arrays raised RecursionError, a 500.
    for deep in (b"[" * 2000 + b"]" * 2000, b'{"a":' * 1300 + b"1" + b"}" * 1300, b"[" * 4000):
        r = await client.post("/api/login", data=deep, headers={"Content-Type": "application/json"})
        assert r.status in (400, 413), r.status
        assert "error" in await r.json()


async def test_bad_query_parameters_get_400_naming_the_problem(client: TestClient) -> None:
    await login(client, READER)
    for q in ("limit=abc", "limit=0", "limit=100000"):
        r = await client.get(f"/api/posts?{q}")
        assert r.status == 400
        assert "limit" in (await r.json())["error"]
    r = await client.get("/api/audit?before_id=-3")
    assert r.status == 400


# --- views, actions and the audit trail --------------------------------------------------


async def test_views_validate_against_the_document(
    client: TestClient, home: GroundHome, make_bundle: Any, bob_key: SigningKey
) -> None:
    ingest_bytes(home, make_bundle(2), source="test", now_ms=operators_now())
    with pytest.raises(BundleRejected):
        ingest_bytes(
            home, make_bundle(1, key=bob_key, author="bob", seed=9), source="evil", now_ms=operators_now()
        )
    await publish_due(home, operators_now())
    await login(client, READER)
    doc = openapi_document()
    for path, name in [
        ("/api/me", "Me"),
        ("/api/summary", "Summary"),
        ("/api/transfers", "Transfers"),
        ("/api/posts", "Posts"),
        ("/api/security", "SecurityEvents"),
        ("/api/platforms", "Platforms"),
        ("/api/astronauts", "Astronauts"),
        ("/api/audit", "AuditEvents"),
    ]:
        r = await client.get(path)
        assert r.status == 200
        schema_validate(doc, name, await r.json())
    posts = (await (await client.get("/api/posts")).json())["posts"]
    assert len(posts) == 2 and all(p["publications"][0]["state"] == "published" for p in posts)
    assert posts[0]["publications"][0]["url"].startswith("file://")
    sec = (await (await client.get("/api/security")).json())["events"]
    assert sec[0]["kind"] == "bundle-rejected" and sec[0]["source"] == "evil" and sec[0]["code"]


async def test_retry_a_failed_publication(client: TestClient, home: GroundHome, make_bundle: Any) -> None:
    # The archive's folder is a file: publishing fails for real, with the platform's reason.
    home.archive_dir.parent.mkdir(parents=True, exist_ok=True)
    home.archive_dir.write_text("in the way")
    r = ingest_bytes(home, make_bundle(1), source="test", now_ms=operators_now())
    (outcome,) = await publish_due(home, operators_now())
    assert outcome.state == "failed"
    me = await login(client, ADMIN)
    csrf = {"X-CSRF-Token": me["csrf_token"]}
    post_id = r.post_ids[0]
    (pub,) = (await (await client.get("/api/posts")).json())["posts"][0]["publications"]
    assert pub["state"] == "failed" and "archive write failed" in pub["last_error"]
    home.archive_dir.unlink()
    resp = await client.post(f"/api/publications/{post_id}/archive:alice/retry", headers=csrf)
    assert resp.status == 200, await resp.text()
    # Retrying again before the engine ran: it is pending now, not failed.
    resp = await client.post(f"/api/publications/{post_id}/archive:alice/retry", headers=csrf)
    assert resp.status == 409
    resp = await client.post("/api/publications/nope/archive:alice/retry", headers=csrf)
    assert resp.status == 404
    (outcome,) = await publish_due(home, operators_now())
    assert outcome.state == "published"
    audit = (await (await client.get("/api/audit?operators_only=1")).json())["events"]
    assert any(
        e["kind"] == "retry" and e["actor"] == f"operator:{ADMIN[0]}" and post_id in e["detail"]
        for e in audit
    )


class _Flaky:
    """An archive stand-in that fails as told, and counts lookups (reconciliation)."""

    name = "archive"

    def __init__(self) -> None:
        self.errors: list[PublishError] = []
        self.lookups = 0
        self.publishes = 0

    async def publish(self, req: PublishRequest, session: Any) -> Published:
        self.publishes += 1
        if self.errors:
            raise self.errors.pop(0)
        return Published(url=f"https://example.test/{self.publishes}", remote_id=str(self.publishes))

    async def lookup(self, req: PublishRequest, session: Any) -> Published | None:
        self.lookups += 1
        return Published(url="https://example.test/found", remote_id="found")

    async def delete(self, account: str, remote_id: str, session: Any) -> None:
        return None


async def test_retry_now_cuts_a_backoff_but_never_the_lookup(
    client: TestClient, home: GroundHome, make_bundle: Any
) -> None:
    flaky = _Flaky()
    flaky.errors = [
        PublishError("429 slow down", retryable=True),
        PublishError("timed out after sending", retryable=True, ambiguous=True),
    ]
    platforms: dict[str, Any] = {"archive": flaky}
    r = ingest_bytes(home, make_bundle(1, photo=False), source="test", now_ms=operators_now())
    post_id = r.post_ids[0]
    url = f"/api/publications/{post_id}/archive:alice/retry-now"
    (outcome,) = await publish_due(home, operators_now(), platforms)
    assert outcome.state == "pending" and outcome.next_attempt_ms > operators_now() + 500
    # Not logged in / read-only / no CSRF token: refused, nothing changes.
    assert (await client.post(url)).status == 401
    reader = await login(client, READER)
    (pub,) = (await (await client.get("/api/posts")).json())["posts"][0]["publications"]
    assert pub["display_state"] == "retry-wait"
    assert (await client.post(url, headers={"X-CSRF-Token": reader["csrf_token"]})).status == 403
    me = await login(client, ADMIN)
    assert (await client.post(url)).status == 403
    assert await publish_due(home, operators_now(), platforms) == []  # still waiting
    csrf = {"X-CSRF-Token": me["csrf_token"]}
    resp = await client.post(url, headers=csrf)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["state"] == "pending"
    assert (await client.post(url, headers=csrf)).status == 409  # already due
    # Due now: the engine tries again; this time the request may have gone out (ambiguous).
    (outcome,) = await publish_due(home, operators_now(), platforms)
    assert outcome.state == "publishing" and flaky.publishes == 2
    resp = await client.post(url, headers=csrf)
    assert resp.status == 200 and (await resp.json())["state"] == "publishing"
    # The retry looks the post up first and finds it: no second post.
    (outcome,) = await publish_due(home, operators_now(), platforms)
    assert outcome.state == "published" and flaky.lookups == 1 and flaky.publishes == 2
    assert outcome.url == "https://example.test/found"
    # Published: nothing to retry now; unknown publication: 404.
    assert (await client.post(url, headers=csrf)).status == 409
    assert (await client.post("/api/publications/NOPE/archive:alice/retry-now", headers=csrf)).status == 404
    audit = (await (await client.get("/api/audit?operators_only=1")).json())["events"]
    mine = [e for e in audit if e["kind"] == "retry-now"]
    assert len(mine) == 2 and all(
        e["actor"] == f"operator:{ADMIN[0]}" and post_id in e["detail"] for e in mine
    )


async def test_retry_now_leaves_a_scheduled_post_alone(
    client: TestClient, home: GroundHome, make_bundle: Any
) -> None:
    me = await login(client, ADMIN)
    csrf = {"X-CSRF-Token": me["csrf_token"]}
    r = ingest_bytes(home, make_bundle(1, photo=False), source="test", now_ms=operators_now())
    home.conn.execute(
        "UPDATE publications SET next_attempt_ms = ? WHERE item_id = ?",
        (operators_now() + 3_600_000, r.post_ids[0]),
    )
    home.conn.commit()
    resp = await client.post(f"/api/publications/{r.post_ids[0]}/archive:alice/retry-now", headers=csrf)
    assert resp.status == 409 and "not waiting for a retry" in (await resp.json())["error"]


async def test_pause_resume_and_revoke_are_recorded(
    client: TestClient, home: GroundHome, make_bundle: Any, alice_key: SigningKey
) -> None:
    me = await login(client, ADMIN)
    csrf = {"X-CSRF-Token": me["csrf_token"]}
    for path in (
        "/api/platforms/archive/pause",
        "/api/accounts/archive:alice/pause",
    ):
        assert (await client.post(path, headers=csrf)).status == 200
    plats = (await (await client.get("/api/platforms")).json())["platforms"]
    assert plats[0]["paused"] is True and plats[0]["accounts"][0]["paused"] is True
    for path in ("/api/platforms/archive/resume", "/api/accounts/archive:alice/resume"):
        assert (await client.post(path, headers=csrf)).status == 200
    plats = (await (await client.get("/api/platforms")).json())["platforms"]
    assert plats[0]["paused"] is False and plats[0]["accounts"][0]["paused"] is False
    assert (await client.post("/api/platforms/myspace/pause", headers=csrf)).status == 404
    assert (await client.post("/api/accounts/archive:nobody/pause", headers=csrf)).status == 404

    fp = key_id(alice_key.public_key).hex()
    r = await client.post(f"/api/keys/{fp}/revoke", headers=csrf)
    assert r.status == 200 and (await r.json())["astronaut"] == "alice"
    assert (await client.post(f"/api/keys/{fp}/revoke", headers=csrf)).status == 409
    assert (await client.post("/api/keys/00/revoke", headers=csrf)).status == 404
    with pytest.raises(BundleRejected, match="revoked"):
        ingest_bytes(home, make_bundle(1), source="after-revoke", now_ms=operators_now())
    kinds = [e["kind"] for e in (await (await client.get("/api/audit?operators_only=1")).json())["events"]]
    for k in ("pause-platform", "pause-account", "resume-platform", "resume-account", "revoke", "login"):
        assert k in kinds
    # The audit trail stays append-only under the dashboard too.
    with pytest.raises(Exception, match="append-only"):
        home.conn.execute("DELETE FROM events")


async def test_stream_pushes_a_change_when_something_happens(
    client: TestClient, home: GroundHome, make_bundle: Any
) -> None:
    await login(client, READER)
    async with client.get("/api/stream") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")

        async def next_event() -> str:
            while True:
                line = (await r.content.readline()).decode()
                if line.startswith("event: "):
                    return line[7:].strip()

        assert await asyncio.wait_for(next_event(), 5) == "change"
        ingest_bytes(home, make_bundle(1), source="test", now_ms=operators_now())
        assert await asyncio.wait_for(next_event(), 5) == "change"


# --- metrics ------------------------------------------------------------------------------


async def test_metrics_report_bytes_bundles_publications_latency_and_contact(
    client: TestClient, home: GroundHome, make_bundle: Any, bob_key: SigningKey
) -> None:
    now = operators_now()
    data = make_bundle(2)
    ingest_bytes(home, data, source="test", now_ms=now)
    with pytest.raises(BundleRejected):
        ingest_bytes(home, b"not a bundle at all", source="junk", now_ms=now)
    await publish_due(home, now + 1500)
    await login(client, READER)
    r = await client.get("/metrics")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(await r.text())
        for s in fam.samples
    }
    assert samples[("orbitpost_received_bytes_total", (("outcome", "accepted"),))] == len(data)
    assert samples[("orbitpost_bundles_accepted_total", ())] == 1
    rejected = [k for k in samples if k[0] == "orbitpost_bundles_rejected_total"]
    assert len(rejected) == 1 and samples[rejected[0]] == 1
    assert samples[("orbitpost_publications", (("platform", "archive"), ("state", "published")))] == 2
    assert samples[("orbitpost_publish_queue_depth", (("platform", "archive"),))] == 0
    assert samples[("orbitpost_publish_latency_seconds_count", ())] == 2
    assert samples[("orbitpost_publish_latency_seconds_bucket", (("le", "1.0"),))] == 0
    assert samples[("orbitpost_publish_latency_seconds_bucket", (("le", "2.5"),))] == 2
    assert samples[("orbitpost_seconds_since_last_contact", ())] >= 0
    # No live link traffic in this test: the families exist, without samples.
    assert not [k for k in samples if k[0] == "orbitpost_link_received_bytes_total"]


# --- the operator CLI ------------------------------------------------------------------------


def test_operator_cli(cli: Any) -> None:
    out = cli.ground("operator", "add", "olga", "--role", "admin").output
    assert "added operator olga (admin)" in out
    password = re.search(r"password: (\S+)", out).group(1)  # type: ignore[union-attr]
    home = GroundHome(cli.ground_home)
    assert operators.authenticate(home.conn, "olga", password) is not None
    assert operators.authenticate(home.conn, "olga", password + "x") is None
    stored = home.conn.execute("SELECT password_hash FROM operators WHERE name = 'olga'").fetchone()[0]
    assert stored.startswith("scrypt$") and password not in stored
    r = cli.runner.invoke(
        __import__("ground.cli", fromlist=["app"]).app,
        ["--home", str(cli.ground_home), "operator", "add", "pat", "--password-stdin"],
        input="a long enough password\n",
    )
    assert r.exit_code == 0 and "password:" not in r.output
    assert operators.authenticate(home.conn, "pat", "a long enough password") is not None
    assert "pat\tread-only\tactive" in cli.ground("operator", "list").output
    dup = cli.ground("operator", "add", "olga", ok=False)
    assert dup.exit_code != 0 and "already exists" in str(dup.exception)
    token = cli.ground("operator", "token", "pat").output.strip()
    assert operators.session_for(home.conn, token, operators_now()) is not None
    cli.ground("operator", "remove", "pat")
    assert operators.session_for(home.conn, token, operators_now()) is None
    assert operators.authenticate(home.conn, "pat", "a long enough password") is None
    home.close()


async def test_the_engine_honours_platform_and_account_pauses(
    client: TestClient, home: GroundHome, make_bundle: Any
) -> None:
    me = await login(client, ADMIN)
    csrf = {"X-CSRF-Token": me["csrf_token"]}
    assert (await client.post("/api/platforms/archive/pause", headers=csrf)).status == 200
    ingest_bytes(home, make_bundle(1, photo=False), source="test", now_ms=operators_now())
    assert await publish_due(home, operators_now()) == []
    assert (await client.post("/api/platforms/archive/resume", headers=csrf)).status == 200
    assert (await client.post("/api/accounts/archive:alice/pause", headers=csrf)).status == 200
    assert await publish_due(home, operators_now()) == []
    summary = await (await client.get("/api/summary")).json()
    assert summary["queue_depth"] == 1 and summary["publications"] == {"pending": 1}
    (post,) = (await (await client.get("/api/posts")).json())["posts"]
    assert post["publications"][0]["display_state"] == "paused"
    assert (await client.post("/api/accounts/archive:alice/resume", headers=csrf)).status == 200
    (outcome,) = await publish_due(home, operators_now())
    assert outcome.state == "published"


async def test_partial_and_failed_uploads_are_shown(client: TestClient, home: GroundHome) -> None:
    # Rows as the live link writes them (ground/db.py `transfers`): one photo half received,
    # one bundle whose bytes did not match the hash the station announced.
    now = operators_now()
    with home.conn:
        home.conn.executemany(
            "INSERT INTO transfers (transfer_id, station, kind, sha256, source, owner, state, total_bytes, "
            "received_bytes, ranges, code, message, started_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    "iss/blob:aa",
                    "iss",
                    "blob",
                    b"\xaa" * 32,
                    "link:iss",
                    "iss",
                    "receiving",
                    200_000,
                    100_000,
                    b"",
                    None,
                    None,
                    now - 10_000,
                    now,
                ),
                (
                    "iss/bundle:bb",
                    "iss",
                    "bundle",
                    b"\xbb" * 32,
                    "link:iss",
                    "iss",
                    "failed",
                    5_000,
                    5_000,
                    b"",
                    "hash_mismatch",
                    "bytes do not match the announced sha256",
                    now - 5_000,
                    now - 4_000,
                ),
            ],
        )
    await login(client, READER)
    link = (await (await client.get("/api/summary")).json())["link"]
    (active,) = link["active_transfers"]
    assert active["transfer_id"] == "iss/blob:aa" and active["progress"] == 0.5
    assert 9_000 < active["bytes_per_s"] < 11_000
    transfers = (await (await client.get("/api/transfers")).json())["transfers"]
    assert {t["state"] for t in transfers} == {"receiving", "failed"}
    sec = (await (await client.get("/api/security")).json())["events"]
    assert any(e["kind"] == "transfer-failed" and e["code"] == "hash_mismatch" for e in sec)
    schema_validate(openapi_document(), "SecurityEvents", {"events": sec})


async def test_unknown_api_paths_and_methods_get_json_404(client: TestClient) -> None:
    for method, path in [
        ("GET", "/api/nope"),
        ("DELETE", "/api/posts"),
        ("PUT", "/api/publications/x/y/retry"),
    ]:
        r = await client.request(method, path)
        assert r.status == 404, (method, path)
        assert path in (await r.json())["error"]


async def test_platforms_view_shows_token_expiry_per_account(client: TestClient, home: GroundHome) -> None:
    import time

    from ground.credentials import TokenSet, store_for

    home.conn.execute("INSERT INTO accounts (astronaut, account) VALUES ('alice', 'x:alice')")
    home.conn.execute("INSERT INTO accounts (astronaut, account) VALUES ('alice', 'linkedin:alice')")
    store = store_for(home.root)
    now = int(time.time() * 1000)
    store.add("x:alice", '{"client_id":"c"}', service_url="http://127.0.0.1:9")
    store.save_tokens("x:alice", TokenSet(access_token="a", expires_at_ms=now + 12 * 86_400_000 + 3_600_000))
    store.add("linkedin:alice", '{"client_id":"c"}', service_url="http://127.0.0.1:9")
    store.save_tokens(
        "linkedin:alice", TokenSet(access_token="a", refresh_token="r", refresh_expires_at_ms=now - 1)
    )
    await login(client, READER)
    data = await (await client.get("/api/platforms")).json()
    schema_validate(openapi_document(), "Platforms", data)
    tokens = {a["account"]: a["token"] for p in data["platforms"] for a in p["accounts"]}
    assert tokens["x:alice"] == "expires in 12 days"
    assert tokens["linkedin:alice"] == "EXPIRED: reconnect this account"
    assert tokens["archive:alice"] is None
