"""A second, independent bundle verifier written from docs/PROTOCOL.md alone, run on every vector.

It imports nothing from protocol/: only hashlib, struct, msgpack, zstandard and cryptography.
If it and the manifest disagree, either the document or the vectors are wrong (§12).
Bundle formats 1 (§4, §6), 2 (§14) and 3 (§17, its RFC 9162 Merkle tree hashing and audit
paths written out here from the RFC, not taken from pymerkle), with rendition consents (item
body version 2, §3.1) in format 1 and in the compact section's 15th field (§14.8). Codec 2 (a
shipped text dictionary, §5.1) it decodes with the dictionary files of §5.2, read as data from
protocol/data and checked against the sha256 that §5.2 pins; codec 3 (JPEG XL) is out of its
scope: it answers unknown_codec. Codec 4 (Lepton, §10.5) it checks from the document — the
Lepton header, the declared size, the frame the JPEG header declares — and decodes with
``lepton_jpeg_python`` itself (when installed; otherwise it answers unknown_codec).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

VECTORS = Path(__file__).parent / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text(encoding="utf-8"))
TAG = b"orbitpost/item/v1\x00"  # §4
BATCH_TAG = b"orbitpost/batch/v1\x00"  # §14.3
TREE_TAG = b"orbitpost/batch/v2\x00"  # §17
ID_TAG = b"orbitpost/id/v1\x00"  # §14.2
MAX_TIME = 2**48 - 1  # §1
MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/avif"}  # §3
# §11 defaults
MAX_BUNDLE, MAX_HEADER, MAX_ITEMS_BYTES, MAX_ITEMS, MAX_BLOBS, MAX_BLOB = (
    2**31,
    2**16,
    2**24,
    10_000,
    1000,
    2**26,
)


class Reject(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def canonical(data: bytes) -> Any:
    """§2: the whole input, and re-encoding gives the same bytes."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise Reject("malformed") from exc
    if msgpack.packb(value, use_bin_type=True) != data:
        raise Reject("malformed")
    return value


def arr(v: Any, n: int | None = None) -> list[Any]:
    if not isinstance(v, list) or (n is not None and len(v) != n):
        raise Reject("malformed")
    return v


def uint(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise Reject("malformed")
    return v


def b(v: Any, n: int | None = None) -> bytes:
    if not isinstance(v, bytes) or (n is not None and len(v) != n):
        raise Reject("malformed")
    return v


LEPTON_MAX_PIXELS = 100_000_000  # §10.5 (as §10.2)
LEPTON_MAX_HEADER = 16 * 1024 * 1024  # §10.5: inflate at most this much of the JPEG header


def lepton_frame(segments: bytes) -> tuple[int, int] | None:
    """§10.5: (width, height) from the first SOFn among JPEG header segments, or None."""
    pos = 0
    while pos + 4 <= len(segments):
        if segments[pos] != 0xFF:
            return None
        marker = segments[pos + 1]
        if marker == 0xFF:
            pos += 1
        elif marker in (0x01, *range(0xD0, 0xD9)):
            pos += 2
        elif marker == 0xDA:
            return None
        else:
            length = struct.unpack(">H", segments[pos + 2 : pos + 4])[0]
            if length < 2 or pos + 2 + length > len(segments):
                return None
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if length < 8:
                    return None
                height, width = struct.unpack(">HH", segments[pos + 5 : pos + 9])
                return width, height
            pos += 2 + length
    return None


def lepton_decode(stored: bytes, raw: int) -> bytes:
    """§10.5: refuse what the header gives away, then decode with the Lepton library."""
    if len(stored) < 28 or stored[:3] != b"\xcf\x84\x01" or stored[3:4] not in (b"Z", b"X"):
        raise Reject("malformed")
    declared, head_size = struct.unpack("<II", stored[20:28])
    if declared != raw:
        raise Reject("malformed")
    try:
        head = zlib.decompressobj().decompress(stored[28 : 28 + head_size], LEPTON_MAX_HEADER + 7)
    except zlib.error as exc:
        raise Reject("malformed") from exc
    if len(head) < 7 or head[:3] != b"HDR":
        raise Reject("malformed")
    frame = lepton_frame(head[7 : 7 + struct.unpack("<I", head[3:7])[0]])
    if frame is None or 0 in frame:
        raise Reject("malformed")
    width, height = frame
    if width * height > LEPTON_MAX_PIXELS or width * height > 512 * raw:
        raise Reject("decompression_bomb")
    import lepton_jpeg_python

    try:
        out = bytes(
            lepton_jpeg_python.decompress_bytes(stored, {"max_jpeg_file_size": raw, "threads": "single"})
        )
    except Exception as exc:
        raise Reject("malformed") from exc
    if len(out) != raw:
        raise Reject("malformed")
    return out


def s(v: Any) -> str:
    if not isinstance(v, str):
        raise Reject("malformed")
    return v


# §5.2: dictionary id -> (file, sha256).
DICTIONARIES = {
    0x6F700001: ("posts-v1.zdict", "8ca0fa152917e666d4a00977e01dab758345ff643378933ed9932d943b02b571"),
    0x6F700002: ("posts-v2.zdict", "d175d241bdccabc0ef102cf43d61b081f0a8e6e078f3cf985341855dfb6a2ceb"),
    0x6F700003: ("posts-v3.zdict", "7a1202bd0b2b10aac584036191d00fb92c91f0abc62910a59bb591bc6717dcac"),
}
DICTIONARY_DIR = Path(__file__).parent.parent / "protocol" / "data"


def decode_dictionary(stored: bytes, raw: int) -> bytes:
    """§5.1: one whole frame naming a shipped dictionary, content size = raw, checksummed."""
    try:
        params = zstandard.get_frame_parameters(stored)
    except zstandard.ZstdError as exc:
        raise Reject("malformed") from exc
    if params.dict_id == 0:
        raise Reject("malformed")
    if params.dict_id not in DICTIONARIES:
        raise Reject("unknown_codec")
    if params.content_size != raw:
        raise Reject("decompression_bomb" if params.content_size > raw else "malformed")
    name, pinned = DICTIONARIES[params.dict_id]
    data = (DICTIONARY_DIR / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == pinned, name
    d = zstandard.ZstdCompressionDict(data, dict_type=zstandard.DICT_TYPE_FULLDICT)
    try:
        out = zstandard.ZstdDecompressor(dict_data=d).decompress(
            stored, max_output_size=max(raw, 1), allow_extra_data=False
        )
    except zstandard.ZstdError as exc:
        raise Reject("malformed") from exc
    if len(out) != raw or not params.has_checksum:
        raise Reject("malformed")
    return out


def decode(codec: int, stored: bytes, raw: int) -> bytes:
    """§5, codecs 0, 1 and 2; §10.5, codec 4."""
    if codec == 0:
        if len(stored) != raw:
            raise Reject("malformed")
        return stored
    if codec == 2:
        return decode_dictionary(stored, raw)
    if codec == 4 and importlib.util.find_spec("lepton_jpeg_python") is not None:
        return lepton_decode(stored, raw)
    if codec != 1:
        raise Reject("unknown_codec")
    try:
        size = zstandard.get_frame_parameters(stored).content_size
    except zstandard.ZstdError as exc:
        raise Reject("malformed") from exc
    if size != zstandard.CONTENTSIZE_UNKNOWN and size > raw:
        raise Reject("decompression_bomb")
    try:
        # Stream at most raw + 1 bytes: a bomb is caught without decompressing it.
        with zstandard.ZstdDecompressor().stream_reader(stored, read_across_frames=False) as reader:
            out = reader.read(raw + 1)
    except zstandard.ZstdError as exc:
        raise Reject("malformed") from exc
    if len(out) > raw:
        raise Reject("decompression_bomb")
    if len(out) != raw:
        raise Reject("malformed")
    try:  # exactly one whole frame: no cut checksum, nothing after it
        zstandard.ZstdDecompressor().decompress(stored, max_output_size=max(raw, 1), allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise Reject("malformed") from exc
    return out


def verify(data: bytes, keyring: dict[bytes, tuple[str, bytes, bool]]) -> dict[str, Any]:
    """§6.3, step by step; returns {"bundle_id", "items": [(kid, body, sig)], "blobs": {sha: raw}}."""
    if 0 < len(data) < 4 and b"ORBP".startswith(data):
        raise Reject("truncated")
    if data[:4] != b"ORBP":
        raise Reject("not_a_bundle")
    if len(data) < 18:
        raise Reject("truncated")
    _, version, total, hlen = struct.unpack(">4sHQI", data[:18])
    if version > 3:
        raise Reject("unsupported_version")
    if version == 0:
        raise Reject("malformed")
    if total > MAX_BUNDLE:
        raise Reject("limit_exceeded")
    if len(data) < total:
        raise Reject("truncated")
    if len(data) > total:
        raise Reject("trailing_data")
    if total < 18 + hlen + 32:
        raise Reject("malformed")
    if hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise Reject("checksum_mismatch")
    if hlen > MAX_HEADER:
        raise Reject("limit_exceeded")
    h = arr(canonical(data[18 : 18 + hlen]), 4)
    bundle_id = b(h[0], 16)
    if isinstance(h[1], bool) or not isinstance(h[1], int):
        raise Reject("malformed")
    codec, stored_n, raw_n, count = (uint(x) for x in arr(h[2], 4))
    if raw_n > MAX_ITEMS_BYTES or not 0 < count <= MAX_ITEMS:
        raise Reject("limit_exceeded")
    entries = []
    for e in arr(h[3]):
        e = arr(e, 4)
        sha, (bc, bs, br) = b(e[0], 32), (uint(x) for x in e[1:])
        if not 0 < br <= MAX_BLOB:
            raise Reject("limit_exceeded")
        entries.append((sha, bc, bs, br))
    if len(entries) > MAX_BLOBS:
        raise Reject("limit_exceeded")
    if 18 + hlen + stored_n + sum(e[2] for e in entries) + 32 != total:
        raise Reject("malformed")
    pos = 18 + hlen
    items_raw = decode(codec, data[pos : pos + stored_n], raw_n)
    pos += stored_n
    if version in (2, 3):
        out_items, wanted = verify_format2(items_raw, count, keyring, tree=version == 3)
    else:
        out_items, wanted = verify_format1(items_raw, count, keyring)
    blobs: dict[bytes, bytes] = {}
    for sha, bc, bs, br in entries:
        stored = data[pos : pos + bs]
        pos += bs
        if sha in blobs:
            raise Reject("duplicate_item")
        if sha not in wanted:
            raise Reject("malformed")
        if br != wanted[sha]:
            raise Reject("media_size_mismatch")
        raw = decode(bc, stored, br)
        if hashlib.sha256(raw).digest() != sha:
            raise Reject("media_hash_mismatch")
        blobs[sha] = raw
    if set(wanted) - set(blobs):
        raise Reject("media_missing")
    return {"bundle_id": bundle_id, "items": out_items, "blobs": blobs}


# key id, body, signature, and what else proves the body: b"" in format 1, the statement in
# format 2, in format 3 the tree size and leaf index (8 bytes each, big-endian) and audit path.
Proof = tuple[bytes, bytes, bytes, bytes]


def _split(n: int) -> int:
    """RFC 9162 §2.1.1: the largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(entries: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1 Merkle Tree Hash of a non-empty list of entries."""
    if len(entries) == 1:
        return hashlib.sha256(b"\x00" + entries[0]).digest()
    k = _split(len(entries))
    return hashlib.sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:])).digest()


def audit_path(m: int, entries: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(m, D[n]), bottom up."""
    if len(entries) == 1:
        return []
    k = _split(len(entries))
    if m < k:
        return audit_path(m, entries[:k]) + [mth(entries[k:])]
    return audit_path(m - k, entries[k:]) + [mth(entries[:k])]


def verify_format1(
    items_raw: bytes, count: int, keyring: dict[bytes, tuple[str, bytes, bool]]
) -> tuple[list[Proof], dict[bytes, int]]:
    """§6.3 steps 10-11 and 12 for format 1: per-item signatures (§4)."""
    items = arr(canonical(items_raw), count)
    ids: set[bytes] = set()
    out_items: list[Proof] = []
    wanted: dict[bytes, int] = {}
    for it in items:
        it = arr(it, 3)
        body, kid, sig = b(it[0]), b(it[1], 8), b(it[2], 64)
        if kid not in keyring:
            raise Reject("unknown_key")
        name, public, revoked = keyring[kid]
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(sig, TAG + body)
        except InvalidSignature as exc:
            raise Reject("bad_signature") from exc
        f = arr(canonical(body))
        if len(f) < 5:
            raise Reject("malformed")
        version = uint(f[0])
        if version not in (1, 2):
            raise Reject("unsupported_version")
        kind, item_id, author, created = uint(f[1]), b(f[2], 16), s(f[3]), uint(f[4])
        if not 1 <= len(author.encode()) <= 256 or created > MAX_TIME:
            raise Reject("malformed")
        if kind == 1:
            f = arr(f, 9 if version == 1 else 10)
            text, media, targets = s(f[5]), arr(f[6]), arr(f[7])
            if len(text.encode()) > 65536:
                raise Reject("limit_exceeded")
            if not 1 <= len(targets) <= 64 or len(media) > 16 or (not text and not media):
                raise Reject("malformed")
            for t in targets:
                platform, sep, account = s(t).partition(":")
                if not (sep and account and platform.isascii() and platform.isalnum()):
                    raise Reject("malformed")
            if f[8] is not None and uint(f[8]) > MAX_TIME:
                raise Reject("malformed")
            for m in media:
                m = arr(m, 4)
                sha, size, mt, _alt = b(m[0], 32), uint(m[1]), s(m[2]), s(m[3])
                if mt not in MEDIA_TYPES:
                    raise Reject("malformed")
                if not 0 < size <= MAX_BLOB:
                    raise Reject("limit_exceeded")
                if wanted.setdefault(sha, size) != size:
                    raise Reject("media_size_mismatch")
            if version == 2:  # §3.1: 1-64 of the post's own targets, each once
                consents = [s(t) for t in arr(f[9])]
                if not 1 <= len(consents) <= 64:
                    raise Reject("malformed")
                for i, t in enumerate(consents):
                    if t not in targets:
                        raise Reject("rendition_not_a_target")
                    if t in consents[:i]:
                        raise Reject("rendition_duplicate")
        elif kind in (2, 3) and version == 1:
            b(arr(f, 6)[5], 16)
        else:
            raise Reject("malformed")
        if revoked:
            raise Reject("revoked_key")
        if author != name:
            raise Reject("author_mismatch")
        if item_id in ids:
            raise Reject("duplicate_item")
        ids.add(item_id)
        out_items.append((kid, body, sig, b""))
    return out_items, wanted


def varints(col: bytes, n: int, *, signed: bool = False) -> list[int]:
    """§14.1: exactly n shortest-form LEB128 varints of at most 8 bytes fill col."""
    out, pos = [], 0
    for _ in range(n):
        value = shift = 0
        start = pos
        while True:
            if pos >= len(col):
                raise Reject("malformed")
            byte = col[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if pos - start == 8:
                raise Reject("malformed")
        if pos - start > 1 and byte == 0:
            raise Reject("malformed")
        if signed:  # zigzag: 0, 1, 2, 3 ... are 0, -1, 1, -2 ...
            value = -(value + 1) // 2 if value & 1 else value // 2
        out.append(value)
    if pos != len(col):
        raise Reject("malformed")
    return out


def integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise Reject("malformed")
    return v


def sparse(v: Any, n: int, posts: set[int] | None, conv: Any) -> dict[int, Any]:
    """§14.4 fields 9-11: [[index, value], ...], indexes strictly increasing below n."""
    out: dict[int, Any] = {}
    last = -1
    for e in arr(v):
        e = arr(e, 2)
        i = integer(e[0])
        if not last < i < n or (posts is not None and i not in posts):
            raise Reject("malformed")
        last = i
        out[i] = conv(e[1])
    return out


def media_entry(v: Any) -> list[Any]:
    """§3 media entry, in the order §14.5 step 4 checks it."""
    m = arr(v, 4)
    sha = b(m[0], 32)
    size = integer(m[1])
    if not 0 < size <= MAX_BLOB:
        raise Reject("limit_exceeded")
    if s(m[2]) not in MEDIA_TYPES:
        raise Reject("malformed")
    if len(s(m[3]).encode()) > 8192:
        raise Reject("limit_exceeded")
    return [sha, size, m[2], m[3]]


def media_list(v: Any) -> list[list[Any]]:
    entries = arr(v)
    if not 1 <= len(entries) <= 16:
        raise Reject("malformed")
    return [media_entry(m) for m in entries]


def rendition_list(v: Any) -> list[str]:
    """§14.8: a post's rendition list, 1-64 str."""
    out = [s(x) for x in arr(v)]
    if not 1 <= len(out) <= 64:
        raise Reject("malformed")
    return out


def first_use_order(column: list[int], n: int) -> None:
    """Every index below n used, and first used in the order 0, 1, 2, ..."""
    if any(x >= n for x in column) or list(dict.fromkeys(column)) != list(range(n)):
        raise Reject("malformed")


def verify_format2(
    items_raw: bytes, count: int, keyring: dict[bytes, tuple[str, bytes, bool]], *, tree: bool = False
) -> tuple[list[Proof], dict[bytes, int]]:
    """§14.5 steps 1-9 (and §6.3 step 12): rebuild every body, then one signature per astronaut,
    over the statement (format 2) or the Merkle tree head (format 3, §17)."""
    f = arr(canonical(items_raw))
    if len(f) not in (14, 15):  # §14.8: a 15th field only when some post allows a rendition
        raise Reject("malformed")
    base_s = integer(f[0])
    rows = arr(f[1])
    if not 1 <= len(rows) <= min(count, 255):
        raise Reject("malformed")
    signers: list[tuple[bytes, bytes, str, bytes, bool]] = []
    for row in rows:
        row = arr(row, 2)
        kid, sig = b(row[0], 8), b(row[1], 64)
        if any(kid == x[0] for x in signers):
            raise Reject("malformed")
        if kid not in keyring:
            raise Reject("unknown_key")
        name, public, revoked = keyring[kid]
        signers.append((kid, sig, name, public, revoked))
    target_sets: list[list[str]] = []
    for t in arr(f[2]):
        t = [s(x) for x in arr(t)]
        if not 1 <= len(t) <= 64 or t in target_sets:
            raise Reject("malformed")
        target_sets.append(t)
    kinds, signer_of = b(f[3]), b(f[4])
    if len(kinds) != count or len(signer_of) != count:
        raise Reject("malformed")
    deltas = varints(b(f[5]), count, signed=True)
    posts = [i for i in range(count) if kinds[i] == 1]
    targets_of = varints(b(f[6]), len(posts))
    lengths = varints(b(f[7]), len(posts))
    texts = s(f[8]).encode()
    explicit = sparse(f[9], count, None, b)
    media = sparse(f[10], count, set(posts), media_list)
    publish_at = sparse(f[11], count, set(posts), integer)
    cmd_targets = b(f[12], 16 * (count - len(posts)))
    millis = sparse(f[13], count, None, integer)
    consents = sparse(f[14], count, set(posts), rendition_list) if len(f) == 15 else {}
    if len(f) == 15 and not consents:
        raise Reject("malformed")
    if any(not 0 < ms < 1000 for ms in millis.values()):
        raise Reject("malformed")
    if any(k not in (1, 2, 3) for k in kinds):
        raise Reject("malformed")
    first_use_order(list(signer_of), len(signers))
    if sum(lengths) != len(texts):
        raise Reject("malformed")
    first_use_order(targets_of, len(target_sets))
    if deltas[0] != 0 or base_s < 0:
        raise Reject("malformed")

    bodies: list[bytes] = []
    ids: list[bytes] = []
    second, text_pos, post_no, cmd_no = base_s, 0, 0, 0
    for i in range(count):
        second += deltas[i]
        now = second * 1000 + millis.get(i, 0)
        if not 0 <= now <= MAX_TIME:
            raise Reject("malformed")
        author = signers[signer_of[i]][2]
        if kinds[i] == 1:
            n = lengths[post_no]
            if n > 65536:
                raise Reject("limit_exceeded")
            try:
                text = texts[text_pos : text_pos + n].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise Reject("malformed") from exc
            text_pos += n
            targets = target_sets[targets_of[post_no]]
            post_no += 1
            photos = media.get(i, [])
            when = publish_at.get(i)
            if not text and not photos:
                raise Reject("malformed")
            for t in targets:
                platform, sep, account = t.partition(":")
                if not (sep and account and platform.isascii() and platform.isalnum()):
                    raise Reject("malformed")
            if when is not None and not 0 <= when <= MAX_TIME:
                raise Reject("malformed")
            tail: list[Any] = [text, photos, targets, when]
            if i in consents:  # §3.1: body version 2, field 9 the list, each a target once
                for k, t in enumerate(consents[i]):
                    if t not in targets:
                        raise Reject("rendition_not_a_target")
                    if t in consents[i][:k]:
                        raise Reject("rendition_duplicate")
                tail.append(consents[i])
        else:
            tail = [cmd_targets[16 * cmd_no : 16 * cmd_no + 16]]
            cmd_no += 1
        head = [2 if i in consents else 1, kinds[i]]
        blank = msgpack.packb(
            [*head, now.to_bytes(6, "big") + bytes(10), author, now, *tail], use_bin_type=True
        )
        derived = now.to_bytes(6, "big") + hashlib.sha256(ID_TAG + blank).digest()[:10]  # §14.2
        item_id = explicit.get(i, derived)
        if i in explicit and (len(item_id) != 16 or item_id == derived):
            raise Reject("malformed")
        ids.append(item_id)
        bodies.append(msgpack.packb([*head, item_id, author, now, *tail], use_bin_type=True))

    proofs: list[bytes] = [b""] * count
    for k, (_kid, sig, _name, public, revoked) in enumerate(signers):
        mine = [i for i in range(count) if signer_of[i] == k]
        hashes = [hashlib.sha256(bodies[i]).digest() for i in mine]
        if tree:
            message = TREE_TAG + struct.pack(">Q", len(hashes)) + mth(hashes)
        else:
            message = BATCH_TAG + b"".join(hashes)
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(sig, message)
        except InvalidSignature as exc:
            raise Reject("bad_signature") from exc
        if revoked:
            raise Reject("revoked_key")
        for leaf, i in enumerate(mine):
            proofs[i] = (
                struct.pack(">QQ", len(hashes), leaf) + b"".join(audit_path(leaf, hashes))
                if tree
                else b"".join(hashes)
            )
    if len(set(ids)) != len(ids):
        raise Reject("duplicate_item")
    wanted: dict[bytes, int] = {}
    for photos in media.values():
        for sha, size, _type, _alt in photos:
            if wanted.setdefault(sha, size) != size:
                raise Reject("media_size_mismatch")
    out = [
        (signers[w][0], body, signers[w][1], proof)
        for body, w, proof in zip(bodies, signer_of, proofs, strict=True)
    ]
    return out, wanted


def keyring_from_manifest() -> dict[bytes, tuple[str, bytes, bool]]:
    ring = {}
    for k in MANIFEST["keys"]:
        line = k["public_key"]
        assert line.startswith("ed25519:")
        public = base64.urlsafe_b64decode(line[8:] + "=")
        assert hashlib.sha256(public).digest()[:8].hex() == k["key_id_hex"]  # §3 key id
        if k["enrolled"]:
            ring[hashlib.sha256(public).digest()[:8]] = (k["name"], public, k["revoked"])
    return ring


def _proof_hex(item: dict[str, Any]) -> str:
    """The manifest's proof of one item in the form verify_format2 returns it."""
    if "tree_size" not in item:
        return str(item.get("statement_hex", ""))
    head = struct.pack(">QQ", item["tree_size"], item["leaf_index"])
    return head.hex() + "".join(item["audit_path_hex"])


def test_audit_paths_lead_to_the_signed_root() -> None:
    """§17 from the other side: each format-3 item's path, folded by RFC 9162 §2.1.3.2, gives
    the root of its tree, and that root is what the manifest says the signature covers."""
    checked = 0
    for vector in MANIFEST["vectors"]:
        for it in vector["expect"].get("items", []) if vector["format"] == 3 else []:
            fn, sn = it["leaf_index"], it["tree_size"] - 1
            r = hashlib.sha256(b"\x00" + hashlib.sha256(bytes.fromhex(it["body_hex"])).digest()).digest()
            for p in map(bytes.fromhex, it["audit_path_hex"]):
                assert sn > 0
                if fn % 2 or fn == sn:
                    r = hashlib.sha256(b"\x01" + p + r).digest()
                    while fn % 2 == 0 and fn:
                        fn, sn = fn >> 1, sn >> 1
                else:
                    r = hashlib.sha256(b"\x01" + r + p).digest()
                fn, sn = fn >> 1, sn >> 1
            assert sn == 0 and r.hex() == it["tree_root_hex"]
            head = struct.pack(">Q", it["tree_size"]) + r
            assert head.hex() == it["batch_head_hex"]
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize("vector", MANIFEST["vectors"], ids=lambda v: v["file"])
def test_second_implementation_agrees(vector: dict[str, Any]) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    expect = vector["expect"]
    try:
        got = verify(data, keyring_from_manifest())
    except Reject as r:
        assert not expect["ok"], f"refused with {r.code}"
        assert r.code == expect["code"]
        return
    assert expect["ok"], f"accepted, expected {expect.get('code')}"
    assert [(k.hex(), body.hex(), sig.hex(), st.hex()) for k, body, sig, st in got["items"]] == [
        (i["key_id"], i["body_hex"], i["signature_hex"], _proof_hex(i)) for i in expect["items"]
    ]
    assert {sha.hex(): len(raw) for sha, raw in got["blobs"].items()} == expect["blobs"]


@pytest.mark.parametrize(
    "name",
    [
        "ok-text-only.opb",
        "ok-photo.opb",
        "ok-unicode-exact.opb",
        "ok-f2-text-two-astronauts.opb",
        "ok-f2-photo-commands.opb",
        "ok-f3-text-two-astronauts.opb",
        "ok-rendition-consent.opb",
        "ok-f3-rendition-consent.opb",
        "ok-f3-dictionary-v3.opb",
    ],
)
def test_both_implementations_agree_on_every_flip_and_truncation(name: str) -> None:
    """Differential check: every single-byte flip (checksum recomputed, so the fault reaches the
    header, items and blobs) and every truncation gets the same verdict and code from both."""
    from protocol import KnownKey, RemoteProtocolError, verify_bundle

    ring = keyring_from_manifest()
    ref_ring = {k: KnownKey(astronaut=n, public_key=p, revoked=r) for k, (n, p, r) in ring.items()}
    good = (VECTORS / name).read_bytes()
    cases = [good[:n] for n in range(len(good))]
    for i in range(len(good) - 32):
        for mask in (0x01, 0x80):
            bad = bytearray(good)
            bad[i] ^= mask
            cases.append(bytes(bad[:-32]) + hashlib.sha256(bytes(bad[:-32])).digest())
    for data in cases:
        try:
            verify_bundle(data, ref_ring)
            ref = "ok"
        except RemoteProtocolError as exc:
            ref = str(exc.code)
        try:
            verify(data, ring)
            mine = "ok"
        except Reject as r:
            mine = r.code
        assert mine == ref, (len(data), data.hex())


# --- receipts (§9, §9.4), from the document alone ------------------------------------------------

RECEIPTS_TAG = b"orbitpost/receipts/v1\x00"  # §9
FIDELITIES = {"exact", "re-encoded", "rendition"}  # §9.4


def _ulid_text(raw: bytes) -> str:
    """§3: 16 bytes as 26 characters of Crockford base32 (the first holds the top 3 bits)."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    n = int.from_bytes(b(raw, 16), "big")
    return "".join(alphabet[(n >> (5 * (25 - i))) & 31] for i in range(26))


def _opt(v: Any, conv: Any) -> Any:
    return None if v is None else conv(v)


def _seq(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise Reject("malformed")
    return v


def _rendition(v: Any) -> dict[str, Any]:
    photo, orig, sha, recipe, width, height = arr(v, 6)
    photo, width, height = uint(photo), uint(width), uint(height)
    if not 1 <= photo <= 16 or not (0 < width <= 2**40 and 0 < height <= 2**40):
        raise Reject("malformed")
    return {
        "photo": photo,
        "original_sha256": b(orig, 32).hex(),
        "sha256": b(sha, 32).hex(),
        "recipe": s(recipe),
        "width": width,
        "height": height,
    }


def _list_1_16(v: Any) -> list[Any]:
    if not 1 <= len(arr(v)) <= 16:
        raise Reject("malformed")
    return list(v)


def _photo(v: Any) -> dict[str, Any]:
    fidelity, sha = arr(v, 2)
    if s(fidelity) not in FIDELITIES:
        raise Reject("malformed")
    return {"fidelity": fidelity, "original_sha256": b(sha, 32).hex()}


def _publication(e: list[Any], version: int) -> dict[str, Any]:
    if version == 2 and len(e) not in (8, 9) or version == 3 and len(e) < 11:
        raise Reject("malformed")
    out: dict[str, Any] = {
        "kind": "publication",
        "item_id": _ulid_text(e[1]),
        "account": s(e[2]),
        "state": s(e[3]),
        "url": _opt(e[4], s),
        "error": _opt(e[5], s),
        "seq": _seq(e[6]),
        "remote_id": _opt(e[7], s),
        "renditions": [],
        "photos": [],
        "read_back": None,
    }
    if version == 2 and len(e) == 9 or version == 3 and e[8] is not None:
        out["renditions"] = [_rendition(n) for n in _list_1_16(e[8])]
    if version == 3:
        if e[9] is not None:
            out["photos"] = [_photo(p) for p in _list_1_16(e[9])]
        if e[10] is not None:
            if not 1 <= len(s(e[10])) <= 4096:
                raise Reject("malformed")
            out["read_back"] = e[10]
    return out


# §9.5: version 4's publication states by number.
STATES_V4 = ("pending", "publishing", "scheduled", "published", "failed", "rejected", "cancelled",
             "retracting", "retracted", "retract_failed")  # fmt: skip


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _template(e: list[Any]) -> dict[str, Any]:
    """§9.5: [6, number, account, url parts|nil, id parts|nil, seq, ...]."""
    if len(e) < 6 or not _is_int(e[1]) or not 0 <= e[1] < 2**32:
        raise Reject("malformed")

    def parts(v: Any) -> list[Any] | None:
        if v is None:
            return None
        if not 1 <= len(arr(v)) <= 16:
            raise Reject("malformed")
        for p in v:
            if not ((isinstance(p, str) and 1 <= len(p) <= 8192) or (_is_int(p) and p in (0, 1))):
                raise Reject("malformed")
        return list(v)

    return {"kind": "url_template", "number": e[1], "account": s(e[2]), "url": parts(e[3]),
            "remote_id": parts(e[4]), "seq": _seq(e[5])}  # fmt: skip


def _fill(parts: list[Any] | None, post: str, key: str) -> str | None:
    return None if parts is None else "".join(post if p == 0 else key if p == 1 else p for p in parts)


def _publication_v4(e: list[Any], items: list[str], templates: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """§9.5: [1, post, account, state, seq, where?, error?, renditions?, photos?, read_back?, ...]."""
    if len(e) < 5:
        raise Reject("malformed")
    f = e + [None] * (10 - len(e))
    if _is_int(f[1]):
        if not 0 <= f[1] < len(items):
            raise Reject("malformed")
        post = items[f[1]]
    else:
        post = _ulid_text(f[1])
    account = s(f[2])
    state = f[3]
    if _is_int(state):
        if not 0 <= state < len(STATES_V4):
            raise Reject("malformed")
        state = STATES_V4[state]
    url = remote = None
    if f[5] is not None:
        first, second = arr(f[5], 2)
        if _is_int(first):
            t = templates.get(first)
            if t is None or t["account"] != account or len(s(second)) > 256:
                raise Reject("malformed")
            url, remote = _fill(t["url"], post, second), _fill(t["remote_id"], post, second)
        else:
            url, remote = _opt(first, s), _opt(second, s)
    out: dict[str, Any] = {"kind": "publication", "item_id": post, "account": account, "state": s(state),
                           "url": url, "error": _opt(f[6], s), "seq": _seq(f[4]), "remote_id": remote,
                           "renditions": [], "photos": [], "read_back": None}  # fmt: skip
    if f[7] is not None:
        out["renditions"] = [_rendition(n) for n in _list_1_16(f[7])]
    if f[8] is not None:
        out["photos"] = [_photo(p) for p in _list_1_16(f[8])]
    if f[9] is not None:
        if not 1 <= len(s(f[9])) <= 4096:
            raise Reject("malformed")
        out["read_back"] = f[9]
    return out


def _entries_v4(entries: list[Any], held: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """§9.5: the document's templates (and those held) first, then every entry in order."""
    templates = {t["number"]: t for t in held}
    for v in entries:
        if not arr(v):
            raise Reject("malformed")
        if uint(v[0]) == 6:
            t = _template(v)
            templates[t["number"]] = t
    out, items = [], []
    for v in entries:
        if v[0] == 6:
            out.append(_template(v))
        elif v[0] == 1:
            out.append(_publication_v4(v, items, templates))
        else:
            out.append(_receipt_entry(v, 3))
            if out[-1]["kind"] == "bundle":
                items = out[-1]["item_ids"]
    return out


def _receipt_entry(v: Any, version: int) -> dict[str, Any]:
    e = arr(v)
    if not e:
        raise Reject("malformed")
    kind = uint(e[0])
    if kind == 1:
        return _publication(e, version)
    if kind == 2:
        sha, bundle_id, accepted, code, message, ids, seq = arr(e, 8)[1:]
        if not isinstance(accepted, bool):
            raise Reject("malformed")
        return {
            "kind": "bundle",
            "bundle_sha256": b(sha, 32).hex(),
            "bundle_id": _opt(bundle_id, _ulid_text),
            "accepted": accepted,
            "code": s(code),
            "message": s(message),
            "item_ids": [_ulid_text(i) for i in arr(ids)],
            "seq": _seq(seq),
        }
    if kind == 4:
        astronaut, accounts, seq = arr(e, 4)[1:]
        return {
            "kind": "enrolled",
            "astronaut": s(astronaut),
            "accounts": [s(a) for a in arr(accounts)],
            "seq": _seq(seq),
        }
    if kind == 3:  # account limits: at least 9 fields, later ones read past
        if len(e) < 9:
            raise Reject("malformed")
        return {"kind": "limits", "account": s(e[1]), "seq": _seq(e[8])}
    if kind == 5:
        command_id, target_id, outcome, detail, seq = arr(e, 6)[1:]
        if s(outcome) not in ("done", "refused"):
            raise Reject("malformed")
        return {"kind": "command", "command_id": _ulid_text(command_id), "target_id": _ulid_text(target_id),
                "outcome": outcome, "detail": s(detail), "seq": _seq(seq)}  # fmt: skip
    raise Reject("malformed")


def verify_receipts_doc(
    data: bytes, ground_public: bytes, held: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """§9: [body, key_id, signature]; the pinned key first, then the signature, then decoding."""
    body, kid, sig = arr(canonical(data), 3)
    body, kid, sig = b(body), b(kid), b(sig)
    if len(kid) != 8 or len(sig) != 64:
        raise Reject("malformed")
    if kid != hashlib.sha256(ground_public).digest()[:8]:
        raise Reject("unknown_key")
    try:
        Ed25519PublicKey.from_public_bytes(ground_public).verify(sig, RECEIPTS_TAG + body)
    except InvalidSignature as exc:
        raise Reject("bad_signature") from exc
    v = arr(canonical(body))
    if len(v) not in (3, 4):
        raise Reject("malformed")
    if isinstance(v[0], bool) or not isinstance(v[0], int):
        raise Reject("malformed")
    version = v[0]
    if version not in (2, 3, 4):
        raise Reject("unsupported_version")
    entries = arr(v[2])
    if len(v) == 4 and len(s(v[3])) > 16 * 1024:
        raise Reject("malformed")
    if isinstance(v[1], bool) or not isinstance(v[1], int):
        raise Reject("malformed")
    if version == 4:
        return {"version": 4, "issued_ms": v[1], "entries": _entries_v4(entries, held or [])}
    return {"version": version, "issued_ms": v[1], "entries": [_receipt_entry(e, version) for e in entries]}


def _receipts_key() -> bytes:
    line = MANIFEST["receipts_key"]["public_key"]
    public = base64.urlsafe_b64decode(line[8:] + "=")
    assert hashlib.sha256(public).digest()[:8].hex() == MANIFEST["receipts_key"]["key_id_hex"]
    assert bytes.fromhex(MANIFEST["receipts_domain_hex"]) == RECEIPTS_TAG
    return public


@pytest.mark.parametrize("vector", MANIFEST["receipts"], ids=lambda v: v["file"])
def test_second_implementation_reads_the_receipts_vectors(vector: dict[str, Any]) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    expect = vector["expect"]
    try:
        got = verify_receipts_doc(data, _receipts_key(), expect.get("held_templates"))
    except Reject as r:
        assert not expect["ok"], f"refused with {r.code}"
        assert r.code == expect["code"]
        return
    assert expect["ok"], f"accepted, expected {expect.get('code')}"
    assert got == {k: expect[k] for k in ("version", "issued_ms", "entries")}


@pytest.mark.parametrize("name", ["receipts-v2.bin", "receipts-v3.bin", "receipts-v4.bin"])
def test_both_implementations_agree_on_every_receipts_flip_and_truncation(name: str) -> None:
    """Every single-byte flip and truncation of a receipts document: the same verdict and code."""
    from protocol import RemoteProtocolError
    from protocol.receipts import verify_receipts

    key = _receipts_key()
    good = (VECTORS / name).read_bytes()
    cases = [good[:n] for n in range(len(good))]
    for i in range(len(good)):
        for mask in (0x01, 0x80):
            bad = bytearray(good)
            bad[i] ^= mask
            cases.append(bytes(bad))
    for data in cases:
        try:
            verify_receipts(data, key)
            ref = "ok"
        except RemoteProtocolError as exc:
            ref = str(exc.code)
        try:
            verify_receipts_doc(data, key)
            mine = "ok"
        except Reject as r:
            mine = r.code
        assert mine == ref, data.hex()


_receipt_field = st.one_of(
    st.none(),
    st.integers(-2, 2**41),
    st.binary(min_size=15, max_size=33),
    st.sampled_from(["exact", "re-encoded", "rendition", "resized", "", "x:alice", "rendition/v1"]),
    st.booleans(),
    st.lists(
        st.one_of(
            st.lists(
                st.sampled_from(["exact", "re-encoded", "x"]) | st.binary(min_size=31, max_size=32),
                max_size=3,
            ),
            st.lists(
                st.integers(0, 17) | st.binary(min_size=32, max_size=32) | st.just("rendition/v1"), max_size=7
            ),
        ),
        max_size=3,
    ),
)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([2, 3]), st.lists(_receipt_field, min_size=6, max_size=12))
def test_both_implementations_agree_on_any_signed_publication_entry(version: int, fields: list[Any]) -> None:
    """Differential: a correctly signed document whose one publication entry is anything."""
    from protocol import RemoteProtocolError, SigningKey
    from protocol.receipts import verify_receipts

    ground = SigningKey.from_seed(hashlib.sha256(b"differential receipts").digest())
    entry = [1, b"\x01" * 16, "x:alice", "published", *fields]
    body = msgpack.packb([version, 1, [entry]], use_bin_type=True)
    kid = hashlib.sha256(ground.public_key).digest()[:8]
    data = msgpack.packb([body, kid, ground.sign(RECEIPTS_TAG + body)], use_bin_type=True)
    try:
        verify_receipts(data, ground.public_key)
        ref = "ok"
    except RemoteProtocolError as exc:
        ref = str(exc.code)
    try:
        verify_receipts_doc(data, ground.public_key)
        mine = "ok"
    except Reject as r:
        mine = r.code
    assert mine == ref, entry


_v4_field = st.one_of(
    st.none(),
    st.integers(-2, 12),
    st.integers(2**32 - 1, 2**33),
    st.booleans(),
    st.binary(min_size=15, max_size=17),
    st.sampled_from(["x:alice", "bluesky:a.test", "published", "later", "42", ""]),
    st.lists(
        st.none() | st.integers(-1, 9) | st.booleans() | st.sampled_from(["42", "https://x/", ""]), max_size=3
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(_v4_field, min_size=0, max_size=11),
    template=st.lists(_v4_field, min_size=0, max_size=6),
    held=st.booleans(),
)
def test_both_implementations_agree_on_any_version_4_entry(
    fields: list[Any], template: list[Any], held: bool
) -> None:
    """Differential (§9.5): a signed version-4 document with a good template, a bundle entry,
    any template entry and any publication entry; the reader may hold template 0 besides."""
    from protocol import RemoteProtocolError, SigningKey
    from protocol.receipts import UrlTemplateReceipt, verify_receipts

    ground = SigningKey.from_seed(hashlib.sha256(b"differential receipts").digest())
    good = [6, 3, "x:alice", ["https://x.com/alice/status/", 1], [1], 1]
    bundle = [2, bytes(32), bytes(16), True, "", "", [b"\x01" * 16], 2]
    body = msgpack.packb([4, 1, [good, bundle, [6, *template], [1, *fields]]], use_bin_type=True)
    kid = hashlib.sha256(ground.public_key).digest()[:8]
    data = msgpack.packb([body, kid, ground.sign(RECEIPTS_TAG + body)], use_bin_type=True)
    mine_held = [{"kind": "url_template", "number": 0, "account": "x:alice", "url": ["x/", 1], "remote_id": None,
                  "seq": 0}] if held else []  # fmt: skip
    ref_held = {0: UrlTemplateReceipt(number=0, account="x:alice", url=("x/", 1), remote_id=None, seq=0)}
    try:
        verify_receipts(data, ground.public_key, templates=ref_held if held else None)
        ref = "ok"
    except RemoteProtocolError as exc:
        ref = str(exc.code)
    try:
        verify_receipts_doc(data, ground.public_key, mine_held)
        mine = "ok"
    except Reject as r:
        mine = r.code
    assert mine == ref, (template, fields)


# -- live-link request frames (§8.2, link version 3), written from the document alone ----

OPEN, CHUNK = 1, 2


def link_request(data: bytes) -> dict[str, Any]:
    """§8.2: an OPEN or CHUNK request frame, the fields a receiver reads and the byte range it
    stores (an OPEN's data, whole upload or, link version 3, its first chunk, at offset 0)."""
    v = arr(canonical(data))
    if len(v) < 3 or uint(v[0]) != 1:
        raise Reject("malformed")
    t, seq = uint(v[1]), uint(v[2])
    if t == OPEN and 7 <= len(v) <= 10:
        kind, sha, size, owner = uint(v[3]), b(v[4], 32), uint(v[5]), s(v[6])
        if len(owner.encode()) > 256:
            raise Reject("limit_exceeded")
        payload = b(v[7]) if len(v) >= 8 else b""
        if len(v) == 8 and not payload:
            raise Reject("malformed")  # data, when present alone, is not empty
        since = uint(v[8]) if len(v) >= 9 else None
        if len(v) == 10 and not 1 <= len(arr(v[9])) <= 16:
            raise Reject("malformed")  # receipts versions (§9.5), not read here
        got = {"type": "open", "size_bytes": size, "owner": owner, "receipts_since": since}
        offset = 0
        link = 3 if 0 < len(payload) < size else 1
    elif t == CHUNK and len(v) == 7:
        kind, sha, offset, payload = uint(v[3]), b(v[4], 32), uint(v[5]), b(v[6])
        got, link, size = {"type": "chunk"}, 1, None
    else:
        raise Reject("malformed")
    if kind not in (1, 2, 3):
        raise Reject("malformed")
    got |= {
        "ok": True,
        "seq": seq,
        "kind": kind,
        "sha256": sha.hex(),
        "data_sha256": hashlib.sha256(payload).hexdigest(),
        "stores": [offset, offset + len(payload)] if payload else None,
        "link_version": link,
    }
    if size is not None and len(payload) > size:
        raise Reject("bad_offset")  # §8.3: data past the upload's end, as a CHUNK's
    return got


def link_salvage(prefix: bytes) -> list[int] | None:
    """§8.4: the range ground stores of an OPEN or CHUNK cut mid-body: the data bytes that
    arrived, after a head that passes every check a whole frame's would."""
    heads = {0x97: (CHUNK, 6), 0x98: (OPEN, 7), 0x99: (OPEN, 7), 0x9A: (OPEN, 7)}
    if len(prefix) < 2 or prefix[0] not in heads:
        return None
    ftype, n = heads[prefix[0]]
    up = msgpack.Unpacker(raw=False)
    up.feed(prefix[1:])
    try:
        head = [up.unpack() for _ in range(n)]
    except msgpack.OutOfData:
        return None
    pos = 1 + up.tell()
    width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(prefix[pos]) if pos < len(prefix) else None
    if width is None or head[1] != ftype:
        return None
    declared = int.from_bytes(prefix[pos + 1 : pos + 1 + width], "big")
    got = prefix[pos + 1 + width : pos + 1 + width + declared]
    if not got or len(got) >= declared:
        return None
    try:
        link_request(msgpack.packb([*head, bytes(got)], use_bin_type=True))
    except Reject:
        return None
    offset = head[5] if ftype == CHUNK else 0
    return [offset, offset + len(got)]


@pytest.mark.parametrize("vector", MANIFEST["link_frames"], ids=lambda v: v["file"])
def test_second_implementation_reads_the_link_frames(vector: dict[str, Any]) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == vector["sha256"]
    expect = vector["expect"]
    if "salvage" in expect:
        with pytest.raises(Reject):
            link_request(data)
        assert link_salvage(data) == expect["salvage"]
        return
    try:
        got = link_request(data)
    except Reject as r:
        assert not expect["ok"] and r.code == expect["code"]
        return
    assert expect["ok"] and got == expect


@pytest.mark.parametrize("name", ["link-open-first-chunk.bin", "link-open-first-chunk-receipts.bin"])
def test_both_implementations_salvage_every_cut_alike(name: str) -> None:
    """Every prefix of an OPEN carrying its first chunk: the same range kept (or none)."""
    from protocol.transfer_wire import salvage_chunk

    frame = (VECTORS / name).read_bytes()
    for n in range(len(frame) + 1):
        mine = salvage_chunk(frame[:n])
        assert link_salvage(frame[:n]) == (None if mine is None else [0, len(mine.data)]), n
