"""The issue's bad-input list, each through `ground verify` and `ground ingest`.

Each must give a specific message and a non-zero exit, record the rejection, and change
nothing else: no bundle/item/publication rows, no blob or archive files, and the bundle
file itself left exactly as it was.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Cli

from onboard import queue
from onboard.home import Home
from onboard.keystore import load_key
from protocol import BlobPayload, Post, SigningKey, build_bundle, fingerprint, sign_item
from protocol.codecs import zstd_compress
from protocol.ids import new_ulid

T0 = 1_790_000_000_000


@dataclass
class World:
    cli: Cli
    good: Path  # the bundle `onboard export` wrote for alice's photo post
    alice: SigningKey
    out: Path  # where hostile bundles are written

    def write(self, name: str, data: bytes) -> Path:
        p = self.out / name
        p.write_bytes(data)
        return p


@pytest.fixture
def world(enrolled: Cli, photo: Path, tmp_path: Path) -> World:
    cli = enrolled
    cli.onboard("keys", "new", "bob")
    bob_line = cli.onboard("keys", "show", "bob").output.strip()
    cli.ground("enroll", "bob", "--key", bob_line, "--account", "archive:bob")
    cli.onboard(
        "post", "--as", "alice", "--to", "archive:alice", "--photo", str(photo), "--alt", "x", "Hello 🌏"
    )
    out = tmp_path / "OUT"
    cli.onboard("export", str(out))
    (good,) = out.glob("*.opb")
    bad_dir = tmp_path / "BAD"
    bad_dir.mkdir()
    return World(cli=cli, good=good, alice=load_key(Home(cli.onboard_home), "alice"), out=bad_dir)


def ground_state(home: Path) -> tuple[dict[str, int], list[str]]:
    conn = sqlite3.connect(home / "ground.db")
    try:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("bundles", "items", "publications", "rejections")
        }
    finally:
        conn.close()
    files = sorted(
        str(p.relative_to(home))
        for p in home.rglob("*")
        if p.is_file() and not p.name.startswith("ground.db")
    )
    return counts, files


def last_rejection(home: Path) -> tuple[str, str, str]:
    conn = sqlite3.connect(home / "ground.db")
    try:
        return conn.execute(
            "SELECT source, code, message FROM rejections ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()


def post(author: str, n: int = 0, text: str = "hostile") -> Post:
    return Post(
        id=new_ulid(T0 + n, bytes([n]) * 10),
        author=author,
        created_ms=T0 + n,
        text=text,
        targets=(f"archive:{author}",),
    )


def bundle_of(*items: object, blobs: tuple[BlobPayload, ...] = (), n: int = 0, **kw: object) -> bytes:
    return build_bundle(
        bundle_id=new_ulid(T0, bytes([n]) * 10),
        created_ms=T0,
        items=items,  # type: ignore[arg-type]
        blobs=blobs,
        **kw,  # type: ignore[arg-type]
    )


# Each case makes a bad bundle file (and may change ground first) and names the code and words
# the operator must see.
Case = Callable[[World], tuple[Path, str, str]]


def truncated(w: World) -> tuple[Path, str, str]:
    data = w.good.read_bytes()
    half = len(data) // 2
    return (
        w.write("truncated.opb", data[:half]),
        "truncated",
        f"bundle truncated at byte {half} of {len(data)}",
    )


def flipped_byte(w: World) -> tuple[Path, str, str]:
    data = bytearray(w.good.read_bytes())
    data[len(data) // 2] ^= 0x01
    return w.write("flipped.opb", bytes(data)), "checksum_mismatch", "bundle checksum mismatch"


def unenrolled_key(w: World) -> tuple[Path, str, str]:
    carol = SigningKey.from_seed(hashlib.sha256(b"carol, never enrolled").digest())
    data = bundle_of(sign_item(carol, post("carol")))
    fp = fingerprint(carol.public_key)
    return w.write("carol.opb", data), "unknown_key", f"signature by unknown key {fp}"


def alice_claiming_bob(w: World) -> tuple[Path, str, str]:
    data = bundle_of(sign_item(w.alice, post("bob")))
    return w.write("as-bob.opb", data), "author_mismatch", "claims author 'bob' but is signed by 'alice'"


def replayed_post(w: World) -> tuple[Path, str, str]:
    w.cli.ground("ingest", str(w.good))  # accepted and published once
    conn = queue.connect(Home(w.cli.onboard_home).db_path)
    (q,) = queue.items(conn)
    conn.close()
    assert isinstance(q.item, Post)
    # The very same signed post, in a new bundle with a new id (the photo is already on ground).
    data = bundle_of(q.signed, n=9)
    return w.write("replay.opb", data), "replay", f"post {q.item.id} already published"


def decompression_bomb(w: World) -> tuple[Path, str, str]:
    s = sign_item(w.alice, post("alice"))
    # The items section declares its true size but its zstd frame expands to 200 MB more.
    data = bundle_of(s, encode_items=lambda raw: zstd_compress(raw + bytes(200_000_000), level=1))
    assert len(data) < 100_000
    return w.write("bomb.opb", data), "decompression_bomb", "decompression bomb"


def not_a_bundle(w: World) -> tuple[Path, str, str]:
    return w.write("photo.opb", b"\xff\xd8\xff\xe0" + bytes(1000)), "not_a_bundle", "not an orbitpost bundle"


def newer_version(w: World) -> tuple[Path, str, str]:
    data = bytearray(w.good.read_bytes())
    data[4:6] = (4).to_bytes(2, "big")
    # A real newer bundle would have a valid checksum of its own.
    data[-32:] = hashlib.sha256(bytes(data[:-32])).digest()
    return (
        w.write("v4.opb", bytes(data)),
        "unsupported_version",
        "bundle format version 4 is newer than this side reads (3); upgrade orbitpost",
    )


CASES: dict[str, Case] = {
    "truncated": truncated,
    "flipped_byte": flipped_byte,
    "unenrolled_key": unenrolled_key,
    "alice_claiming_bob": alice_claiming_bob,
    "replayed_post": replayed_post,
    "decompression_bomb": decompression_bomb,
    "not_a_bundle": not_a_bundle,
    "newer_version": newer_version,
}


@pytest.mark.parametrize("command", ["verify", "ingest"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_bundle_rejected_and_nothing_changes(world: World, case: str, command: str) -> None:
    path, code, words = CASES[case](world)
    before_bytes = path.read_bytes()
    before_mtime = path.stat().st_mtime_ns
    before_dir = sorted(os.listdir(path.parent))
    (counts, files) = ground_state(world.cli.ground_home)

    result = world.cli.ground(command, str(path), ok=False)

    assert result.exit_code != 0
    assert f"REJECTED {path.name}: [{code}] " in result.output
    assert words in result.output
    assert "Traceback" not in result.output
    after_counts, after_files = ground_state(world.cli.ground_home)
    assert after_counts == {**counts, "rejections": counts["rejections"] + 1}
    assert after_files == files  # no blob stored, nothing published to the archive
    source, rec_code, message = last_rejection(world.cli.ground_home)
    assert rec_code == code and words in message and source.endswith(str(path))
    assert path.read_bytes() == before_bytes and path.stat().st_mtime_ns == before_mtime
    assert sorted(os.listdir(path.parent)) == before_dir  # not moved, renamed or copied


@pytest.mark.parametrize("where", ["magic", "version", "length", "header", "items", "blob", "checksum"])
def test_a_flipped_byte_anywhere_is_rejected(world: World, where: str) -> None:
    data = world.good.read_bytes()
    header_len = int.from_bytes(data[14:18], "big")
    pos = {
        "magic": 1,
        "version": 5,
        "length": 13,
        "header": 18 + header_len // 2,
        "items": 18 + header_len + 5,
        "blob": len(data) - 32 - 100,
        "checksum": len(data) - 1,
    }[where]
    bad = bytearray(data)
    bad[pos] ^= 0x40
    path = world.write(f"flip-{where}.opb", bytes(bad))
    counts, files = ground_state(world.cli.ground_home)
    for command in ("verify", "ingest"):
        r = world.cli.ground(command, str(path), ok=False)
        assert r.exit_code == 1 and f"REJECTED {path.name}: [" in r.output, r.output
    after_counts, after_files = ground_state(world.cli.ground_home)
    assert after_counts == {**counts, "rejections": counts["rejections"] + 2}
    assert after_files == files and path.read_bytes() == bytes(bad)


def test_good_bundle_still_accepted_after_rejections(world: World) -> None:
    for case in ("truncated", "not_a_bundle", "flipped_byte"):
        path, _, _ = CASES[case](world)
        world.cli.ground("ingest", str(path), ok=False)
    r = world.cli.ground("ingest", str(world.good))
    assert "accepted" in r.output and "published" in r.output
    counts, _ = ground_state(world.cli.ground_home)
    assert counts == {"bundles": 1, "items": 1, "publications": 1, "rejections": 3}


def test_folder_with_good_and_bad_bundles(world: World) -> None:
    """One bad file in a hand-off folder does not stop the good one; the exit still says so."""
    bad, _, _ = not_a_bundle(world)
    os.replace(world.good, world.out / world.good.name)
    r = world.cli.ground("ingest", str(world.out), ok=False)
    assert r.exit_code == 1
    assert f"REJECTED {bad.name}: [not_a_bundle]" in r.output and "accepted" in r.output
    counts, _ = ground_state(world.cli.ground_home)
    assert counts == {"bundles": 1, "items": 1, "publications": 1, "rejections": 1}


def test_real_cli_prints_one_line_and_exits_1(
    world: World, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    path, code, words = truncated(world)
    for command in ("verify", "ingest"):
        r = subprocess.run(
            world.cli.ground_argv(command, str(path)),
            capture_output=True,
            text=True,
            env=subprocess_env,
            timeout=60,
        )
        assert r.returncode == 1
        assert f"[{code}]" in r.stderr and words in r.stderr
        assert "Traceback" not in r.stderr + r.stdout
