"""A full disk on ground's home (issue 19 §1–2, issue 16 "go further"): refuse new work cleanly,
lose nothing accepted, recover by itself when space returns.

`ground serve` runs in a mount namespace of its own (``unshare -m``) with its home on a 32 MiB
tmpfs mounted there, so the test can fill that filesystem without touching the machine's
disks; the test reaches the files through ``/proc/<pid>/root``. Skipped, with the reason,
where mounting is impossible (not root, no unshare, no CAP_SYS_ADMIN).

The station is a real `onboard sync` against it. The disk is filled to several levels (0 and
a little free space, so failures land at different steps: chunk writes, upload records,
commits, traffic counters), each followed by a sync that must see only retryable answers (never
HTTP 500); then space returns and everything queued is published exactly once, byte-identical,
with nothing left staged and the database intact — without restarting ground.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli
from link_support import free_port, link_to, setup_station

from ground.platforms.archive import archived_posts
from onboard.errors import OnboardError
from onboard.home import Home
from onboard.sync import sync
from protocol.transfer import SenderConfig
from protocol.transfer_wire import ReceiptsRequest, encode_request

FAST = SenderConfig(backoff_initial_s=0.05, backoff_max_s=0.5, min_timeout_s=5.0)
TMPFS_BYTES = 32 * 1024 * 1024


def _mount_problem(probe: Path) -> str | None:
    if os.geteuid() != 0:
        return "mounting a tmpfs in a mount namespace needs root"
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    probe.mkdir()
    r = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", f"mount -t tmpfs -o size=1m none {probe}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if r.returncode:
        return f"cannot mount a tmpfs in a new mount namespace here: {r.stderr.strip()}"
    return None


class GroundOnTmpfs:
    """`ground serve` whose home is a small tmpfs only its own mount namespace sees."""

    def __init__(self, src: Path, mnt: Path, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        mnt.mkdir()
        script = (
            f"mount -t tmpfs -o size={TMPFS_BYTES},mode=0700 none {mnt} && cp -a {src}/. {mnt}/ && "
            f"exec {sys.executable} -m ground --home {mnt} serve --port {self.port}"
        )
        self.log = log
        with log.open("wb") as f:
            self.proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.home = Path(f"/proc/{self.proc.pid}/root") / mnt.relative_to("/")
        self.filler = self.home / "filler"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(self.url + "/v1/health", timeout=2) as r:
                    if r.status == 200:
                        return
            time.sleep(0.1)
        raise AssertionError("ground did not start: " + log.read_text())

    def fill(self, leave_bytes: int) -> None:
        """Fill the tmpfs until only about ``leave_bytes`` are free."""
        self.filler.unlink(missing_ok=True)
        st = os.statvfs(self.home)
        free = st.f_bavail * st.f_frsize
        with self.filler.open("wb") as f:
            block = b"\0" * (1 << 20)
            todo = max(0, free - leave_bytes)
            with contextlib.suppress(OSError):  # ENOSPC: as full as it gets
                while todo > 0:
                    todo -= f.write(block[: min(len(block), todo)])

    def free_space(self) -> None:
        self.filler.unlink(missing_ok=True)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def ground_on_tmpfs(cli: Cli, tmp_path: Path, subprocess_env: dict[str, str]) -> Iterator[GroundOnTmpfs]:
    problem = _mount_problem(tmp_path / "probe")
    if problem:
        pytest.skip(problem)
    token = setup_station(cli, tmp_path)
    g = GroundOnTmpfs(cli.ground_home, tmp_path / "mnt", tmp_path / "ground.log", subprocess_env)
    link_to(cli, g.url, token)
    try:
        yield g
    finally:
        g.stop()


def _raw_receipts_request(url: str, token: str) -> int:
    req = urllib.request.Request(
        url + "/v1/link",
        data=encode_request(ReceiptsRequest(seq=1, since=0)),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-orbitpost-frame"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read())
        assert body["error"] == "storage" and body["retryable"] is True, body
        return int(exc.code)


def _published(home: Path) -> dict[str, list[Path]]:
    """Where each text is held in the archive (text posts packed, photo posts in folders)."""
    out: dict[str, list[Path]] = {}
    if (home / "archive").is_dir():
        for p in archived_posts(home / "archive", "alice"):
            out.setdefault(p.text.decode(), []).append(p.location)
    return out


async def test_full_disk_refuses_cleanly_loses_nothing_and_recovers_without_restart(
    cli: Cli, tmp_path: Path, ground_on_tmpfs: GroundOnTmpfs, sample_jpegs: list[Path]
) -> None:
    g = ground_on_tmpfs
    token = json.loads((tmp_path / "T").read_text())["token"]
    texts = [f"post {i} written while ground's disk fills up" for i in range(30)]
    photos = {f"photo post {i}": p for i, p in enumerate(sample_jpegs)}
    for t in texts[:10]:
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", t)
    # Some work is accepted before the disk fills: it must survive and be published.
    await sync(Home(cli.onboard_home), config=FAST, give_up_after_s=10)
    accepted_before = len(texts[:10])
    for t in texts[10:]:
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", t)
    for t, p in photos.items():
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "--photo", str(p), "--alt", "x", t)

    for leave in (0, 16 * 1024, 96 * 1024, 512 * 1024):
        g.fill(leave)
        assert _raw_receipts_request(g.url, token) in (200, 503)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(6, stop.set)  # answers keep coming: sync would wait on
        try:
            await sync(Home(cli.onboard_home), config=FAST, give_up_after_s=4, stop=stop)
        except OnboardError as exc:
            assert "HTTP 500" not in str(exc), exc  # 503 storage (retryable), never a 500
        assert g.proc.poll() is None, "ground died on a full disk"

    g.free_space()
    result = await sync(Home(cli.onboard_home), config=FAST, give_up_after_s=30, wait_published_s=30)
    assert result.rejected == 0
    want = {**{t: None for t in texts}, **photos}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(_published(g.home)) < len(want):
        time.sleep(0.2)
    published = _published(g.home)
    assert sorted(published) == sorted(want)
    assert all(len(dirs) == 1 for dirs in published.values()), "a post was published twice"
    assert accepted_before <= len(published)
    for t, p in photos.items():
        (d,) = published[t]
        assert next(d.glob("media-1.*")).read_bytes() == p.read_bytes()
    assert list((g.home / "uploads").rglob("*.part")) == []
    conn = sqlite3.connect(g.home / "ground.db")
    assert conn.execute("PRAGMA quick_check").fetchone() == ("ok",)
    conn.close()
    # No request escaped as a 500 (aiohttp logs each one so). The publisher's own retries on a
    # full disk (ground/publish.py) do log tracebacks: noisy, but they recover.
    log = g.log.read_text()
    assert "Error handling request" not in log, log[-3000:]
