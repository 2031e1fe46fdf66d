"""TLS for the link and the dashboard (ground/tls.py), onboard pinning ground's certificate.

`ground tls init` makes the certificate; `ground station add` writes its SHA-256 into the token
file; `onboard link add` keeps it and `onboard sync` talks to that certificate only.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import stat
from pathlib import Path

import aiohttp
import pytest
from conftest import Cli
from dashboard_support import ADMIN
from harden_support import ground, port_of
from link_support import archive_posts, link_to, setup_station

from ground import operators
from ground.home import GroundHome
from ground.tls import home_files, server_context
from onboard.home import Home
from onboard.sync import SyncError, sync
from protocol.transfer import SenderConfig

FAST = SenderConfig(backoff_initial_s=0.05, backoff_max_s=0.5, min_timeout_s=5.0)


def tls_ground(cli: Cli, tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    out = cli.ground("tls", "init", "--host", "127.0.0.1", "--host", "localhost").output
    files = home_files(cli.ground_home)
    assert files.sha256 in out.replace("\n", "")
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    token = setup_station(cli, tmp_path)
    assert json.loads(token.read_text())["ground_tls_sha256"] == files.sha256
    return token, server_context(files)


async def test_a_station_syncs_over_tls_pinned_to_grounds_certificate(cli: Cli, tmp_path: Path) -> None:
    token, ctx = tls_ground(cli, tmp_path)
    async with ground(cli.ground_home, ssl_context=ctx) as (url, _):
        assert url.startswith("https://")
        link_to(cli, url, token)
        assert json.loads((cli.onboard_home / "link.json").read_text())["ground_tls_sha256"]
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "over TLS")
        await sync(Home(cli.onboard_home), config=FAST, give_up_after_s=30, wait_published_s=20)
        assert len(archive_posts(cli.ground_home)) == 1
        # Plain HTTP to the TLS port gets nowhere.
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                await s.get(url.replace("https:", "http:") + "/v1/health")


async def test_a_station_refuses_a_ground_with_another_certificate(cli: Cli, tmp_path: Path) -> None:
    token, ctx = tls_ground(cli, tmp_path)
    doc = json.loads(token.read_text())
    doc["ground_tls_sha256"] = "00" * 32  # pinned to some other certificate (a man in the middle)
    forged = tmp_path / "forged-token"
    forged.write_text(json.dumps(doc))
    async with ground(cli.ground_home, ssl_context=ctx) as (url, _):
        link_to(cli, url, forged)
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", "never sent")
        with pytest.raises(SyncError):
            await sync(Home(cli.onboard_home), config=FAST, give_up_after_s=1.5)
        assert archive_posts(cli.ground_home) == []
    stations = GroundHome(cli.ground_home)
    assert stations.conn.execute("SELECT COUNT(*) FROM link_contacts").fetchone() == (0,)
    stations.close()


def test_link_add_refuses_plain_http_to_a_remote_ground_that_serves_tls(cli: Cli, tmp_path: Path) -> None:
    token, _ = tls_ground(cli, tmp_path)
    r = cli.onboard(
        "link", "add", "--ground", "http://ground.example:8470", "--token-file", str(token), ok=False
    )
    assert r.exit_code != 0 and "https://" in str(r.exception)
    # Loopback over plain HTTP stays allowed (the demo, a local proxy); https:// keeps the pin.
    cli.onboard("link", "add", "--ground", "http://127.0.0.1:8470", "--token-file", str(token))
    cli.onboard("link", "add", "--ground", "https://ground.example:8470", "--token-file", str(token))


async def test_operators_browsers_get_https_and_a_secure_cookie(cli: Cli, tmp_path: Path) -> None:
    _, ctx = tls_ground(cli, tmp_path)
    home = GroundHome(cli.ground_home)
    operators.add_operator(home.conn, ADMIN[0], ADMIN[1], operators.Role.ADMIN, 1_000)
    home.close()
    pin = aiohttp.Fingerprint(bytes.fromhex(home_files(cli.ground_home).sha256))
    async with ground(cli.ground_home, ssl_context=ctx) as (url, edge):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=pin)) as s:
            async with s.post(url + "/api/login", json={"name": ADMIN[0], "password": ADMIN[1]}) as r:
                assert r.status == 200
                cookie = r.headers["Set-Cookie"]
            assert "Secure" in cookie and "HttpOnly" in cookie
            async with s.get(url + "/") as r:
                assert r.status == 200 and "Content-Security-Policy" in r.headers
        # A TLS handshake that never starts is cut like a slow head (FAST: 1 s).
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(url), local_addr=("127.0.0.2", 0))
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
