"""The live link end to end: real ground server on loopback, real onboard client, the proxy."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from conftest import Cli
from link_support import archive_posts, free_port, link_to, running_ground, setup_station

from ground.platforms.archive import archived_posts
from linkemu import Direction, LinkProxy, LossWindow
from onboard.home import Home
from onboard.sync import SyncError, sync
from protocol.transfer import SenderConfig
from protocol.transfer_wire import Chunk, Open, TransferKey, TransferKind, encode_request

FAST = SenderConfig(backoff_initial_s=0.05, backoff_max_s=0.5, min_timeout_s=5.0)


def _publications(ground_home: Path) -> list[tuple[str, str, str, int]]:
    conn = sqlite3.connect(ground_home / "ground.db")
    try:
        return conn.execute(
            "SELECT item_id, account, state, attempts FROM publications ORDER BY 1, 2"
        ).fetchall()
    finally:
        conn.close()


def _bundles_committed(onboard_home: Path) -> int:
    """Bundles onboard knows ground committed (their OPEN or CHUNK was answered)."""
    conn = sqlite3.connect(onboard_home / "onboard.db")
    try:
        row = conn.execute(
            "SELECT COUNT(*) FROM link_transfers WHERE kind = 'bundle' AND state = 'committed'"
        )
        return int(row.fetchone()[0])
    finally:
        conn.close()


async def test_everything_arrives_once_through_random_cuts_and_a_loss_of_signal(
    cli: Cli, tmp_path: Path, sample_jpegs: list[Path]
) -> None:
    token = setup_station(cli, tmp_path, astronauts=("alice", "bob"))
    rocket, retina, hubble = sample_jpegs
    posts = []
    for i in range(6):
        posts.append(
            cli.onboard(
                "post",
                "--as",
                "alice" if i % 2 else "bob",
                "--to",
                "archive:alice" if i % 2 else "archive:bob",
                f"text post {i} 🌍",
            ).output
        )
    # The same photo in two posts (and two astronauts' accounts) must cross once.
    cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(rocket), "--alt", "launch", "a"
    )
    cli.onboard(
        "post", "--as", "bob", "--to", "archive:bob", "--photo", str(rocket), "--alt", "same launch", "b"
    )
    cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(retina), "--photo", str(hubble), "c"
    )
    photos = {p.read_bytes() for p in (rocket, retina, hubble)}
    payload_photos = sum(len(b) for b in photos)

    async with running_ground(cli.ground_home) as url:
        port = int(url.rsplit(":", 1)[1])
        proxy = LinkProxy(
            "127.0.0.1",
            port,
            up=Direction(rate_bps=8_000_000, delay_s=0.02),
            down=Direction(rate_bps=8_000_000, delay_s=0.02),
            cut_every_bytes=(15_000, 45_000),
            max_cuts=25,
            seed=3,
        )
        async with proxy:
            link_to(cli, proxy.url, token)
            proxy.schedule_loss([LossWindow(start_s=0.6, duration_s=1.5)])
            result = await sync(Home(cli.onboard_home), config=FAST, give_up_after_s=60, wait_published_s=30)
        stats = proxy.stats

    conn = sqlite3.connect(cli.onboard_home / "onboard.db")
    sizes = conn.execute(
        "SELECT kind, SUM(size_bytes), COUNT(*) FROM link_transfers GROUP BY kind"
    ).fetchall()
    conn.close()
    payload = sum(s for _, s, _ in sizes)
    framing = result.request_bytes - result.chunk_bytes
    http_header_bound = 400  # request line + headers of one aiohttp POST (measured ~260)
    print(
        f"\npayload {payload:,} B ({payload_photos:,} B of photos, {dict((k, n) for k, _, n in sizes)}); "
        f"wire up {stats.bytes_up:,} B, down {stats.bytes_down:,} B; chunk bytes sent {result.chunk_bytes:,}; "
        f"frame overhead {framing:,} B in {result.requests} requests; cuts {stats.random_cuts} random + "
        f"{stats.loss_cuts} loss-of-signal ({stats.loss_cuts_idle} idle); failed requests {result.failures}; max chunk {result.max_chunk_bytes:,} B; "
        f"wire/payload {stats.bytes_up / payload:.3f}"
    )
    assert stats.random_cuts >= 20
    assert result.rejected == 0 and result.pending_items == 0
    # The photo shared by two posts crossed once: photos on the link = the distinct photos.
    blob_rows = [(s, n) for k, s, n in sizes if k in ("blob", "coded_blob")]
    assert sum(n for _, n in blob_rows) == 3  # three distinct photos, one shared by two posts
    assert sum(s for s, _ in blob_rows) <= payload_photos + 3 * 9  # JPEG XL (or as-is) + 9-byte header
    # Accounting: no byte sent twice except one chunk per failed request (cuts, dark).
    assert result.chunk_bytes <= payload + result.failures * result.max_chunk_bytes
    cuts = stats.cuts
    # Every cut of a connection carrying a request was seen as a failed request. The end of
    # the loss of signal also cuts keep-alive connections idle between requests (their last
    # bytes were an answer): nothing to fail there. Counting those as failures made this
    # flaky: with two idle connections in the pool when the dark ended, failures = cuts - 2.
    assert result.failures >= cuts - stats.loss_cuts_idle - 1
    assert (
        stats.bytes_up
        <= payload + framing + result.requests * http_header_bound + cuts * result.max_chunk_bytes
    )
    # Everything published exactly once, byte-identical.
    pubs = _publications(cli.ground_home)
    assert len(pubs) == 9 and {p[2] for p in pubs} == {"published"}
    held = archive_posts(cli.ground_home)
    assert len(held) == 9
    published_media = {f.read_bytes() for d in held for f in d.media}
    assert published_media == photos
    q = cli.onboard("queue").output
    assert "published" in q and "sending" not in q and "failed" not in q


async def test_cli_session_verbatim(
    cli: Cli, tmp_path: Path, photo: Path, subprocess_env: dict[str, str]
) -> None:
    """The issue's commands, as typed: ground serve in its own process, onboard via the CLI."""
    cli.onboard("keys", "new", "alice")
    line = cli.onboard("keys", "show", "alice").output.strip()
    cli.ground("enroll", "alice", "--key", line, "--account", "archive:alice")
    token = tmp_path / "T"
    cli.ground("station", "add", "iss", "--token-out", str(token))
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    port = free_port()
    server = subprocess.Popen(
        cli.ground_argv("serve", "--host", "127.0.0.1", "--port", str(port)),
        env=subprocess_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as s:
            for _ in range(100):
                try:
                    async with s.get(url + "/v1/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    time.sleep(0.1)
        cli.onboard("link", "add", "--ground", url, "--token-file", str(token))
        text = "Sunrise over the Pacific 🌏"
        cli.onboard(
            "post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "--alt", "sun", text
        )
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "just text")
        assert cli.onboard("queue").output.count("queued") >= 2
        out = subprocess.run(
            cli.onboard_argv("sync", "--wait-published", "20"),
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "sync done" in out.stdout
        q = cli.onboard("queue").output
        assert q.count("published") >= 4 and "file://" in q
        # A second sync has nothing to send and changes nothing.
        again = subprocess.run(
            cli.onboard_argv("sync"),
            env=subprocess_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0 and "0 transfer(s) committed" in again.stdout
        assert len(archive_posts(cli.ground_home)) == 2
    finally:
        server.terminate()
        server.wait(10)
        assert server.stdout is not None
        server.stdout.close()
    # Receipts over a file hand-off, verified against the pinned key.
    rfile = tmp_path / "receipts.bin"
    cli.ground("receipts", "--out", str(rfile))
    r = cli.onboard("receipts", "import", str(rfile))
    assert "applied" in r.output
    tampered = bytearray(rfile.read_bytes())
    tampered[-70] ^= 1
    rfile.write_bytes(bytes(tampered))
    bad = cli.onboard("receipts", "import", str(rfile), ok=False)
    assert bad.exit_code != 0


async def test_text_first_while_a_photo_is_half_sent(
    cli: Cli, tmp_path: Path, sample_jpegs: list[Path]
) -> None:
    """A text post queued while a big photo is being sent is committed before the photo."""
    import asyncio

    token = setup_station(cli, tmp_path)
    hubble = sample_jpegs[2]
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "--photo", str(hubble), "big photo")
    async with running_ground(cli.ground_home) as url:
        port = int(url.rsplit(":", 1)[1])
        async with LinkProxy("127.0.0.1", port, up=Direction(rate_bps=1_000_000, delay_s=0.05)) as proxy:
            link_to(cli, proxy.url, token)
            home = Home(cli.onboard_home)
            task = asyncio.ensure_future(sync(home, config=FAST, wait_published_s=20, rescan_s=0.2))
            while proxy.stats.bytes_up < 100_000:
                await asyncio.sleep(0.05)
            cli.onboard("post", "--as", "alice", "--to", "archive:alice", "urgent text")
            await asyncio.wait_for(task, 60)
    conn = sqlite3.connect(cli.onboard_home / "onboard.db")
    rows = conn.execute(
        "SELECT kind, updated_ms, size_bytes FROM link_transfers ORDER BY updated_ms"
    ).fetchall()
    conn.close()
    order = [(k, s) for k, _, s in rows]
    # The urgent text's bundle finished before the photo did.
    first_bundle = next(i for i, (k, s) in enumerate(order) if k == "bundle")
    blob = next(i for i, (k, _) in enumerate(order) if k in ("blob", "coded_blob"))
    assert first_bundle < blob, order


async def test_sync_gives_up_loudly_when_ground_is_unreachable(cli: Cli, tmp_path: Path) -> None:
    token = setup_station(cli, tmp_path)
    link_to(cli, f"http://127.0.0.1:{free_port()}", token)
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "hello")
    with pytest.raises(SyncError, match="down for"):
        await sync(Home(cli.onboard_home), config=FAST, give_up_after_s=1.0)
    assert "sending" in cli.onboard("queue").output  # nothing lost, still to send


async def test_bad_requests_get_json_4xx_and_change_nothing(cli: Cli, tmp_path: Path) -> None:
    token_file = setup_station(cli, tmp_path)
    token = json.loads(token_file.read_text())["token"]
    sha = hashlib.sha256(b"x" * 100).digest()
    key = TransferKey(kind=TransferKind.BLOB, sha256=sha)
    async with running_ground(cli.ground_home) as url, aiohttp.ClientSession() as s:
        auth = {"Authorization": f"Bearer {token}"}

        async def post(body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
            async with s.post(url + "/v1/link", data=body, headers=auth if headers is None else headers) as r:
                assert r.content_type == "application/json"
                return r.status, await r.json()

        cases = [
            (b"", {}, 401, "unauthorized"),
            (b"", {"Authorization": "Bearer nope"}, 401, "unauthorized"),
            (b"garbage", None, 400, "bad_frame"),
            (encode_request(Chunk(seq=1, key=key, offset=0, data=b"x")), None, 404, "unknown_upload"),
        ]
        for body, headers, want_status, code in cases:
            status, j = await post(body, headers)
            assert (status, j["error"]) == (want_status, code), j
            assert j["message"]
        async with s.post(
            url + "/v1/link",
            data=encode_request(Open(seq=2, key=key, size_bytes=100, owner="a")),
            headers=auth,
        ) as r:
            assert r.status == 200
        for body, want_status, code in [
            (encode_request(Chunk(seq=3, key=key, offset=99, data=b"xy")), 416, "bad_offset"),
            (encode_request(Open(seq=4, key=key, size_bytes=5, owner="a")), 409, "size_conflict"),
            (
                encode_request(
                    Open(
                        seq=5,
                        key=TransferKey(kind=TransferKind.BLOB, sha256=b"\1" * 32),
                        size_bytes=10**12,
                        owner="a",
                    )
                ),
                413,
                "upload_too_large",
            ),
        ]:
            status, j = await post(body)
            assert (status, j["error"]) == (want_status, code), j
        # An oversized body is refused before it is read.
        status, j = await post(io.BytesIO(b"\0" * (5 * 1024 * 1024)))  # type: ignore[arg-type]
        assert status == 413
        async with s.get(url + "/v1/nothing-here") as r:
            assert r.status == 404
    conn = sqlite3.connect(cli.ground_home / "ground.db")
    (received,) = conn.execute("SELECT received_bytes FROM transfers").fetchone()
    conn.close()
    assert received == 0


async def test_resume_after_ground_restart_keeps_stored_ranges(
    cli: Cli, tmp_path: Path, sample_jpegs: list[Path]
) -> None:
    """Stop ground mid-photo; after restart the station resumes from ground's durable ranges."""
    import asyncio

    token = setup_station(cli, tmp_path)
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "--photo", str(sample_jpegs[2]), "big")
    home = Home(cli.onboard_home)
    async with running_ground(cli.ground_home) as url:
        port = int(url.rsplit(":", 1)[1])
        async with LinkProxy("127.0.0.1", port, up=Direction(rate_bps=2_000_000)) as proxy:
            link_to(cli, proxy.url, token)
            task = asyncio.ensure_future(sync(home, config=FAST, give_up_after_s=60))
            while proxy.stats.bytes_up < 200_000:
                await asyncio.sleep(0.05)
        # proxy and ground are gone mid-transfer
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    conn = sqlite3.connect(cli.ground_home / "ground.db")
    (stored,) = conn.execute(
        "SELECT received_bytes FROM transfers WHERE kind IN ('blob', 'coded_blob')"
    ).fetchone()
    conn.close()
    assert stored > 0
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        result = await sync(home, config=FAST, wait_published_s=20)
    size = sample_jpegs[2].stat().st_size
    assert result.chunk_bytes <= size - stored + 64 * 1024
    assert len(archive_posts(cli.ground_home)) == 1
    media = archive_posts(cli.ground_home)[0].media[0].read_bytes()
    assert media == sample_jpegs[2].read_bytes()


def test_token_file_is_private_and_link_add_checks_it(cli: Cli, tmp_path: Path) -> None:
    token = setup_station(cli, tmp_path)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    again = cli.ground("station", "add", "iss", "--token-out", str(tmp_path / "T2"), ok=False)
    assert again.exit_code != 0
    bogus = tmp_path / "bogus"
    bogus.write_text("{}")
    r = cli.onboard("link", "add", "--ground", "http://127.0.0.1:1", "--token-file", str(bogus), ok=False)
    assert r.exit_code != 0 and "token file" in str(r.exception)
    r = cli.onboard("link", "add", "--ground", "ftp://x", "--token-file", str(token), ok=False)
    assert r.exit_code != 0
    cli.onboard("link", "add", "--ground", "http://127.0.0.1:1", "--token-file", str(token))
    assert stat.S_IMODE((cli.onboard_home / "link.json").stat().st_mode) == 0o600


def test_ground_demo_runs_the_live_link(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ground", "demo", "--dir", str(tmp_path / "demo")],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ground --home" in out.stdout and " serve --host 127.0.0.1" in out.stdout
    assert "sync done" in out.stdout
    assert out.stdout.count("published") >= 2
    assert len(archived_posts(tmp_path / "demo" / "ground" / "archive", "alice")) == 2


async def test_watch_backs_off_in_the_dark_and_resumes_when_the_link_returns(
    cli: Cli, tmp_path: Path
) -> None:
    """`sync --watch` across a loss of signal: a post queued in the dark leaves soon after it ends,
    and posts queued once the link is known to be down leave together, as one bundle."""
    import asyncio

    token = setup_station(cli, tmp_path)
    home = Home(cli.onboard_home)
    stop = asyncio.Event()
    async with running_ground(cli.ground_home) as url:
        port = int(url.rsplit(":", 1)[1])
        async with LinkProxy("127.0.0.1", port, up=Direction(rate_bps=2_000_000, delay_s=0.1)) as proxy:
            link_to(cli, proxy.url, token)
            cli.onboard("post", "--as", "alice", "--to", "archive:alice", "before the dark")
            task = asyncio.ensure_future(
                sync(home, watch=True, stop=stop, rescan_s=0.2, receipts_every_s=0.5)
            )
            # The first bundle is across and its answer back (with link version 2 ground
            # answers once the post is published, so the archive alone says too little).
            for _ in range(200):
                await asyncio.sleep(0.05)
                if len(archive_posts(cli.ground_home)) == 1 and _bundles_committed(cli.onboard_home) == 1:
                    break
            assert len(archive_posts(cli.ground_home)) == 1
            assert _bundles_committed(cli.onboard_home) == 1
            proxy.start_loss()
            cli.onboard("post", "--as", "alice", "--to", "archive:alice", "queued in the dark")
            await asyncio.sleep(6)  # several backoff rounds; nothing crosses
            for n in range(3):
                cli.onboard("post", "--as", "alice", "--to", "archive:alice", f"held in the dark {n}")
                await asyncio.sleep(0.6)  # several rescans (every 0.2 s) between posts
            assert len(archive_posts(cli.ground_home)) == 1
            up_in_dark = proxy.stats.bytes_up
            proxy.end_loss()
            back = time.monotonic()
            for _ in range(400):
                await asyncio.sleep(0.05)
                if len(archive_posts(cli.ground_home)) == 5:
                    break
            resumed_s = time.monotonic() - back
            print(f"\npublished {resumed_s:.1f} s after the link returned")
            assert len(archive_posts(cli.ground_home)) == 5
            db = sqlite3.connect(cli.ground_home / "ground.db")
            counts = [r[0] for r in db.execute("SELECT item_count FROM bundles ORDER BY received_ms, rowid")]
            db.close()
            assert counts == [1, 1, 3], counts
            # Generous: backoff is capped at 4 s, plus a publish cycle; never minutes.
            assert resumed_s < 15
            assert proxy.stats.bytes_up > up_in_dark
            stop.set()
            result = await asyncio.wait_for(task, 20)
    assert result.failures >= 1 and not task.exception()


async def test_station_quota_limits_staged_bytes(cli: Cli, tmp_path: Path) -> None:
    """A station's own quota (ground station add --quota-mb) refuses uploads past it with a 429."""
    for name in ("alice",):
        cli.onboard("keys", "new", name)
    token_file = tmp_path / "T"
    cli.ground("station", "add", "iss", "--token-out", str(token_file), "--quota-mb", "1")
    token = json.loads(token_file.read_text())["token"]
    async with running_ground(cli.ground_home) as url, aiohttp.ClientSession() as s:
        auth = {"Authorization": f"Bearer {token}"}
        a = TransferKey(kind=TransferKind.BLOB, sha256=b"\1" * 32)
        b = TransferKey(kind=TransferKind.BLOB, sha256=b"\2" * 32)
        async with s.post(
            url + "/v1/link",
            data=encode_request(Open(seq=1, key=a, size_bytes=900_000, owner="x")),
            headers=auth,
        ) as r:
            assert r.status == 200
        async with s.post(
            url + "/v1/link",
            data=encode_request(Open(seq=2, key=b, size_bytes=900_000, owner="x")),
            headers=auth,
        ) as r:
            j = await r.json()
            assert r.status == 429 and j["error"] == "quota_exceeded" and j["retryable"] is True


async def test_coded_photo_is_rebuilt_and_checked_before_it_counts(cli: Cli, tmp_path: Path) -> None:
    """A CODED_BLOB is committed only if it rebuilds to the bytes its name promises."""
    from protocol.codecs import Codec, zstd_compress
    from protocol.transfer_wire import Status, UploadState, decode_response, pack_coded_blob

    token_file = setup_station(cli, tmp_path)
    token = json.loads(token_file.read_text())["token"]
    raw = b"not really a photo, but bytes are bytes " * 50
    good = pack_coded_blob(Codec.ZSTD, len(raw), zstd_compress(raw))
    sha = hashlib.sha256(raw).digest()
    cases = [
        (TransferKey(kind=TransferKind.CODED_BLOB, sha256=sha), good, UploadState.COMMITTED, ""),
        (
            TransferKey(kind=TransferKind.CODED_BLOB, sha256=b"\7" * 32),
            good,
            UploadState.REJECTED,
            "media_hash_mismatch",
        ),
        (
            TransferKey(kind=TransferKind.CODED_BLOB, sha256=b"\10" * 32),
            pack_coded_blob(99, 10, b"x" * 10),
            UploadState.REJECTED,
            "unknown_codec",
        ),
        (
            TransferKey(kind=TransferKind.CODED_BLOB, sha256=b"\11" * 32),
            pack_coded_blob(Codec.ZSTD, 10, b"garbage!"),
            UploadState.REJECTED,
            "malformed",
        ),
    ]
    async with running_ground(cli.ground_home) as url, aiohttp.ClientSession() as s:
        for i, (key, data, state, code) in enumerate(cases):
            req = encode_request(Open(seq=i, key=key, size_bytes=len(data), owner="a", data=data))
            async with s.post(url + "/v1/link", data=req, headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
                st = decode_response(await r.read())
            assert isinstance(st, Status) and (st.state, st.code) == (state, code), st
        # The rebuilt original is now on ground: the same photo as a plain BLOB never crosses.
        plain = encode_request(
            Open(seq=9, key=TransferKey(kind=TransferKind.BLOB, sha256=sha), size_bytes=len(raw), owner="a")
        )
        async with s.post(url + "/v1/link", data=plain, headers={"Authorization": f"Bearer {token}"}) as r:
            st = decode_response(await r.read())
            assert isinstance(st, Status) and st.state is UploadState.COMMITTED
    assert (cli.ground_home / "blobs" / sha.hex()[:2] / sha.hex()).read_bytes() == raw


async def test_rejected_bundle_comes_back_as_the_exact_reason(cli: Cli, tmp_path: Path) -> None:
    """A post ground refuses (revoked key) is shown failed with ground's code and message."""
    token = setup_station(cli, tmp_path)
    fp = cli.onboard("keys", "list").output.split()[1]
    cli.ground("revoke", fp)
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "signed by a revoked key")
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        result = await sync(Home(cli.onboard_home), config=FAST, wait_published_s=5)
    assert result.rejected == 1
    conn = sqlite3.connect(cli.onboard_home / "onboard.db")
    state, detail = conn.execute("SELECT state, detail FROM deliveries").fetchone()
    conn.close()
    assert state == "failed" and "[revoked_key]" in detail and fp in detail
    assert "failed" in cli.onboard("queue").output
    assert archive_posts(cli.ground_home) == []


async def test_cut_at_any_byte_of_a_request_or_its_answer_resumes_exactly_once(
    cli: Cli, tmp_path: Path
) -> None:
    """Sweep the cut point across the whole HTTP request (headers, frame, body) and its answer."""
    token = setup_station(cli, tmp_path)
    home = Home(cli.onboard_home)
    # A run moves ~425 bytes up (one request: the post inline in its OPEN, which asks for the
    # receipts too, link version 2; ~575 with a receipts request before it, ~840 before the link
    # stopped sending aiohttp's unread default headers) and ~330 down (the STATUS with the signed
    # receipts of this post's changes after the exact cursor, §9, in receipts version 4, §9.5;
    # ~495 in version 3; the first answer of the day also brings ground's log checkpoint).
    offsets = [("up", n) for n in range(1, 420, 24)] + [("down", n) for n in range(1, 325, 32)]
    async with running_ground(cli.ground_home) as url:
        port = int(url.rsplit(":", 1)[1])
        for i, (way, n) in enumerate(offsets):
            cli.onboard("post", "--as", "alice", "--to", "archive:alice", f"post {i} " + "x" * 900)
            proxy = LinkProxy("127.0.0.1", port, cut_every_bytes=(n, n), max_cuts=1, cut_direction=way)
            async with proxy:
                link_to(cli, proxy.url, token)
                result = await sync(home, config=FAST, give_up_after_s=30, receipts_every_s=3600)
            assert proxy.stats.random_cuts == 1, (way, n)  # the cut happened, at byte n
            assert result.pending_items == 0 and result.rejected == 0 and result.failures >= 1
        cli.onboard("link", "add", "--ground", url, "--token-file", str(token))
        await sync(home, config=FAST, wait_published_s=20)
    assert len(archive_posts(cli.ground_home)) == len(offsets)
    pubs = _publications(cli.ground_home)
    assert len(pubs) == len(offsets) and all(p[2] == "published" and p[3] == 1 for p in pubs)


async def test_chunk_is_fsynced_before_it_is_acknowledged(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Order of effects on ground for one chunk: write, fsync, record ranges, then the answer."""
    import ground.uploads as uploads

    log: list[str] = []
    real_fsync, real_persist = os.fsync, uploads.UploadStore.persist

    def fsync(fd: int) -> None:
        log.append("fsync")
        real_fsync(fd)

    def persist(self: uploads.UploadStore, rec) -> None:  # type: ignore[no-untyped-def]
        log.append(f"persist {rec.ranges.total}")
        real_persist(self, rec)

    monkeypatch.setattr(uploads.os, "fsync", fsync)
    monkeypatch.setattr(uploads.UploadStore, "persist", persist)
    token = json.loads(setup_station(cli, tmp_path).read_text())["token"]
    data = b"y" * 50_000
    key = TransferKey(kind=TransferKind.BLOB, sha256=hashlib.sha256(data).digest())
    async with running_ground(cli.ground_home) as url, aiohttp.ClientSession() as s:
        auth = {"Authorization": f"Bearer {token}"}
        async with s.post(
            url + "/v1/link",
            data=encode_request(Open(seq=1, key=key, size_bytes=len(data), owner="a")),
            headers=auth,
        ) as r:
            assert r.status == 200
        log.clear()
        async with s.post(
            url + "/v1/link",
            data=encode_request(Chunk(seq=2, key=key, offset=0, data=data[:1000])),
            headers=auth,
        ) as r:
            log.append(f"answer {r.status}")
    assert log[:3] == ["fsync", "persist 1000", "answer 200"] or log[:4] == [
        "fsync",
        "fsync",
        "persist 1000",
        "answer 200",
    ], log
