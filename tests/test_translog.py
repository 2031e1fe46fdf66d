"""The transparency log: RFC 9162 trees, signed checkpoints, witnesses and the public proof (§15)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from hypothesis import given
from hypothesis import strategies as st
from link_support import running_ground
from test_bluesky_pds import pds  # noqa: F401 (the real local PDS, module-scoped)
from typer.testing import CliRunner

from ground import translog
from ground.home import GroundHome
from protocol import RemoteProtocolError, SigningKey
from protocol.tlog import (
    Checkpoint,
    canonical_entry,
    check_consistency,
    check_inclusion,
    cosign,
    leaf_hash,
    parse_note,
    sign_checkpoint,
    verify_cosignature,
    verify_note,
)
from verifier.cli import app as verify_app
from verifier.witness import SplitView, load_key, witness_once


# --- an independent RFC 9162 §2.1 implementation, written from the RFC, to check pymerkle against
def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return _h(b"\x00" + leaves[0])
    k = _split(len(leaves))
    return _h(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def rfc_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if m < k:
        return rfc_path(m, leaves[:k]) + [mth(leaves[k:])]
    return rfc_path(m - k, leaves[k:]) + [mth(leaves[:k])]


def rfc_verify_inclusion(leaf: bytes, index0: int, size: int, path: list[bytes], root: bytes) -> bool:
    """RFC 9162 §2.1.3.2, the algorithm the proof page's script implements."""
    fn, sn, r = index0, size - 1, _h(b"\x00" + leaf)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _h(b"\x01" + p + r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = _h(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


# Leaves and roots of the Certificate Transparency reference tests (RFC 6962 trees).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def _tree(entries: list[bytes]) -> translog._SqlTree:
    conn = sqlite3.connect(":memory:")
    translog.ensure_schema(conn)
    for i, e in enumerate(entries, start=1):
        conn.execute(
            "INSERT INTO tlog_leaves (idx, fact, entry, digest, ts_ms) VALUES (?, ?, ?, ?, 0)",
            (i, f"f{i}", e, leaf_hash(e)),
        )
    return translog._SqlTree(conn)


def test_roots_match_the_certificate_transparency_vectors() -> None:
    tree = _tree(CT_LEAVES)
    for size, want in enumerate(CT_ROOTS, start=1):
        assert tree.get_root(size).hex() == want == mth(CT_LEAVES[:size]).hex()


def test_pymerkle_proofs_agree_with_an_independent_rfc9162_implementation() -> None:
    entries = [f"entry {i}".encode() for i in range(40)]
    tree = _tree(entries)
    for size in range(1, 41):
        root = mth(entries[:size])
        assert tree.get_root(size) == root
        cp = Checkpoint(origin="t", size=size, root=root, time_ms=0)
        for index in range(1, size + 1):
            proof = tree.prove_inclusion(index, size).serialize()
            path = [bytes.fromhex(p) for p in proof["path"]]
            assert path[1:] == rfc_path(index - 1, entries[:size])
            assert rfc_verify_inclusion(entries[index - 1], index - 1, size, path[1:], root)
            check_inclusion(entries[index - 1], index, cp, proof)
            with pytest.raises(RemoteProtocolError):
                check_inclusion(b"not " + entries[index - 1], index, cp, proof)
    for old in range(1, 25):
        for new in range(old, 25):
            a = Checkpoint(origin="t", size=old, root=mth(entries[:old]), time_ms=0)
            b = Checkpoint(origin="t", size=new, root=mth(entries[:new]), time_ms=0)
            check_consistency(a, b, tree.prove_consistency(old, new).serialize() if old < new else None)


def test_a_fork_is_never_consistent() -> None:
    entries = [f"e{i}".encode() for i in range(12)]
    forked = [*entries[:5], b"rewritten", *entries[6:]]
    tree = _tree(entries)
    old = Checkpoint(origin="t", size=8, root=mth(forked[:8]), time_ms=0)
    new = Checkpoint(origin="t", size=12, root=mth(entries), time_ms=0)
    with pytest.raises(RemoteProtocolError, match="does not extend"):
        check_consistency(old, new, tree.prove_consistency(8, 12).serialize())
    with pytest.raises(RemoteProtocolError, match="forked"):
        check_consistency(Checkpoint(origin="t", size=12, root=mth(forked), time_ms=0), new, None)
    with pytest.raises(RemoteProtocolError, match="shrank"):
        check_consistency(new, old, None)


KEY = SigningKey.from_seed(bytes(range(32)))


def test_checkpoint_is_a_signed_note_and_any_change_is_refused() -> None:
    cp = Checkpoint(origin="orbitpost/abc", size=7, root=bytes(32), time_ms=1_790_000_000_000)
    note = sign_checkpoint(KEY, "orbitpost/abc", cp).note()
    assert note.startswith("orbitpost/abc\n7\nAAAA") and "\n\n\u2014 orbitpost/abc " in note
    assert verify_note(note, "orbitpost/abc", KEY.public_key) == cp
    for i in range(len(note)):
        tampered = note[:i] + ("x" if note[i] != "x" else "y") + note[i + 1 :]
        with pytest.raises(RemoteProtocolError):
            verify_note(tampered, "orbitpost/abc", KEY.public_key)
    other = SigningKey.from_seed(bytes(32))
    with pytest.raises(RemoteProtocolError):
        verify_note(note, "orbitpost/abc", other.public_key)
    sig = cosign(other, cp, 1_790_000_000)
    assert verify_cosignature(other.public_key, cp, 1_790_000_000, sig)
    assert not verify_cosignature(other.public_key, cp, 1_790_000_001, sig)


@given(st.text(max_size=300))
def test_any_text_parses_as_a_note_or_raises_the_protocol_error(text: str) -> None:
    try:
        parse_note(text)
    except RemoteProtocolError:
        pass


@given(
    st.dictionaries(
        st.text(max_size=8), st.one_of(st.none(), st.integers(), st.text(max_size=20)), max_size=6
    )
)
def test_entries_are_canonical_json(entry: dict[str, Any]) -> None:
    from protocol.tlog import parse_entry

    data = canonical_entry(entry)
    assert parse_entry(data) == entry
    assert canonical_entry(json.loads(data)) == data


# --- the log on a real ground -------------------------------------------------------------------


def _publish_one(cli: Cli, tmp_path: Path, photo: Path, text: str) -> str:
    out = cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "--alt", "a rocket", text
    )
    post_id = out.output.split()[1]
    cli.onboard("export", str(tmp_path / "OUT"))
    cli.ground("ingest", str(tmp_path / "OUT"))
    cli.ground("publish")
    cli.ground("log", "sync")
    return post_id


def test_log_records_keys_items_and_outcomes_once(enrolled: Cli, tmp_path: Path, photo: Path) -> None:
    post_id = _publish_one(enrolled, tmp_path, photo, "hello from orbit")
    home = GroundHome(enrolled.ground_home)
    kinds = [json.loads(e)["kind"] for _, e in translog.leaves(home, 1, 100)]
    assert kinds == ["key-enrolled", "account-enrolled", "item", "publication"]
    item = json.loads(translog.leaves(home, 3, 4)[0][1])
    assert item["item_id"] == post_id and "hello" not in json.dumps(item)  # hashes only, never text
    assert translog.catch_up(home, 1) == 0  # nothing twice
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        home.conn.execute("UPDATE tlog_leaves SET entry = x'00' WHERE idx = 1")
    fp = json.loads(translog.leaves(home, 1, 2)[0][1])["key_id"]
    enrolled.ground("revoke", fp)
    enrolled.ground("log", "sync")
    last = json.loads(translog.leaves(home, 1, 100)[-1][1])
    assert last["kind"] == "key-revoked" and last["key_id"] == fp


async def _verify(*args: str) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, verify_app, list(args))


async def test_a_post_verifies_from_its_public_url_and_every_tamper_is_named(
    enrolled: Cli, tmp_path: Path, photo: Path
) -> None:
    post_id = await asyncio.to_thread(
        _publish_one, enrolled, tmp_path, photo, "Mercury_(planet) — «unchanged» 👩🏽‍🚀"
    )
    home = GroundHome(enrolled.ground_home)
    gkey = enrolled.ground("log", "checkpoint").output.split()[2]
    async with running_ground(enrolled.ground_home) as url:
        page = f"{url}/p/{post_id}"
        ok = await _verify(page, "--ground-key", gkey)
        assert ok.exit_code == 0, ok.output
        assert "VERIFIED" in ok.output and "byte-identical" in ok.output
        # A platform URL works too, looked up on ground.
        archive_url = home.conn.execute(
            "SELECT url FROM publications WHERE item_id = ?", (post_id,)
        ).fetchone()[0]
        assert (await _verify(archive_url, "--ground", url, "--ground-key", gkey)).exit_code == 0
        # Another log key pinned: refused.
        other = "ed25519:" + "A" * 43
        bad = await _verify(page, "--ground-key", other)
        assert bad.exit_code == 1 and "checkpoint" in bad.output
        # The published copy changed by one byte.
        folder = Path(archive_url.removeprefix("file://"))
        text = folder / "text.txt"
        original = text.read_bytes()
        text.chmod(0o644)
        text.write_bytes(original[:-1] + b"?")
        bad = await _verify(page, "--ground-key", gkey)
        assert bad.exit_code == 1 and "text differs from the signed text" in bad.output
        text.write_bytes(original)
        # Witness policy: none cosigned yet.
        assert "cosigned by 0" in (await _verify(page, "--ground-key", gkey, "--min-witnesses", "1")).output
    # The signed body changed in ground's database: the astronaut's signature no longer covers it.
    body = home.conn.execute("SELECT body FROM items WHERE id = ?", (post_id,)).fetchone()[0]
    flipped = bytes(body).replace(b"planet", b"planes")
    home.conn.execute("UPDATE items SET body = ? WHERE id = ?", (flipped, post_id))
    async with running_ground(enrolled.ground_home) as url:
        bad = await _verify(f"{url}/p/{post_id}", "--ground-key", gkey)
        assert bad.exit_code == 1 and "signature does not cover this body" in bad.output
    home.conn.execute("UPDATE items SET body = ? WHERE id = ?", (body, post_id))
    # A leaf rewritten by an operator who disabled the append-only trigger.
    idx, entry = translog.leaf(home, f"item:{post_id}") or (0, b"")
    home.conn.execute("DROP TRIGGER tlog_leaves_no_update")
    forged = json.loads(entry)
    forged["received_ms"] += 1
    data = canonical_entry(forged)
    home.conn.execute(
        "UPDATE tlog_leaves SET entry = ?, digest = ? WHERE idx = ?", (data, leaf_hash(data), idx)
    )
    async with running_ground(enrolled.ground_home) as url:
        bad = await _verify(f"{url}/p/{post_id}", "--ground-key", gkey)
        assert bad.exit_code == 1 and "not in the log of size" in bad.output


async def test_unpublished_posts_are_not_public(enrolled: Cli, tmp_path: Path) -> None:
    out = enrolled.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--at", "2099-01-01T00:00:00Z", "embargoed"
    )
    post_id = out.output.split()[1]
    enrolled.onboard("export", str(tmp_path / "OUT"))
    await asyncio.to_thread(enrolled.ground, "ingest", str(tmp_path / "OUT"))
    enrolled.ground("log", "sync")
    async with running_ground(enrolled.ground_home) as url:
        import aiohttp

        async with aiohttp.ClientSession() as s:
            async with s.get(f"{url}/p/{post_id}.json") as r:
                assert r.status == 404
            async with s.get(f"{url}/log/leaves?start=1&end=50") as r:
                assert "embargoed" not in await r.text()
            async with s.get(f"{url}/log/proof/consistency?old=0&new=1") as r:
                assert r.status == 400


async def test_witness_cosigns_a_growing_log_and_detects_a_split_view(
    enrolled: Cli, tmp_path: Path, photo: Path
) -> None:
    await asyncio.to_thread(_publish_one, enrolled, tmp_path, photo, "first")
    home = GroundHome(enrolled.ground_home)
    gkey = enrolled.ground("log", "checkpoint").output.split()[2]
    state = tmp_path / "witness"
    key = load_key(state / "witness.key")
    from protocol import format_public_key

    enrolled.ground("log", "add-witness", "esa", format_public_key(key.public_key))
    async with running_ground(enrolled.ground_home) as url:
        first = await asyncio.to_thread(witness_once, url, state, key, "esa", 1_790_000_000, ground_key=gkey)
        assert first.cosigned
        enrolled.onboard("post", "--as", "alice", "--to", "archive:alice", "second")
        enrolled.onboard("export", str(tmp_path / "OUT2"))
        await asyncio.to_thread(enrolled.ground, "ingest", str(tmp_path / "OUT2"))
        translog.catch_up(home, 1_790_000_100_000)
        second = await asyncio.to_thread(witness_once, url, state, key, "esa", 1_790_000_100, ground_key=gkey)
        assert second.previous_size == first.checkpoint.size < second.checkpoint.size
        page = await _verify(f"{url}/log/checkpoint")  # not a proof page: a clear refusal
        assert page.exit_code == 1
    # The operator forks the log: rewrites an old leaf and signs a new checkpoint of the same size.
    home.conn.execute("DROP TRIGGER tlog_leaves_no_update")
    data = canonical_entry({"kind": "item", "forged": True})
    home.conn.execute("UPDATE tlog_leaves SET entry = ?, digest = ? WHERE idx = 3", (data, leaf_hash(data)))
    home.conn.execute("DELETE FROM tlog_checkpoints")
    translog._sign_head(home, 1_790_000_200_000)
    async with running_ground(enrolled.ground_home) as url:
        with pytest.raises(SplitView, match="split view"):
            await asyncio.to_thread(witness_once, url, state, key, "esa", 1_790_000_200, ground_key=gkey)
    result = CliRunner().invoke(
        __import__("ground.cli", fromlist=["app"]).app,
        ["--home", str(enrolled.ground_home), "log", "witness", "http://127.0.0.1:9", "--state", str(state)],
    )
    assert result.exit_code == 2 and "REFUSED" in result.output


async def test_a_post_on_a_real_bluesky_pds_and_the_archive_verifies_byte_for_byte(
    enrolled: Cli,
    tmp_path: Path,
    photo: Path,
    pds: Any,  # noqa: F811 (the imported fixture)
) -> None:
    """The verifier resolves the account's DID through the PLC directory and reads the record
    and its photo blob back from the PDS: both byte-identical to what alice signed."""
    line = enrolled.onboard("keys", "show", "alice").output.strip()
    enrolled.ground("enroll", "alice", "--key", line, "--account", "bluesky:alice.test")
    pw = tmp_path / "app-password"
    pw.write_text(pds.accounts["alice.test"].app_password)
    enrolled.ground(
        "account", "add", "bluesky:alice.test", "--app-password-file", str(pw), "--service-url", pds.url
    )

    def publish() -> str:
        out = enrolled.onboard(
            "post",
            "--as",
            "alice",
            "--to",
            "archive:alice,bluesky:alice.test",
            "--photo",
            str(photo),
            "--alt",
            "launch pad",
            "Orbit 42: see https://en.wikipedia.org/wiki/Mercury_(planet)",
        )
        enrolled.onboard("export", str(tmp_path / "OUT"))
        enrolled.ground("ingest", str(tmp_path / "OUT"))
        enrolled.ground("publish")
        enrolled.ground("log", "sync")
        return str(out.output.split()[1])

    post_id = await asyncio.to_thread(publish)
    gkey = enrolled.ground("log", "checkpoint").output.split()[2]
    async with running_ground(enrolled.ground_home) as url:
        ok = await _verify(f"{url}/p/{post_id}", "--ground-key", gkey, "--plc", pds.plc_url)
        assert ok.exit_code == 0, ok.output
        assert "Bluesky record at://" in ok.output and "1 photo blob(s) byte-identical" in ok.output
        assert "archive copy" in ok.output
        # The record on the PDS edited behind ground's back: named precisely.
        did = pds.accounts["alice.test"].did
        from ground.platforms.atproto import tid_for_post

        rkey = tid_for_post(post_id)
        record = pds.get_record(did, rkey)["value"]
        record["text"] = record["text"] + "!"
        from pds import harness

        token = harness.xrpc(
            pds.url,
            "com.atproto.server.createSession",
            body={"identifier": "alice.test", "password": pds.accounts["alice.test"].app_password},
        )["accessJwt"]
        harness.xrpc(
            pds.url,
            "com.atproto.repo.putRecord",
            token=token,
            body={"repo": did, "collection": "app.bsky.feed.post", "rkey": rkey, "record": record},
        )
        bad = await _verify(f"{url}/p/{post_id}", "--ground-key", gkey, "--plc", pds.plc_url)
        assert bad.exit_code == 1 and "text differs from the signed text" in bad.output, bad.output


async def test_public_routes_are_cacheable_rate_limited_and_hold_no_secret(
    enrolled: Cli, tmp_path: Path, photo: Path
) -> None:
    import aiohttp

    post_id = await asyncio.to_thread(_publish_one, enrolled, tmp_path, photo, "public words")
    enrolled.ground("station", "add", "iss-secretname", "--token-out", str(tmp_path / "T"))
    secrets = [json.loads((tmp_path / "T").read_text())["token"]]
    out = enrolled.ground("operator", "add", "opsname-unique", "--role", "admin").output
    secrets.append(out.split("password: ")[1].split()[0])
    secrets += ["opsname-unique", "iss-secretname", "scrypt"]
    sha = json.loads(translog.leaves(GroundHome(enrolled.ground_home), 4, 5)[0][1])["original_media_sha256"][
        0
    ]
    async with running_ground(enrolled.ground_home) as url, aiohttp.ClientSession() as s:
        paths = [
            f"/p/{post_id}",
            f"/p/{post_id}.json",
            "/log/checkpoint",
            "/log/leaves?start=1&end=100",
            f"/p/{post_id}/media/{sha}",
            "/p/lookup?url=nothing",
            "/log/proof/consistency?old=1&new=4",
        ]
        for path in paths:
            async with s.get(url + path, allow_redirects=False) as r:
                body = (await r.read()).decode("latin-1")
                assert r.status < 500, path
                assert not [x for x in secrets if x in body], path
                if r.status == 200:
                    assert "max-age" in r.headers["Cache-Control"], path
        statuses = []
        for _ in range(100):
            async with s.get(f"{url}/log/checkpoint") as r:
                statuses.append(r.status)
                if r.status == 429:
                    assert r.headers["Retry-After"]
        assert 429 in statuses and statuses[0] == 200


async def test_receipts_carry_tree_heads_and_the_crew_checks_the_public_log(cli: Cli, tmp_path: Path) -> None:
    """Each receipt brings ground's signed checkpoint; `onboard link check-log` later proves the
    public log extends every one of them and holds the bodies signed on the laptop — and names a
    fork made after the fact."""
    from link_support import archive_posts, link_to, setup_station

    token = setup_station(cli, tmp_path)
    for text in ("first light", "second orbit"):
        cli.onboard("post", "--as", "alice", "--to", "archive:alice", text)
    async with running_ground(cli.ground_home) as url:
        link_to(cli, url, token)
        from onboard.home import Home
        from onboard.sync import sync

        await sync(Home(cli.onboard_home), wait_published_s=60, receipts_every_s=0.5)
        assert len(archive_posts(cli.ground_home)) == 2
        heads = sqlite3.connect(cli.onboard_home / "onboard.db").execute("SELECT COUNT(*) FROM tree_heads")
        assert heads.fetchone()[0] >= 1
        translog.catch_up(GroundHome(cli.ground_home), 1_800_000_000_000)
        out = (await asyncio.to_thread(cli.onboard, "link", "check-log")).output
        assert "proves the 2 post(s) published from here" in out, out
    # The operator rewrites history: a leaf changed, the checkpoint of that size signed again.
    home = GroundHome(cli.ground_home)
    home.conn.execute("DROP TRIGGER tlog_leaves_no_update")
    data = canonical_entry({"kind": "item", "forged": True})
    home.conn.execute("UPDATE tlog_leaves SET entry = ?, digest = ? WHERE idx = 3", (data, leaf_hash(data)))
    home.conn.execute("DELETE FROM tlog_checkpoints")
    translog._sign_head(home, 1_800_000_100_000)
    home.close()
    async with running_ground(cli.ground_home) as url:
        cli.onboard("link", "add", "--ground", url, "--token-file", str(token))
        bad = await asyncio.to_thread(cli.onboard, "link", "check-log", ok=False)
        said = bad.output + str(bad.exception)
        assert bad.exit_code != 0 and "disagrees with what it told this station" in said, said
