"""The bundle: a self-contained file of signed items and the media they reference.

Layout (docs/PROTOCOL.md §6), all integers big-endian::

    magic "ORBP" | version u16 (1: per-item signatures; 2: compact batch-signed items, §14;
    3: the same compact items, each batch signed over a Merkle root, §17) | total_length u64 | header_length u32 | header
    | items section | blob sections in header order | sha256 of everything before

Verification order is chosen so nothing large is decoded before it is known to be
intact: length, checksum, small header, items (each signature before its body), then
every blob bounded by its signed size and checked against its signed sha256.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .canonical import expect, expect_list, pack, unpack
from .codecs import DEFAULT_DECODERS, Codec, Decoder, decode_section, zstd_compress
from .compact_items import COMPACT_FORMATS, decode_compact_items
from .dictionary import DECODERS as DICTIONARY_DECODERS
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from .ids import ulid_from_bytes, ulid_to_bytes
from .keys import KnownKey
from .limits import DEFAULT_LIMITS, Limits
from .model import Post
from .signing import SignedItem, VerifiedItem, signed_item_from_wire, verify_item

MAGIC = b"ORBP"
# Format 1: items are [body, key_id, signature] arrays. Format 2: the compact, batch-signed
# items section of compact_items.py. Format 3: that section, each batch signed over a Merkle
# root (batch_tree.py) so one post's proof is log₂ n hashes. Everything else is the same.
FORMAT_VERSION = 3
FORMATS = frozenset({1, 2, 3})
_PREFIX = struct.Struct(">4sHQI")
PREFIX_BYTES = _PREFIX.size  # 18
TRAILER_BYTES = 32


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobEntry:
    """Where one blob sits in the bundle and how it is stored."""

    sha256: bytes
    codec: int
    stored_bytes: int
    raw_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class BundleHeader:
    bundle_id: str
    created_ms: int
    items_codec: int
    items_stored_bytes: int
    items_raw_bytes: int
    item_count: int
    blobs: tuple[BlobEntry, ...]
    total_bytes: int
    header_bytes: int
    format_version: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedBundle:
    """A bundle whose every byte, signature and media hash checked out."""

    header: BundleHeader
    sha256: str
    items: tuple[VerifiedItem, ...]
    blobs: Mapping[bytes, bytes] = field(default_factory=dict)

    @property
    def posts(self) -> list[Post]:
        return [v.item for v in self.items if isinstance(v.item, Post)]


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobPayload:
    """A blob ready to pack: the original bytes, or an alternative stored form."""

    sha256: bytes
    raw: bytes
    codec: int = Codec.IDENTITY
    stored: bytes | None = None


def choose_blob_encoding(raw: bytes, *, min_saving: float = 0.02) -> tuple[int, bytes]:
    """Zstd when it saves at least ``min_saving`` (photos rarely shrink), else identity."""
    packed = zstd_compress(raw, level=9)
    if len(packed) <= len(raw) * (1 - min_saving):
        return Codec.ZSTD, packed
    return Codec.IDENTITY, raw


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactItems:
    """A format-2 or -3 items section (``compact_items.encode_compact_items``) and its item count."""

    raw: bytes
    count: int
    format_version: int = 2


def build_bundle(
    *,
    bundle_id: str,
    created_ms: int,
    items: Iterable[SignedItem] | CompactItems,
    blobs: Iterable[BlobPayload] = (),
    items_codec: int = Codec.ZSTD,
    encode_items: Callable[[bytes], bytes] | None = None,
) -> bytes:
    """Pack signed items (format 1) or a compact items section (format 2 or 3) and their blobs.

    ``blobs`` must hold each referenced media blob at most once (by sha256). The caller
    picks blob codecs (``choose_blob_encoding`` or a transport codec such as JPEG XL).
    """
    if isinstance(items, CompactItems):
        version, items_raw, count = items.format_version, items.raw, items.count
        if version not in COMPACT_FORMATS:
            raise LocalProtocolError(f"bundle format {version} has no compact items section")
    else:
        items_list = [s.to_wire() for s in items]
        version, items_raw, count = 1, pack(items_list), len(items_list)
    if not count:
        raise LocalProtocolError("a bundle needs at least one item")
    if encode_items is not None:
        items_stored = encode_items(items_raw)
    elif items_codec == Codec.ZSTD:
        items_stored = zstd_compress(items_raw)
    elif items_codec == Codec.IDENTITY:
        items_stored = items_raw
    else:
        raise LocalProtocolError(f"pass encode_items for items codec {items_codec}")
    blob_list = list(blobs)
    seen: set[bytes] = set()
    entries: list[list[Any]] = []
    for b in blob_list:
        if b.sha256 in seen:
            raise LocalProtocolError(f"blob {b.sha256.hex()[:12]} listed twice; a bundle holds each once")
        seen.add(b.sha256)
        stored = b.raw if b.stored is None else b.stored
        entries.append([b.sha256, int(b.codec), len(stored), len(b.raw)])
    header = pack(
        [
            ulid_to_bytes(bundle_id),
            created_ms,
            [int(items_codec), len(items_stored), len(items_raw), count],
            entries,
        ]
    )
    body_len = len(header) + len(items_stored) + sum(e[2] for e in entries)
    total = PREFIX_BYTES + body_len + TRAILER_BYTES
    h = hashlib.sha256()
    parts = [_PREFIX.pack(MAGIC, version, total, len(header)), header, items_stored]
    parts += [b.raw if b.stored is None else b.stored for b in blob_list]
    for p in parts:
        h.update(p)
    return b"".join(parts) + h.digest()


def read_header(data: bytes | memoryview, limits: Limits = DEFAULT_LIMITS) -> BundleHeader:
    """Check prefix, length and checksum, then decode the small header.

    Cheap relative to full verification: hashes once, decodes nothing large.
    """
    view = memoryview(data)
    version, total, header_len = _check_frame(view, limits)
    raw = bytes(view[PREFIX_BYTES : PREFIX_BYTES + header_len])
    # Four fields, the items descriptor's four, up to max_blobs entries of four.
    h = expect_list(
        unpack(
            raw,
            what="bundle header",
            max_bytes=limits.max_header_bytes,
            max_array_len=max(4, limits.max_blobs),
            max_values=8 + 5 * limits.max_blobs,
        ),
        what="bundle header",
        min_len=4,
        max_len=4,
    )
    bid = expect(h[0], bytes, what="bundle id")
    if len(bid) != 16:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "bundle id must be 16 bytes")
    created = expect(h[1], int, what="bundle created time")
    codec, stored, raw_n, count = _items_descriptor(h[2], limits)
    blobs_v = expect_list(h[3], what="blob list", min_len=0)
    if len(blobs_v) > limits.max_blobs:
        raise RemoteProtocolError(
            ErrorCode.LIMIT_EXCEEDED, f"bundle declares {len(blobs_v)} blobs, limit {limits.max_blobs}"
        )
    blobs = [_blob_entry(e, limits) for e in blobs_v]
    decoded = raw_n + sum(b.raw_bytes for b in blobs)
    if decoded > limits.max_decoded_bytes:
        raise RemoteProtocolError(
            ErrorCode.LIMIT_EXCEEDED,
            f"bundle decodes to {decoded} bytes (items and blobs), limit {limits.max_decoded_bytes}; "
            "split it into several bundles",
        )
    if PREFIX_BYTES + header_len + stored + sum(b.stored_bytes for b in blobs) + TRAILER_BYTES != total:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, "section sizes in the header do not add up to the bundle length"
        )
    return BundleHeader(
        bundle_id=ulid_from_bytes(bid),
        created_ms=created,
        items_codec=codec,
        items_stored_bytes=stored,
        items_raw_bytes=raw_n,
        item_count=count,
        blobs=tuple(blobs),
        total_bytes=total,
        header_bytes=header_len,
        format_version=version,
    )


def _check_frame(view: memoryview, limits: Limits) -> tuple[int, int, int]:
    """The prefix, declared length and checksum of a whole bundle; (version, total, header length).

    Raises RemoteProtocolError for anything that is not exactly one intact bundle of a version
    this side reads, within ``limits``.
    """
    n = len(view)
    if 0 < n < len(MAGIC) and MAGIC.startswith(bytes(view)):
        raise RemoteProtocolError(
            ErrorCode.TRUNCATED, f"bundle truncated at byte {n}: only part of the magic"
        )
    if n < 4 or bytes(view[:4]) != MAGIC:
        raise RemoteProtocolError(
            ErrorCode.NOT_A_BUNDLE,
            f"not an orbitpost bundle: it starts with {bytes(view[:4])!r}, expected {MAGIC!r}",
        )
    if n < PREFIX_BYTES:
        raise RemoteProtocolError(
            ErrorCode.TRUNCATED,
            f"bundle truncated at byte {n}: even the {PREFIX_BYTES}-byte prefix is incomplete",
        )
    _, version, total, header_len = _PREFIX.unpack(view[:PREFIX_BYTES])
    if version > FORMAT_VERSION:
        raise RemoteProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"bundle format version {version} is newer than this side reads ({FORMAT_VERSION}); upgrade orbitpost",
        )
    if version < 1:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"bundle format version {version} does not exist")
    if total > limits.max_bundle_bytes:
        raise RemoteProtocolError(
            ErrorCode.LIMIT_EXCEEDED, f"bundle declares {total} bytes, limit {limits.max_bundle_bytes}"
        )
    if n < total:
        raise RemoteProtocolError(ErrorCode.TRUNCATED, f"bundle truncated at byte {n} of {total}")
    if n > total:
        raise RemoteProtocolError(
            ErrorCode.TRAILING_DATA,
            f"bundle has {n - total} unexpected bytes after its declared end at byte {total}",
        )
    if total < PREFIX_BYTES + TRAILER_BYTES + header_len:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"bundle length {total} is too small for its header")
    if hashlib.sha256(view[: total - TRAILER_BYTES]).digest() != bytes(view[total - TRAILER_BYTES :]):
        raise RemoteProtocolError(
            ErrorCode.CHECKSUM_MISMATCH,
            "bundle checksum mismatch: its bytes changed after it was written (damaged in transit or on disk)",
        )
    if header_len > limits.max_header_bytes:
        raise RemoteProtocolError(
            ErrorCode.LIMIT_EXCEEDED, f"bundle header is {header_len} bytes, limit {limits.max_header_bytes}"
        )
    return version, total, header_len


def _items_descriptor(value: object, limits: Limits) -> tuple[int, int, int, int]:
    """The header's items descriptor: (codec, stored bytes, raw bytes, item count), checked."""
    it = expect_list(value, what="items descriptor", min_len=4, max_len=4)
    codec, stored, raw_n, count = (expect(x, int, what="items descriptor field") for x in it)
    if codec < 0 or stored < 0 or raw_n < 0:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "items descriptor has a negative field")
    if raw_n > limits.max_items_bytes:
        raise RemoteProtocolError(
            ErrorCode.LIMIT_EXCEEDED, f"items section declares {raw_n} bytes, limit {limits.max_items_bytes}"
        )
    if not 0 < count <= limits.max_items:
        raise RemoteProtocolError(
            ErrorCode.LIMIT_EXCEEDED, f"bundle declares {count} items, allowed 1..{limits.max_items}"
        )
    return codec, stored, raw_n, count


def _blob_entry(value: object, limits: Limits) -> BlobEntry:
    """One entry of the header's blob list, checked."""
    ev = expect_list(value, what="blob entry", min_len=4, max_len=4)
    sha = expect(ev[0], bytes, what="blob sha256")
    if len(sha) != 32:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "blob sha256 must be 32 bytes")
    b_codec, b_stored, b_raw = (expect(x, int, what="blob entry field") for x in ev[1:])
    if b_codec < 0 or b_stored < 0:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"blob {sha.hex()[:12]} entry has a negative field")
    if not 0 < b_raw <= limits.max_blob_bytes:
        raise RemoteProtocolError(
            ErrorCode.LIMIT_EXCEEDED,
            f"blob {sha.hex()[:12]} declares {b_raw} bytes, limit {limits.max_blob_bytes}",
        )
    return BlobEntry(sha256=sha, codec=b_codec, stored_bytes=b_stored, raw_bytes=b_raw)


# Every codec that is pure protocol (no I/O): identity, zstd, and zstd with a shipped text
# dictionary (docs/PROTOCOL.md §5). Transport codecs with I/O, such as JPEG XL, are added by
# the caller (ground/ingest.py decoders()).
PROTOCOL_DECODERS: Mapping[int, Decoder] = {**DEFAULT_DECODERS, **DICTIONARY_DECODERS}


def verify_bundle(
    data: bytes | memoryview,
    keyring: Mapping[bytes, KnownKey],
    *,
    limits: Limits = DEFAULT_LIMITS,
    decoders: Mapping[int, Decoder] = PROTOCOL_DECODERS,
    have_blob: Callable[[bytes], bool] = lambda _sha: False,
    store_blob: Callable[[bytes, bytes], None] | None = None,
) -> VerifiedBundle:
    """Verify everything in a bundle and return its items and decoded blobs.

    ``have_blob(sha256)`` says whether the receiver already holds a blob, so a photo sent
    in an earlier bundle need not travel again. ``store_blob(sha256, raw)``, if given, takes
    each blob as soon as it is verified and the result's ``blobs`` stays empty, so memory
    holds one decoded blob at a time, not the whole bundle's. Raises RemoteProtocolError on
    any fault (blobs handed to ``store_blob`` before it are intact, merely unreferenced).
    """
    header = read_header(data, limits)
    view = memoryview(data)
    pos = PREFIX_BYTES + header.header_bytes
    items_stored = bytes(view[pos : pos + header.items_stored_bytes])
    pos += header.items_stored_bytes
    items_raw = decode_section(
        header.items_codec, items_stored, header.items_raw_bytes, decoders, "items section"
    )
    verified = _verify_items(header, items_raw, keyring, limits)
    wanted = _signed_media_sizes(verified)
    blobs: dict[bytes, bytes] = {}
    seen_blobs: set[bytes] = set()
    for entry in header.blobs:
        stored = bytes(view[pos : pos + entry.stored_bytes])
        pos += entry.stored_bytes
        raw = _verify_blob(entry, stored, wanted, seen_blobs, decoders)
        seen_blobs.add(entry.sha256)
        if store_blob is None:
            blobs[entry.sha256] = raw
        else:
            store_blob(entry.sha256, raw)
        del raw, stored
    for sha in wanted:
        if sha not in seen_blobs and not have_blob(sha):
            raise RemoteProtocolError(
                ErrorCode.MEDIA_MISSING,
                f"media {sha.hex()[:12]} is neither in the bundle nor already on ground",
            )
    return VerifiedBundle(
        header=header,
        sha256=hashlib.sha256(view).hexdigest(),
        items=tuple(verified),
        blobs=blobs,
    )


def _verify_items(
    header: BundleHeader, items_raw: bytes, keyring: Mapping[bytes, KnownKey], limits: Limits
) -> list[VerifiedItem]:
    """Every declared item's signature checked, and no item id twice."""
    if header.format_version in COMPACT_FORMATS:
        items = decode_compact_items(
            items_raw, header.item_count, keyring, limits, format_version=header.format_version
        )
    else:
        # One [body, key id, signature] array per declared item, nothing else.
        items_v = expect_list(
            unpack(
                items_raw,
                what="items section",
                max_bytes=limits.max_items_bytes,
                max_array_len=max(3, header.item_count),
                max_values=4 * header.item_count,
            ),
            what="items section",
            min_len=header.item_count,
            max_len=header.item_count,
        )
        items = [verify_item(signed_item_from_wire(raw_item), keyring, limits) for raw_item in items_v]
    seen_ids: set[str] = set()
    for v in items:
        if v.item.id in seen_ids:
            raise RemoteProtocolError(
                ErrorCode.DUPLICATE_ITEM, f"item {v.item.id} appears twice in the bundle"
            )
        seen_ids.add(v.item.id)
    return list(items)


def _signed_media_sizes(verified: list[VerifiedItem]) -> dict[bytes, int]:
    """sha256 → size of every photo a signed post names; one photo signed with two sizes is refused."""
    wanted: dict[bytes, int] = {}
    for v in verified:
        if isinstance(v.item, Post):
            for m in v.item.media:
                if wanted.setdefault(m.sha256, m.size_bytes) != m.size_bytes:
                    raise RemoteProtocolError(
                        ErrorCode.MEDIA_SIZE_MISMATCH,
                        f"media {m.sha256.hex()[:12]} is signed with two different sizes",
                    )
    return wanted


def _verify_blob(
    entry: BlobEntry,
    stored: bytes,
    wanted: Mapping[bytes, int],
    seen: set[bytes],
    decoders: Mapping[int, Decoder],
) -> bytes:
    """One blob decoded and checked against what its post signed: once, referenced, size, sha256."""
    short = entry.sha256.hex()[:12]
    if entry.sha256 in seen:
        raise RemoteProtocolError(ErrorCode.DUPLICATE_ITEM, f"blob {short} appears twice in the bundle")
    if entry.sha256 not in wanted:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"blob {short} is not referenced by any signed post")
    if entry.raw_bytes != wanted[entry.sha256]:
        raise RemoteProtocolError(
            ErrorCode.MEDIA_SIZE_MISMATCH,
            f"blob {short} is {entry.raw_bytes} bytes but its post signed {wanted[entry.sha256]}",
        )
    raw = decode_section(entry.codec, stored, entry.raw_bytes, decoders, f"blob {short}")
    if hashlib.sha256(raw).digest() != entry.sha256:
        raise RemoteProtocolError(
            ErrorCode.MEDIA_HASH_MISMATCH, f"blob {short} does not match the sha256 its post signed"
        )
    return raw
