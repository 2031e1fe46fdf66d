"""Bundle formats 2 and 3 end to end through the real CLIs: one signature per astronaut per
bundle, and every published post still carries a proof anyone can check (docs/PROTOCOL.md §14,
§17). Format 3's proof of one post stays a few hundred bytes however large its bundle."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from link_support import running_ground
from typer.testing import CliRunner

from ground import translog
from ground.db import connect
from ground.home import GroundHome
from ground.platforms.archive import archived_posts, read_post
from protocol import SignedItem, parse_public_key, read_header
from protocol.batch_tree import BatchInclusion, check_inclusion, root_from_inclusion
from protocol.keys import verify_signature
from protocol.model import decode_item, derived_id
from protocol.signing import BATCH_DOMAIN, check_signature, statement_lists
from verifier.cli import app as verify_app

FORMAT_1_TOKEN = "codecs=0,1,2;dicts=6f700001"
# A ground of the release before format 3: it reads formats 1 and 2 only.
FORMAT_2_TOKEN = "codecs=0,1,2;dicts=6f700001,6f700002;formats=1,2"


def _crew(cli: Cli) -> dict[str, bytes]:
    """alice (already enrolled) and bob, both publishing to the archive; their public keys."""
    cli.onboard("keys", "new", "bob")
    line = cli.onboard("keys", "show", "bob").output.strip()
    cli.ground("enroll", "bob", "--key", line, "--account", "archive:bob")
    return {n: parse_public_key(cli.onboard("keys", "show", n).output.strip()) for n in ("alice", "bob")}


def _post(cli: Cli, who: str, text: str) -> str:
    return str(cli.onboard("post", "--as", who, "--to", f"archive:{who}", text).output.split()[1])


def _ground_items(cli: Cli) -> list[tuple[str, bytes, bytes, bytes | None, str]]:
    db = sqlite3.connect(cli.ground_home / "ground.db")
    try:
        return db.execute(
            "SELECT id, body, signature, COALESCE(i.statement, s.statement), author FROM items i "
            "LEFT JOIN statements s ON s.sha256 = i.statement_sha256 ORDER BY id"
        ).fetchall()
    finally:
        db.close()


def test_format_2_bundle_one_signature_per_astronaut_and_proofs_hold(enrolled: Cli, tmp_path: Path) -> None:
    cli = enrolled
    keys = _crew(cli)
    texts = {("alice", "Hello from orbit"), ("bob", "Hello from orbit"), ("alice", "Same words twice"),
             ("alice", "Same words twice"), ("bob", "Ünïcode ✓ 🚀")}  # fmt: skip
    ids = {_post(cli, who, text) for who, text in sorted(texts)} | {_post(cli, "alice", "Same words twice")}
    assert len(ids) == len(texts) + 1, "two identical posts by one astronaut still get two ids"
    out = tmp_path / "OUT"
    cli.onboard("export", "--ground-decodes", FORMAT_2_TOKEN, str(out))
    (bundle,) = out.glob("*.opb")
    assert read_header(bundle.read_bytes()).format_version == 2
    assert "format 2, 2 signature(s) and every hash valid" in cli.ground("verify", str(bundle)).output
    cli.ground("ingest", str(out))

    rows = _ground_items(cli)
    assert {r[0] for r in rows} == ids
    statements = {r[4]: r[3] for r in rows}
    assert len({r[2] for r in rows}) == 2, "one batch signature per astronaut"
    for item_id, body, sig, statement, author in rows:
        assert statement is not None and statements[author] == statement
        proof = SignedItem(body=body, key_id=b"", signature=sig, statement=statement)
        assert check_signature(proof, keys[author])
        assert not check_signature(proof, keys["bob" if author == "alice" else "alice"])
        item = decode_item(body)
        assert item.id == item_id == derived_id(item)
        assert item.created_ms % 1000 == 0, "onboard composes whole-second times"

        # The archive record proves the post on its own: body, statement and signature.
        # (A text post is a line of a pack: archive layout 2, ground/platforms/archive.py.)
        held = read_post(cli.ground_home / "archive", author, item_id)
        assert held is not None and held.location.suffix == ".jsonl"
        record = held.record
        signed_body = base64.b64decode(record["signed_body"])
        assert signed_body == body
        # The statement file is named relative to the folder holding the record's file.
        st = (held.location.parent / record["batch_statement_file"]).read_bytes()
        assert hashlib.sha256(st).hexdigest() == record["batch_statement_sha256"]
        assert statement_lists(st, signed_body)
        assert verify_signature(keys[author], bytes.fromhex(record["signature"]), BATCH_DOMAIN + st)
        assert (author, held.text.decode()) in texts


def test_format_1_for_a_ground_that_does_not_read_format_2(enrolled: Cli, tmp_path: Path) -> None:
    cli = enrolled
    post_id = _post(cli, "alice", "Older ground, older format")
    out = tmp_path / "OUT"
    cli.onboard("export", "--ground-decodes", FORMAT_1_TOKEN, str(out))
    (bundle,) = out.glob("*.opb")
    assert read_header(bundle.read_bytes()).format_version == 1
    cli.ground("ingest", str(out))
    ((item_id, _body, _sig, statement, _author),) = _ground_items(cli)
    assert item_id == post_id and statement is None
    held = read_post(cli.ground_home / "archive", "alice", post_id)
    assert held is not None
    assert (
        held.record.get("batch_statement_sha256") is None and held.record.get("batch_statement_file") is None
    )
    assert held.record.get("batch_proof") is None


def test_format_1_when_the_key_that_signed_the_queue_is_gone(enrolled: Cli, tmp_path: Path) -> None:
    cli = enrolled
    _post(cli, "alice", "Signed before the key file went missing")
    (cli.onboard_home / "keys" / "alice.key").rename(tmp_path / "elsewhere.key")
    out = tmp_path / "OUT"
    cli.onboard("export", str(out))
    (bundle,) = out.glob("*.opb")
    assert read_header(bundle.read_bytes()).format_version == 1
    cli.ground("ingest", str(out))
    assert len(_ground_items(cli)) == 1


def test_a_database_from_before_format_2_gains_the_statement_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE items (id TEXT PRIMARY KEY, bundle_id TEXT NOT NULL, kind TEXT NOT NULL, "
        "author TEXT NOT NULL, key_id BLOB NOT NULL, body BLOB NOT NULL, signature BLOB NOT NULL, "
        "created_ms INTEGER NOT NULL, publish_at_ms INTEGER, target_id TEXT, received_ms INTEGER NOT NULL)"
    )
    old.execute("INSERT INTO items VALUES ('X', 'B', 'post', 'alice', x'00', x'01', x'02', 1, NULL, NULL, 2)")
    old.commit()
    old.close()
    conn = connect(path)
    assert conn.execute("SELECT id, statement, statement_sha256 FROM items").fetchall() == [("X", None, None)]
    conn.close()
    assert connect(path).execute("SELECT COUNT(*) FROM items").fetchone() == (1,)


def test_storage_is_linear_in_the_bundle_size(enrolled: Cli, tmp_path: Path) -> None:
    """Each signer's statement is kept once (ground.db and archive), not once per post (issue 18)."""
    cli = enrolled
    _crew(cli)
    n = 120
    for i in range(n):
        _post(cli, "alice" if i % 3 else "bob", f"post number {i}")
    cli.onboard("export", "--ground-decodes", FORMAT_2_TOKEN, str(tmp_path / "OUT"))
    cli.ground("ingest", str(tmp_path / "OUT"))
    db = sqlite3.connect(cli.ground_home / "ground.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM items WHERE statement IS NOT NULL").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*), SUM(length(statement)) FROM statements").fetchone() == (2, 32 * n)
    finally:
        db.close()
    kept = list((cli.ground_home / "archive" / ".statements").iterdir())
    assert len(kept) == 2 and sum(p.stat().st_size for p in kept) == 32 * n
    held = archived_posts(cli.ground_home / "archive")
    sizes = [len(json.dumps(p.record, ensure_ascii=False, separators=(",", ":")).encode()) for p in held]
    assert len(held) == n and max(sizes) < 1024
    # Text posts take no file or folder of their own: one pack per publishing group.
    assert not (cli.ground_home / "archive" / "alice").exists()
    assert len(list((cli.ground_home / "archive" / ".packs").glob("*.jsonl"))) == 1


def _ground_proofs(cli: Cli) -> list[tuple[str, bytes, bytes, bytes | None, str]]:
    db = sqlite3.connect(cli.ground_home / "ground.db")
    try:
        return db.execute("SELECT id, body, signature, batch_proof, author FROM items ORDER BY id").fetchall()
    finally:
        db.close()


def test_format_3_bundle_one_signature_per_astronaut_and_each_post_has_its_own_path(
    enrolled: Cli, tmp_path: Path
) -> None:
    cli = enrolled
    keys = _crew(cli)
    texts = [("alice", f"Sunrise number {i}") for i in range(5)] + [("bob", "Bonjour ✓"), ("bob", "Encore")]
    ids = {_post(cli, who, text) for who, text in texts}
    out = tmp_path / "OUT"
    cli.onboard("export", str(out))  # this ground announces formats=1,2,3
    (bundle,) = out.glob("*.opb")
    assert read_header(bundle.read_bytes()).format_version == 3
    assert "format 3, 2 signature(s) and every hash valid" in cli.ground("verify", str(bundle)).output
    cli.ground("ingest", str(out))
    cli.ground("publish")

    rows = _ground_proofs(cli)
    assert {r[0] for r in rows} == ids and len({r[2] for r in rows}) == 2
    sizes = {"alice": 5, "bob": 2}
    for item_id, body, sig, raw, author in rows:
        assert raw is not None
        inclusion = BatchInclusion.from_bytes(raw)
        assert inclusion.tree_size == sizes[author] and len(inclusion.path) <= 3
        proof = SignedItem(body=body, key_id=b"", signature=sig, inclusion=inclusion)
        assert check_signature(proof, keys[author])
        assert not check_signature(proof, keys["bob" if author == "alice" else "alice"])
        other = next(r for r in rows if r[4] == author and r[0] != item_id)
        assert not check_signature(
            SignedItem(body=other[1], key_id=b"", signature=sig, inclusion=inclusion), keys[author]
        )

        # The archive record proves the post on its own: body, signature and audit path; no
        # statement file (nothing in it grows with the bundle).
        held = read_post(cli.ground_home / "archive", author, item_id)
        assert held is not None
        record = held.record
        assert record.get("batch_statement_file") is None and record.get("batch_statement_sha256") is None
        signed_body = base64.b64decode(record["signed_body"])
        kept = BatchInclusion.from_json(record["batch_proof"])
        assert signed_body == body and kept == inclusion
        assert check_inclusion(keys[author], bytes.fromhex(record["signature"]), signed_body, kept)
    assert not (cli.ground_home / "archive" / ".statements").exists()


def test_format_3_storage_per_post_is_bounded_by_the_path(enrolled: Cli, tmp_path: Path) -> None:
    """Each post's stored proof is its audit path (32 B × ⌈log₂ n⌉ + a few bytes), not n hashes."""
    cli = enrolled
    n = 120
    for i in range(n):
        _post(cli, "alice", f"post number {i}")
    cli.onboard("export", str(tmp_path / "OUT"))
    cli.ground("ingest", str(tmp_path / "OUT"))
    db = sqlite3.connect(cli.ground_home / "ground.db")
    try:
        assert db.execute("SELECT COUNT(*) FROM statements").fetchone() == (0,)
        lengths = [r[0] for r in db.execute("SELECT length(batch_proof) FROM items")]
    finally:
        db.close()
    assert len(lengths) == n and max(lengths) <= 32 * 7 + 12  # ⌈log₂ 120⌉ = 7


async def test_orbitpost_verify_checks_a_format_3_post_through_its_path(
    enrolled: Cli, tmp_path: Path
) -> None:
    """The independent verifier folds the public page's audit path to the signed root; a changed
    path hash, leaf index or tree size is named as the signature not covering the body."""
    cli = enrolled

    def publish() -> tuple[list[str], str]:  # the CLIs run their own event loop: not in this one
        ids = [_post(cli, "alice", f"Sunrise number {i}") for i in range(6)]
        cli.onboard("export", str(tmp_path / "OUT"))
        cli.ground("ingest", str(tmp_path / "OUT"))
        cli.ground("publish")
        cli.ground("log", "sync")
        return ids, cli.ground("log", "checkpoint").output.split()[2]

    ids, gkey = await asyncio.to_thread(publish)
    home = GroundHome(cli.ground_home)
    target = sorted(ids)[4]
    raw = bytes(home.conn.execute("SELECT batch_proof FROM items WHERE id = ?", (target,)).fetchone()[0])
    good = BatchInclusion.from_bytes(raw)
    assert good.tree_size == 6 and good.leaf_index == 4
    # The log's item entry names the root the astronaut signed (docs/PROTOCOL.md §15, §17).
    body = bytes(home.conn.execute("SELECT body FROM items WHERE id = ?", (target,)).fetchone()[0])
    _index, entry = translog.leaf(home, f"item:{target}") or (0, b"{}")
    logged = json.loads(entry)
    assert (
        logged["batch_root"] == root_from_inclusion(body, good).hex() and logged["statement_sha256"] is None
    )

    async def verify() -> Any:
        async with running_ground(cli.ground_home) as url:
            return await asyncio.to_thread(
                CliRunner().invoke, verify_app, [f"{url}/p/{target}", "--ground-key", gkey]
            )

    ok = await verify()
    assert ok.exit_code == 0 and "VERIFIED" in ok.output, ok.output
    assert "audit path of 2 hash(es) to the root of a batch of 6" in ok.output, ok.output
    path0 = bytes([good.path[0][0] ^ 0x80]) + good.path[0][1:]
    for forged in (
        BatchInclusion.make(6, 4, [path0, *good.path[1:]]),
        BatchInclusion.make(6, 5, good.path),
        BatchInclusion.make(7, 4, good.path),
    ):
        home.conn.execute("UPDATE items SET batch_proof = ? WHERE id = ?", (forged.to_bytes(), target))
        bad = await verify()
        assert bad.exit_code == 1 and "signature does not cover this body" in bad.output, bad.output
    home.conn.execute("UPDATE items SET batch_proof = ? WHERE id = ?", (raw, target))
    assert (await verify()).exit_code == 0


def test_ground_announces_format_3_and_onboard_follows_the_token(enrolled: Cli, tmp_path: Path) -> None:
    """Negotiation as for formats 1 and 2 (docs/PROTOCOL.md §5.3): this ground's token lists 3;
    onboard writes the newest format a token lists."""
    cli = enrolled
    token = cli.ground("capabilities").output.strip()
    assert token.split("formats=")[1].split(";")[0] == "1,2,3"
    for n, (given, expect) in enumerate(
        [(token, 3), (FORMAT_2_TOKEN, 2), (FORMAT_1_TOKEN, 1), ("codecs=0,1;formats=1,3", 3)]
    ):
        _post(cli, "alice", f"negotiated {n}")
        out = tmp_path / f"OUT{n}"
        cli.onboard("export", "--ground-decodes", given, str(out))
        (bundle,) = out.glob("*.opb")
        assert read_header(bundle.read_bytes()).format_version == expect, given
        cli.ground("ingest", str(out))


@pytest.mark.parametrize("token", [FORMAT_1_TOKEN, FORMAT_2_TOKEN], ids=["format-1", "format-2"])
async def test_orbitpost_verify_still_checks_older_formats(enrolled: Cli, tmp_path: Path, token: str) -> None:
    """Posts from format-1 and format-2 bundles keep verifying end to end (their own signature,
    or the statement that lists the body), beside format 3's paths."""
    cli = enrolled

    def publish() -> tuple[list[str], str]:
        ids = [_post(cli, "alice", f"Older format, post {i}") for i in range(3)]
        cli.onboard("export", "--ground-decodes", token, str(tmp_path / "OUT"))
        cli.ground("ingest", str(tmp_path / "OUT"))
        cli.ground("publish")
        cli.ground("log", "sync")
        return ids, cli.ground("log", "checkpoint").output.split()[2]

    ids, gkey = await asyncio.to_thread(publish)
    async with running_ground(cli.ground_home) as url:
        for item_id in ids:
            ok = await asyncio.to_thread(
                CliRunner().invoke, verify_app, [f"{url}/p/{item_id}", "--ground-key", gkey]
            )
            assert ok.exit_code == 0 and "VERIFIED" in ok.output, ok.output
            assert "audit path" not in ok.output
