"""The webhook adapter (HMAC-signed POST of post and media) and per-account credentials
(`ground account add/list/remove`, files of mode 0600, secrets never shown or stored elsewhere)."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import stat
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Cli
from publish_support import T0, ingest, make_home, make_post

from ground.credentials import CredentialError, store_for
from ground.platforms.webhook import WebhookPlatform, verify
from ground.publish import publish_due
from protocol import SigningKey, verify_item
from protocol.signing import SignedItem

SECRET = "s3cret-hmac-key"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[list[dict[str, Any]], str]]:
    got: list[dict[str, Any]] = []
    seen: dict[str, str] = {}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        ts = request.headers["X-Orbitpost-Timestamp"]
        if not verify(SECRET, ts, body, request.headers["X-Orbitpost-Signature"]):
            return web.json_response({"error": "bad signature"}, status=401)
        delivery = request.headers["X-Orbitpost-Delivery"]
        if delivery not in seen:  # receivers deduplicate on the delivery id
            got.append(json.loads(body))
            seen[delivery] = f"https://elsewhere.example/p/{len(got)}"
        return web.json_response({"url": seen[delivery], "id": str(len(got))})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/hook", hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield got, str(server.make_url("/hook"))
    await server.close()


async def test_webhook_posts_signed_post_and_exact_media(
    tmp_path: Path, alice_key: SigningKey, receiver: tuple[list[dict[str, Any]], str], sample_pngs: list[Path]
) -> None:
    got, url = receiver
    home = make_home(tmp_path / "G", alice_key, ["webhook:intranet"])
    store_for(home.root).add("webhook:intranet", SECRET, service_url=url)
    img = sample_pngs[0].read_bytes()
    img += b"\0" * (2_500_000 - len(img))  # large: the JSON body (base64) is streamed
    post, blobs = make_post("to the intranet ✨", ["webhook:intranet"], photos=[(img, "image/png", "coffee")])
    ingest(home, alice_key, [post], blobs)
    plat = WebhookPlatform(store_for(home.root))
    async with aiohttp.ClientSession() as s:
        (o,) = await publish_due(home, T0, {"webhook": plat}, s, rng=random.Random(0))  # type: ignore[dict-item]
        assert o.state == "published" and o.url == "https://elsewhere.example/p/1"
        # Sending again (a retry) is deduplicated by the receiver.
        from publish_support import states

        assert states(home, post.id) == {"webhook:intranet": "published"}
    (doc,) = got
    assert doc["post"]["text"] == "to the intranet ✨" and doc["post"]["id"] == post.id
    (m,) = doc["media"]
    assert base64.b64decode(m["data"]) == img and m["sha256"] == hashlib.sha256(img).hexdigest()
    assert m["alt"] == "coffee"
    # The receiver can check the astronaut's own signature over the signed body.
    signed = SignedItem(
        key_id=bytes.fromhex(doc["signer_fingerprint"]),
        body=base64.b64decode(doc["signed_body"]),
        signature=base64.b64decode(doc["signature"]),
    )
    from protocol import KnownKey, key_id

    keyring = {key_id(alice_key.public_key): KnownKey(astronaut="alice", public_key=alice_key.public_key)}
    assert verify_item(signed, keyring).item.id == post.id


async def test_webhook_wrong_secret_is_a_permanent_failure(
    tmp_path: Path, alice_key: SigningKey, receiver: tuple[list[dict[str, Any]], str]
) -> None:
    got, url = receiver
    home = make_home(tmp_path / "G", alice_key, ["webhook:intranet"])
    store_for(home.root).add("webhook:intranet", "wrong", service_url=url)
    post, _ = make_post("hi", ["webhook:intranet"])
    ingest(home, alice_key, [post])
    (o,) = await publish_due(home, T0, {"webhook": WebhookPlatform(store_for(home.root))})  # type: ignore[dict-item]
    assert o.state == "failed" and "401" in (o.error or "") and got == []


def test_account_add_list_remove_keeps_secrets_private(cli: Cli, tmp_path: Path) -> None:
    secret = "abcd-efgh-ijkl-mnop"
    f = tmp_path / "pw"
    f.write_text(secret + "\n")
    r = cli.ground(
        "account",
        "add",
        "bluesky:alice.test",
        "--app-password-file",
        str(f),
        "--service-url",
        "http://127.0.0.1:9",
    )
    assert "stored credentials for bluesky:alice.test" in r.output and secret not in r.output
    f.write_text("token-123")
    cli.ground("account", "add", "mastodon:alice@mastodon.example", "--token-file", str(f))
    listing = cli.ground("account", "list").output
    assert "bluesky:alice.test\thttp://127.0.0.1:9" in listing
    assert "mastodon:alice@mastodon.example\thttps://mastodon.example" in listing
    assert secret not in listing and "token-123" not in listing
    cred_dir = cli.ground_home / "credentials"
    assert stat.S_IMODE(cred_dir.stat().st_mode) == 0o700
    files = list(cred_dir.iterdir())
    assert len(files) == 2 and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    # Never in the database (audit trail included).
    db = (cli.ground_home / "ground.db").read_bytes()
    for side in cli.ground_home.glob("ground.db*"):
        db += side.read_bytes()
    assert secret.encode() not in db and b"token-123" not in db
    cred = store_for(cli.ground_home).get("bluesky:alice.test")
    assert cred is not None and cred.secret == secret and secret not in repr(cred)
    cli.ground("account", "remove", "bluesky:alice.test")
    assert "bluesky:alice.test" not in cli.ground("account", "list").output
    bad = cli.ground("account", "remove", "bluesky:alice.test", ok=False)
    assert bad.exit_code != 0 and "no credentials stored" in str(bad.exception)


def test_account_add_refuses_bad_input_and_changes_nothing(cli: Cli, tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("")
    r = cli.ground("account", "add", "bluesky:alice.test", "--app-password-file", str(f), ok=False)
    assert "empty" in str(r.exception)
    f.write_text("x")
    r = cli.ground("account", "add", "webhook:intranet", "--secret-file", str(f), ok=False)
    assert "--service-url" in str(r.exception)
    r = cli.ground("account", "add", "not-a-target", "--secret-file", str(f), ok=False)
    assert "platform:account" in str(r.exception)
    r = cli.ground("account", "add", "bluesky:a.test", "--secret-file", str(tmp_path / "missing"), ok=False)
    assert "cannot read" in str(r.exception)
    assert not (cli.ground_home / "credentials").exists() or not any(
        (cli.ground_home / "credentials").iterdir()
    )
    with pytest.raises(CredentialError):
        store_for(cli.ground_home).require("bluesky:nobody.test")


def test_ground_retry_cli(cli: Cli, tmp_path: Path, alice_key: SigningKey) -> None:
    import asyncio

    from ground.home import GroundHome
    from ground.publish import RetryPolicy

    home = make_home(cli.ground_home, alice_key, ["mastodon:alice@127.0.0.1"])
    post, _ = make_post("hi", ["mastodon:alice@127.0.0.1"])
    ingest(home, alice_key, [post])
    (o,) = asyncio.run(publish_due(home, T0, policy=RetryPolicy(max_attempts=1)))
    assert o.state == "failed"  # no credentials yet
    home.close()
    r = cli.ground("retry", post.id.lower(), "--account", "mastodon:alice@127.0.0.1")
    assert "queued again" in r.output
    assert GroundHome(cli.ground_home).conn.execute("SELECT state FROM publications").fetchone() == (
        "pending",
    )
    r = cli.ground("retry", post.id, ok=False)
    assert "nothing to retry" in str(r.exception)


async def test_webhook_carries_a_format_3_posts_own_proof(
    tmp_path: Path, alice_key: SigningKey, receiver: tuple[list[dict[str, Any]], str]
) -> None:
    """A post from a format-3 bundle arrives with its audit path (docs/PROTOCOL.md §17): the
    receiver checks it against the astronaut's key alone, whatever the bundle's size."""
    from protocol import build_bundle
    from protocol.batch_tree import BatchInclusion, check_inclusion
    from protocol.bundle import CompactItems as Compact
    from protocol.compact_items import encode_compact_items
    from protocol.ids import new_ulid
    from protocol.model import with_derived_id

    got, url = receiver
    home = make_home(tmp_path / "G", alice_key, ["webhook:intranet"])
    store_for(home.root).add("webhook:intranet", SECRET, service_url=url)
    posts = [with_derived_id(make_post(f"batch post {i}", ["webhook:intranet"])[0]) for i in range(5)]
    posts = [with_derived_id(replace(p, created_ms=T0 + 1000 * i)) for i, p in enumerate(posts)]
    raw = encode_compact_items(posts, {"alice": alice_key}, format_version=3)
    data = build_bundle(
        bundle_id=new_ulid(T0, bytes(10)), created_ms=T0, items=Compact(raw=raw, count=5, format_version=3)
    )
    from ground.ingest import ingest_bytes

    ingest_bytes(home, data, source="test", now_ms=T0)
    async with aiohttp.ClientSession() as s:
        outcomes = await publish_due(home, T0 + 10_000, {"webhook": WebhookPlatform(store_for(home.root))}, s)  # type: ignore[dict-item]
    assert len(outcomes) == 5 and len(got) == 5
    for doc in got:
        assert doc["batch_statement"] is None
        inclusion = BatchInclusion.from_json(doc["batch_proof"])
        assert inclusion.tree_size == 5 and len(inclusion.path) <= 3
        body, sig = base64.b64decode(doc["signed_body"]), base64.b64decode(doc["signature"])
        assert check_inclusion(alice_key.public_key, sig, body, inclusion)
        assert not check_inclusion(alice_key.public_key, sig, body + b" ", inclusion)
