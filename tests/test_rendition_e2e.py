"""Renditions end to end: one signed post, one big photo, three accounts.

X (tests/fake_x.py) is over its limit and the astronaut allowed a rendition there: X's fake
receives the rendition/v1 JPEG. Bluesky (a real local PDS, tests/pds/) and the archive keep
the exact signed bytes. Every record — publication row, receipt to the station, archive
record, transparency-log leaf, public post page — names both hashes. Without the consent
(a crafted bundle, since onboard refuses it) ground refuses X alone and the others publish.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from conftest import Cli
from fake_x import FakeX
from pds import harness
from PIL import Image
from publish_support import add_oauth2_account, ingest, make_post, publish_run, serving
from test_rendition_onboard import panorama

from ground import translog
from ground.home import GroundHome
from ground.ingest import ingest_bytes
from ground.platforms.atproto import tid_for_post
from ground.public import post_proof
from ground.receipts import build_document, ground_key
from onboard import queue
from onboard.home import Home
from onboard.receipts import apply_document, verify_document
from protocol import SigningKey

X, BSKY, ARCHIVE = "x:alice", "bluesky:alice.test", "archive:alice"
TARGETS = f"{X},{BSKY},{ARCHIVE}"


@pytest.fixture(scope="module")
def pds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Pds]:
    with harness.running(tmp_path_factory.mktemp("pds"), "alice.test") as server:
        yield server


@pytest.fixture
async def fake() -> AsyncIterator[FakeX]:
    async with serving(FakeX()) as x:
        yield x


@pytest.fixture
def ready(cli: Cli, pds: harness.Pds, fake: FakeX, tmp_path: Path) -> Cli:
    """alice has a key onboard; ground has her enrolled on X (fake), Bluesky (PDS) and the archive."""
    cli.onboard("keys", "new", "alice")
    line = cli.onboard("keys", "show", "alice").output.strip()
    cli.ground("enroll", "alice", "--key", line, "--account", X, "--account", BSKY, "--account", ARCHIVE)
    pw = tmp_path / "app-password"
    pw.write_text(pds.accounts["alice.test"].app_password)
    cli.ground("account", "add", BSKY, "--app-password-file", str(pw), "--service-url", pds.url)
    add_oauth2_account(cli.ground_home, X, fake)
    return cli


async def publish(home: GroundHome) -> dict[str, str]:
    out = await publish_run(home, int(time.time() * 1000), quick_poll="x")
    return {o.account: o.state if o.state == "published" else f"{o.state}: {o.error}" for o in out}


def rows(home: GroundHome, item_id: str) -> dict[str, tuple[str, str | None, str | None]]:
    return {
        a: (s, e, r)
        for a, s, e, r in home.conn.execute(
            "SELECT account, state, last_error, renditions FROM publications WHERE item_id = ?", (item_id,)
        )
    }


async def test_one_post_rendition_to_x_exact_elsewhere_every_record_has_both_hashes(
    ready: Cli, fake: FakeX, pds: harness.Pds, tmp_path: Path
) -> None:
    cli = ready
    original = panorama()
    photo = tmp_path / "wide.jpg"
    photo.write_bytes(original)
    out = cli.onboard(
        "post", "--as", "alice", "--to", TARGETS, "--photo", str(photo), "--alt", "Coffee, very wide",
        "--allow-rendition", X, "Panorama from the cupola",
    ).output  # fmt: skip
    assert "X (x:alice) will receive a rendition of photo 1 (9000×1200 → 8192×1092 JPEG" in out
    post_id = out.split()[1]
    cli.onboard("export", str(tmp_path / "OUT"))
    home = GroundHome(cli.ground_home)
    try:
        for f in sorted((tmp_path / "OUT").glob("*.opb")):
            ingest_bytes(home, f.read_bytes(), source="test", now_ms=int(time.time() * 1000))
        assert await publish(home) == {X: "published", BSKY: "published", ARCHIVE: "published"}

        signed = hashlib.sha256(original).hexdigest()
        # 1. X's fake got the rendition: a JPEG within X's limits, made by rendition/v1.
        (tw,) = fake.tweets.values()
        (sent,) = [fake.media[i]["data"] for i in tw["media_ids"]]
        assert sent != original
        assert Image.open(io.BytesIO(sent)).size == (8192, 1092) and len(sent) <= 5 * 1024 * 1024
        sent_sha = hashlib.sha256(sent).hexdigest()
        assert home.blobs.get(bytes.fromhex(sent_sha)) == sent  # stored once, on ground
        # 2. Bluesky and the archive: the exact signed bytes.
        did = pds.accounts["alice.test"].did
        rec = pds.get_record(did, tid_for_post(post_id))
        assert pds.get_blob(did, rec["value"]["embed"]["images"][0]["image"]["ref"]["$link"]) == original
        (folder,) = [p for p in home.archive_dir.rglob("record.json") if post_id in str(p)]
        archived = json.loads(folder.read_text())
        assert (folder.parent / "media-1.jpg").read_bytes() == original
        assert archived["media"][0]["sha256"] == signed and archived["renditions_allowed"] == [X]

        # 3. The publication rows: both hashes for X only.
        r = rows(home, post_id)
        (made,) = json.loads(r[X][2] or "[]")
        assert (made["original_sha256"], made["sha256"], made["recipe"]) == (signed, sent_sha, "rendition/v1")
        assert (made["width"], made["height"], made["source_width"]) == (8192, 1092, 9000)
        assert r[BSKY][2] is None and r[ARCHIVE][2] is None
        audit = " ".join(t for (t,) in home.conn.execute("SELECT detail FROM events"))
        assert "rendition rendition/v1 9000×1200 → 8192×1092" in audit

        # 4. The transparency log leaf for X names both; the others none.
        translog.catch_up(home, int(time.time() * 1000))
        leaves = {a: json.loads(translog.leaf(home, f"pub:{post_id}:{a}:published")[1]) for a in r}  # type: ignore[index]
        assert leaves[X]["renditions"] == [
            {"photo": 1, "original_sha256": signed, "sha256": sent_sha, "recipe": "rendition/v1"}
        ]
        assert leaves[X]["original_media_sha256"] == [signed]
        assert "renditions" not in leaves[BSKY] and "renditions" not in leaves[ARCHIVE]

        # 5. The public post page's JSON.
        proof = post_proof(home, post_id)
        assert proof is not None
        pubs = {p["account"]: p for p in proof["publications"]}
        assert pubs[X]["renditions"][0]["sha256"] == sent_sha
        assert pubs[X]["renditions"][0]["original_sha256"] == signed
        assert pubs[BSKY]["renditions"] == [] and proof["media"][0]["sha256"] == signed
        # …and the public routes serve both: the signed original and the rendition X received.
        from aiohttp import web
        from aiohttp.test_utils import TestClient

        from ground import public

        app = web.Application()
        public.setup(app, home, catch_up=False)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            for sha, want in ((signed, original), (sent_sha, sent)):
                async with client.get(f"/p/{post_id}/media/{sha}") as resp:
                    assert resp.status == 200 and await resp.read() == want
            async with client.get(f"/p/{post_id}/media/{'0' * 64}") as resp:
                assert resp.status == 404

        # 6. The receipt to the station, and what onboard shows.
        doc, _, _ = build_document(home, 0, int(time.time() * 1000), limit=1000)
        conn = queue.connect(Home(cli.onboard_home).db_path)
        try:
            apply_document(conn, verify_document(conn, doc, ground_key(home).public_key))
        finally:
            conn.close()
    finally:
        home.close()
    shown = cli.onboard("queue").output
    assert f"photo 1 sent as a rendition (rendition/v1, 8192×1092 JPEG, sha256 {sent_sha[:16]}" in shown
    assert f"signed original {signed[:16]}" in shown


async def test_without_consent_ground_refuses_x_alone(
    ready: Cli, fake: FakeX, pds: harness.Pds, alice_key: SigningKey
) -> None:
    # Onboard refuses this post (tests/test_rendition_onboard.py); a crafted bundle carries it anyway,
    # signed by a key ground knows.
    cli = ready
    from onboard.keystore import load_key

    key = load_key(Home(cli.onboard_home), "alice")
    original = panorama()
    post, blobs = make_post("No consent given", [X, BSKY, ARCHIVE], photos=[(original, "image/jpeg", "")])
    home = GroundHome(cli.ground_home)
    try:
        ingest(home, key, [post], blobs, now_ms=int(time.time() * 1000))
        states = await publish(home)
        assert states[BSKY] == "published" and states[ARCHIVE] == "published"
        assert states[X].startswith(
            "failed: [rule_violation] x:alice: photo 1 is 9000×1200; X allows at most 8192"
        )
        assert "the signed post allows no rendition for x:alice" in states[X]
        assert "--allow-rendition x:alice" in states[X]
        assert not fake.tweets  # nothing reached X
        assert all(r is None for _, _, r in rows(home, post.id).values())
    finally:
        home.close()


async def test_instagram_fetches_the_rendition_from_the_public_link(
    tmp_path: Path, alice_key: SigningKey, sample_pngs: list[Path]
) -> None:
    # Instagram takes JPEG only, between 4:5 and 1.91:1: a tall PNG needs both a new format and
    # padding. Meta's fake fetches the photo from ground's expiring public URL: the rendition.
    from dataclasses import replace

    from meta_support import meta_rig

    with Image.open(sample_pngs[0]) as src:
        tall = src.convert("RGB").resize((300, 900))
    buf = io.BytesIO()
    tall.save(buf, "PNG")
    original = buf.getvalue()
    async with meta_rig("instagram", tmp_path, alice_key) as rig:
        post, blobs = make_post("Tall and PNG", [rig.target], photos=[(original, "image/png", "Tall")])
        post = replace(post, renditions=(rig.target,))
        ingest(rig.home, alice_key, [post], blobs)
        (o,) = await rig.run()
        assert o.state == "published", o.error
        (p,) = rig.fake.posts.values()
        (fetched,) = p["media"]
        assert p["content_types"] == ["image/jpeg"] and p["alts"] == ["Tall"]
        assert Image.open(io.BytesIO(fetched)).size == (720, 900)  # padded to 4:5, never cropped
        (made,) = json.loads(
            rig.home.conn.execute(
                "SELECT renditions FROM publications WHERE item_id = ?", (post.id,)
            ).fetchone()[0]
        )
        assert made["sha256"] == hashlib.sha256(fetched).hexdigest()
        assert made["original_sha256"] == hashlib.sha256(original).hexdigest()
        assert rig.live_links() == 0


async def test_over_the_live_link_the_consent_travels_in_format_1_and_x_gets_the_rendition(
    cli: Cli,
    fake: FakeX,
    tmp_path: Path,
) -> None:
    # The same post over the real live link (`onboard sync` against `ground serve`): the bundle
    # with the version-2 body goes as format 1, ground publishes, the receipt comes back.
    from link_support import link_to, running_ground, setup_station

    from onboard.sync import sync
    from protocol.transfer import SenderConfig

    token = setup_station(cli, tmp_path)
    line = cli.onboard("keys", "show", "alice").output.strip()
    cli.ground("enroll", "alice", "--key", line, "--account", X)
    add_oauth2_account(cli.ground_home, X, fake)
    photo = tmp_path / "wide.jpg"
    photo.write_bytes(panorama())
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        out = cli.onboard(
            "post", "--as", "alice", "--to", f"{X},{ARCHIVE}", "--photo", str(photo),
            "--allow-rendition", X, "Over the link",
        ).output  # fmt: skip
        post_id = out.split()[1]
        fast = SenderConfig(backoff_initial_s=0.05, backoff_max_s=0.5, min_timeout_s=5.0)
        await sync(Home(cli.onboard_home), config=fast, give_up_after_s=60, wait_published_s=60)
    (tw,) = fake.tweets.values()
    (sent,) = [fake.media[i]["data"] for i in tw["media_ids"]]
    assert Image.open(io.BytesIO(sent)).size == (8192, 1092)
    shown = cli.onboard("queue").output
    assert f"{X}: published" in shown and "photo 1 sent as a rendition (rendition/v1, 8192×1092 JPEG" in shown
    # Format 1: the item carries its own signature, no batch statement (format 2 has no column
    # for the consent, docs/PROTOCOL.md §3.1).
    home = GroundHome(cli.ground_home)
    try:
        row = home.conn.execute(
            "SELECT statement, statement_sha256 FROM items WHERE id = ?", (post_id,)
        ).fetchone()
    finally:
        home.close()
    assert row == (None, None)
