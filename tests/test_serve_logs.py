"""`ground serve`'s log (ground/logs.py) and how both long-running commands stop.

Real processes: `ground serve` and `onboard sync` started as a user would, stopped with SIGTERM.
The credential test sends every kind of credential ground knows in the places a log could
pick it up (aiohttp's HTTP parser error echoes a bad header line whole) and then searches
everything the process wrote.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from harden_support import raw_blocking
from link_support import free_port

from ground import logs


def _serve(cli: Cli, port: int, log: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    args = ["--home", str(cli.ground_home), "serve", "--port", str(port), *extra]
    with log.open("wb") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "ground", *args], env=env, stdout=subprocess.DEVNULL, stderr=err
        )


def _wait_for(log: Path, needle: str, timeout_s: float = 30.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared in:\n{log.read_text(errors='replace')}")


def _wait_until_open(pid: int, name: str, timeout_s: float = 30.0) -> None:
    """Until process ``pid`` holds a file called ``name`` open (Linux /proc)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if any(
                os.readlink(f"/proc/{pid}/fd/{fd}").endswith(name) for fd in os.listdir(f"/proc/{pid}/fd")
            ):
                return
        time.sleep(0.1)
    raise AssertionError(f"process {pid} never opened {name}")


def _http(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> int:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    req = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n{head}\r\n"
    answer = raw_blocking(port, req.encode() + body)
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def stopper() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_serve_logs_every_event_as_json_and_never_a_credential(
    enrolled: Cli, tmp_path: Path, subprocess_env: dict[str, str], stopper: list[subprocess.Popen[bytes]]
) -> None:
    cli = enrolled
    token_file = tmp_path / "T"
    cli.ground("station", "add", "iss", "--token-out", str(token_file))
    station_token = json.loads(token_file.read_text())["token"]
    password = "Operator-Password-7f3a9c"
    from ground.cli import app

    r = cli.runner.invoke(
        app, ["--home", str(cli.ground_home), "operator", "add", "ada", "--role", "admin", "--password-stdin"],
        input=password + "\n",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    api_token = cli.ground("operator", "token", "ada").output.strip()
    platform_secrets = {
        "bluesky:alice.test": "bsky-app-pass-q1w2-e3r4",
        "webhook:intranet": "hmac-key-Zq81xVv0pL",
    }
    for target, secret in platform_secrets.items():
        f = tmp_path / f"{target.split(':')[0]}.secret"
        f.write_text(secret)
        cli.ground(
            "account", "add", target, "--secret-file", str(f), "--service-url", "http://127.0.0.1:9/hook"
        )
    secrets = [station_token, password, api_token, *platform_secrets.values()]

    port = free_port()
    log = tmp_path / "ground.log"
    server = _serve(cli, port, log, subprocess_env, "--log-format", "json")
    stopper.append(server)
    _wait_for(log, '"listening"')

    # aiohttp's parser refuses a NUL in a header and logs the offending line, whole.
    for secret in secrets:
        answer = raw_blocking(
            port,
            b"POST /v1/link HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
            + secret.encode()
            + b"\x00\r\nContent-Length: 0\r\n\r\n",
        )
        assert answer.split(b" ", 2)[1] == b"400"
    assert _http(port, "POST", "/v1/link", {"Authorization": "Bearer not-a-station-token"}) == 401
    bad_login = json.dumps({"name": "ada", "password": password + "-wrong"}).encode()
    assert _http(port, "POST", "/api/login", {"Content-Type": "application/json"}, bad_login) == 401
    good_login = json.dumps({"name": "ada", "password": password}).encode()
    assert _http(port, "POST", "/api/login", {"Content-Type": "application/json"}, good_login) == 200
    assert _http(port, "GET", "/api/summary", {"Authorization": f"Bearer {api_token}x"}) == 401
    assert _http(port, "GET", "/api/summary", {"Authorization": f"Bearer {api_token}"}) == 200

    # A real sync: a bundle accepted over the link and published.
    cli.onboard("link", "add", "--ground", f"http://127.0.0.1:{port}", "--token-file", str(token_file))
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "logged, not leaked")
    sync = subprocess.run(
        cli.onboard_argv("sync", "--wait-published", "20", "--json"),
        env=subprocess_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert sync.returncode == 0, sync.stderr
    summary = json.loads(sync.stdout)
    assert summary["schema"] == "orbitpost.onboard.sync" and summary["version"] == 1
    assert set(summary) == {
        "schema", "version", "committed", "rejected", "receipts", "requests", "request_bytes", "chunk_bytes",
        "retried", "duration_s", "pending_items",
    }  # fmt: skip
    assert summary["committed"] >= 1 and summary["rejected"] == 0
    _wait_for(log, '"publication"')

    server.send_signal(signal.SIGTERM)
    assert server.wait(20) == 0
    text = log.read_text()
    events = [json.loads(line) for line in text.splitlines()]  # every line is one JSON object
    kinds = [e["event"] for e in events]
    assert kinds[0] == "listening" and kinds[-1] == "shutdown"
    assert events[-1]["reason"] == "SIGTERM" and "stopped (SIGTERM)" in events[-1]["message"]
    assert "bundle_accepted" in kinds
    pub = next(e for e in events if e["event"] == "publication")
    assert (
        pub["state"] == "published" and pub["account"] == "archive:alice" and pub["url"].startswith("file://")
    )
    refused = {e["credential"] for e in events if e["event"] == "credential_refused"}
    assert refused >= {"station_token", "operator_password", "api_token"}
    assert any("Error handling request" in e["message"] for e in events)  # the parser errors were logged
    for secret in secrets:
        assert secret not in text, f"a credential reached the log: {secret[:4]}…"
        assert secret.encode("unicode_escape").decode() not in text


def test_serve_text_log_warns_without_operators_and_stops_on_sigterm(
    enrolled: Cli, tmp_path: Path, subprocess_env: dict[str, str], stopper: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    log = tmp_path / "ground.log"
    server = _serve(enrolled, port, log, subprocess_env)
    stopper.append(server)
    _wait_for(log, "serving on")
    server.send_signal(signal.SIGTERM)
    assert server.wait(20) == 0
    lines = log.read_text().splitlines()
    assert "no operator can log in" in lines[0] and "operator add NAME --role admin" in lines[0]
    assert f"serving on http://127.0.0.1:{port}" in lines[1]
    assert "stopped (SIGTERM)" in lines[-1]
    assert all(re.match(r"\d{4}-\d\d-\d\dT\S+Z (info|warning) ", ln) for ln in lines), lines


def test_a_failed_bind_never_claims_to_serve(
    enrolled: Cli, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "ground", "--home", str(enrolled.ground_home), "serve", "--port", str(port)],
            env=subprocess_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert r.returncode == 1
    assert "serving on" not in r.stderr + r.stdout
    assert r.stderr.splitlines()[-1].startswith(f"error: cannot listen on 127.0.0.1:{port}")


def test_sync_watch_says_why_it_stopped_on_sigterm(
    enrolled: Cli, tmp_path: Path, subprocess_env: dict[str, str], stopper: list[subprocess.Popen[bytes]]
) -> None:
    cli = enrolled
    cli.ground("station", "add", "iss", "--token-out", str(tmp_path / "T"))
    # Nothing listens there: --watch keeps trying, as across a loss of signal.
    cli.onboard(
        "link", "add", "--ground", f"http://127.0.0.1:{free_port()}", "--token-file", str(tmp_path / "T")
    )
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "waiting for the link")
    err = tmp_path / "sync.err"
    with err.open("wb") as f:
        proc = subprocess.Popen(
            cli.onboard_argv("sync", "--watch"),
            env=subprocess_env, stdout=subprocess.DEVNULL, stderr=f,
        )  # fmt: skip
    stopper.append(proc)
    _wait_until_open(proc.pid, "onboard.db")  # sync is running (progress shows only on a terminal)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    last = err.read_text().strip().splitlines()[-1]
    assert (
        last
        == "sync stopped by SIGTERM; nothing is lost: run `onboard sync` again to resume where it left off"
    )


# --- the redaction itself, per credential kind and per logger ----------------------------------

TOKEN = "q8Zr2vXbN4kLmP0sT6uWyA1cE3gI5oQ7_-hJdFfRtYx"  # secrets.token_urlsafe(32)'s shape


@pytest.mark.parametrize(
    "line",
    [
        f"BadHttpMessage: 400, message: Invalid header value char: b'Authorization: Bearer {TOKEN}\\x00'",
        f"headers {{'Authorization': 'Bearer {TOKEN}', 'Host': 'x'}}",
        f"Cookie: orbitpost_session={TOKEN}; other=1",
        f"X-CSRF-Token: {TOKEN}",
        f"station iss token={TOKEN}",
        f"api token {TOKEN} issued",
        '{"name": "ada", "password": "Operator-Password-7f3a9c"}',
        "login with password=Operator-Password-7f3a9c failed",
        'session {"accessJwt": "eyJhbGciOi.eyJzdWIiOi.sig", "refreshJwt": "eyJr.eyJz.sig2"}',
    ],
)
def test_redact_every_credential_shape(line: str) -> None:
    out = logs.redact(line)
    for secret in (TOKEN, "Operator-Password-7f3a9c", "eyJhbGciOi.eyJzdWIiOi.sig", "eyJr.eyJz.sig2"):
        assert secret not in out, out
    assert logs.REDACTED in out


def test_registered_platform_secrets_are_redacted_anywhere() -> None:
    logs.register_secret("hmac key with spaces 123")
    assert logs.redact("posting with hmac key with spaces 123 now") == "posting with [redacted] now"


def test_hex_digests_ids_and_urls_are_left_alone() -> None:
    line = (
        "bundle 3f2a9c01d4e5 sha256 " + "ab" * 32 + " post 01JD3Q8Z6Y4W9E2R5T7U1I0O9P "
        "https://bsky.app/profile/alice.test/post/3kxyz bafyreibwk3ysmkvqsr2hyd2p3sxmyhvayjyc4nfimsvqfx"
    )
    assert logs.redact(line) == line


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize(
    "logger", ["aiohttp.server", "aiohttp.web", "aiohttp.access", "asyncio", "ground.serve"]
)
def test_every_logger_goes_through_the_redacting_handler(fmt: str, logger: str) -> None:
    stream = io.StringIO()
    handler = logs.setup(fmt, stream)
    try:
        try:
            raise ValueError(f"Invalid header value char: b'Authorization: Bearer {TOKEN}\\x00'")
        except ValueError:
            logging.getLogger(logger).error("Error handling request %s", f"token={TOKEN}", exc_info=True)
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert out.count("\n") == 1 and TOKEN not in out
    if fmt == "json":
        doc: dict[str, Any] = json.loads(out)
        assert doc["logger"] == logger and "[redacted]" in doc["exception"]


def test_text_log_lines_cannot_drive_the_terminal() -> None:
    stream = io.StringIO()
    handler = logs.setup("text", stream)
    try:
        logs.event("publication", "failed: \x1b]0;owned\x07 [red]x[/red] \r\u202eevil\nsecond line")
    finally:
        logging.getLogger().removeHandler(handler)
    out = stream.getvalue()
    assert out.count("\n") == 1 and "\x1b" not in out and "\r" not in out and "\u202e" not in out
    assert "\\x1b]0;owned\\x07 [red]x[/red] \\r\\u202eevil | second line" in out


def test_redacting_stream_holds_partial_lines() -> None:
    target = io.StringIO()
    s = logs.RedactingStream(target)
    s.write(f"Authorization: Bearer {TOKEN[:10]}")
    assert target.getvalue() == ""
    s.write(f"{TOKEN[10:]}\nnext")
    s.flush()
    assert target.getvalue() == "Authorization: [redacted]\nnext" and os.linesep == "\n"
