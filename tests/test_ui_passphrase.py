"""Passphrase-protected keys (who may sign on a shared laptop), in the keystore and the CLI.

The key file is PKCS#8 encrypted (cryptography's BestAvailableEncryption): reading it is not
enough to sign. `onboard post`, `cancel`, `export` and `sync` (format-2 batch signatures)
take the passphrase from --passphrase-file, ORBITPOST_PASSPHRASE or a prompt; without one a
post is refused with a line saying how to give it, and nothing is queued.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cli

from onboard import keystore, queue
from onboard.errors import IdentityError
from onboard.export import batch_items
from onboard.home import Home
from protocol.bundle import CompactItems, read_header

PASSPHRASE = b"correct horse battery staple"


@pytest.fixture(autouse=True)
def _no_source_left_behind() -> Iterator[None]:
    # The CLI sets a process-wide passphrase source; no other test should inherit it.
    yield
    keystore.set_passphrase_source(None)


def test_protected_key_is_encrypted_at_rest_and_unlocks_only_with_its_passphrase(tmp_path: Path) -> None:
    home = Home(tmp_path / "A")
    key = keystore.new_key(home, "alice", PASSPHRASE)
    pem = (home.keys_dir / "alice.key").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert key.seed not in pem and (home.keys_dir / "alice.key").stat().st_mode & 0o777 == 0o600
    assert keystore.is_protected(home, "alice")
    with pytest.raises(keystore.KeyLocked, match="protected by a passphrase"):
        keystore.load_key(home, "alice")
    with pytest.raises(keystore.KeyLocked, match="wrong passphrase"):
        keystore.load_key(home, "alice", b"correct horse battery stapler")
    assert keystore.load_key(home, "alice", PASSPHRASE) == key
    # The public half is readable without the passphrase (keys show / list, the page).
    assert keystore.public_key(home, "alice") == key.public_key
    # Protection removed, then put back under a new passphrase.
    keystore.protect(home, "alice", None, PASSPHRASE)
    assert not keystore.is_protected(home, "alice") and keystore.load_key(home, "alice") == key
    keystore.protect(home, "alice", b"another long passphrase")
    assert keystore.load_key(home, "alice", b"another long passphrase") == key
    assert (home.keys_dir / "alice.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(IdentityError, match="at least 8"):
        keystore.protect(home, "alice", b"short", b"another long passphrase")
    assert keystore.load_key(home, "alice", b"another long passphrase") == key  # unchanged
    # A source answers for load_key when no passphrase is passed.
    keystore.set_passphrase_source(lambda name: b"another long passphrase" if name == "alice" else None)
    assert keystore.load_key(home, "alice") == key


def test_keys_made_before_passphrases_still_work(tmp_path: Path) -> None:
    home = Home(tmp_path / "A")
    key = keystore.new_key(home, "bob")
    (home.keys_dir / "bob.pub").unlink()  # an older laptop had no .pub beside the key
    assert keystore.public_key(home, "bob") == key.public_key
    assert keystore.load_key(home, "bob") == key


def test_cli_protects_keys_and_posts_with_a_passphrase(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORBITPOST_NEW_PASSPHRASE", PASSPHRASE.decode())
    cli.onboard("keys", "new", "alice", "--passphrase")
    cli.onboard("keys", "new", "bob")
    listing = cli.onboard("keys", "list").output.splitlines()
    assert listing[0].startswith("alice\t") and listing[0].endswith("\tpassphrase")
    assert listing[1].endswith("\tno passphrase")
    assert cli.onboard("keys", "show", "alice").output.startswith("ed25519:")

    # No passphrase to be had (no terminal here): refused with how to give one; nothing queued.
    r = cli.onboard("post", "--as", "alice", "--to", "archive:alice", "hello", ok=False)
    assert r.exit_code != 0 and "--passphrase-file" in str(r.exception)
    wrong = tmp_path / "wrong"
    wrong.write_text("not it at all\n")
    r = cli.onboard(
        "--passphrase-file", str(wrong), "post", "--as", "alice", "--to", "archive:a", "x", ok=False
    )
    assert "wrong passphrase" in str(r.exception)
    conn = queue.connect(cli.onboard_home / "onboard.db")
    assert queue.items(conn) == []

    good = tmp_path / "pass"
    good.write_text(PASSPHRASE.decode() + "\n")
    out = cli.onboard("--passphrase-file", str(good), "post", "--as", "alice", "--to", "archive:alice", "hi")
    post_id = out.output.split()[1]
    monkeypatch.setenv("ORBITPOST_PASSPHRASE", PASSPHRASE.decode())
    cli.onboard("cancel", post_id)
    monkeypatch.delenv("ORBITPOST_PASSPHRASE")
    # bob protects his key later; then it needs his passphrase too.
    cli.onboard("keys", "protect", "bob")
    assert keystore.is_protected(Home(cli.onboard_home), "bob")
    assert cli.onboard("post", "--as", "bob", "--to", "archive:bob", "x", ok=False).exit_code != 0
    assert [q.item.kind.name for q in queue.items(conn)] == ["POST", "CANCEL"]
    conn.close()


def test_export_signs_format_2_batches_once_the_key_is_unlocked(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORBITPOST_NEW_PASSPHRASE", PASSPHRASE.decode())
    cli.onboard("keys", "new", "alice", "--passphrase")
    monkeypatch.setenv("ORBITPOST_PASSPHRASE", PASSPHRASE.decode())
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "one")
    cli.onboard("post", "--as", "alice", "--to", "archive:alice", "two")
    home = Home(cli.onboard_home)
    conn = queue.connect(home.db_path)
    batch = queue.items(conn)
    # Locked (no source): the per-item signatures made at queue time travel (format 1).
    keystore.set_passphrase_source(None)
    assert isinstance(batch_items(home, batch), list)
    keystore.set_passphrase_source(lambda name: PASSPHRASE)
    compact = batch_items(home, batch)
    assert isinstance(compact, CompactItems) and compact.format_version == 3  # batch-signed: §14, §17
    conn.close()
    # And through the CLI: `onboard export` with the passphrase writes a batch-signed bundle
    # (format 3 for a ground of this release, docs/PROTOCOL.md §17).
    out = tmp_path / "OUT"
    cli.onboard("export", str(out))
    (bundle,) = out.glob("*.opb")
    assert read_header(bundle.read_bytes()).format_version == 3
