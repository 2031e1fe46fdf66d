"""`onboard post` refusals: each names the reason, exits non-zero and queues nothing."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from conftest import Cli

import onboard.compose
from onboard import queue
from onboard.home import Home
from onboard.keystore import load_key
from protocol import KnownKey, Post, key_id, verify_bundle


def message(result) -> str:  # type: ignore[no-untyped-def]
    """What the user sees: the CLI's output plus the error `onboard`'s main() prints."""
    return result.output + (str(result.exception) if result.exception else "")


def queued(cli: Cli) -> list[queue.QueuedItem]:
    conn = queue.connect(Home(cli.onboard_home).db_path)
    try:
        return queue.items(conn)
    finally:
        conn.close()


def stored_blobs(cli: Cli) -> list[Path]:
    return sorted(p for p in (cli.onboard_home / "blobs").rglob("*") if p.is_file())


@pytest.fixture
def alice(cli: Cli) -> Cli:
    cli.onboard("keys", "new", "alice")
    return cli


def refused(cli: Cli, *args: str) -> str:
    r = cli.onboard("post", *args, ok=False)
    assert r.exit_code == 1, r.output
    assert not queued(cli) and not stored_blobs(cli)
    return message(r)


def test_empty_text_and_no_photo(alice: Cli) -> None:
    assert "nothing to post: give some text or at least one --photo" in refused(
        alice, "--as", "alice", "--to", "archive:alice", ""
    )


def test_missing_photo(alice: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    m = refused(alice, "--as", "alice", "--to", "archive:alice", "--photo", str(missing), "hi")
    assert f"cannot read photo {missing}" in m and "No such file" in m


def test_photo_that_is_a_folder(alice: Cli, tmp_path: Path) -> None:
    assert f"photo {tmp_path} is not a regular file" in refused(
        alice, "--as", "alice", "--to", "archive:alice", "--photo", str(tmp_path), "hi"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_photo(alice: Cli, photo: Path) -> None:
    photo.chmod(0)
    assert f"cannot read photo {photo}" in refused(
        alice, "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "hi"
    )


def test_empty_photo(alice: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert "is empty" in refused(alice, "--as", "alice", "--to", "archive:alice", "--photo", str(empty), "hi")


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("notes.jpg", b"just some text, named like a photo\n"),
        ("doc.pdf", b"%PDF-1.7\n" + bytes(100)),
        ("clip.mp4", b"\x00\x00\x00\x18ftypmp42" + bytes(100)),
    ],
)
def test_not_an_image(alice: Cli, tmp_path: Path, name: str, data: bytes) -> None:
    f = tmp_path / name
    f.write_bytes(data)
    m = refused(alice, "--as", "alice", "--to", "archive:alice", "--photo", str(f), "hi")
    assert f"{f} is not an image we can publish (JPEG, PNG, GIF, WebP, HEIC or AVIF expected)" in m


def test_unknown_astronaut(alice: Cli) -> None:
    m = refused(alice, "--as", "carol", "--to", "archive:carol", "hi")
    assert "unknown astronaut 'carol'" in m and "onboard keys new carol" in m


def test_oversize_photo(alice: Cli, photo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    size = photo.stat().st_size
    monkeypatch.setattr(onboard.compose, "DEFAULT_MAX_MEDIA_BYTES", size - 1)
    m = refused(alice, "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "hi")
    assert f"photo {photo} is {size:,} bytes; the limit is {size - 1:,} bytes" in m
    monkeypatch.setattr(onboard.compose, "DEFAULT_MAX_MEDIA_BYTES", size)
    alice.onboard("post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "hi")


def test_default_media_limit_is_40_mib() -> None:
    assert onboard.compose.DEFAULT_MAX_MEDIA_BYTES == 40 * 1024 * 1024


@pytest.mark.parametrize(
    ("to", "words"),
    [
        ("nocolon", "target 'nocolon' must look like platform:account"),
        (":alice", "must look like platform:account"),
        ("archive:", "must look like platform:account"),
        ("arch ive:alice", "must look like platform:account"),
        ("archive:alice,archive:alice", "the same target account is given twice"),
        (",", "no target account: add --to platform:account"),
    ],
)
def test_bad_target(alice: Cli, to: str, words: str) -> None:
    assert words in refused(alice, "--as", "alice", "--to", to, "hi")


def test_no_target(alice: Cli) -> None:
    assert "no target account" in refused(alice, "--as", "alice", "hi")


def test_undecodable_text_from_the_command_line(alice: Cli) -> None:
    # A byte that is not UTF-8 reaches Python as a lone surrogate; it cannot be signed byte-exact.
    m = refused(alice, "--as", "alice", "--to", "archive:alice", "caf\udce9")
    assert "post text is not valid Unicode" in m


def test_more_alts_than_photos(alice: Cli) -> None:
    assert "2 --alt given for 0 --photo" in refused(
        alice, "--as", "alice", "--to", "archive:alice", "--alt", "a", "--alt", "b", "hi"
    )


def test_edit_after_post_changes_nothing_queued(alice: Cli, photo: Path, tmp_path: Path) -> None:
    original = photo.read_bytes()
    sha = hashlib.sha256(original).digest()
    alice.onboard("post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "--alt", "a", "hi")
    (q,) = queued(alice)
    assert isinstance(q.item, Post) and q.item.media[0].sha256 == sha
    # Overwrite in place (same inode), then replace, then delete: none of it reaches the queue.
    with photo.open("r+b") as f:
        f.write(b"\xff\xd8\xff" + b"EDITED" * 20)
    assert photo.read_bytes() != original
    photo.unlink()
    (stored,) = stored_blobs(alice)
    assert stored.read_bytes() == original and stored.name == sha.hex()
    assert queued(alice)[0].signed == q.signed
    alice.onboard("export", str(tmp_path / "OUT"))
    (bundle,) = (tmp_path / "OUT").glob("*.opb")
    key = load_key(Home(alice.onboard_home), "alice")
    ring = {key_id(key.public_key): KnownKey(astronaut="alice", public_key=key.public_key)}
    from ground.ingest import decoders  # photos may cross as JPEG XL (docs/PROTOCOL.md §10)

    vb = verify_bundle(bundle.read_bytes(), ring, decoders=decoders())
    assert vb.blobs == {sha: original}


def test_accepted_post_is_queued_with_its_photo(alice: Cli, photo: Path) -> None:
    r = alice.onboard("post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "Hello 🌏")
    (q,) = queued(alice)
    assert r.output.startswith(f"queued {q.item.id} for archive:alice")
    assert (
        isinstance(q.item, Post) and q.item.text == "Hello 🌏" and q.item.media[0].media_type == "image/jpeg"
    )


def test_real_cli_prints_the_reason(cli: Cli, subprocess_env: dict[str, str]) -> None:
    r = subprocess.run(
        cli.onboard_argv("post", "--as", "carol", "--to", "a:b", "x"),
        capture_output=True,
        text=True,
        env=subprocess_env,
        timeout=60,
    )
    assert r.returncode == 1
    assert r.stderr.startswith("error: unknown astronaut 'carol'") and "Traceback" not in r.stderr


def test_post_says_which_platforms_reencode_the_photo(alice: Cli, photo: Path) -> None:
    r = alice.onboard(
        "post",
        "--as",
        "alice",
        "--to",
        "x:alice,flickr:alice,bluesky:alice.test",
        "--photo",
        str(photo),
        "hi",
    )
    assert "x will re-encode this photo; flickr and bluesky keep it exactly" in r.output
    # Text only, or only exact targets: nothing to warn about.
    r = alice.onboard("post", "--as", "alice", "--to", "x:alice", "just words")
    assert "re-encode" not in r.output
