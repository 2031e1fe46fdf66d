"""Receipts through the real CLIs and a real `ground serve` process on loopback (issue 11).

- one bad post never fails another: per-(post, account) rejection, its reason and remedy,
  `onboard sync` exiting 1 with a summary, and `onboard post` refusing what it now knows;
- file hand-off posts get their receipts over a later live sync (claimed by sha256);
- cancel and retract outcomes come back, and `sync --wait-published` waits for them;
- SIGKILL of ground between a publication and its receipt;
- ≥ 40 posts of several astronauts, photos and text, several accounts, through `linkemu`
  with cuts, a loss of signal and ground kills: the §9 property when sync exits 0.
"""

from __future__ import annotations

import io
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import Cli
from link_support import free_port, setup_station
from test_receipts_converge import assert_converged

from ground.receipts import collect
from onboard.home import Home


class GroundProcess:
    """`python -m ground --home G serve` on a free loopback port; kill -9 and start again."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env, self.port = home, env, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [sys.executable, "-m", "ground", "--home", str(self.home), "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/v1/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("ground serve did not come up")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def ground_proc(cli: Cli, subprocess_env: dict[str, str]) -> Iterator[GroundProcess]:
    g = GroundProcess(cli.ground_home, subprocess_env)
    try:
        yield g
    finally:
        g.stop()


def _ground_db(cli: Cli) -> sqlite3.Connection:
    return sqlite3.connect(cli.ground_home / "ground.db")


def _check_converged(cli: Cli) -> None:
    g, q = _ground_db(cli), sqlite3.connect(Home(cli.onboard_home).db_path)
    try:
        assert_converged(g, q)
    finally:
        g.close()
        q.close()


@contextmanager
def _queue_then_converged(cli: Cli) -> Iterator[sqlite3.Connection]:
    """Onboard's queue database for the block's checks; after it (if they passed), §9's property:
    onboard's view of every delivery equals ground's."""
    q = sqlite3.connect(Home(cli.onboard_home).db_path)
    try:
        yield q
    finally:
        q.close()
    _check_converged(cli)


def _serve_and_link(cli: Cli, ground_proc: GroundProcess, token: Path) -> None:
    """Start `ground serve` and point onboard's link at it with the station ``token``."""
    ground_proc.start()
    cli.onboard("link", "add", "--ground", ground_proc.url, "--token-file", str(token))


def _posted_id(result) -> str:  # type: ignore[no-untyped-def]
    return str(result.output.split()[1])


def test_one_bad_post_is_refused_alone_with_reason_remedy_and_a_failing_sync(
    cli: Cli, tmp_path: Path, ground_proc: GroundProcess
) -> None:
    _serve_and_link(cli, ground_proc, setup_station(cli, tmp_path))
    first = cli.onboard("post", "--as", "alice", "--to", "twitter:alice", "to an account ground lacks")
    assert "has not yet said which accounts alice is enrolled for" in first.output  # queued anyway
    bad = _posted_id(first)
    good = _posted_id(cli.onboard("post", "--as", "alice", "--to", "archive:alice", "a good post"))
    r = cli.onboard("sync", "--wait-published", "30", ok=False)
    assert r.exit_code == 1, r.output
    summary = [line for line in r.output.splitlines() if line.startswith("error: ground refused")]
    assert len(summary) == 1 and bad in summary[0] and "twitter:alice" in summary[0]
    assert "unknown_account" in summary[0]
    posts = {line.split()[0]: line.split()[1:4] for line in cli.ground("posts").output.splitlines()}
    assert posts[good] == ["alice", "archive:alice", "published"]
    assert posts[bad] == ["alice", "twitter:alice", "rejected"]
    _check_converged(cli)
    with _queue_then_converged(cli) as q:
        (detail,) = q.execute("SELECT detail FROM deliveries WHERE item_id = ?", (bad,)).fetchone()
        assert "not enrolled for account twitter:alice" in detail and f"onboard cancel {bad}" in detail
        assert f"ground retry {bad} --account twitter:alice" in detail
        shown = cli.onboard("queue").output
        assert "rejected" in shown and "published" in shown
        # Onboard learned alice's accounts from the signed receipts: refused at once, naming them.
        accounts = q.execute("SELECT accounts FROM enrolled_accounts WHERE astronaut = 'alice'").fetchone()
        assert accounts == ("archive:alice",)
        again = cli.onboard("post", "--as", "alice", "--to", "twitter:alice", "again", ok=False)
        assert again.exit_code == 1 and "enrolled accounts: archive:alice" in str(again.exception)
        # The remedy works: a signed cancel moves the rejected delivery on, and sync is happy.
        cli.onboard("cancel", bad)
        r = cli.onboard("sync", "--wait-published", "30")
        assert "ground refused" not in r.output
        delivery = q.execute("SELECT state FROM deliveries WHERE item_id = ?", (bad,)).fetchone()
        assert delivery == ("cancelled",)
        assert q.execute("SELECT status, detail FROM items WHERE kind = 'cancel'").fetchone()[0] == "done"


def test_retract_and_cancel_outcomes_come_back_in_plain_words(
    cli: Cli, tmp_path: Path, ground_proc: GroundProcess
) -> None:
    _serve_and_link(cli, ground_proc, setup_station(cli, tmp_path))
    post = _posted_id(cli.onboard("post", "--as", "alice", "--to", "archive:alice", "soon gone"))
    cli.onboard("sync", "--wait-published", "30")
    cli.onboard("retract", post)
    cli.onboard("sync", "--wait-published", "30")  # returns only once the retract's outcome is in
    with _queue_then_converged(cli) as q:
        status, detail = q.execute("SELECT status, detail FROM items WHERE kind = 'retract'").fetchone()
        assert status == "done" and detail.startswith(f"retract {post}: deleting from archive:alice")
        assert q.execute("SELECT status FROM items WHERE id = ?", (post,)).fetchone() == ("retracted",)
        delivery = q.execute("SELECT state FROM deliveries WHERE item_id = ?", (post,)).fetchone()
        assert delivery == ("retracted",)
        assert "retracted" in cli.onboard("queue").output


def test_file_hand_off_posts_get_receipts_over_a_later_live_sync(
    cli: Cli, tmp_path: Path, ground_proc: GroundProcess
) -> None:
    token = setup_station(cli, tmp_path)
    ids = [
        _posted_id(cli.onboard("post", "--as", "alice", "--to", "archive:alice", f"by file {i}"))
        for i in range(3)
    ]
    cli.onboard("export", str(tmp_path / "out"))
    for f in sorted((tmp_path / "out").iterdir()):
        cli.ground("ingest", str(f))
    _serve_and_link(cli, ground_proc, token)
    cli.onboard("sync", "--wait-published", "30")
    with _queue_then_converged(cli) as q:
        marks = ",".join("?" * len(ids))
        rows = q.execute(f"SELECT DISTINCT status FROM items WHERE id IN ({marks})", ids).fetchall()
        assert rows == [("published",)]
    # Another station learns nothing of them: it cannot name the bundle's hash.
    g = _ground_db(cli)
    receipts, _, _ = collect(g, 0, station="mars")
    assert not any(getattr(r, "item_id", None) in ids for r in receipts)
    g.close()


def _post_many(cli: Cli, n: int, astronauts: tuple[str, ...], photos: int, rng: random.Random) -> None:
    from PIL import Image

    for i in range(n):
        who = astronauts[i % len(astronauts)]
        args = [
            "post",
            "--as",
            who,
            "--to",
            f"archive:{who},archive:{who}2",
            f"post {i} by {who} " + "x" * rng.randint(0, 200),
        ]
        if i < photos:
            p = cli.onboard_home.parent / f"photo{i}.jpg"
            buf = io.BytesIO()
            Image.new("RGB", (96, 64), (i * 37 % 256, 90, 200)).save(buf, "JPEG", quality=90)
            p.write_bytes(buf.getvalue())
            args += ["--photo", str(p), "--alt", f"photo {i}"]
        cli.onboard(*args)


def _setup_many(cli: Cli, tmp_path: Path, astronauts: tuple[str, ...]) -> Path:
    token = setup_station(cli, tmp_path, astronauts=astronauts)
    for who in astronauts:  # a second account each
        line = cli.onboard("keys", "show", who).output.strip()
        cli.ground(
            "enroll", who, "--key", line, "--account", f"archive:{who}", "--account", f"archive:{who}2"
        )
    return token


def _sync_proc(cli: Cli, env: dict[str, str], wait_s: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cli.onboard_argv("sync", "--wait-published", str(wait_s)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )


def test_sigkill_of_ground_between_publication_and_receipt(
    cli: Cli, tmp_path: Path, ground_proc: GroundProcess, subprocess_env: dict[str, str]
) -> None:
    rng = random.Random(3)
    token = _setup_many(cli, tmp_path, ("alice",))
    _serve_and_link(cli, ground_proc, token)
    for round_ in range(3):
        _post_many(cli, 5, ("alice",), 0, rng)
        cli.onboard("sync")  # ground has them; their publication races the kill below
        g = _ground_db(cli)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            (n,) = g.execute("SELECT COUNT(*) FROM publications WHERE state = 'published'").fetchone()
            if n > round_ * 10:
                break
            time.sleep(0.01)
        g.close()
        ground_proc.kill()  # published, its receipt not yet asked for
        ground_proc.start()
    sync = _sync_proc(cli, subprocess_env, 60)
    out = sync.communicate(timeout=120)[0].decode()
    assert sync.returncode == 0, out
    _check_converged(cli)


def _linkemu(
    port: int, listen: int, env: dict[str, str], *, rate_kbps: int, delay_ms: int, seed: int, los: str
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable, "-m", "linkemu.proxy", "--target", f"127.0.0.1:{port}", "--listen-port", str(listen),
        "--rate-kbps", str(rate_kbps), "--delay-ms", str(delay_ms), "--cut-every", "30000:90000",
        "--seed", str(seed), "--los", los,
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    time.sleep(0.5)
    return proc


@pytest.mark.parametrize(
    ("posts", "photos", "kills", "rate_kbps", "delay_ms", "los"),
    [
        pytest.param(40, 4, 2, 2000, 50, (2, 3), id="forty-posts-2-kills"),
        # A slow link and a long loss of signal: minutes of work, so only in the slow run.
        pytest.param(90, 12, 3, 512, 250, (5, 20), id="ninety-posts-slow-link", marks=pytest.mark.slow),
    ],
)
def test_posts_through_linkemu_with_cuts_a_loss_of_signal_and_ground_kills_converge(
    cli: Cli,
    tmp_path: Path,
    ground_proc: GroundProcess,
    subprocess_env: dict[str, str],
    posts: int,
    photos: int,
    kills: int,
    rate_kbps: int,
    delay_ms: int,
    los: tuple[float, float],
) -> None:
    """Post, sync through the emulated link while ground is killed, and check §9's property;
    prints the seconds from the end of the loss of signal to sync's successful exit."""
    rng = random.Random(posts)
    astronauts = ("alice", "bob", "carol")
    token = _setup_many(cli, tmp_path, astronauts)
    _post_many(cli, posts, astronauts, photos, rng)
    ground_proc.start()
    listen = free_port()
    proxy = _linkemu(
        ground_proc.port,
        listen,
        subprocess_env,
        rate_kbps=rate_kbps,
        delay_ms=delay_ms,
        seed=posts,
        los=f"{los[0]}:{los[1]}",
    )
    los_end = time.monotonic() - 0.5 + los[0] + los[1]
    try:
        cli.onboard("link", "add", "--ground", f"http://127.0.0.1:{listen}", "--token-file", str(token))
        sync = _sync_proc(cli, subprocess_env, 300)
        for _ in range(kills):
            time.sleep(rng.uniform(1.0, 4.0))
            ground_proc.kill()
            time.sleep(rng.uniform(0.2, 1.5))
            ground_proc.start()
        out = sync.communicate(timeout=400)[0].decode()
        done = time.monotonic()
    finally:
        proxy.send_signal(signal.SIGTERM)
        proxy.wait(10)
    assert sync.returncode == 0, out
    print(out.strip().splitlines()[-1])
    _check_converged(cli)
    g = _ground_db(cli)
    states = g.execute("SELECT state, COUNT(*) FROM publications GROUP BY state").fetchall()
    (last_ms,) = g.execute("SELECT MAX(published_ms) FROM publications").fetchone()
    g.close()
    link_back = time.time() - (time.monotonic() - los_end)  # the same moment, by the wall clock
    print(f"\nground published the last one {last_ms / 1000 - link_back:.1f} s after the link returned")
    assert states == [("published", posts * 2)], states  # all of them, exactly once each
    print(
        f"\nconverged {done - los_end:.1f} s after the link returned "
        f"({posts} posts, {kills} ground kills, {rate_kbps} kbit/s)"
    )
