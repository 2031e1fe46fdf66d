"""Generate the golden bundles in tests/vectors/ and manifest.json (docs/PROTOCOL.md §12).

    python tests/vectors/make_vectors.py          # rewrite the files from the code
    python tests/vectors/make_vectors.py --check  # exit 1 if the files differ from the code

Everything is deterministic: keys come from fixed seeds (the same as tests/conftest.py),
ids and times are fixed, Ed25519 signatures are deterministic. Only zstd output could
change with a different libzstd, so vectors that use zstd are marked ``"uses_zstd": true``
and are compared by content, not bytes, by tests/test_protocol_vectors.py; so are the Lepton
vectors (``"needs_codecs": [4]``: Lepton writes its build's revision into its header).

A second implementation reads manifest.json: the keyring (which keys are enrolled, which
revoked), then for each file either the verified content or the error code to expect.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
import sys
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))  # run from anywhere in a checkout
sys.path.insert(0, str(HERE))  # receipt_vectors.py beside this file, also when imported by a test

from link_vectors import link_vectors  # noqa: E402
from link_vectors import manifest_part as link_manifest  # noqa: E402
from receipt_vectors import manifest_part as receipts_manifest  # noqa: E402
from receipt_vectors import receipt_vectors  # noqa: E402

from protocol import (  # noqa: E402
    BlobPayload,
    Cancel,
    KnownKey,
    MediaRef,
    Post,
    Retract,
    SigningKey,
    build_bundle,
    format_public_key,
    key_id,
    sign_item,
)
from protocol.batch_tree import TREE_DOMAIN, BatchTree, batch_head, root_from_inclusion  # noqa: E402
from protocol.bundle import FORMAT_VERSION as LATEST_FORMAT  # noqa: E402
from protocol.bundle import CompactItems  # noqa: E402
from protocol.canonical import pack, unpack  # noqa: E402
from protocol.codecs import Codec, zstd_compress  # noqa: E402
from protocol.compact_items import encode_compact_items  # noqa: E402
from protocol.dictionary import DICT_V3_ID, compress_items  # noqa: E402
from protocol.ids import new_ulid, ulid_to_bytes  # noqa: E402
from protocol.model import (  # noqa: E402
    BODY_VERSION,
    BODY_VERSION_RENDITIONS,
    BODY_VERSIONS,
    ID_DOMAIN,
    Item,
    derived_id,
    encode_item,
    with_derived_id,
)
from protocol.signing import BATCH_DOMAIN, SIGNATURE_DOMAIN, SignedItem, batch_statement  # noqa: E402

T0 = 1_790_000_000_000  # 2026-09-21T12:53:20Z
MANIFEST = HERE / "manifest.json"

# Who is who: name -> (seed text, enrolled on ground, revoked). alice and bob match tests/conftest.py.
KEYS = {
    "alice": (b"orbitpost test key alice", True, False),
    "bob": (b"orbitpost test key bob", True, False),
    "carol": (b"orbitpost test key carol", False, False),
    "dave": (b"orbitpost test key dave", True, True),
}

# Two real, tiny images: a 1x1 GIF (43 bytes) and a 2x2 PNG (73 bytes).
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000002000000020802000000fdd49a73000000104944415478da63f8cf00"
    "04ff192014001bf203fd3e975da40000000049454e44ae426082"
)


# A real photo, tiny: a 48×32 crop of scikit-image's rocket.jpg as a baseline JPEG (853 bytes),
# for the Lepton vectors (codec 4, docs/PROTOCOL.md §10.5).
JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000fffe001c636d70332e31302e332e324c713320307837353666666266"
    "3700ffdb00430006040506050406060506070706080a100a0a09090a140e0f0c1017141818171416161a1d251f1a1b23"
    "1c1616202c20232627292a29191f2d302d283025282928ffdb0043010707070a080a130a0a13281a161a282828282828"
    "2828282828282828282828282828282828282828282828282828282828282828282828282828282828282828ffc00011"
    "080020003003012200021101031101ffc4001f0000010501010101010100000000000000000102030405060708090a0b"
    "ffc400b5100002010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1"
    "c11552d1f02433627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a6364"
    "65666768696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9"
    "bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffc4001f0100030101"
    "010101010101010000000000000102030405060708090a0bffc400b51100020102040403040705040400010277000102"
    "031104052131061241510761711322328108144291a1b1c109233352f0156272d10a162434e125f11718191a26272829"
    "2a35363738393a434445464748494a535455565758595a636465666768696a737475767778797a82838485868788898a"
    "92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae2e3e4"
    "e5e6e7e8e9eaf2f3f4f5f6f7f8f9faffda000c03010002110311003f00f1efa51c53a9f146d2ca91c632cc702bd638c8"
    "090012c4003b9a5c8c0e78357f50b31147e5a0ce3a9f53eb5990828769e9dbdab25593958d1d376b8f38a4a79a422b53"
    "325adcf0bda8964b8b83d22508bf56cf3f9035898aea7c3b28b5f0dea370177309d401d32768007e66b3aced065d3579"
    "220bfb7241c29ac392dcacb8c564df6a57f7eb25c7daf0579f2631d0138ebd3f2e29fa55fdd2cd0c77619924206ec70a"
    "4f6af324dad4ed8c6fb169976b11e9486a7bc18b97e3bff41509af560ef14ce092b368ffd9"
)


def key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(KEYS[name][0]).digest())


def keyring() -> dict[bytes, KnownKey]:
    """The keys a ground checking these vectors has enrolled (carol is not one of them)."""
    return {
        key_id(key(n).public_key): KnownKey(astronaut=n, public_key=key(n).public_key, revoked=revoked)
        for n, (_, enrolled, revoked) in KEYS.items()
        if enrolled
    }


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def uid(n: int) -> str:
    return new_ulid(T0 + n, bytes([n]) * 10)


def media(data: bytes, media_type: str, alt: str) -> MediaRef:
    return MediaRef(sha256=sha(data), size_bytes=len(data), media_type=media_type, alt=alt)


def post(n: int, author: str, text: str, **kw: Any) -> Post:
    return Post(id=uid(n), author=author, created_ms=T0 + n, text=text, targets=(f"archive:{author}",), **kw)


# The vectors up to err-negative-size (bar err-newer-format-version) are bundle format 1:
# per-item signatures, written by assemble() and build_bundle(items=[SignedItem...]).
# The f2 vectors after them are bundle format 2 (docs/PROTOCOL.md §14), the f3 ones format 3 (§17).
FORMAT_VERSION = 1


def bundle(n: int, items: list[SignedItem] | CompactItems, blobs: list[BlobPayload] = (), **kw: Any) -> bytes:  # type: ignore[assignment]
    return build_bundle(bundle_id=uid(100 + n), created_ms=T0 + 100 + n, items=items, blobs=blobs, **kw)


def reseal(data: bytes) -> bytes:
    """Recompute the trailing checksum (a deliberate change, not line damage)."""
    return data[:-32] + sha(data[:-32])


def assemble(header: bytes, sections: list[bytes]) -> bytes:
    """Bundle bytes around an already-encoded header (to write what build_bundle never would)."""
    total = 18 + len(header) + sum(map(len, sections)) + 32
    data = struct.pack(">4sHQI", b"ORBP", FORMAT_VERSION, total, len(header)) + header + b"".join(sections)
    return data + sha(data)


def compact(items: list[Item], fmt: int = 2) -> CompactItems:
    """A format-2 (or 3) items section for ``items``, each author's items signed as one batch."""
    keys = {it.author: key(it.author) for it in items}
    return CompactItems(
        raw=encode_compact_items(items, keys, format_version=fmt), count=len(items), format_version=fmt
    )


def f3_proofs(items: list[Item]) -> list[tuple[Item, SignedItem]]:
    """What verifying a format-3 section yields per item: body, tree signature, inclusion proof."""
    out = []
    for it in items:
        mine = [x for x in items if x.author == it.author]
        tree = BatchTree.of([encode_item(x) for x in mine])
        signed = SignedItem(
            body=encode_item(it),
            key_id=key_id(key(it.author).public_key),
            signature=key(it.author).sign(TREE_DOMAIN + batch_head(tree.size, tree.root)),
            inclusion=tree.inclusion(mine.index(it)),
        )
        out.append((it, signed))
    return out


def f2_proofs(items: list[Item]) -> list[tuple[Item, SignedItem]]:
    """What verifying a format-2 section yields per item: body, batch signature, statement."""
    out = []
    for it in items:
        mine = [encode_item(x) for x in items if x.author == it.author]
        statement = batch_statement(mine)
        sig = key(it.author).sign(BATCH_DOMAIN + statement)
        out.append(
            (
                it,
                SignedItem(
                    body=encode_item(it),
                    key_id=key_id(key(it.author).public_key),
                    signature=sig,
                    statement=statement,
                ),
            )
        )
    return out


def recompact(raw: bytes, change: Any, fmt: int = 2) -> CompactItems:
    """A format-2 section decoded to its 13 fields, changed by ``change(fields)`` and re-packed
    canonically (the signatures are left as they were)."""
    fields = unpack(raw, what="items section", max_bytes=1 << 24)
    change(fields)
    return CompactItems(raw=pack(fields), count=len(fields[3]), format_version=fmt)


def alter_text(f: list[Any]) -> None:
    """One letter of the first text of a compact section changed after signing."""
    f[8] = f[8].replace("Hello", "Jello")


def item_json(item: Item) -> dict[str, Any]:
    """The decoded item as JSON: what a verifier must get out of the body bytes."""
    out: dict[str, Any] = {"kind": item.kind.name.lower(), "id": item.id, "author": item.author}
    out["created_ms"] = item.created_ms
    if isinstance(item, Post):
        out["text"] = item.text
        out["text_utf8_hex"] = item.text.encode().hex()
        out["media"] = [
            {"sha256": m.sha256.hex(), "size_bytes": m.size_bytes, "media_type": m.media_type, "alt": m.alt}
            for m in item.media
        ]
        out["targets"] = list(item.targets)
        out["publish_at_ms"] = item.publish_at_ms
        if item.renditions:  # body version 2 only (§3.1); absent means none
            out["renditions"] = list(item.renditions)
    else:
        out["target_id"] = item.target_id
    return out


@dataclass
class Vector:
    name: str
    description: str
    data: bytes
    uses_zstd: bool
    error: str | None = None  # the ErrorCode value, or None when the bundle verifies
    format: int = 1  # the bundle format version written in the file
    items: list[tuple[Item, SignedItem]] = field(default_factory=list)
    blobs: list[bytes] = field(default_factory=list)
    # Codecs beyond 0 and 1 a verifier needs (4: Lepton, §10.5). Lepton's output names the
    # library's build in its header, so these vectors too are compared by content only.
    needs_codecs: tuple[int, ...] = ()

    @property
    def volatile(self) -> bool:
        """Bytes another zstd or Lepton build may write differently (compare by content)."""
        return self.uses_zstd or bool(self.needs_codecs)

    def manifest_entry(self) -> dict[str, Any]:
        e: dict[str, Any] = {
            "file": f"{self.name}.opb",
            "description": self.description,
            "size_bytes": len(self.data),
            "sha256": sha(self.data).hex(),
            "uses_zstd": self.uses_zstd,
            "format": self.format,
        }
        if self.needs_codecs:
            e["needs_codecs"] = list(self.needs_codecs)
        if self.error is not None:
            e["expect"] = {"ok": False, "code": self.error}
            return e
        e["expect"] = {
            "ok": True,
            "bundle_id": _bundle_id(self.data),
            "items": [
                {
                    **item_json(it),
                    "key_id": s.key_id.hex(),
                    "body_hex": s.body.hex(),
                    "signature_hex": s.signature.hex(),
                    **(
                        {"statement_hex": s.statement.hex(), "id_is_derived": it.id == derived_id(it)}
                        if self.format == 2
                        else {}
                    ),
                    **(_tree_json(it, s) if self.format == 3 else {}),
                }
                for it, s in self.items
            ],
            "blobs": {sha(b).hex(): len(b) for b in self.blobs},
        }
        return e


def _tree_json(it: Item, s: SignedItem) -> dict[str, Any]:
    assert s.inclusion is not None
    inc = s.inclusion
    tree_root = root_from_inclusion(s.body, inc)
    return {
        "id_is_derived": it.id == derived_id(it),
        "tree_size": inc.tree_size,
        "leaf_index": inc.leaf_index,
        "audit_path_hex": [h.hex() for h in inc.path],
        "tree_root_hex": tree_root.hex(),
        "batch_head_hex": batch_head(inc.tree_size, tree_root).hex(),
    }


def _bundle_id(data: bytes) -> str:
    from protocol import read_header

    return read_header(data).bundle_id


def build_vectors() -> list[Vector]:
    """Every vector, good ones first; error vectors are derived from them."""
    alice, bob = key("alice"), key("bob")
    out: list[Vector] = []

    # -- bundles that verify -------------------------------------------------------------
    p1 = post(1, "alice", "Hello from orbit")
    s1 = sign_item(alice, p1)
    out.append(
        Vector(
            "ok-text-only",
            "one text post by alice; items section stored uncompressed (codec 0), no blobs",
            bundle(1, [s1], items_codec=Codec.IDENTITY),
            uses_zstd=False,
            items=[(p1, s1)],
        )
    )

    p2 = post(2, "alice", "First light over the Pacific 🌏", media=(media(GIF, "image/gif", "A dot"),))
    s2 = sign_item(alice, p2)
    ok_photo = bundle(2, [s2], [BlobPayload(sha256=sha(GIF), raw=GIF)])
    out.append(
        Vector(
            "ok-photo",
            "alice's post with one photo; items section zstd (codec 1), the blob stored as is (codec 0)",
            ok_photo,
            uses_zstd=True,
            items=[(p2, s2)],
            blobs=[GIF],
        )
    )

    shared = media(PNG, "image/png", "Two red and two blue pixels")
    p3a = post(3, "alice", "Same view, two accounts", media=(shared,), publish_at_ms=T0 + 3_600_000)
    p3b = Post(
        id=uid(4),
        author="bob",
        created_ms=T0 + 4,
        text="Bob's take",
        media=(shared, media(GIF, "image/gif", "")),
        targets=("archive:bob", "mastodon:bob@example.social"),
    )
    c3 = Cancel(id=uid(5), author="alice", created_ms=T0 + 5, target_id=uid(1))
    r3 = Retract(id=uid(6), author="bob", created_ms=T0 + 6, target_id=uid(7))
    items3: list[tuple[Item, SignedItem]] = [
        (p3a, sign_item(alice, p3a)),
        (p3b, sign_item(bob, p3b)),
        (c3, sign_item(alice, c3)),
        (r3, sign_item(bob, r3)),
    ]
    out.append(
        Vector(
            "ok-two-astronauts-shared-photo",
            "posts by alice and bob sharing one PNG stored once (zstd blob, codec 1), a GIF stored "
            "as is, a scheduled post, two targets, a cancel and a retract",
            bundle(
                3,
                [s for _, s in items3],
                [
                    BlobPayload(sha256=sha(PNG), raw=PNG, codec=Codec.ZSTD, stored=zstd_compress(PNG)),
                    BlobPayload(sha256=sha(GIF), raw=GIF),
                ],
            ),
            uses_zstd=True,
            items=items3,
            blobs=[PNG, GIF],
        )
    )

    text4 = (
        "Cafe\u0301 (NFD) \u2260 Caf\u00e9 (NFC)\r\n"
        "CRLF above, lone CR here:\rthen LF\n"
        "👩🏽\u200d🚀 🇯🇵 🏳️\u200d🌈 \ufeff\u200b zero-width, BOM, astral 𝕳"
    )
    p4 = Post(
        id=uid(8),
        author="alice",
        created_ms=T0 + 8,
        text=text4,
        media=(media(GIF, "image/gif", "Alt with emoji 🌍 and NFD e\u0301"),),
        targets=("archive:alice",),
    )
    s4 = sign_item(alice, p4)
    out.append(
        Vector(
            "ok-unicode-exact",
            "text that must arrive byte-exact: NFD vs NFC, CRLF and lone CR, emoji ZWJ sequences, "
            "a BOM and zero-width space; everything uncompressed",
            bundle(4, [s4], [BlobPayload(sha256=sha(GIF), raw=GIF)], items_codec=Codec.IDENTITY),
            uses_zstd=False,
            items=[(p4, s4)],
            blobs=[GIF],
        )
    )

    # -- bundles that must be rejected, with the code --------------------------------------
    def bad(name: str, code: str, description: str, data: bytes, uses_zstd: bool = False) -> None:
        out.append(Vector(name, description, data, uses_zstd=uses_zstd, error=code))

    text_only = out[0].data
    bad("err-truncated", "truncated", "ok-photo cut to its first 100 bytes", ok_photo[:100], True)
    flipped = bytearray(text_only)
    flipped[len(flipped) // 2] ^= 0x01
    bad("err-flipped-byte", "checksum_mismatch", "ok-text-only with one bit flipped mid-file", bytes(flipped))
    bad(
        "err-trailing-data", "trailing_data", "ok-text-only followed by 7 extra bytes", text_only + b"garbage"
    )
    bad("err-not-a-bundle", "not_a_bundle", "a GIF image, not a bundle", GIF)
    newer = bytearray(text_only)
    newer[4:6] = struct.pack(">H", LATEST_FORMAT + 1)
    bad(
        "err-newer-format-version",
        "unsupported_version",
        f"ok-text-only claiming format version {LATEST_FORMAT + 1} (checksum recomputed)",
        reseal(bytes(newer)),
    )
    bad(
        "err-unknown-key",
        "unknown_key",
        "a post signed by carol, whose key ground never enrolled",
        bundle(10, [sign_item(key("carol"), post(10, "carol", "who am I?"))], items_codec=Codec.IDENTITY),
    )
    bad(
        "err-revoked-key",
        "revoked_key",
        "a post signed by dave, whose key is enrolled but revoked",
        bundle(11, [sign_item(key("dave"), post(11, "dave", "still me"))], items_codec=Codec.IDENTITY),
    )
    bad(
        "err-author-mismatch",
        "author_mismatch",
        "a post claiming author bob, validly signed by alice's key",
        bundle(12, [sign_item(alice, post(12, "bob", "I am bob, honest"))], items_codec=Codec.IDENTITY),
    )
    altered = bytearray(s1.body)
    altered[altered.index(b"Hello")] = ord("J")  # "Jello from orbit": still a valid body
    bad(
        "err-bad-signature",
        "bad_signature",
        "ok-text-only's post with one letter of its text changed after signing",
        bundle(
            13, [SignedItem(body=bytes(altered), key_id=s1.key_id, signature=s1.signature)], items_codec=0
        ),
    )
    forged = SignedItem(body=s1.body, key_id=key_id(bob.public_key), signature=s1.signature)
    bad(
        "err-wrong-key-id",
        "bad_signature",
        "alice's signed post presented under bob's key id",
        bundle(14, [forged], items_codec=Codec.IDENTITY),
    )
    v3_body = pack(
        [
            BODY_VERSION_RENDITIONS + 1,
            1,
            ulid_to_bytes(uid(15)),
            "alice",
            T0 + 15,
            "from the future",
            [],
            ["archive:alice"],
            None,
        ]
    )
    v3 = SignedItem(body=v3_body, key_id=s1.key_id, signature=alice.sign(SIGNATURE_DOMAIN + v3_body))
    bad(
        "err-item-body-version-3",
        "unsupported_version",
        "a validly signed item body of version 3 (version 2 is the rendition consent, §3.1)",
        bundle(15, [v3], items_codec=Codec.IDENTITY),
    )
    bad(
        "err-items-decompression-bomb",
        "decompression_bomb",
        "items section declares its true size but its zstd frame expands by 1 MB more",
        bundle(16, [s1], encode_items=lambda raw: zstd_compress(raw + bytes(1_000_000))),
        True,
    )
    bad(
        "err-blob-decompression-bomb",
        "decompression_bomb",
        "ok-photo's blob declares 43 bytes but its zstd frame expands to 1 MB",
        bundle(
            17,
            [s2],
            [
                BlobPayload(
                    sha256=sha(GIF), raw=GIF, codec=Codec.ZSTD, stored=zstd_compress(GIF + bytes(1_000_000))
                )
            ],
            items_codec=Codec.IDENTITY,
        ),
        True,
    )
    png_as_gif = BlobPayload(sha256=sha(GIF), raw=PNG[: len(GIF)])
    bad(
        "err-media-hash-mismatch",
        "media_hash_mismatch",
        "ok-photo's post with a different 43-byte blob under the GIF's hash",
        bundle(18, [s2], [png_as_gif], items_codec=Codec.IDENTITY),
    )
    bad(
        "err-media-size-mismatch",
        "media_size_mismatch",
        "the GIF's blob entry declares 44 bytes where the post signed 43",
        bundle(19, [s2], [BlobPayload(sha256=sha(GIF), raw=GIF + b"\x00")], items_codec=Codec.IDENTITY),
    )
    bad(
        "err-media-missing",
        "media_missing",
        "ok-photo's post without its blob (and ground does not hold it)",
        bundle(20, [s2], items_codec=Codec.IDENTITY),
    )
    bad(
        "err-unreferenced-blob",
        "malformed",
        "a text-only post carrying a blob no signed post references",
        bundle(21, [s1], [BlobPayload(sha256=sha(GIF), raw=GIF)], items_codec=Codec.IDENTITY),
    )
    bad(
        "err-duplicate-item",
        "duplicate_item",
        "the same signed post twice in one bundle",
        bundle(22, [s1, s1], items_codec=Codec.IDENTITY),
    )
    bad(
        "err-unknown-codec",
        "unknown_codec",
        "ok-photo's blob stored under codec 99",
        bundle(23, [s2], [BlobPayload(sha256=sha(GIF), raw=GIF, codec=99, stored=GIF)], items_codec=0),
    )
    items_raw = pack([s1.to_wire()])
    head = [ulid_to_bytes(uid(124)), T0, [Codec.IDENTITY, len(items_raw), len(items_raw), 1], []]
    canonical_head = pack(head)
    # The item count 1 written as uint8 (cc 01) instead of a positive fixint (01).
    loose_head = canonical_head[:-2] + b"\xcc\x01\x90"
    assert canonical_head.endswith(b"\x01\x90")
    bad(
        "err-non-canonical-header",
        "malformed",
        "a header whose item count is encoded in a longer form than canonical msgpack allows",
        assemble(loose_head, [items_raw]),
    )
    bomb = zstd_compress(bytes(1_000_000))
    neg = pack([ulid_to_bytes(uid(125)), T0, [Codec.ZSTD, len(bomb), -2, 1], []])
    bad(
        "err-negative-size",
        "malformed",
        "items descriptor declaring raw size -2 (once an unbounded decompression)",
        assemble(neg, [bomb]),
        True,
    )
    out.extend(format2_vectors())
    out.extend(rendition_vectors())
    out.extend(format3_vectors())
    out.extend(compact_rendition_vectors())
    out.extend(dictionary_vectors())
    out.extend(lepton_vectors())
    return out


def dictionary_vectors() -> list[Vector]:
    """The items section under codec 2 with text dictionary v3 (docs/PROTOCOL.md §5.1, §5.2),
    and the same frame naming a dictionary nobody ships."""
    texts = ["Привет с орбиты! Восход через 20 минут 🌅", "軌道から見た富士山、最高です。",
             "مرحبا من المدار، الأرض جميلة الليلة", "Guten Morgen aus der Schwerelosigkeit ☕",
             "Hello from orbit: the Nile at night 🌍"]  # fmt: skip
    items: list[Item] = [
        with_derived_id(
            replace(post(110 + i, ("alice", "bob")[i % 2], t), created_ms=T0 + 110_000 + i * 60_000)
        )
        for i, t in enumerate(texts)
    ]
    v3 = functools.partial(compress_items, dict_id=DICT_V3_ID)
    out = [
        Vector(
            "ok-f3-dictionary-v3",
            "format 3: posts in Russian, Japanese, Arabic, German and English by alice and bob; items "
            "section under codec 2 with text dictionary v3 (id 0x6f700003, protocol/data/posts-v3.zdict)",
            bundle(110, compact(items, 3), items_codec=Codec.ZSTD_DICT, encode_items=v3),
            uses_zstd=True,
            format=3,
            items=f3_proofs(items),
        )
    ]

    def unknown(raw: bytes) -> bytes:
        frame = bytearray(v3(raw))
        at = frame.index(DICT_V3_ID.to_bytes(4, "little"), 4)  # Dictionary_ID follows the descriptor
        frame[at : at + 4] = (DICT_V3_ID + 1).to_bytes(4, "little")
        return bytes(frame)

    out.append(
        Vector(
            "err-f3-unknown-dictionary",
            "ok-f3-dictionary-v3 with the frame's Dictionary_ID changed to 0x6f700004, which no side ships",
            bundle(111, compact(items, 3), items_codec=Codec.ZSTD_DICT, encode_items=unknown),
            uses_zstd=True,
            error="unknown_codec",
            format=3,
        )
    )
    return out


def lepton_vectors() -> list[Vector]:
    """Codec 4, Lepton (docs/PROTOCOL.md §10.5): a JPEG stored as Lepton, and three stored forms
    a verifier must refuse without publishing anything (format 1, items uncompressed)."""
    import lepton_jpeg_python

    stored = bytes(lepton_jpeg_python.compress_bytes(JPEG, {"threads": "single"}))
    assert bytes(lepton_jpeg_python.decompress_bytes(stored)) == JPEG and stored[20:24] == struct.pack(
        "<I", len(JPEG)
    )
    p = post(140, "alice", "Rocket, close up", media=(media(JPEG, "image/jpeg", "A rocket's flank"),))
    s = sign_item(key("alice"), p)

    def with_blob(n: int, blob: bytes) -> bytes:
        return bundle(
            n, [s], [BlobPayload(sha256=sha(JPEG), raw=JPEG, codec=Codec.LEPTON, stored=blob)], items_codec=0
        )

    out = [
        Vector(
            "ok-lepton-photo",
            "alice's post with an 853-byte JPEG stored as Lepton (codec 4): rebuild it (§10.5) and "
            "check its sha256; items uncompressed",
            with_blob(140, stored),
            uses_zstd=False,
            items=[(p, s)],
            blobs=[JPEG],
            needs_codecs=(Codec.LEPTON,),
        )
    ]
    head_size = struct.unpack_from("<I", stored, 24)[0]
    header = bytearray(zlib.decompress(stored[28 : 28 + head_size]))
    sof = header.index(b"\xff\xc0")
    struct.pack_into(">HH", header, sof + 5, 65535, 65535)
    packed = zlib.compress(bytes(header))
    bomb = stored[:24] + struct.pack("<I", len(packed)) + packed + stored[28 + head_size :]
    for name, code, description, n, blob in (
        (
            "err-lepton-size-mismatch",
            "malformed",
            "ok-lepton-photo with the Lepton header's JPEG size (bytes 20-23) one more than the signed size",
            141,
            stored[:20] + struct.pack("<I", len(JPEG) + 1) + stored[24:],
        ),
        (
            "err-lepton-frame-bomb",
            "decompression_bomb",
            "ok-lepton-photo whose Lepton header's JPEG frame declares 65535×65535 pixels: refused "
            "before decoding (more pixels than 853 JPEG bytes can code)",
            142,
            bomb,
        ),
        (
            "err-lepton-not-lepton",
            "malformed",
            "ok-lepton-photo with the JPEG itself stored under codec 4 (no Lepton header)",
            143,
            JPEG,
        ),
    ):
        out.append(
            Vector(
                name,
                description,
                with_blob(n, blob),
                uses_zstd=False,
                error=code,
                needs_codecs=(Codec.LEPTON,),
            )
        )
    return out


def compact_rendition_vectors() -> list[Vector]:
    """A rendition consent (body version 2, §3.1) in formats 2 and 3: the 15th field of the
    compact section (docs/PROTOCOL.md §14.8), and its refusals."""
    out: list[Vector] = []
    photo = media(PNG, "image/png", "Two red and two blue pixels")
    consent = with_derived_id(
        Post(
            id=uid(0),
            author="alice",
            created_ms=T0 + 90_000,
            text="Whole Earth, for every account",
            media=(photo,),
            targets=("x:alice", "bluesky:alice.test", "archive:alice"),
            renditions=("x:alice",),
        )
    )
    plain = with_derived_id(
        Post(
            id=uid(0),
            author="bob",
            created_ms=T0 + 91_000,
            text="No rendition here",
            targets=("archive:bob",),
        )
    )
    later = with_derived_id(
        Post(
            id=uid(0),
            author="alice",
            created_ms=T0 + 92_000,
            text="Two accounts may get a rendition",
            media=(photo,),
            targets=("x:alice", "archive:alice", "instagram:alice"),
            renditions=("instagram:alice", "x:alice"),
        )
    )
    items: list[Item] = [consent, plain, later]
    blobs = [BlobPayload(sha256=sha(PNG), raw=PNG)]
    for fmt, proofs in ((2, f2_proofs), (3, f3_proofs)):
        out.append(
            Vector(
                f"ok-f{fmt}-rendition-consent",
                f"format {fmt}: alice's photo post allowing a rendition for x:alice, bob's text post, alice's "
                "post allowing renditions for instagram:alice and x:alice (in that order): the rendition "
                "field (15th) holds entries for items 0 and 2; the rebuilt bodies are version 2, 1, 2; "
                "everything uncompressed",
                bundle(90 + fmt, compact(items, fmt), blobs, items_codec=Codec.IDENTITY),
                uses_zstd=False,
                format=fmt,
                items=proofs(items),
                blobs=[PNG],
            )
        )
    raw = compact(items, 3).raw

    def bad(name: str, code: str, description: str, n: int, change: Any) -> None:
        data = bundle(n, recompact(raw, change, 3), blobs, items_codec=Codec.IDENTITY)
        out.append(Vector(name, description, data, uses_zstd=False, error=code, format=3))

    bad(
        "err-f3-rendition-not-a-target",
        "rendition_not_a_target",
        "ok-f3-rendition-consent with item 0's rendition list changed to mastodon:alice (not a target); "
        "refused while rebuilding, before the signature",
        96,
        lambda f: f[14].__setitem__(0, [0, ["mastodon:alice"]]),
    )
    bad(
        "err-f3-rendition-duplicate",
        "rendition_duplicate",
        "ok-f3-rendition-consent with item 0's rendition list x:alice, x:alice",
        97,
        lambda f: f[14].__setitem__(0, [0, ["x:alice", "x:alice"]]),
    )
    bad(
        "err-f3-rendition-dropped",
        "bad_signature",
        "ok-f3-rendition-consent without item 2's rendition entry: it rebuilds as a version-1 body, "
        "which is not what alice signed (a consent cannot be removed in transit)",
        98,
        lambda f: f[14].pop(),
    )
    bad(
        "err-f3-rendition-field-empty",
        "malformed",
        "ok-f3-rendition-consent with an empty rendition field (absent is the only way to say none)",
        99,
        lambda f: f.__setitem__(14, []),
    )
    bad(
        "err-f3-rendition-order",
        "malformed",
        "ok-f3-rendition-consent with its two rendition entries in reverse order (indexes 2, 0): a "
        "sparse list's indexes must increase",
        100,
        lambda f: f.__setitem__(14, f[14][::-1]),
    )
    return out


def rendition_vectors() -> list[Vector]:
    """Item body version 2 (docs/PROTOCOL.md §3.1): a post that allows a rendition for one of
    its targets, in bundle format 1 (format 2 has no column for it), and the two refusals."""
    alice = key("alice")
    photo = media(PNG, "image/png", "Two red and two blue pixels")
    p = Post(
        id=uid(80),
        author="alice",
        created_ms=T0 + 80,
        text="Whole Earth, for every account",
        media=(photo,),
        targets=("x:alice", "bluesky:alice.test", "archive:alice"),
        renditions=("x:alice",),
    )
    signed = sign_item(alice, p)
    out = [
        Vector(
            "ok-rendition-consent",
            "alice's photo post to three accounts, allowing a rendition for x:alice only: an item body "
            "of version 2 (10 fields, field 9 the rendition list); everything uncompressed",
            bundle(80, [signed], [BlobPayload(sha256=sha(PNG), raw=PNG)], items_codec=Codec.IDENTITY),
            uses_zstd=False,
            items=[(p, signed)],
            blobs=[PNG],
        )
    ]
    fields = unpack(encode_item(p), what="body", max_bytes=1 << 20)

    def resigned(n: int, renditions: list[str]) -> bytes:
        body = pack([*fields[:9], renditions])
        item = SignedItem(body=body, key_id=signed.key_id, signature=alice.sign(SIGNATURE_DOMAIN + body))
        return bundle(n, [item], [BlobPayload(sha256=sha(PNG), raw=PNG)], items_codec=Codec.IDENTITY)

    for name, code, description, n, renditions in (
        (
            "err-rendition-not-a-target",
            "rendition_not_a_target",
            "ok-rendition-consent re-signed with a rendition allowed for mastodon:alice, not a target of the post",
            81,
            ["x:alice", "mastodon:alice"],
        ),
        (
            "err-rendition-duplicate",
            "rendition_duplicate",
            "ok-rendition-consent re-signed with x:alice listed twice in its rendition list",
            82,
            ["x:alice", "x:alice"],
        ),
    ):
        out.append(Vector(name, description, resigned(n, renditions), uses_zstd=False, error=code))
    return out


def format2_vectors() -> list[Vector]:
    """Bundle format 2 (docs/PROTOCOL.md §14): batch signatures and compact items."""
    out: list[Vector] = []

    def ok(name: str, description: str, n: int, items: list[Item], blobs: list[bytes], codec: int) -> bytes:
        data = bundle(
            n,
            compact(items),
            [BlobPayload(sha256=sha(b), raw=b) for b in blobs],
            items_codec=codec,
        )
        out.append(
            Vector(
                name,
                description,
                data,
                uses_zstd=codec != Codec.IDENTITY,
                format=2,
                items=f2_proofs(items),
                blobs=blobs,
            )
        )
        return data

    def bad(name: str, code: str, description: str, n: int, section: CompactItems) -> None:
        data = bundle(n, section, items_codec=Codec.IDENTITY)
        out.append(Vector(name, description, data, uses_zstd=False, error=code, format=2))

    # Onboard composes whole-second times; format 2 sends seconds, and milliseconds only for
    # an item that has them (a2 here).
    def sec(n: int, item: Item, ms: int = 0) -> Item:
        return with_derived_id(replace(item, created_ms=T0 + 1000 * n + ms))

    a1 = sec(31, post(31, "alice", "Hello from orbit 🌍"))
    b1 = with_derived_id(
        Post(
            id=uid(0),
            author="bob",
            created_ms=T0 + 29_000,  # before alice's: a negative time delta
            text="Bonjour d'orbite, Café\u0301 🚀",
            targets=("archive:bob", "mastodon:bob@example.social"),
        )
    )
    # uid(33) is an explicit id on the wire, 250 ms a millisecond entry.
    a2 = replace(post(33, "alice", "An id chosen onboard, not derived"), created_ms=T0 + 33_250)
    text_items: list[Item] = [a1, b1, a2]
    ok(
        "ok-f2-text-two-astronauts",
        "format 2: text posts by alice, bob, alice (two batch signatures, two target lists, a negative "
        "time delta, an explicit id that is not the derived one, a time with milliseconds); items "
        "uncompressed (codec 0)",
        31,
        text_items,
        [],
        Codec.IDENTITY,
    )
    shared = media(PNG, "image/png", "Two red and two blue pixels")
    photo = sec(
        41,
        post(41, "alice", "", media=(media(GIF, "image/gif", "A dot"), shared), publish_at_ms=T0 + 3_600_000),
    )
    cancel = with_derived_id(Cancel(id=uid(0), author="alice", created_ms=T0 + 42_000, target_id=uid(1)))
    bobs = with_derived_id(
        Post(
            id=uid(0),
            author="bob",
            created_ms=T0 + 43_000,
            text="Same PNG, mine too",
            media=(shared,),
            targets=("archive:bob",),
        )
    )
    retract = with_derived_id(Retract(id=uid(0), author="bob", created_ms=T0 + 44_000, target_id=uid(7)))
    ok(
        "ok-f2-photo-commands",
        "format 2: alice's scheduled photo post (a GIF and a PNG, no text) and a cancel, bob's post sharing "
        "the PNG and a retract; items zstd (codec 1), blobs as is",
        40,
        [photo, cancel, bobs, retract],
        [GIF, PNG],
        Codec.ZSTD,
    )

    raw = compact(text_items).raw

    bad(
        "err-f2-bad-signature",
        "bad_signature",
        "ok-f2-text-two-astronauts with one letter of alice's first text changed after signing",
        51,
        recompact(raw, alter_text),
    )
    bad(
        "err-f2-unknown-key",
        "unknown_key",
        "format 2: a post batch-signed by carol, whose key ground never enrolled",
        52,
        compact([sec(52, post(52, "carol", "who am I?"))]),
    )
    bad(
        "err-f2-revoked-key",
        "revoked_key",
        "format 2: a post batch-signed by dave, whose key is enrolled but revoked",
        53,
        compact([sec(53, post(53, "dave", "still me"))]),
    )

    def overlong_length(f: list[Any]) -> None:
        assert f[7][0] < 0x80
        f[7] = bytes([f[7][0] | 0x80, 0x00]) + f[7][1:]  # the same number in 2 bytes

    bad(
        "err-f2-non-canonical-varint",
        "malformed",
        "ok-f2-text-two-astronauts with the first text length written as a 2-byte varint (not shortest)",
        54,
        recompact(raw, overlong_length),
    )

    def swap_signers(f: list[Any]) -> None:
        f[1] = [f[1][1], f[1][0]]
        f[4] = bytes(1 - s for s in f[4])

    bad(
        "err-f2-signer-order",
        "malformed",
        "ok-f2-text-two-astronauts with its two signers listed bob first (each item still names its "
        "right signer): not the order of first use",
        55,
        recompact(raw, swap_signers),
    )

    def spell_out_id(f: list[Any]) -> None:
        f[9] = [[0, ulid_to_bytes(a1.id)], *f[9]]

    bad(
        "err-f2-explicit-derived-id",
        "malformed",
        "ok-f2-text-two-astronauts with the first item's derived id also sent explicitly",
        56,
        recompact(raw, spell_out_id),
    )

    def split_inside_char(f: list[Any]) -> None:
        first = f[7][0]
        assert first < 0x7F and f[7][1] < 0x7F  # both lengths are 1-byte varints
        f[7] = bytes([first - 1, f[7][1] + 1]) + f[7][2:]  # same total, cut inside alice's 🌍

    bad(
        "err-f2-utf8-split",
        "malformed",
        "ok-f2-text-two-astronauts with the text lengths moved by one byte (same total), so alice's text "
        "ends inside the 4-byte UTF-8 of 🌍",
        57,
        recompact(raw, split_inside_char),
    )
    bad(
        "err-f2-duplicate-item",
        "duplicate_item",
        "format 2: the same post twice, so both rebuild with the same derived id",
        58,
        compact([a1, a1]),
    )
    return out


def format3_vectors() -> list[Vector]:
    """Bundle format 3 (docs/PROTOCOL.md §17): format 2's section, each batch signed over the
    Merkle root of the signer's body hashes."""
    out: list[Vector] = []

    def ok(name: str, description: str, n: int, items: list[Item], codec: int) -> None:
        data = bundle(n, compact(items, 3), items_codec=codec)
        out.append(
            Vector(
                name, description, data, uses_zstd=codec != Codec.IDENTITY, format=3, items=f3_proofs(items)
            )
        )

    def bad(name: str, code: str, description: str, n: int, section: CompactItems) -> None:
        data = bundle(n, section, items_codec=Codec.IDENTITY)
        out.append(Vector(name, description, data, uses_zstd=False, error=code, format=3))

    def sec(n: int, item: Item) -> Item:
        return with_derived_id(replace(item, created_ms=T0 + 1000 * n))

    a1 = sec(61, post(61, "alice", "Hello from orbit 🌍"))
    b1 = sec(60, Post(id=uid(0), author="bob", created_ms=0, text="Bonjour d'orbite, Café́ 🚀",
                      targets=("archive:bob", "mastodon:bob@example.social")))  # fmt: skip
    a2 = replace(post(63, "alice", "An id chosen onboard, not derived"), created_ms=T0 + 63_250)
    pair: list[Item] = [a1, b1, a2]
    ok(
        "ok-f3-text-two-astronauts",
        "format 3: text posts by alice, bob, alice: alice's tree has 2 leaves (audit paths of 1 hash), "
        "bob's 1 (an empty path, the root is the leaf hash); an explicit id, a time with milliseconds; "
        "items uncompressed (codec 0)",
        61,
        pair,
        Codec.IDENTITY,
    )
    crew: list[Item] = [sec(70 + i, post(70 + i, "alice", f"Orbit {i}: {'☀🌙'[i % 2]} over the ocean"))
                        for i in range(6)]  # fmt: skip
    crew.insert(3, sec(69, post(69, "bob", "One from bob in the middle")))
    crew.append(with_derived_id(Cancel(id=uid(0), author="alice", created_ms=T0 + 80_000, target_id=uid(1))))
    ok(
        "ok-f3-seven-leaves",
        "format 3: six posts and a cancel by alice (a tree of 7 leaves: audit paths of 2 and 3 hashes) "
        "around one post by bob; items zstd (codec 1)",
        70,
        crew,
        Codec.ZSTD,
    )

    raw = compact(pair, 3).raw

    bad(
        "err-f3-bad-signature",
        "bad_signature",
        "ok-f3-text-two-astronauts with one letter of alice's first text changed after signing",
        81,
        recompact(raw, alter_text, 3),
    )
    f2_raw = compact(pair, 2).raw
    bad(
        "err-f3-statement-signature",
        "bad_signature",
        "ok-f3-text-two-astronauts's items with format-2 statement signatures, in a format-3 file",
        82,
        CompactItems(raw=f2_raw, count=len(pair), format_version=3),
    )
    out.append(
        Vector(
            "err-f2-tree-signature",
            "ok-f3-text-two-astronauts's section, tree-root signatures and all, in a format-2 file",
            bundle(83, CompactItems(raw=raw, count=len(pair), format_version=2), items_codec=Codec.IDENTITY),
            uses_zstd=False,
            error="bad_signature",
            format=2,
        )
    )
    bad(
        "err-f3-revoked-key",
        "revoked_key",
        "format 3: a post batch-signed by dave, whose key is enrolled but revoked",
        84,
        compact([sec(84, post(84, "dave", "still me"))], 3),
    )
    return out


def write(vectors: list[Vector]) -> None:
    for v in vectors:
        (HERE / f"{v.name}.opb").write_bytes(v.data)
    for r in receipt_vectors():
        (HERE / f"{r.name}.bin").write_bytes(r.data)
    for lv in link_vectors():
        (HERE / f"{lv.name}.bin").write_bytes(lv.data)
    MANIFEST.write_text(json.dumps(manifest(vectors), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def manifest(vectors: list[Vector]) -> dict[str, Any]:
    return {
        "about": "orbitpost golden bundles; docs/PROTOCOL.md §12. Verify each file with the keyring below "
        "and the default limits; expect either the items and blobs listed or the error code.",
        "format_version": FORMAT_VERSION,
        "format_versions": [1, 2, 3],
        "body_version": BODY_VERSION,
        "body_versions": sorted(BODY_VERSIONS),
        "signature_domain_hex": SIGNATURE_DOMAIN.hex(),
        "batch_domain_hex": BATCH_DOMAIN.hex(),
        "tree_domain_hex": TREE_DOMAIN.hex(),
        "id_domain_hex": ID_DOMAIN.hex(),
        "keys": [
            {
                "name": n,
                "seed_hex": key(n).seed.hex(),
                "seed_is_sha256_of": seed.decode(),
                "public_key": format_public_key(key(n).public_key),
                "public_key_hex": key(n).public_key.hex(),
                "key_id_hex": key_id(key(n).public_key).hex(),
                "enrolled": enrolled,
                "revoked": revoked,
            }
            for n, (seed, enrolled, revoked) in KEYS.items()
        ],
        "vectors": [v.manifest_entry() for v in vectors],
        # Signed receipts documents (docs/PROTOCOL.md §9, §9.4): receipt_vectors.py.
        **receipts_manifest(receipt_vectors()),
        # Live-link request frames (docs/PROTOCOL.md §8.2, link version 3): link_vectors.py.
        **link_manifest(link_vectors()),
    }


def on_disk_link(here: Path) -> Any:
    """The manifest's live-link frames as written."""
    return json.loads((here / "manifest.json").read_text(encoding="utf-8")).get("link_frames")


def main(argv: list[str]) -> int:
    vectors = build_vectors()
    if "--check" not in argv:
        write(vectors)
        print(f"wrote {len(vectors)} vectors and {MANIFEST.name} to {HERE}")
        return 0
    stale: list[str] = []
    for v in vectors:
        p = HERE / f"{v.name}.opb"
        if not p.exists() or (not v.volatile and p.read_bytes() != v.data):
            stale.append(p.name)
    for r in receipt_vectors():
        p = HERE / f"{r.name}.bin"
        if not p.exists() or p.read_bytes() != r.data:
            stale.append(p.name)
    for lv in link_vectors():
        p = HERE / f"{lv.name}.bin"
        if not p.exists() or p.read_bytes() != lv.data:
            stale.append(p.name)
    if on_disk_link(HERE) != link_manifest(link_vectors())["link_frames"]:
        stale.append(MANIFEST.name)
    on_disk = json.loads(MANIFEST.read_text(encoding="utf-8"))
    if on_disk["keys"] != manifest(vectors)["keys"]:
        stale.append(MANIFEST.name)
    print("stale: " + ", ".join(stale) if stale else "vectors match the code")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
