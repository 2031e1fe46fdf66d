"""ground's public media route: exact bytes at unguessable, expiring links — and nothing else.

Served by the real ground web app (``create_app``) on loopback, as Instagram and Threads reach it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from conftest import Cli
from hypothesis import given, settings
from hypothesis import strategies as st
from publish_support import make_home

from ground.home import GroundHome
from ground.public_media import PublicMedia, PublicMediaError, base_url, set_base_url
from ground.server import create_app
from protocol import SigningKey


@pytest.fixture
async def served(tmp_path: Path, alice_key: SigningKey) -> AsyncIterator[tuple[GroundHome, str]]:
    home = make_home(tmp_path / "G", alice_key, ["instagram:alice"])
    server = TestServer(create_app(home), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    set_base_url(home.root, url)
    yield home, url
    await server.close()
    home.close()


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _get(url: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as s, s.request(method, url) as r:
        return r.status, await r.read(), dict(r.headers)


async def test_a_grant_serves_the_exact_bytes_with_their_type_until_revoked(
    served: tuple[GroundHome, str], sample_jpegs: list[Path], sample_pngs: list[Path]
) -> None:
    home, url = served
    jpeg, png = sample_jpegs[0].read_bytes(), sample_pngs[0].read_bytes()
    sj, sp = home.blobs.put(jpeg), home.blobs.put(png)
    pm = PublicMedia(home.root)
    link = pm.grant(sj, "image/jpeg", purpose="instagram:alice/P1", now_ms=_now_ms())
    link2 = pm.grant(sp, "image/png", purpose="instagram:alice/P1", now_ms=_now_ms())
    assert link.startswith(url + "/public/media/")
    token = link.rsplit("/", 1)[1]
    assert len(token) == 43  # 256 random bits
    status, body, headers = await _get(link)
    assert (status, body) == (200, jpeg)
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Cache-Control"] == "no-store"
    status, body, headers = await _get(link2)
    assert (status, body, headers["Content-Type"]) == (200, png, "image/png")
    status, body, _ = await _get(link, "HEAD")
    assert status == 200
    # The database keeps only the token's hash: a copy of ground.db opens nothing.
    assert token.encode() not in (home.root / "ground.db").read_bytes()
    assert pm.revoke("instagram:alice/P1") == 2
    for gone in (link, link2):
        assert (await _get(gone))[0] == 404
    pm.close()


async def test_expired_links_and_everything_else_are_404(
    served: tuple[GroundHome, str], sample_jpegs: list[Path]
) -> None:
    home, url = served
    data = sample_jpegs[1].read_bytes()
    other = sample_jpegs[2].read_bytes()
    sha, other_sha = home.blobs.put(data), home.blobs.put(other)
    pm = PublicMedia(home.root)
    live = pm.grant(sha, "image/jpeg", purpose="p", now_ms=_now_ms())
    expired = pm.grant(sha, "image/jpeg", purpose="q", now_ms=_now_ms() - 7_200_000, ttl_s=3600)
    assert (await _get(live))[0] == 200
    token = live.rsplit("/", 1)[1]
    probes = [
        expired,
        f"{url}/public/media/",
        f"{url}/public/media",
        f"{url}/public/media/{sha.hex()}",
        f"{url}/public/media/{other_sha.hex()}",
        f"{url}/public/media/{hashlib.sha256(other).hexdigest()[:43]}",
        f"{url}/public/media/{token[:-1]}",
        f"{url}/public/media/{token}x",
        f"{url}/public/media/{token}/..",
        f"{url}/public/media/..%2Fground.db",
        f"{url}/public/media/{token.upper() if token.upper() != token else token.lower()}",
        *(f"{url}/public/media/{secrets.token_urlsafe(32)}" for _ in range(50)),
    ]
    for probe in probes:
        status, body, _ = await _get(probe)
        assert status == 404, probe
        assert data not in body and other not in body
    assert pm.live(_now_ms()) == 1
    pm.close()


async def test_a_damaged_blob_is_not_served(served: tuple[GroundHome, str], sample_jpegs: list[Path]) -> None:
    home, _ = served
    data = sample_jpegs[0].read_bytes()
    sha = home.blobs.put(data)
    link = PublicMedia(home.root).grant(sha, "image/jpeg", purpose="p", now_ms=_now_ms())
    path = home.blobs.path(sha)
    path.chmod(0o644)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert (await _get(link))[0] == 404  # never bytes the signature does not cover


def test_no_base_url_is_a_clear_error_and_bad_urls_are_refused(tmp_path: Path) -> None:
    pm = PublicMedia(tmp_path)
    with pytest.raises(PublicMediaError, match="--public-base-url"):
        pm.grant(b"\0" * 32, "image/jpeg", purpose="p", now_ms=0)
    for bad in ("ftp://x.org", "media.example.org", "https://x.org/?a=1", ""):
        with pytest.raises(PublicMediaError):
            set_base_url(tmp_path, bad)
    assert set_base_url(tmp_path, "https://media.example.org/ground/") == "https://media.example.org/ground"
    assert base_url(tmp_path) == "https://media.example.org/ground"
    assert pm.grant(b"\0" * 32, "image/jpeg", purpose="p", now_ms=0).startswith(
        "https://media.example.org/ground/public/media/"
    )
    pm.close()


def test_serve_refuses_a_bad_public_base_url_before_listening(cli: Cli) -> None:
    r = cli.ground("serve", "--port", "0", "--public-base-url", "ftp://media.example.org", ok=False)
    assert isinstance(r.exception, PublicMediaError) and "--public-base-url" in str(r.exception)
    assert base_url(cli.ground_home) is None


_HYPO: dict[str, object] = {}  # one grant shared by every example (a grant costs an fsync)


@settings(max_examples=300, deadline=None)
@given(probe=st.text(min_size=0, max_size=80) | st.from_regex(r"[A-Za-z0-9_-]{43}", fullmatch=True))
def test_no_string_but_the_token_opens_a_grant(tmp_path_factory: pytest.TempPathFactory, probe: str) -> None:
    if not _HYPO:
        root = tmp_path_factory.mktemp("pm")
        set_base_url(root, "https://media.example.org")
        pm = PublicMedia(root)
        link = pm.grant(b"\1" * 32, "image/jpeg", purpose="p", now_ms=_now_ms())
        _HYPO.update(pm=pm, token=link.rsplit("/", 1)[1])
    pm, token = _HYPO["pm"], _HYPO["token"]
    assert isinstance(pm, PublicMedia) and isinstance(token, str)
    assert pm.resolve(token, _now_ms()) == (b"\1" * 32, "image/jpeg")
    if probe != token:
        assert pm.resolve(probe, _now_ms()) is None
    assert pm.resolve(token, _now_ms() + 3_600_001) is None  # expired
