"""The compose page's defences and durability, through HTTP against a real `onboard ui` process.

No session → 401; wrong Host → refused (DNS rebinding); missing or wrong CSRF token → refused;
a non-loopback --host → refused at start; a protected key signs only once unlocked, and is
forgotten after inactivity or when another astronaut is chosen; an over-limit post is refused
by the server (the same check as `onboard post`) and nothing is queued; a draft survives
SIGKILL of `onboard ui`.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ui_support import Ui, running_ui, start_ui, stop_ui

from onboard import keystore, queue
from onboard.errors import OnboardError
from onboard.home import Home
from onboard.ui.server import loopback_address

PASSPHRASE = "correct horse battery staple"


class Client:
    """One browser's worth of state: the session cookie and CSRF token."""

    def __init__(self, ui: Ui) -> None:
        self.ui = ui
        self.cookie = ""
        self.csrf = ""

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        host: str | None = None,
        csrf: bool = True,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, http.client.HTTPResponse]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ui.port, timeout=30)
        h = {"Host": host or f"127.0.0.1:{self.ui.port}", **(headers or {})}
        if self.cookie:
            h["Cookie"] = self.cookie
        if csrf and self.csrf:
            h["X-CSRF-Token"] = self.csrf
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = payload
        return resp.status, parsed, resp

    def login(self) -> None:
        status, _, resp = self.request("GET", "/login?secret=" + self.ui.secret)
        assert status == 303, status
        cookie = resp.getheader("Set-Cookie") or ""
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        self.cookie = cookie.split(";", 1)[0]
        status, state, _ = self.request("GET", "/api/state")
        assert status == 200
        self.csrf = state["csrf"]


def cli(home: Path, env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "onboard", "--home", str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok and r.returncode != 0:
        raise AssertionError(f"{args}: {r.stdout}{r.stderr}")
    return r


@pytest.fixture
def laptop(tmp_path: Path, subprocess_env: dict[str, str]) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "A"
    keystore.new_key(Home(home), "alice", PASSPHRASE.encode())
    keystore.new_key(Home(home), "bob")
    return home, subprocess_env


@pytest.fixture
def ui(laptop: tuple[Path, dict[str, str]]) -> Iterator[Ui]:
    with running_ui(*laptop) as u:
        yield u


def test_non_loopback_host_is_refused_at_start(laptop: tuple[Path, dict[str, str]]) -> None:
    home, env = laptop
    r = cli(home, env, "ui", "--no-open", "--host", "0.0.0.0", ok=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "refusing to listen on 0.0.0.0" in r.stderr and "127.0.0.1" in r.stderr, r.stderr
    for bad in ("::", "192.168.1.20", "::ffff:10.0.0.1"):
        with pytest.raises(OnboardError, match="refusing to listen"):
            loopback_address(bad)
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert loopback_address(host)
    with pytest.raises(OnboardError, match="refusing to listen on 10.0.0.1"):
        loopback_address("10.0.0.1")
    with pytest.raises(OnboardError, match="not an IP address"):
        loopback_address("example.org")


def test_no_session_gets_401_and_nothing_else(ui: Ui) -> None:
    c = Client(ui)
    for method, path in [
        ("GET", "/"),
        ("GET", "/api/state"),
        ("GET", "/static/app.js"),
        ("POST", "/api/drafts"),
        ("POST", "/api/unlock"),
        ("GET", "/api/photos/" + "0" * 64 + "/thumb"),
    ]:
        status, body, _ = c.request(method, path)
        assert status == 401, (method, path, status)
        assert set(body) == {"error"}
    status, _, _ = c.request("GET", "/login?secret=not-the-secret")
    assert status == 401
    c.cookie = f"onboard_ui_{ui.port}=forged"
    assert c.request("GET", "/api/state")[0] == 401


def test_wrong_host_is_refused_even_with_a_session(ui: Ui) -> None:
    c = Client(ui)
    # A rebound DNS name pointing at 127.0.0.1 cannot even log in with the secret...
    assert c.request("GET", "/login?secret=" + ui.secret, host=f"evil.example:{ui.port}")[0] == 421
    c.login()
    for host in (f"evil.example:{ui.port}", "127.0.0.1:1", "127.0.0.1", f"localhost.evil:{ui.port}"):
        assert c.request("GET", "/api/state", host=host)[0] == 421
        assert c.request("POST", "/api/drafts", host=host)[0] == 421
    # ...while the names of the loopback address itself are fine.
    for host in (f"127.0.0.1:{ui.port}", f"localhost:{ui.port}"):
        assert c.request("GET", "/api/state", host=host)[0] == 200


def test_every_action_needs_the_csrf_token(ui: Ui) -> None:
    c = Client(ui)
    c.login()
    status, d, _ = c.request("POST", "/api/drafts")
    assert status == 200
    did = d["id"]
    actions: list[tuple[str, str, Any]] = [
        ("POST", "/api/drafts", None),
        ("PUT", f"/api/drafts/{did}", {"text": "x", "targets": ["archive:alice"]}),
        ("DELETE", f"/api/drafts/{did}", None),
        ("POST", f"/api/drafts/{did}/queue", None),
        ("POST", "/api/unlock", {"astronaut": "alice", "passphrase": PASSPHRASE}),
        ("POST", "/api/select", {"astronaut": "bob"}),
        ("POST", "/api/lock", None),
        ("POST", "/api/items/01M8TFSNNR1TNKJ9QQPH1B9SZP/cancel", None),
        ("POST", "/api/items/01M8TFSNNR1TNKJ9QQPH1B9SZP/retract", None),
    ]
    for method, path, body in actions:
        assert c.request(method, path, body, csrf=False)[0] == 403, path
        assert c.request(method, path, body, csrf=False, headers={"X-CSRF-Token": "guess"})[0] == 403
    # The right token, but from another origin's page: refused too.
    assert c.request("POST", "/api/drafts", headers={"Origin": "http://evil.example"})[0] == 403
    # Nothing changed: the draft is still there, still empty.
    assert c.request("GET", f"/api/drafts/{did}")[1]["text"] == ""
    status, _, resp = c.request("GET", "/")
    assert status == 200
    csp = resp.getheader("Content-Security-Policy") or ""
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp


def _draft(c: Client, text: str, targets: list[str], author: str = "alice") -> str:
    status, d, _ = c.request("POST", "/api/drafts")
    assert status == 200
    status, d, _ = c.request(
        "PUT", f"/api/drafts/{d['id']}", {"author": author, "text": text, "targets": targets}
    )
    assert status == 200, d
    return str(d["id"])


def test_signing_needs_the_unlocked_key_and_forgets_it(laptop: tuple[Path, dict[str, str]]) -> None:
    home, env = laptop
    with running_ui(home, env, "--lock-after", "0.02") as ui:  # 1.2 s
        c = Client(ui)
        c.login()
        did = _draft(c, "hello", ["archive:alice"])
        status, body, _ = c.request("POST", f"/api/drafts/{did}/queue")
        assert status == 403 and "locked" in body["error"]
        status, body, _ = c.request("POST", "/api/unlock", {"astronaut": "alice", "passphrase": "wrong one!"})
        assert status == 403 and "wrong passphrase" in body["error"]
        assert c.request("POST", "/api/unlock", {"astronaut": "alice", "passphrase": PASSPHRASE})[0] == 200
        state = c.request("GET", "/api/state")[1]
        assert [a["unlocked"] for a in state["astronauts"]] == [True, True]  # bob has no passphrase
        status, body, _ = c.request("POST", f"/api/drafts/{did}/queue")
        assert status == 200, body
        # Switching astronaut locks alice.
        assert c.request("POST", "/api/select", {"astronaut": "bob"})[0] == 200
        did = _draft(c, "hello again", ["archive:alice"])
        assert c.request("POST", f"/api/drafts/{did}/queue")[0] == 403
        # Inactivity locks her too; the page's background polling does not count as activity.
        assert c.request("POST", "/api/unlock", {"astronaut": "alice", "passphrase": PASSPHRASE})[0] == 200
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            c.request("GET", "/api/state", headers={"X-Onboard-Background": "1"})
            time.sleep(0.2)
        status, body, _ = c.request("POST", f"/api/drafts/{did}/queue")
        assert status == 403 and "locked after" in body["error"], body
        # bob's unprotected key signs without a passphrase (and is marked so on the page).
        did = _draft(c, "bob here", ["archive:bob"], author="bob")
        assert c.request("POST", f"/api/drafts/{did}/queue")[0] == 200
    conn = queue.connect(home / "onboard.db")
    try:
        assert sorted(q.item.author for q in queue.items(conn)) == ["alice", "bob"]
    finally:
        conn.close()


def test_over_limit_post_is_refused_by_the_server_and_nothing_is_queued(ui: Ui) -> None:
    c = Client(ui)
    c.login()
    assert c.request("POST", "/api/unlock", {"astronaut": "alice", "passphrase": PASSPHRASE})[0] == 200
    did = _draft(c, "🌌" * 301, ["bluesky:alice.test", "archive:alice"])
    d = c.request("GET", f"/api/drafts/{did}")[1]
    (bsky,) = [t for t in d["check"]["targets"] if t["target"] == "bluesky:alice.test"]
    assert bsky["count"] == 301 and not bsky["ok"] and "shorten it by 1" in bsky["problems"][0]
    status, body, _ = c.request("POST", f"/api/drafts/{did}/queue")
    assert status == 400 and "shorten it by 1" in body["error"]
    assert c.request("GET", "/api/state")[1]["queue"] == []
    assert c.request("GET", f"/api/drafts/{did}")[0] == 200  # the draft is kept to be fixed


def test_bad_input_gets_a_clear_error(ui: Ui) -> None:
    c = Client(ui)
    c.login()
    did = _draft(c, "x", [])
    for body in ([1, 2], {"text": 5}, {"photos": [{"sha": "../../etc/passwd"}]}, {"targets": "a"}):
        status, answer, _ = c.request("PUT", f"/api/drafts/{did}", body)
        assert status == 400 and answer["error"], body
    assert c.request("PUT", f"/api/drafts/{did}", raw=b"{not json")[0] == 400
    form = (
        b'--b\r\nContent-Disposition: form-data; name="photo"; filename="notes.txt"\r\n\r\n'
        b"not a photo\r\n--b--\r\n"
    )
    status, answer, _ = c.request(
        "POST",
        f"/api/drafts/{did}/photos",
        raw=form,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert status == 400 and "notes.txt is not a photo" in answer["error"]
    assert c.request("GET", "/api/drafts/..%2f..%2fkeys")[0] in (400, 404)
    assert c.request("GET", "/static/..%2findex.html")[0] == 404
    assert c.request("GET", f"/api/drafts/{did}")[1]["text"] == "x"


def test_draft_survives_sigkill_of_onboard_ui(
    laptop: tuple[Path, dict[str, str]], sample_jpegs: list[Path]
) -> None:
    home, env = laptop
    ui = start_ui(home, env)
    try:
        c = Client(ui)
        c.login()
        text = "Half-written post about the aurora 🌌 — not lost"
        did = _draft(c, text, ["bluesky:alice.test"])
        photo = sample_jpegs[0].read_bytes()
        boundary = "b0undary"
        form = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="photo"; filename="rocket.jpg"\r\n'
                "Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + photo
            + f"\r\n--{boundary}--\r\n".encode()
        )
        status, d, _ = c.request(
            "POST",
            f"/api/drafts/{did}/photos",
            raw=form,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        assert status == 200, d
        assert d["photos"][0]["size_bytes"] == len(photo)
        assert 0 < d["photos"][0]["wire_bytes"] < len(photo)  # JPEG XL saves on the wire
    finally:
        stop_ui(ui, signal.SIGKILL)
    assert ui.proc.returncode == -signal.SIGKILL
    with running_ui(home, env) as again:
        c = Client(again)
        c.login()
        assert [d["id"] for d in c.request("GET", "/api/state")[1]["drafts"]] == [did]
        d = c.request("GET", f"/api/drafts/{did}")[1]
        assert d["text"] == text and d["targets"] == ["bluesky:alice.test"]
        assert d["photos"][0]["name"] == "rocket.jpg" and d["photos"][0]["thumb"]
        status, thumb, _ = c.request("GET", f"/api/photos/{d['photos'][0]['sha']}/thumb")
        assert status == 200 and thumb[:3] == b"\xff\xd8\xff"


def test_polling_is_cheap_and_sees_what_other_processes_commit(
    ui: Ui, laptop: tuple[Path, dict[str, str]]
) -> None:
    home, _ = laptop
    c = Client(ui)
    c.login()
    status, state, resp = c.request("GET", "/api/state")
    etag = resp.getheader("ETag") or ""
    assert status == 200 and etag and state["queue"] == []
    # Nothing changed: 304, no body (the page polls every 2 s).
    for _ in range(3):
        assert c.request("GET", "/api/state", headers={"If-None-Match": etag})[0] == 304
    # `onboard post` in another process (a CLI in a terminal, or `onboard sync` applying
    # receipts) commits to the queue: the next poll shows it.
    from onboard.compose import compose_post

    conn = queue.connect(home / "onboard.db")
    try:
        post = compose_post(
            Home(home), conn, author="bob", text="from the CLI", targets=["archive:bob"], photos=[]
        )
    finally:
        conn.close()
    status, state, resp = c.request("GET", "/api/state", headers={"If-None-Match": etag})
    assert status == 200 and [q["id"] for q in state["queue"]] == [post.id]
    assert resp.getheader("ETag") != etag
