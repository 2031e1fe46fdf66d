"""Golden vectors (tests/vectors/, docs/PROTOCOL.md §12) and RFC 8032 Ed25519 vectors, checked against the code."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from protocol import KnownKey, RemoteProtocolError, SigningKey, parse_public_key, verify_bundle
from protocol.batch_tree import TREE_DOMAIN, BatchInclusion, batch_head, root_from_inclusion
from protocol.bundle import PROTOCOL_DECODERS
from protocol.codecs import Codec, Decoder
from protocol.keys import format_public_key, key_id, verify_signature
from protocol.model import ID_DOMAIN, derived_id
from protocol.signing import BATCH_DOMAIN, SIGNATURE_DOMAIN

VECTORS = Path(__file__).parent / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))
RFC8032 = json.loads((VECTORS / "rfc8032-ed25519.json").read_text(encoding="utf-8"))["vectors"]


@functools.cache
def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_vectors", VECTORS / "make_vectors.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["make_vectors"] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


def manifest_keyring() -> dict[bytes, KnownKey]:
    """The keyring exactly as manifest.json states it (what a second implementation would use)."""
    ring = {}
    for k in MANIFEST["keys"]:
        public = parse_public_key(k["public_key"])
        assert public.hex() == k["public_key_hex"] and key_id(public).hex() == k["key_id_hex"]
        assert SigningKey.from_seed(bytes.fromhex(k["seed_hex"])).public_key == public
        assert hashlib.sha256(k["seed_is_sha256_of"].encode()).hexdigest() == k["seed_hex"]
        if k["enrolled"]:
            ring[key_id(public)] = KnownKey(astronaut=k["name"], public_key=public, revoked=k["revoked"])
    return ring


def test_manifest_keys_are_the_conftest_keys(alice_key: SigningKey, bob_key: SigningKey) -> None:
    by_name = {k["name"]: k for k in MANIFEST["keys"]}
    assert by_name["alice"]["seed_hex"] == alice_key.seed.hex()
    assert by_name["bob"]["seed_hex"] == bob_key.seed.hex()
    assert bytes.fromhex(MANIFEST["signature_domain_hex"]) == SIGNATURE_DOMAIN
    assert bytes.fromhex(MANIFEST["batch_domain_hex"]) == BATCH_DOMAIN
    assert bytes.fromhex(MANIFEST["id_domain_hex"]) == ID_DOMAIN
    assert bytes.fromhex(MANIFEST["tree_domain_hex"]) == TREE_DOMAIN


def test_every_file_is_in_the_manifest() -> None:
    listed = {v["file"] for v in MANIFEST["vectors"]}
    assert {p.name for p in VECTORS.glob("*.opb")} == listed
    codes = {v["expect"]["code"] for v in MANIFEST["vectors"] if not v["expect"]["ok"]}
    # The bad-input list, as protocol-level vectors (replay needs ground's state: see test_bad_input).
    assert {"truncated", "checksum_mismatch", "unknown_key", "author_mismatch", "decompression_bomb"} <= codes
    assert {"not_a_bundle", "unsupported_version", "bad_signature", "revoked_key"} <= codes
    # Every bundle format is covered, each with accepted and refused files.
    for fmt in (1, 2, 3):
        mine = [v for v in MANIFEST["vectors"] if v["format"] == fmt]
        assert {v["expect"]["ok"] for v in mine} == {True, False}
        data = [(VECTORS / v["file"]).read_bytes() for v in mine]
        if fmt > 1:
            assert all(d[4:6] == bytes([0, fmt]) for d in data)
    f2_codes = {
        v["expect"]["code"] for v in MANIFEST["vectors"] if v["format"] == 2 and not v["expect"]["ok"]
    }
    assert {"bad_signature", "unknown_key", "revoked_key", "malformed", "duplicate_item"} <= f2_codes


def _item_json(v: Any, fmt: int) -> dict[str, Any]:
    gen = _generator()
    out = {
        **gen.item_json(v.item),
        "key_id": v.signed.key_id.hex(),
        "body_hex": v.signed.body.hex(),
        "signature_hex": v.signed.signature.hex(),
    }
    if fmt == 2:
        out["statement_hex"] = v.signed.statement.hex()
        out["id_is_derived"] = v.item.id == derived_id(v.item)
    if fmt == 3:
        out.update(gen._tree_json(v.item, v.signed))
    return out


def _decoders(needs: list[int]) -> dict[int, Decoder]:
    """verify_bundle's own decoders, plus ground's for the codecs a vector needs (4: Lepton)."""
    found: dict[int, Decoder] = dict(PROTOCOL_DECODERS)
    if needs:
        from ground import lepton

        assert needs == [Codec.LEPTON]
        if not lepton.available():
            pytest.skip("no Lepton codec (lepton_jpeg_python) here")
        found[Codec.LEPTON] = lepton.decode_jpeg
    return found


@pytest.mark.parametrize("vector", MANIFEST["vectors"], ids=lambda v: v["file"])
def test_vector_verifies_as_stated(vector: dict[str, Any]) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    assert len(data) == vector["size_bytes"] and hashlib.sha256(data).hexdigest() == vector["sha256"]
    expect = vector["expect"]
    ring = manifest_keyring()
    decoders = _decoders(vector.get("needs_codecs", []))
    if not expect["ok"]:
        with pytest.raises(RemoteProtocolError) as e:
            verify_bundle(data, ring, decoders=decoders)
        assert e.value.code == expect["code"], str(e.value)
        return
    vb = verify_bundle(data, ring, decoders=decoders)
    assert vb.header.format_version == vector["format"]
    assert vb.header.bundle_id == expect["bundle_id"]
    assert [_item_json(v, vector["format"]) for v in vb.items] == expect["items"]
    assert {sha.hex(): len(raw) for sha, raw in vb.blobs.items()} == expect["blobs"]
    for sha, raw in vb.blobs.items():
        assert hashlib.sha256(raw).digest() == sha
    for it in expect["items"]:
        # What is signed, spelled out: domain tag + exact body bytes, by the key the id names.
        public = bytes.fromhex(
            next(k["public_key_hex"] for k in MANIFEST["keys"] if k["key_id_hex"] == it["key_id"])
        )
        body, signature = bytes.fromhex(it["body_hex"]), bytes.fromhex(it["signature_hex"])
        if vector["format"] == 1:
            assert verify_signature(public, signature, SIGNATURE_DOMAIN + body)
        elif vector["format"] == 3:
            # §17: the batch signature covers tag + tree size + root; the audit path leads there.
            inc = BatchInclusion.make(
                it["tree_size"], it["leaf_index"], [bytes.fromhex(h) for h in it["audit_path_hex"]]
            )
            root = root_from_inclusion(body, inc)
            assert root.hex() == it["tree_root_hex"]
            assert batch_head(inc.tree_size, root).hex() == it["batch_head_hex"]
            assert verify_signature(public, signature, TREE_DOMAIN + bytes.fromhex(it["batch_head_hex"]))
            assert not verify_signature(public, signature, BATCH_DOMAIN + bytes.fromhex(it["batch_head_hex"]))
        else:
            # §14.3: the batch signature covers tag + statement; the statement lists sha256(body).
            statement = bytes.fromhex(it["statement_hex"])
            assert verify_signature(public, signature, BATCH_DOMAIN + statement)
            entries = [statement[i : i + 32] for i in range(0, len(statement), 32)]
            assert hashlib.sha256(body).digest() in entries
            assert not verify_signature(public, signature, SIGNATURE_DOMAIN + body)
        if it["kind"] == "post":
            assert it["text"].encode() == bytes.fromhex(it["text_utf8_hex"])


def test_generator_reproduces_the_vectors() -> None:
    """The files are what the code makes today (zstd vectors: same content, bytes may differ by libzstd)."""
    gen = _generator()
    vectors = gen.build_vectors()
    assert [f"{v.name}.opb" for v in vectors] == [v["file"] for v in MANIFEST["vectors"]]
    for v, stored in zip(vectors, MANIFEST["vectors"], strict=True):
        entry = v.manifest_entry()
        if v.volatile:
            for volatile in ("size_bytes", "sha256"):
                entry.pop(volatile)
                stored = {k: x for k, x in stored.items() if k != volatile}
        else:
            assert v.data == (VECTORS / stored["file"]).read_bytes(), stored["file"]
        assert entry == stored
    assert gen.manifest(vectors)["keys"] == MANIFEST["keys"]


@pytest.mark.parametrize("vector", RFC8032, ids=lambda v: v["name"])
def test_rfc8032_ed25519_through_protocol_keys(vector: dict[str, str]) -> None:
    seed = bytes.fromhex(vector["secret_key"])
    public = bytes.fromhex(vector["public_key"])
    message = bytes.fromhex(vector["message"])
    signature = bytes.fromhex(vector["signature"])
    key = SigningKey.from_seed(seed)
    assert key.public_key == public
    assert key.sign(message) == signature
    assert verify_signature(public, signature, message)
    assert not verify_signature(public, signature, message + b"\x00")
    assert not verify_signature(public, bytes([signature[0] ^ 1]) + signature[1:], message)
    assert parse_public_key(format_public_key(public)) == public


def test_rfc8032_has_all_five_section_7_1_vectors() -> None:
    assert [v["name"] for v in RFC8032] == ["TEST 1", "TEST 2", "TEST 3", "TEST 1024", "TEST SHA(abc)"]
    assert len(bytes.fromhex(RFC8032[3]["message"])) == 1023


# --- signed receipts documents (docs/PROTOCOL.md §9, §9.4; tests/vectors/receipt_vectors.py) ----


def test_every_receipts_file_is_in_the_manifest() -> None:
    assert {p.name for p in VECTORS.glob("receipts-*.bin")} == {v["file"] for v in MANIFEST["receipts"]}
    assert {v["expect"]["version"] for v in MANIFEST["receipts"] if v["expect"]["ok"]} == {2, 3, 4}


@pytest.mark.parametrize("vector", MANIFEST["receipts"], ids=lambda v: v["file"])
def test_receipts_vector_decodes_as_stated(vector: dict[str, Any]) -> None:
    from protocol import RemoteProtocolError
    from protocol.keys import parse_public_key
    from protocol.receipts import RECEIPTS_DOMAIN, UrlTemplateReceipt, verify_receipts

    assert bytes.fromhex(MANIFEST["receipts_domain_hex"]) == RECEIPTS_DOMAIN
    ground = parse_public_key(MANIFEST["receipts_key"]["public_key"])
    data = (VECTORS / vector["file"]).read_bytes()
    assert len(data) == vector["size_bytes"] and hashlib.sha256(data).hexdigest() == vector["sha256"]
    expect = vector["expect"]
    held = {  # version 4: the URL templates the reader holds from earlier documents (§9.5)
        t["number"]: UrlTemplateReceipt(
            number=t["number"],
            account=t["account"],
            url=None if t["url"] is None else tuple(t["url"]),
            remote_id=None if t["remote_id"] is None else tuple(t["remote_id"]),
            seq=t["seq"],
        )
        for t in expect.get("held_templates", [])
    }
    if not expect["ok"]:
        with pytest.raises(RemoteProtocolError) as err:
            verify_receipts(data, ground)
        assert str(err.value.code) == expect["code"]
        return
    doc = verify_receipts(data, ground, templates=held)
    _generator()  # puts tests/vectors on the path, where receipt_vectors.py is
    gen = importlib.import_module("receipt_vectors")
    assert (doc.version, doc.issued_ms) == (expect["version"], expect["issued_ms"])
    assert [gen.entry_json(r, doc.version) for r in doc.receipts] == expect["entries"]
