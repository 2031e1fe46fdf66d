"""kill -9 of `ground serve` and of `onboard sync` at random points during a photo backlog
(issue 16 "go further"): every post is published once, byte-identical.

Both run as real processes over loopback; each round SIGKILLs one of them at a random moment
(start-up, mid-upload, mid-commit, mid-publish, mid-log catch-up) and starts it again. At the
end both run cleanly and the archive platform must hold every post exactly once, its photo byte
for byte, and the transparency log each post and each publication exactly once.

Default: 4 kills of each (a few seconds a round on 2 busy cores). `-m slow`: 50 of each.
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import Cli
from link_support import free_port, link_to, setup_station
from PIL import Image

from ground import translog
from ground.home import GroundHome


def _photo(rng: random.Random, n: int) -> bytes:
    """A distinct real JPEG (noise, so it does not compress away), ~20-60 KB."""
    img = Image.frombytes("RGB", (160, 120), rng.randbytes(160 * 120 * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, comment=f"photo {n}".encode())
    return buf.getvalue()


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as f:
            self.p = subprocess.Popen(self.args, stdout=f, stderr=subprocess.STDOUT, env=self.env)

    def running(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def kill(self) -> bool:
        """SIGKILL it if it is running; whether it was."""
        if self.p is None:
            return False
        was = self.p.poll() is None
        if was:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait()
        return was


def _wait_health(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/v1/health", timeout=2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("ground did not come back")


def _kill_loop(
    cli: Cli, tmp_path: Path, env: dict[str, str], kills_each: int, seed: int, procs: list[Proc]
) -> None:
    rng = random.Random(seed)
    token = setup_station(cli, tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    link_to(cli, url, token)
    photos: dict[str, bytes] = {}
    texts: list[str] = []
    for n in range(12):
        data = _photo(rng, n)
        p = tmp_path / f"p{n}.jpg"
        p.write_bytes(data)
        text = f"photo post {n}"
        photos[text] = data
        cli.onboard(
            "post", "--as", "alice", "--to", "archive:alice", "--photo", str(p), "--alt", "noise", text
        )
    for n in range(6):
        texts.append(f"text post {n} 🛰")
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", texts[-1])
    ground = Proc(
        cli.ground_argv("serve", "--port", str(port)),
        env,
        tmp_path / "ground.log",
    )
    sync = Proc(
        cli.onboard_argv("sync", "--give-up-after", "30"),
        env,
        tmp_path / "sync.log",
    )
    procs += [ground, sync]
    killed = {"ground": 0, "sync": 0}
    ground.start()
    _wait_health(url)
    deadline = time.monotonic() + 120 + 30 * kills_each  # a loaded machine: ~10 s a round
    while min(killed.values()) < kills_each and time.monotonic() < deadline:
        if not sync.running():
            sync.start()
        if not ground.running():
            ground.start()
        # The backlog keeps growing while both are being killed: a new photo post each round.
        n = len(photos)
        p = tmp_path / f"p{n}.jpg"
        p.write_bytes(_photo(rng, n))
        photos[f"photo post {n}"] = p.read_bytes()
        cli.onboard(
            "post",
            "--as",
            "alice",
            "--to",
            "archive:alice",
            "--photo",
            str(p),
            "--alt",
            "x",
            f"photo post {n}",
        )
        time.sleep(rng.uniform(0.0, 1.5))  # start-up, upload, commit, publish: wherever it lands
        victim = min(killed, key=lambda k: (killed[k], rng.random()))
        if (ground if victim == "ground" else sync).kill():
            killed[victim] += 1
        if victim == "ground":
            ground.start()
            _wait_health(url)
    assert min(killed.values()) >= kills_each, killed
    # The backlog must still be whole: a clean run finishes it.
    sync.kill()
    if not ground.running():
        ground.start()
        _wait_health(url)
    subprocess.run(
        cli.onboard_argv("sync", "--wait-published", "60"),
        env=env,
        check=True,
        capture_output=True,
        timeout=180,
    )
    want = set(texts) | set(photos)
    archive = cli.ground_home / "archive" / "alice"
    published: dict[str, list[Path]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        published = {}
        for d in archive.glob("*"):
            if d.is_dir() and not d.name.startswith("."):
                published.setdefault((d / "text.txt").read_text(), []).append(d)
        if set(published) == want:
            break
        time.sleep(0.2)
    ground.kill()
    assert set(published) == want, sorted(want - set(published))
    doubled = {t: len(ds) for t, ds in published.items() if len(ds) != 1}
    assert not doubled, doubled
    for text, data in photos.items():
        (d,) = published[text]
        assert (d / "media-1.jpg").read_bytes() == data, text
    # The public log followed all of it, through every kill of its catch-up: each accepted
    # post and each publication once (ground/translog.py; ground is stopped, so catch up here).
    home = GroundHome(cli.ground_home)
    try:
        translog.catch_up(home, int(time.time() * 1000))
        facts = [f for (f,) in home.conn.execute("SELECT fact FROM tlog_leaves")]
        items = {f"item:{i}" for (i,) in home.conn.execute("SELECT id FROM items")}
        pubs = {
            f"pub:{i}:{a}:published"
            for i, a in home.conn.execute(
                "SELECT item_id, account FROM publications WHERE state = 'published'"
            )
        }
    finally:
        home.close()
    assert len(items) == len(want) and len(facts) == len(set(facts))
    assert {f for f in facts if f.startswith("item:")} == items
    assert {f for f in facts if f.startswith("pub:")} == pubs


def _run(cli: Cli, tmp_path: Path, env: dict[str, str], kills_each: int, seed: int) -> None:
    procs: list[Proc] = []
    try:
        _kill_loop(cli, tmp_path, env, kills_each, seed, procs)
    finally:
        for p in procs:  # never leave a ground or sync behind, even when an assertion stopped the loop
            p.kill()


def test_kill_ground_and_sync_during_a_photo_backlog(
    cli: Cli, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    _run(cli, tmp_path, subprocess_env, kills_each=4, seed=1)


@pytest.mark.slow
def test_kill_ground_and_sync_50_times_each(cli: Cli, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    _run(cli, tmp_path, subprocess_env, kills_each=50, seed=2)
