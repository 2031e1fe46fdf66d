"""`onboard post --allow-rendition`: refusals with the limit and the remedy, the plan said
before sending, the consent signed into a version-2 body, and only for a ground that reads it."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import skimage
from conftest import Cli
from PIL import Image
from test_onboard_post import queued

import onboard.compose
from onboard.home import Home
from protocol import Post, verify_bundle
from protocol.canonical import unpack
from protocol.capabilities import Capabilities

DATA = Path(os.path.dirname(skimage.__file__)) / "data"


def panorama(size: tuple[int, int] = (9000, 1200)) -> bytes:
    """A real photo stretched to a panorama wider than X's 8192-pixel side, under Bluesky's 2 MB."""
    with Image.open(DATA / "coffee.png") as src:
        big = src.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=80)
    assert len(buf.getvalue()) < 2_000_000
    return buf.getvalue()


@pytest.fixture
def alice(cli: Cli) -> Cli:
    cli.onboard("keys", "new", "alice")
    return cli


@pytest.fixture
def wide(tmp_path: Path) -> Path:
    p = tmp_path / "wide.jpg"
    p.write_bytes(panorama())
    return p


def post(cli: Cli, photo: Path, *extra: str, ok: bool = True):  # type: ignore[no-untyped-def]
    return cli.onboard(
        "post", "--as", "alice", "--to", "x:alice,bluesky:alice.test,archive:alice", "--photo", str(photo),
        *extra, "Coffee, very wide", ok=ok,
    )  # fmt: skip


def message(result) -> str:  # type: ignore[no-untyped-def]
    return result.output + (str(result.exception) if result.exception else "")


def test_over_limit_refused_with_the_limit_and_the_remedy(alice: Cli, wide: Path) -> None:
    r = post(alice, wide, ok=False)
    assert r.exit_code == 1
    m = message(r)
    assert "x:alice: photo 1 is 9000×1200; X allows at most 8192 pixels a side [x.media_side]" in m
    assert "add --allow-rendition x:alice to let ground make a JPEG within X's limits" in m
    assert "bluesky" not in m  # within Bluesky's limits: nothing to say about it
    assert not queued(alice)


def test_consent_queues_a_v2_body_and_says_what_will_happen(alice: Cli, wide: Path) -> None:
    r = post(alice, wide, "--allow-rendition", "x:alice")
    assert (
        "X (x:alice) will receive a rendition of photo 1 (9000×1200 → 8192×1092 JPEG, rendition/v1, "
        "at most 5,242,880 bytes); Bluesky and archive keep the photos exactly" in r.output
    )
    [q] = queued(alice)
    assert isinstance(q.item, Post) and q.item.renditions == ("x:alice",)
    assert unpack(q.signed.body, what="body", max_bytes=10**6)[0] == 2


def test_consent_for_another_account_still_refuses(alice: Cli, wide: Path) -> None:
    # Consent is per account: allowing one for Bluesky does not let X's limit pass.
    r = post(alice, wide, "--allow-rendition", "bluesky:alice.test", ok=False)
    assert "add --allow-rendition x:alice" in message(r)


@pytest.mark.parametrize(
    ("consent", "words"),
    [
        ("mastodon:alice", "--allow-rendition mastodon:alice is not one of the post's targets"),
        ("x:alice,x:alice", "the same --allow-rendition account is given twice"),
    ],
)
def test_bad_consents(alice: Cli, wide: Path, consent: str, words: str) -> None:
    r = post(alice, wide, "--allow-rendition", consent, ok=False)
    assert r.exit_code == 1 and words in message(r)
    assert not queued(alice)


def test_refused_when_the_linked_ground_does_not_read_body_2(
    alice: Cli, wide: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class OldLink:
        peer = Capabilities.from_token("codecs=0,1;dicts=;formats=1,2")

    monkeypatch.setattr(onboard.compose, "load_link", lambda home: OldLink())
    r = post(alice, wide, "--allow-rendition", "x:alice", ok=False)
    assert "does not read posts that allow a rendition (item body version 2)" in message(r)
    assert not queued(alice)


def test_export_writes_format_1_for_a_consent_and_refuses_an_old_ground(
    alice: Cli, wide: Path, tmp_path: Path
) -> None:
    post(alice, wide, "--allow-rendition", "x:alice")
    r = alice.onboard("export", str(tmp_path / "old"), "--ground-decodes", "codecs=0,1;formats=1,2", ok=False)
    assert "which needs item body version 2, but this ground reads body version 1 only" in message(r)
    # A ground that reads formats 1 and 2 and body 2, without JPEG XL (so verify_bundle here reads it).
    alice.onboard("export", str(tmp_path / "out"), "--ground-decodes", "codecs=0,1;formats=1,2;bodies=1,2")
    [bundle] = (tmp_path / "out").glob("*.opb")
    data = bundle.read_bytes()
    assert data[4:6] == b"\x00\x01"  # format 1: format 2 has no column for the consent
    from onboard.keystore import load_key
    from protocol import KnownKey, key_id

    pub = load_key(Home(alice.onboard_home), "alice").public_key
    vb = verify_bundle(data, {key_id(pub): KnownKey(astronaut="alice", public_key=pub)})
    [item] = vb.items
    assert isinstance(item.item, Post) and item.item.renditions == ("x:alice",)


def test_over_bytes_says_at_most(alice: Cli, tmp_path: Path) -> None:
    # Over Bluesky's 2,000,000 bytes (a noisy photo): the recipe may also shrink it, so "at most".
    import numpy as np

    rng = np.random.default_rng(1)
    noisy = Image.fromarray(rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8))
    p = tmp_path / "noisy.jpg"
    noisy.save(p, "JPEG", quality=95)
    assert p.stat().st_size > 2_000_000
    args = ("post", "--as", "alice", "--to", "bluesky:alice.test,archive:alice", "--photo", str(p), "noise")
    refused = alice.onboard(*args, ok=False)
    assert "bluesky:alice.test: photo 1 is" in message(refused) and "Bluesky allows 2,000,000" in message(
        refused
    )
    out = alice.onboard(*args, "--allow-rendition", "bluesky:alice.test").output
    assert (
        "Bluesky (bluesky:alice.test) will receive a rendition of photo 1 (2000×1500 → at most 2000×1500 JPEG, "
        "rendition/v1, at most 2,000,000 bytes); archive keeps the photos exactly" in " ".join(out.split())
    )


@pytest.mark.parametrize("consent", [(), ("--allow-rendition", "x:alice")])
def test_a_photo_the_recipe_cannot_read_is_never_promised_a_rendition(
    alice: Cli, tmp_path: Path, consent: tuple[str, ...]
) -> None:
    # HEIC: carried exactly where a platform takes it, but X does not, and Pillow cannot decode it
    # here, so neither the remedy nor the consent can help: say so instead.
    p = tmp_path / "photo.heic"
    p.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200))
    r = alice.onboard("post", "--as", "alice", "--to", "x:alice", "--photo", str(p), *consent, "hi", ok=False)
    m = message(r)
    assert "x:alice: photo 1 is image/heic; X takes GIF, JPEG, PNG, WEBP [x.media_type]" in m
    assert "ground cannot make a rendition of photo 1: rendition/v1 cannot read its pixels" in m
    assert "--allow-rendition" not in m
    assert not queued(alice)
