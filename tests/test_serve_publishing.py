"""`ground serve` publishes for real: a scheduled post from the real onboard client goes out,
not before its time, to a real local Bluesky PDS and to a Mastodon-API server, with its photo."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fake_server import fake_process
from pds import harness

from ground.home import GroundHome
from ground.ingest import ingest_bytes
from ground.platforms.atproto import tid_for_post

BSKY = "bluesky:alice.test"
MASTO = "mastodon:alice@fake.example"


@pytest.fixture(scope="module")
def pds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Pds]:
    with harness.running(tmp_path_factory.mktemp("pds-serve"), "alice.test") as server:
        yield server


@pytest.fixture
def mastodon(subprocess_env: dict[str, str]) -> Iterator[str]:
    with fake_process("mastodon", env=subprocess_env) as info:
        yield info["url"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(tool: str, home: Path, *args: str, env: dict[str, str]) -> str:
    r = subprocess.run(
        [sys.executable, "-m", tool, "--home", str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"{tool} {args}: {r.stdout}{r.stderr}"
    return r.stdout


def test_ground_serve_publishes_a_scheduled_post_to_the_pds_and_mastodon(
    tmp_path: Path, pds: harness.Pds, mastodon: str, subprocess_env: dict[str, str], sample_jpegs: list[Path]
) -> None:
    env = subprocess_env
    onboard, ground = tmp_path / "A", tmp_path / "G"
    _cli("onboard", onboard, "keys", "new", "alice", env=env)
    line = _cli("onboard", onboard, "keys", "show", "alice", env=env).strip()
    _cli("ground", ground, "enroll", "alice", "--key", line, "--account", BSKY, "--account", MASTO, env=env)
    secret = tmp_path / "secret"
    secret.write_text(pds.accounts["alice.test"].app_password)
    _cli(
        "ground",
        ground,
        "account",
        "add",
        BSKY,
        "--app-password-file",
        str(secret),
        "--service-url",
        pds.url,
        env=env,
    )
    secret.write_text("token-alice")
    _cli(
        "ground",
        ground,
        "account",
        "add",
        MASTO,
        "--token-file",
        str(secret),
        "--service-url",
        mastodon,
        env=env,
    )

    port = _free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "ground", "--home", str(ground), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        photo = sample_jpegs[0]
        at_s = int(time.time()) + 12
        at = datetime.fromtimestamp(at_s, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        text = "Scheduled from orbit: Cafe\u0301 🇯🇵 #ISS\r\n"
        out = _cli(
            "onboard", onboard, "post", "--as", "alice", "--to", f"{BSKY},{MASTO}", "--at", at,
            "--photo", str(photo), "--alt", "Rocket", text, env=env,
        )  # fmt: skip
        post_id = out.split()[1]
        _cli("onboard", onboard, "export", str(tmp_path / "OUT"), env=env)
        # Stored the way the link would store it; the running server does the publishing.
        home = GroundHome(ground)
        (bundle,) = (tmp_path / "OUT").glob("*.opb")
        ingest_bytes(home, bundle.read_bytes(), source="test", now_ms=int(time.time() * 1000))
        deadline = time.monotonic() + 60
        rows: dict[str, tuple[str, int | None]] = {}
        while time.monotonic() < deadline:
            rows = {
                a: (s, t)
                for a, s, t in home.conn.execute(
                    "SELECT account, state, published_ms FROM publications WHERE item_id = ?", (post_id,)
                )
            }
            if rows and all(s == "published" for s, _ in rows.values()):
                break
            time.sleep(0.3)
        assert {a: s for a, (s, _) in rows.items()} == {BSKY: "published", MASTO: "published"}, rows
        assert all((t or 0) >= at_s * 1000 for _, t in rows.values()), "published before its time"
        home.close()
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=15)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        assert serve.stderr is not None
        log = serve.stderr.read().decode(errors="replace")
        serve.stderr.close()
    assert "Traceback" not in log, log
    assert pds.accounts["alice.test"].app_password not in log and "token-alice" not in log
    did = pds.accounts["alice.test"].did
    rec = pds.get_record(did, tid_for_post(post_id))
    assert rec["value"]["text"].encode() == text.encode()
    (img,) = rec["value"]["embed"]["images"]
    assert pds.get_blob(did, img["image"]["ref"]["$link"]) == photo.read_bytes() and img["alt"] == "Rocket"
    with urllib.request.urlopen(f"{mastodon}/_fake/statuses", timeout=10) as r:
        (status,) = json.loads(r.read())["statuses"]
    assert status["text"] == text and len(status["media_ids"]) == 1
    with urllib.request.urlopen(f"{mastodon}/_fake/media/{status['media_ids'][0]}", timeout=10) as r:
        assert r.read() == photo.read_bytes()
