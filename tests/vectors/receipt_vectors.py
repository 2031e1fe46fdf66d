"""Golden receipts documents (docs/PROTOCOL.md §9, §9.4, §9.5), written by make_vectors.py.

The same receipts as a version-2, a version-3 and a version-4 document (only versions 3 and 4
carry each account's photo fidelity and read-back; version 4 names URLs by templates, the post
by its place in the bundle entry, the state by number), a version-4 lone post whose template
the reader already holds (``held_templates`` in its manifest entry: give them to the decoder),
and refusals. Each manifest entry (``receipts``)
gives the file, its sha256 and what a decoder must get out of it: the version, issue time and
every entry as JSON, or the error code. Ground's key is the seed ``sha256("orbitpost test
ground receipt key")`` (``receipts_key`` in the manifest).
"""

from __future__ import annotations

import hashlib
from typing import Any

from file_vector import FileVector

from protocol import SigningKey, format_public_key, key_id
from protocol.canonical import pack, unpack
from protocol.ids import new_ulid
from protocol.receipts import (
    RECEIPTS_DOMAIN,
    BundleReceipt,
    EnrolledReceipt,
    PhotoFidelity,
    PhotoNote,
    PublicationReceipt,
    Receipt,
    RenditionNote,
    UrlTemplateReceipt,
    sign_receipts,
)

SEED_TEXT = b"orbitpost test ground receipt key"
GROUND = SigningKey.from_seed(hashlib.sha256(SEED_TEXT).digest())
T0 = 1_790_000_000_000
ISSUED = T0 + 600_000
POST = new_ulid(T0 + 80, b"\x08" * 10)
BUNDLE = new_ulid(T0 + 90, b"\x09" * 10)
PHOTO_1 = hashlib.sha256(b"photo 1 as the astronaut chose it").digest()
PHOTO_2 = hashlib.sha256(b"photo 2 as the astronaut chose it").digest()
SENT = hashlib.sha256(b"rendition/v1 of photo 2").digest()


ReceiptVector = FileVector


def receipts() -> list[Receipt]:
    """A bundle accepted, alice's two-photo post published on X (photo 2 as a rendition), on
    Bluesky (kept exactly, read back) and failed on Mastodon, and her enrolled accounts."""
    photos_x = (
        PhotoNote(fidelity=PhotoFidelity.RE_ENCODED, original_sha256=PHOTO_1),
        PhotoNote(fidelity=PhotoFidelity.RENDITION, original_sha256=PHOTO_2),
    )
    exact = tuple(PhotoNote(fidelity=PhotoFidelity.EXACT, original_sha256=s) for s in (PHOTO_1, PHOTO_2))
    return [
        BundleReceipt(
            bundle_sha256=hashlib.sha256(b"the bundle").digest(),
            bundle_id=BUNDLE,
            accepted=True,
            code="",
            message="",
            item_ids=(POST,),
            seq=11,
        ),
        PublicationReceipt(
            item_id=POST,
            account="x:alice",
            state="published",
            url="https://x.com/alice/status/1790000000000000001",
            error=None,
            seq=12,
            remote_id="1790000000000000001",
            renditions=(
                RenditionNote(
                    photo=2,
                    original_sha256=PHOTO_2,
                    sha256=SENT,
                    recipe="rendition/v1",
                    width=8192,
                    height=1092,
                ),
            ),
            photos=photos_x,
        ),
        PublicationReceipt(
            item_id=POST,
            account="bluesky:alice.test",
            state="published",
            url="https://bsky.app/profile/alice.test/post/3kabc",
            error=None,
            seq=13,
            remote_id="at://did:plc:abc/app.bsky.feed.post/3kabc",
            photos=exact,
            read_back="photos read back: 2 blob(s), sha256 match",
        ),
        PublicationReceipt(
            item_id=POST,
            account="mastodon:alice@example.social",
            state="failed",
            url=None,
            error="[rule_violation] text too long",
            seq=14,
        ),
        EnrolledReceipt(
            astronaut="alice",
            accounts=("bluesky:alice.test", "mastodon:alice@example.social", "x:alice"),
            seq=15,
        ),
    ]


POST_2 = new_ulid(T0 + 700_000, b"\x0a" * 10)
BUNDLE_2 = new_ulid(T0 + 700_010, b"\x0b" * 10)


def templates() -> list[UrlTemplateReceipt]:
    """X's and Bluesky's URL templates for alice (version 4, §9.5)."""
    return [
        UrlTemplateReceipt(
            number=3, account="x:alice", url=("https://x.com/alice/status/", 1), remote_id=(1,), seq=5
        ),
        UrlTemplateReceipt(
            number=4,
            account="bluesky:alice.test",
            url=("https://bsky.app/profile/alice.test/post/", 1),
            remote_id=("at://did:plc:abc/app.bsky.feed.post/", 1),
            seq=6,
        ),
    ]


def lone_post() -> list[Receipt]:
    """A later text post of alice's to X alone: its bundle and its publication."""
    return [
        BundleReceipt(
            bundle_sha256=hashlib.sha256(b"the second bundle").digest(),
            bundle_id=BUNDLE_2,
            accepted=True,
            code="",
            message="",
            item_ids=(POST_2,),
            seq=21,
        ),
        PublicationReceipt(
            item_id=POST_2,
            account="x:alice",
            state="published",
            url="https://x.com/alice/status/1790000000000000777",
            error=None,
            seq=22,
            remote_id="1790000000000000777",
        ),
    ]


def entry_json(r: Receipt, version: int) -> dict[str, Any]:
    """What a decoder must get out of one entry (hex for bytes, text ids)."""
    if isinstance(r, UrlTemplateReceipt):
        return {
            "kind": "url_template",
            "number": r.number,
            "account": r.account,
            "url": None if r.url is None else list(r.url),
            "remote_id": None if r.remote_id is None else list(r.remote_id),
            "seq": r.seq,
        }
    if isinstance(r, PublicationReceipt):
        return {
            "kind": "publication",
            "item_id": r.item_id,
            "account": r.account,
            "state": r.state,
            "url": r.url,
            "error": r.error,
            "seq": r.seq,
            "remote_id": r.remote_id,
            "renditions": [
                {
                    "photo": n.photo,
                    "original_sha256": n.original_sha256.hex(),
                    "sha256": n.sha256.hex(),
                    "recipe": n.recipe,
                    "width": n.width,
                    "height": n.height,
                }
                for n in r.renditions
            ],
            # Version 2 carries neither (docs/PROTOCOL.md §9.4).
            "photos": [
                {"fidelity": str(p.fidelity), "original_sha256": p.original_sha256.hex()}
                for p in (r.photos if version >= 3 else ())
            ],
            "read_back": (r.read_back or None) if version >= 3 else None,
        }
    if isinstance(r, BundleReceipt):
        return {
            "kind": "bundle",
            "bundle_sha256": r.bundle_sha256.hex(),
            "bundle_id": r.bundle_id,
            "accepted": r.accepted,
            "code": r.code,
            "message": r.message,
            "item_ids": list(r.item_ids),
            "seq": r.seq,
        }
    assert isinstance(r, EnrolledReceipt)
    return {"kind": "enrolled", "astronaut": r.astronaut, "accounts": list(r.accounts), "seq": r.seq}


def _resigned(body: list[Any]) -> bytes:
    raw = pack(body)
    return pack([raw, key_id(GROUND.public_key), GROUND.sign(RECEIPTS_DOMAIN + raw)])


def receipt_vectors() -> list[ReceiptVector]:
    rs = receipts()
    out = []
    for version in (2, 3):
        out.append(
            ReceiptVector(
                f"receipts-v{version}",
                f"receipts version {version}: a bundle, one post on three accounts (X with a rendition of "
                "photo 2, Bluesky exact and read back, Mastodon failed), enrolled accounts"
                + ("; each publication with its photo fidelity and read-back" if version == 3 else ""),
                sign_receipts(GROUND, ISSUED, rs, version=version),
                {
                    "ok": True,
                    "version": version,
                    "issued_ms": ISSUED,
                    "entries": [entry_json(r, version) for r in rs],
                },
            )
        )
    v4 = [*templates(), *rs]
    out.append(
        ReceiptVector(
            "receipts-v4",
            "receipts version 4: the version-3 receipts with X's and Bluesky's URL templates first; "
            "each publication names its post by its place in the bundle entry, its state by number, "
            "its URL and platform id by template and key (Mastodon's failed one has none)",
            sign_receipts(GROUND, ISSUED, v4, version=4),
            {"ok": True, "version": 4, "issued_ms": ISSUED, "entries": [entry_json(r, 4) for r in v4]},
        )
    )
    lone = lone_post()
    held = templates()[:1]
    out.append(
        ReceiptVector(
            "receipts-v4-held",
            "receipts version 4, a lone post to X: the bundle and one publication naming X's URL template 3, "
            "which the reader holds from an earlier document (held_templates)",
            sign_receipts(GROUND, ISSUED + 1, lone, version=4, held_templates=held),
            {
                "ok": True,
                "version": 4,
                "issued_ms": ISSUED + 1,
                "held_templates": [entry_json(t, 4) for t in held],
                "entries": [entry_json(r, 4) for r in lone],
            },
        )
    )
    good = unpack(unpack(out[1].data, what="doc", max_bytes=1 << 20)[0], what="body", max_bytes=1 << 20)
    good4 = unpack(unpack(out[2].data, what="doc", max_bytes=1 << 20)[0], what="body", max_bytes=1 << 20)

    def changed(change: Any, base: Any = good) -> list[Any]:
        body = unpack(pack(base), what="body", max_bytes=1 << 20)  # a deep copy
        change(body)
        return body  # type: ignore[no-any-return]

    x = 1  # the X publication entry
    for name, code, description, change in (
        (
            "receipts-err-v3-unknown-fidelity",
            "malformed",
            "receipts-v3 re-signed with X's photo 1 fidelity 'resized' (not one of exact, re-encoded, rendition)",
            lambda b: b[2][x][9][0].__setitem__(0, "resized"),
        ),
        (
            "receipts-err-v3-ten-fields",
            "malformed",
            "receipts-v3 re-signed without the X entry's 11th field (version 3 has at least 11)",
            lambda b: b[2][x].pop(),
        ),
        (
            "receipts-err-v2-photos",
            "malformed",
            "receipts-v3's entries re-signed as version 2: a version-2 publication has 8 or 9 fields",
            lambda b: b.__setitem__(0, 2),
        ),
        (
            "receipts-err-version-5",
            "unsupported_version",
            "receipts-v3 re-signed as version 5",
            lambda b: b.__setitem__(0, 5),
        ),
    ):
        out.append(ReceiptVector(name, description, _resigned(changed(change)), {"ok": False, "code": code}))
    x4 = 3  # the X publication entry in receipts-v4 (after two templates and the bundle)
    for name, description, change in (
        (
            "receipts-err-v4-unknown-template",
            "receipts-v4 re-signed with X's publication naming URL template 9 (in neither the document "
            "nor what the reader holds)",
            lambda b: b[2][x4][5].__setitem__(0, 9),
        ),
        (
            "receipts-err-v4-other-accounts-template",
            "receipts-v4 re-signed with X's publication naming template 4 (Bluesky's)",
            lambda b: b[2][x4][5].__setitem__(0, 4),
        ),
        (
            "receipts-err-v4-post-index",
            "receipts-v4 re-signed with X's publication naming post 1 of a bundle entry that has one post",
            lambda b: b[2][x4].__setitem__(1, 1),
        ),
        (
            "receipts-err-v4-state-number",
            "receipts-v4 re-signed with X's publication in state number 10 (0..9 are known)",
            lambda b: b[2][x4].__setitem__(3, 10),
        ),
        (
            "receipts-err-v4-template-part",
            "receipts-v4 re-signed with a part 2 in X's URL template (0 is the post id, 1 the key)",
            lambda b: b[2][0][3].__setitem__(1, 2),
        ),
        (
            "receipts-err-v4-short-publication",
            "receipts-v4 re-signed with X's publication cut to 4 fields (version 4 has at least 5)",
            lambda b: b[2].__setitem__(x4, b[2][x4][:4]),
        ),
    ):
        out.append(
            ReceiptVector(
                name, description, _resigned(changed(change, good4)), {"ok": False, "code": "malformed"}
            )
        )
    doc = unpack(out[1].data, what="doc", max_bytes=1 << 20)
    body = doc[0].replace(b"re-encoded", b"re-encodeD")
    out.append(
        ReceiptVector(
            "receipts-err-altered",
            "receipts-v3 with one letter of a fidelity changed after signing",
            pack([body, doc[1], doc[2]]),
            {"ok": False, "code": "bad_signature"},
        )
    )
    return out


def manifest_part(vectors: list[ReceiptVector]) -> dict[str, Any]:
    return {
        "receipts_domain_hex": RECEIPTS_DOMAIN.hex(),
        "receipts_key": {
            "seed_is_sha256_of": SEED_TEXT.decode(),
            "public_key": format_public_key(GROUND.public_key),
            "public_key_hex": GROUND.public_key.hex(),
            "key_id_hex": key_id(GROUND.public_key).hex(),
        },
        "receipts": [v.manifest_entry() for v in vectors],
    }
