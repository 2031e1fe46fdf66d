"""Issue 13's "done": one signed bundle, one post with a photo, every platform at once.

An operator enrolls alice on every platform with the real CLIs (`ground enroll`, `ground account
add` with each platform's credential file): the archive, a webhook receiver, Bluesky (a real
local PDS, tests/pds/), and Mastodon, X, LinkedIn, Flickr, Instagram, Threads and Facebook
(their local fakes, tests/fake_*.py, on loopback). alice posts one photo to all of them with
`onboard post`; `onboard sync` carries it over the real live link to `ground serve` in one
bundle; ground publishes it everywhere. Then, per account, what was published and how faithfully
is visible from what ground actually did: in the receipts onboard applied (`onboard queue
--json`, the compose page's view) and in ground's dashboard API (`/api/posts`) — and they agree.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Cli
from fake_flickr import FakeFlickr
from fake_linkedin import FakeLinkedIn
from fake_mastodon import FakeMastodon
from fake_meta import FakeMeta
from fake_x import FakeX
from link_support import link_to, running_ground, setup_station
from pds import harness

from ground import operators
from ground.home import GroundHome
from ground.public_media import set_base_url
from onboard.home import Home
from onboard.sync import sync
from protocol.transfer import SenderConfig

MASTODON = "mastodon:alice@fake.example"
BSKY = "bluesky:alice.test"
META = ("instagram", "threads", "facebook")
FAKED = ("x", "linkedin", "flickr", *META)
ACCOUNTS = ("archive:alice", "webhook:alice", BSKY, MASTODON, *(f"{p}:alice" for p in FAKED))
# What each platform does to photo bytes (protocol/rules.py), as ground records it.
EXACT = {"archive:alice", "webhook:alice", BSKY, "flickr:alice"}
ADMIN = ("ada", "admin password 1")


@pytest.fixture(scope="module")
def pds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Pds]:
    harness.require_installed()
    server = harness.start(tmp_path_factory.mktemp("pds"))
    try:
        server.create_account("alice.test")
        yield server
    finally:
        server.stop()


class Webhook:
    """A webhook receiver: keeps each delivery's photo bytes, answers with a URL."""

    def __init__(self) -> None:
        self.photos: list[bytes] = []

    def app(self) -> web.Application:
        async def receive(request: web.Request) -> web.Response:
            doc = await request.json()
            self.photos += [base64.b64decode(m["data"]) for m in doc.get("media", [])]
            return web.json_response({"url": "https://hooks.example/alice/1", "id": "1"})

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/hook", receive)
        return app


@pytest.fixture
async def fakes() -> AsyncIterator[dict[str, Any]]:
    made: dict[str, Any] = {
        "mastodon": FakeMastodon(),
        "x": FakeX(),
        "linkedin": FakeLinkedIn(),
        "flickr": FakeFlickr(),
        **{k: FakeMeta(kind=k, processing_polls=0) for k in META},
        "webhook": Webhook(),
    }
    servers = []
    for f in made.values():
        server = TestServer(f.app(), host="127.0.0.1")
        await server.start_server()
        f.base_url = str(server.make_url("")).rstrip("/")
        servers.append(server)
    try:
        yield made
    finally:
        for server in servers:
            await server.close()


def enroll_everywhere(cli: Cli, pds: harness.Pds, fakes: dict[str, Any], tmp_path: Path) -> None:
    """What an operator types: enroll alice on every account, then add each one's credential."""
    line = cli.onboard("keys", "show", "alice").output.strip()
    cli.ground("enroll", "alice", "--key", line, *(a for acct in ACCOUNTS for a in ("--account", acct)))

    def add(account: str, secret: str, url: str, option: str = "--token-file") -> None:
        f = tmp_path / f"{account.partition(':')[0]}.secret"
        f.write_text(secret)
        cli.ground("account", "add", account, option, str(f), "--service-url", url)

    add(BSKY, pds.accounts["alice.test"].app_password, pds.url, "--app-password-file")
    add(MASTODON, "token-alice", fakes["mastodon"].base_url)
    add("x:alice", json.dumps(fakes["x"].grant()), fakes["x"].base_url)
    add("linkedin:alice", json.dumps(fakes["linkedin"].grant()), fakes["linkedin"].base_url)
    add("flickr:alice", json.dumps(fakes["flickr"].secret()), fakes["flickr"].base_url)
    for k in META:
        add(f"{k}:alice", "token-alice", fakes[k].base_url)
    add("webhook:alice", "a webhook secret of some length", fakes["webhook"].base_url + "/hook")


async def dashboard_posts(url: str) -> list[dict[str, Any]]:
    """What an operator's dashboard shows: GET /api/posts after logging in."""
    # unsafe: keep the session cookie of a loopback IP host (aiohttp drops those by default).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.post(f"{url}/api/login", json={"name": ADMIN[0], "password": ADMIN[1]}) as r:
            assert r.status == 200, await r.text()
        async with s.get(f"{url}/api/posts") as r:
            assert r.status == 200, await r.text()
            doc = await r.json()
    return doc["posts"]  # type: ignore[no-any-return]


async def test_one_bundle_one_photo_every_platform_fidelity_per_account_on_both_sides(
    cli: Cli, pds: harness.Pds, fakes: dict[str, Any], tmp_path: Path, sample_jpegs: list[Path]
) -> None:
    token = setup_station(cli, tmp_path)  # alice's key onboard, a station token
    enroll_everywhere(cli, pds, fakes, tmp_path)
    home = GroundHome(cli.ground_home)
    operators.add_operator(home.conn, ADMIN[0], ADMIN[1], operators.Role.ADMIN, 1_000)
    home.close()
    photo = sample_jpegs[0]  # rocket.jpg, 640×427: within every platform's limits
    original = photo.read_bytes()
    signed = hashlib.sha256(original).hexdigest()

    async with running_ground(cli.ground_home, publish_interval_s=0.1) as url:
        # Instagram and Threads fetch the photo from ground's expiring public link.
        set_base_url(cli.ground_home, url)
        link_to(cli, url, token)
        out = cli.onboard(
            "post", "--as", "alice", "--to", ",".join(ACCOUNTS), "--photo", str(photo),
            "--alt", "A rocket lifting off", "Launch seen from orbit 🚀",
        ).output  # fmt: skip
        post_id = out.split()[1]
        # Before a byte is sent, onboard says which platforms will re-encode (protocol/rules.py).
        assert "will re-encode this photo" in out and "keep it exactly" in out
        fast = SenderConfig(backoff_initial_s=0.05, backoff_max_s=0.5, min_timeout_s=5.0)
        result = await sync(Home(cli.onboard_home), config=fast, give_up_after_s=120, wait_published_s=120)
        assert result.receipts > 0
        posts = await dashboard_posts(url)

    # One signed bundle carried it (a single bundle on ground, holding this one item).
    home = GroundHome(cli.ground_home)
    try:
        bundles = home.conn.execute("SELECT bundle_id FROM items WHERE id = ?", (post_id,)).fetchall()
        assert len(bundles) == 1
        (n_bundles,) = home.conn.execute("SELECT COUNT(*) FROM bundles").fetchone()
        assert n_bundles == 1
    finally:
        home.close()

    # Every platform got it, once; the exact ones got the astronaut's bytes.
    assert fakes["webhook"].photos == [original]
    assert len(fakes["x"].tweets) == 1 and len(fakes["linkedin"].posts) == 1
    assert len(fakes["mastodon"].statuses) == 1
    for k in META:
        assert len(fakes[k].posts) == 1, k
    (flickr_photo,) = fakes["flickr"].photos.values()
    assert flickr_photo["data"] == original

    # Onboard, from ground's receipts: every account published, its URL and its photo fidelity.
    queue = json.loads(cli.onboard("queue", "--json").output)
    (item,) = [i for i in queue["items"] if i["id"] == post_id]
    assert item["status"] == "published"
    onboard_view = {a["account"]: a for a in item["accounts"]}
    assert set(onboard_view) == set(ACCOUNTS)
    for account, a in onboard_view.items():
        assert a["state"] == "published" and a["url"], (account, a)
        want = "exact" if account in EXACT else "re-encoded"
        assert a["photos"] == [{"photo": 1, "fidelity": want, "original_sha256": signed}], (account, a)
    # Bluesky and Flickr say what reading the copy back found (its sha256 matched).
    assert "sha256" in onboard_view[BSKY]["read_back"] and onboard_view["flickr:alice"]["read_back"]
    sentence = item["fidelity"]
    assert sentence.startswith(
        "facebook:alice, instagram:alice, linkedin:alice, mastodon:alice@fake.example, threads:alice and "
        "x:alice re-encoded this photo; "
    ), sentence
    assert sentence.endswith(
        f"archive:alice, bluesky:alice.test, flickr:alice and webhook:alice kept it exactly (sha256 {signed[:16]}…)"
    ), sentence
    assert f"photos: {sentence}" in cli.onboard("queue").output.replace("\n  ", " ")

    # Ground's dashboard API says the same per account: what onboard shows is what ground did.
    (shown,) = [p for p in posts if p["id"] == post_id]
    ground_view = {p["account"]: p for p in shown["publications"]}
    assert set(ground_view) == set(ACCOUNTS)
    for account, p in ground_view.items():
        assert p["state"] == "published" and p["url"] == onboard_view[account]["url"], account
        assert p["fidelity"] == onboard_view[account]["photos"][0]["fidelity"], account
        assert (p["fidelity_note"] or None) == onboard_view[account]["read_back"], account
    assert {a for a, p in ground_view.items() if p["fidelity"] == "exact"} == EXACT
