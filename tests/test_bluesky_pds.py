"""Bluesky for real: orbitpost publishing to a real local PDS (tests/pds/), read back with
com.atproto.repo.getRecord and com.atproto.sync.getBlob.

The PDS is installed by `bash tests/pds/install.sh` (which .ci/run runs). Without it these
tests skip with a loud reason — except under CI=true, where a missing PDS is a failure.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Cli
from pds import harness
from PIL import Image

from ground.credentials import store_for
from ground.home import GroundHome
from ground.platforms.atproto import tid_for_post
from ground.platforms.bluesky import BlueskyPlatform
from ground.publish import publish_due


@pytest.fixture(scope="module")
def pds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Pds]:
    with harness.running(tmp_path_factory.mktemp("pds"), "alice.test", "bob.test") as server:
        yield server


TARGET = "bluesky:alice.test"


@pytest.fixture
def ready(enrolled: Cli, pds: harness.Pds, tmp_path: Path) -> Cli:
    """alice enrolled for bluesky:alice.test, ground holding her app password for the PDS."""
    line = enrolled.onboard("keys", "show", "alice").output.strip()
    enrolled.ground("enroll", "alice", "--key", line, "--account", TARGET)
    pw = tmp_path / "app-password"
    pw.write_text(pds.accounts["alice.test"].app_password)
    enrolled.ground("account", "add", TARGET, "--app-password-file", str(pw), "--service-url", pds.url)
    return enrolled


def queue_post(cli: Cli, text: str, *extra: str) -> str:
    out = cli.onboard("post", "--as", "alice", "--to", TARGET, *extra, text).output
    return out.split()[1]


def carry_down(cli: Cli, tmp_path: Path, name: str = "OUT") -> str:
    outdir = tmp_path / name
    cli.onboard("export", str(outdir))
    return cli.ground("ingest", str(outdir)).output


def records_at(pds: harness.Pds, post_id: str) -> list[dict[str, Any]]:
    did = pds.accounts["alice.test"].did
    rkey = tid_for_post(post_id)
    return [r for r in pds.records(did) if r["uri"].endswith("/" + rkey)]


TRICKY = [
    "Cafe\u0301 cre\u0300me bru\u0302le\u0301e — NFD accents stay decomposed",
    "line one\r\nline two\r\n\r\nCRLF kept",
    "family 👩‍👩‍👧‍👦 astronaut 👩🏽‍🚀 ZWJ sequences",
    "flags 🇫🇷🇯🇵🇺🇦 and a keycap 1️⃣",
    "trailing spaces and a tab   \t  ",
    "hi @bob.test see https://example.org/a?b=c#frag #Orbit2026 #日本 ok",
]


def test_tricky_text_and_photos_read_back_byte_identical(
    ready: Cli, pds: harness.Pds, tmp_path: Path, sample_jpegs: list[Path], sample_pngs: list[Path]
) -> None:
    cli = ready
    photo_paths = [sample_jpegs[0], sample_pngs[0]]
    originals = [p.read_bytes() for p in photo_paths]
    ids = {queue_post(cli, t): t for t in TRICKY}
    with_photos = queue_post(
        cli,
        "two photos 📷",
        "--photo",
        str(photo_paths[0]),
        "--alt",
        "A rocket lifting off, seen from orbit",
        "--photo",
        str(photo_paths[1]),
        "--alt",
        "Café au lait ☕",
    )
    out = carry_down(cli, tmp_path)
    assert out.count("published ") == len(TRICKY) + 1, out
    did = pds.accounts["alice.test"].did
    for post_id, text in ids.items():
        rec = pds.get_record(did, tid_for_post(post_id))
        assert rec["value"]["text"].encode("utf-8") == text.encode("utf-8"), post_id
        assert len(records_at(pds, post_id)) == 1
    # Facets point at the right bytes of the unchanged text.
    mention_post = next(i for i, t in ids.items() if "@bob.test" in t)
    rec = pds.get_record(did, tid_for_post(mention_post))
    raw = rec["value"]["text"].encode("utf-8")
    spans = {
        raw[f["index"]["byteStart"] : f["index"]["byteEnd"]].decode(): f["features"][0]
        for f in rec["value"]["facets"]
    }
    assert spans["@bob.test"] == {
        "$type": "app.bsky.richtext.facet#mention",
        "did": pds.accounts["bob.test"].did,
    }
    assert spans["https://example.org/a?b=c#frag"]["uri"] == "https://example.org/a?b=c#frag"
    assert spans["#Orbit2026"]["tag"] == "Orbit2026" and spans["#日本"]["tag"] == "日本"
    # Photos: byte-identical blobs, alt text, aspect ratio from the real dimensions.
    rec = pds.get_record(did, tid_for_post(with_photos))
    images = rec["value"]["embed"]["images"]
    assert [i["alt"] for i in images] == ["A rocket lifting off, seen from orbit", "Café au lait ☕"]
    for img, original in zip(images, originals, strict=True):
        assert pds.get_blob(did, img["image"]["ref"]["$link"]) == original
        w, h = Image.open(io.BytesIO(original)).size
        assert img["aspectRatio"] == {"width": w, "height": h}
    # Ground recorded where each post went.
    home = GroundHome(cli.ground_home)
    url, remote_id = home.conn.execute(
        "SELECT url, remote_id FROM publications WHERE item_id = ?", (with_photos,)
    ).fetchone()
    assert remote_id == rec["uri"] and remote_id.endswith("/" + tid_for_post(with_photos))
    # This PDS is not bsky.social and no web app is set for it: a bsky.app link would not work,
    # so the post's URL is its at:// URI (ground/platforms/bluesky.py).
    assert url == remote_id
    # Read back after publishing (issue 13): the text and each blob, recorded.
    fid, note = home.conn.execute(
        "SELECT fidelity, fidelity_note FROM publications WHERE item_id = ?", (with_photos,)
    ).fetchone()
    assert fid == "exact" and note.startswith("text read back: exact; photo 1: blob read back: sha256")
    assert note.count("matches") == 2
    home.close()


def test_over_limit_posts_refused_onboard(ready: Cli, pds: harness.Pds, tmp_path: Path, photo: Path) -> None:
    cli = ready
    cases = [
        (["x" * 301], "bluesky.text_length"),
        (["👩‍👩‍👧" * 300], "bluesky.text_bytes"),  # 300 graphemes, 5,400 bytes
        (["five photos", *["--photo", str(photo)] * 5], "bluesky.media_count"),
    ]
    big = tmp_path / "big.png"
    rnd = random.Random(0)
    Image.frombytes("RGB", (900, 900), rnd.randbytes(900 * 900 * 3)).save(big)
    assert big.stat().st_size > 2_000_000
    cases.append((["too big", "--photo", str(big)], "bluesky.media_bytes"))
    for args, rule in cases:
        r = cli.onboard("post", "--as", "alice", "--to", TARGET, *args[1:], args[0], ok=False)
        assert r.exit_code == 1 and rule in str(r.exception) and TARGET in str(r.exception), (rule, r.output)
    assert "queue is empty" in cli.onboard("queue").output
    # Exactly at the limits goes through and is published unchanged: 300 graphemes, and a
    # photo of exactly 2,000,000 bytes (a JPEG padded after its end marker).
    exact = tmp_path / "exact.jpg"
    jpeg = photo.read_bytes()
    exact.write_bytes(jpeg + b"\0" * (2_000_000 - len(jpeg)))
    post_id = queue_post(cli, "é" * 300, "--photo", str(exact))
    carry_down(cli, tmp_path)
    (rec,) = records_at(pds, post_id)
    assert rec["value"]["text"] == "é" * 300
    (img,) = rec["value"]["embed"]["images"]
    assert img["image"]["size"] == 2_000_000
    assert pds.get_blob(pds.accounts["alice.test"].did, img["image"]["ref"]["$link"]) == exact.read_bytes()


@pytest.fixture
async def faulty_proxy(pds: harness.Pds) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """A loopback proxy to the PDS that can lose the answer to one putRecord after forwarding
    it (the ambiguous failure), or refuse one without forwarding; chosen by the post's text."""
    ctl: dict[str, Any] = {"lose_answer": b"", "refuse": b"", "puts": 0, "paths": []}

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        ctl["paths"].append(request.path)
        is_put = request.path.endswith("com.atproto.repo.putRecord")
        if is_put and ctl["refuse"] and ctl["refuse"] in body:
            ctl["refuse"] = b""
            return web.json_response({"error": "InvalidRequest", "message": "scripted refusal"}, status=400)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with aiohttp.ClientSession() as s:
            async with s.request(request.method, pds.url + request.path_qs, data=body, headers=headers) as r:
                payload = await r.read()
                status, ctype = r.status, r.headers.get("Content-Type", "application/json")
        if is_put:
            ctl["puts"] += 1
            if ctl["lose_answer"] and ctl["lose_answer"] in body:
                ctl["lose_answer"] = b""
                return web.json_response({"error": "UpstreamFailure"}, status=502)
        return web.Response(body=payload, status=status, headers={"Content-Type": ctype})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), ctl
    await server.close()


async def test_failure_mid_publish_then_retry_leaves_exactly_one_record(
    ready: Cli, pds: harness.Pds, tmp_path: Path, faulty_proxy: tuple[str, dict[str, Any]], photo: Path
) -> None:
    cli = ready
    proxy_url, ctl = faulty_proxy
    pw = tmp_path / "pw2"
    pw.write_text(pds.accounts["alice.test"].app_password)
    cli.ground("account", "add", TARGET, "--app-password-file", str(pw), "--service-url", proxy_url)
    ambiguous = queue_post(cli, "lost answer 🛰", "--photo", str(photo), "--alt", "sunrise")
    refused = queue_post(cli, "refused once")
    cli.onboard("export", str(tmp_path / "OUT"))
    from ground.ingest import ingest_bytes

    home = GroundHome(cli.ground_home)
    for f in sorted((tmp_path / "OUT").glob("*.opb")):
        ingest_bytes(home, f.read_bytes(), source="test", now_ms=0)
    ctl["lose_answer"], ctl["refuse"] = b"lost answer", b"refused once"
    plat = {"bluesky": BlueskyPlatform(store_for(home.root))}
    now = 2_000_000_000_000
    async with aiohttp.ClientSession() as s:
        out = {o.item_id: o for o in await publish_due(home, now, plat, s, rng=random.Random(0))}  # type: ignore[arg-type]
        # The record was written but the answer lost: ground does not know, so it stays
        # 'publishing' and will look before it leaps.
        assert out[ambiguous].state == "publishing" and "502" in (out[ambiguous].error or "")
        assert out[refused].state == "failed" and "scripted refusal" in (out[refused].error or "")
        assert len(records_at(pds, ambiguous)) == 1 and records_at(pds, refused) == []
        out2 = await publish_due(home, out[ambiguous].next_attempt_ms or now, plat, s)  # type: ignore[arg-type]
        assert [(o.item_id, o.state) for o in out2] == [(ambiguous, "published")]
    puts_before = ctl["puts"]
    home.close()
    # The operator retries the refused one through the CLI; the other is untouched.
    cli.ground("retry", refused, "--account", TARGET)
    # The CLI runs its own event loop; the proxy keeps serving on this one meanwhile.
    await asyncio.to_thread(cli.ground, "publish")
    assert ctl["puts"] == puts_before + 1
    (one,) = records_at(pds, ambiguous)
    (two,) = records_at(pds, refused)
    assert one["value"]["text"] == "lost answer 🛰" and two["value"]["text"] == "refused once"
    # A second, deliberate re-publish of the same post cannot create another record either.
    home = GroundHome(cli.ground_home)
    home.conn.execute("UPDATE publications SET state = 'pending' WHERE item_id = ?", (ambiguous,))
    await asyncio.to_thread(cli.ground, "publish")
    assert len(records_at(pds, ambiguous)) == 1
    home.close()


def test_account_check_logs_in_for_real(ready: Cli, pds: harness.Pds, tmp_path: Path) -> None:
    cli = ready
    out = cli.ground("account", "check", TARGET).output
    assert f"logged in to {pds.url} as alice.test ({pds.accounts['alice.test'].did})" in out
    bad = tmp_path / "bad"
    bad.write_text("xxxx-xxxx-xxxx-xxxx")
    cli.ground("account", "add", TARGET, "--app-password-file", str(bad), "--service-url", pds.url)
    r = cli.ground("account", "check", TARGET, ok=False)
    assert r.exit_code == 1 and "refused" in str(r.exception) and "xxxx" not in str(r.exception)


def test_retract_deletes_the_record(ready: Cli, pds: harness.Pds, tmp_path: Path) -> None:
    cli = ready
    post_id = queue_post(cli, "this will be retracted")
    carry_down(cli, tmp_path, "OUT1")
    assert len(records_at(pds, post_id)) == 1
    cli.onboard("retract", post_id)
    out = carry_down(cli, tmp_path, "OUT2")
    assert f"retracted {post_id} → {TARGET}" in out
    assert records_at(pds, post_id) == []
    home = GroundHome(cli.ground_home)
    assert home.conn.execute("SELECT state FROM publications WHERE item_id = ?", (post_id,)).fetchone() == (
        "retracted",
    )
    home.close()


async def test_session_is_kept_across_restarts_and_refreshed_when_expired(
    ready: Cli, pds: harness.Pds, tmp_path: Path, faulty_proxy: tuple[str, dict[str, Any]]
) -> None:
    import json

    from ground.ingest import ingest_bytes

    cli = ready
    proxy_url, ctl = faulty_proxy
    pw = tmp_path / "pw3"
    pw.write_text(pds.accounts["alice.test"].app_password)
    cli.ground("account", "add", TARGET, "--app-password-file", str(pw), "--service-url", proxy_url)
    ids = [queue_post(cli, f"session test {i}") for i in range(3)]
    cli.onboard("export", str(tmp_path / "OUT"))
    home = GroundHome(cli.ground_home)
    for f in sorted((tmp_path / "OUT").glob("*.opb")):
        ingest_bytes(home, f.read_bytes(), source="test", now_ms=0)
    store = store_for(home.root)

    async def one_process(post_id: str) -> None:
        # A fresh adapter, as after a restart; publish only this post.
        home.conn.execute("UPDATE publications SET next_attempt_ms = 9e15 WHERE item_id != ?", (post_id,))
        home.conn.execute("UPDATE publications SET next_attempt_ms = NULL WHERE item_id = ?", (post_id,))
        async with aiohttp.ClientSession() as s:
            (o,) = await publish_due(home, 1, {"bluesky": BlueskyPlatform(store)}, s)  # type: ignore[dict-item]
        assert o.state == "published", o.error

    def logins() -> int:
        return sum(p.endswith("createSession") for p in ctl["paths"])

    await one_process(ids[0])
    assert logins() == 1
    session_file = next(store.root.glob("*.session"))
    assert session_file.stat().st_mode & 0o777 == 0o600
    await one_process(ids[1])
    assert logins() == 1  # the saved session was used: no second login
    saved = json.loads(session_file.read_text())
    session_file.write_text(json.dumps({**saved, "accessJwt": "expired-or-garbage"}))
    await one_process(ids[2])
    assert logins() == 1 and sum(p.endswith("refreshSession") for p in ctl["paths"]) == 1
    for post_id in ids:
        assert len(records_at(pds, post_id)) == 1
    # New credentials discard the old session.
    cli.ground("account", "add", TARGET, "--app-password-file", str(pw), "--service-url", proxy_url)
    assert not list(store.root.glob("*.session"))
    home.close()


def _with_dimensions(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF0/SOF2) claiming ``width`` × ``height``."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = jpeg.find(marker)
        if at >= 0:
            sof = at + 5  # marker (2), length (2), precision (1), then height and width
            return jpeg[:sof] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 4 :]
    raise AssertionError("no frame header in the sample JPEG")


def test_huge_and_unreadable_photos_fail_cleanly_or_publish_with_their_true_size(
    ready: Cli, pds: harness.Pds, tmp_path: Path, sample_jpegs: list[Path]
) -> None:
    """Issue 19 §4: a photo past Pillow's ~179 MP bomb guard crashed the adapter after upload.

    Its size now comes from the header alone: a 200 MP photo is published byte-identical with
    its true aspect ratio; one whose header cannot be read fails permanently, with a reason,
    and nothing is put on the PDS.
    """
    cli = ready
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(_with_dimensions(sample_jpegs[0].read_bytes(), 20_000, 10_000))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)  # JPEG magic, then no frame
    huge_id = queue_post(cli, "two hundred megapixels", "--photo", str(huge), "--alt", "a wide view")
    broken_id = queue_post(cli, "a damaged photo", "--photo", str(broken), "--alt", "damaged")
    carry_down(cli, tmp_path)
    did = pds.accounts["alice.test"].did
    rec = pds.get_record(did, tid_for_post(huge_id))
    img = rec["value"]["embed"]["images"][0]
    assert img["aspectRatio"] == {"width": 20_000, "height": 10_000}
    assert pds.get_blob(did, img["image"]["ref"]["$link"]) == huge.read_bytes()
    assert records_at(pds, broken_id) == []
    home = GroundHome(cli.ground_home)
    state, error, retryable = home.conn.execute(
        "SELECT state, last_error, retryable FROM publications WHERE item_id = ?", (broken_id,)
    ).fetchone()
    home.close()
    assert state == "failed" and not retryable and "no readable image header" in error
