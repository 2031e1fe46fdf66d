"""Bundles (docs/PROTOCOL.md §6): round trips, and every corruption rejected with a remote error."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import assemble, msgpack_values, posts, reseal

from protocol import (
    BlobPayload,
    KnownKey,
    LocalProtocolError,
    MediaRef,
    Post,
    RemoteProtocolError,
    SigningKey,
    build_bundle,
    read_header,
    sign_item,
    verify_bundle,
)
from protocol.bundle import PREFIX_BYTES, choose_blob_encoding
from protocol.canonical import pack, unpack
from protocol.codecs import Codec, zstd_compress
from protocol.errors import ErrorCode
from protocol.ids import new_ulid, ulid_to_bytes
from protocol.limits import Limits
from protocol.model import Cancel

T0 = 1_790_000_000_000
BUNDLE_ID = new_ulid(T0, b"\x01" * 10)
# The smallest GIF there is (1x1, 43 bytes): a real image small enough for exhaustive flips.
TINY_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
GIF_SHA = hashlib.sha256(TINY_GIF).digest()


def small_post(author: str = "alice", n: int = 0, media: bool = True) -> Post:
    return Post(
        id=new_ulid(T0 + n, bytes([n]) * 10),
        author=author,
        created_ms=T0 + n,
        text="Hi from orbit 🌏",
        media=(MediaRef(sha256=GIF_SHA, size_bytes=len(TINY_GIF), media_type="image/gif", alt="dot"),)
        if media
        else (),
        targets=(f"archive:{author}",),
    )


@pytest.fixture(scope="module")
def small_bundle(alice_key: SigningKey) -> bytes:
    """One post with one blob, items uncompressed: a few hundred bytes to flip exhaustively."""
    return build_bundle(
        bundle_id=BUNDLE_ID,
        created_ms=T0,
        items=[sign_item(alice_key, small_post())],
        blobs=[BlobPayload(sha256=GIF_SHA, raw=TINY_GIF)],
        items_codec=Codec.IDENTITY,
    )


def test_small_bundle_verifies(small_bundle: bytes, keyring: dict[bytes, KnownKey]) -> None:
    vb = verify_bundle(small_bundle, keyring)
    assert vb.posts == [small_post()]
    assert vb.blobs == {GIF_SHA: TINY_GIF}
    assert vb.header.bundle_id == BUNDLE_ID and vb.header.created_ms == T0
    assert vb.sha256 == hashlib.sha256(small_bundle).hexdigest()
    assert verify_bundle(memoryview(small_bundle), keyring).items == vb.items
    assert len(small_bundle) < 400


@st.composite
def bundle_inputs(draw: st.DrawFn) -> tuple[list[tuple[str, Post | Cancel]], dict[bytes, bytes]]:
    """Items by alice and bob with real blobs, some shared between posts."""
    blobs = draw(st.lists(st.binary(min_size=1, max_size=300), min_size=0, max_size=3, unique=True))
    blobs = [b"\xff\xd8\xff" + b for b in blobs]  # JPEG magic, not that the bundle cares
    by_sha = {hashlib.sha256(b).digest(): b for b in blobs}
    out: list[tuple[str, Post | Cancel]] = []
    seen: set[str] = set()
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        author = draw(st.sampled_from(["alice", "bob"]))
        p = draw(posts(author=author))
        chosen = draw(st.lists(st.sampled_from(sorted(by_sha)), max_size=2)) if by_sha else []
        media = tuple(
            MediaRef(sha256=s, size_bytes=len(by_sha[s]), media_type="image/jpeg", alt="a") for s in chosen
        )
        p = Post(
            id=p.id,
            author=author,
            created_ms=p.created_ms,
            text=p.text or "x",
            media=media,
            targets=p.targets,
            publish_at_ms=p.publish_at_ms,
        )
        if p.id not in seen:
            seen.add(p.id)
            out.append((author, p))
    used = {m.sha256 for _, p in out if isinstance(p, Post) for m in p.media}
    return out, {s: b for s, b in by_sha.items() if s in used}


@settings(max_examples=50, deadline=None)
@given(bundle_inputs(), st.sampled_from([Codec.IDENTITY, Codec.ZSTD]), st.booleans())
def test_round_trip(
    alice_key: SigningKey,
    bob_key: SigningKey,
    keyring: dict[bytes, KnownKey],
    inputs: tuple[list[tuple[str, Post]], dict[bytes, bytes]],
    items_codec: Codec,
    compress_blobs: bool,
) -> None:
    items, blobs = inputs
    keys = {"alice": alice_key, "bob": bob_key}
    signed = [sign_item(keys[a], it) for a, it in items]
    payloads = []
    for sha, raw in blobs.items():
        codec, stored = choose_blob_encoding(raw) if compress_blobs else (Codec.IDENTITY, raw)
        payloads.append(BlobPayload(sha256=sha, raw=raw, codec=codec, stored=stored))
    data = build_bundle(
        bundle_id=BUNDLE_ID, created_ms=T0, items=signed, blobs=payloads, items_codec=items_codec
    )
    vb = verify_bundle(data, keyring)
    assert [v.item for v in vb.items] == [it for _, it in items]
    assert [v.signed for v in vb.items] == signed
    assert [v.astronaut for v in vb.items] == [a for a, _ in items]
    assert dict(vb.blobs) == blobs  # each blob once, byte-identical
    h = read_header(data)
    assert h.item_count == len(items) and len(h.blobs) == len(blobs) and h.total_bytes == len(data)


def test_exhaustive_single_byte_flips_rejected(small_bundle: bytes, keyring: dict[bytes, KnownKey]) -> None:
    """Every bit of every byte, and every byte inverted: nothing corrupted gets through."""
    codes: set[ErrorCode] = set()
    for i in range(len(small_bundle)):
        for mask in (1, 2, 4, 8, 16, 32, 64, 128, 255):
            bad = bytearray(small_bundle)
            bad[i] ^= mask
            with pytest.raises(RemoteProtocolError) as e:
                verify_bundle(bytes(bad), keyring)
            codes.add(e.value.code)
    assert ErrorCode.CHECKSUM_MISMATCH in codes and ErrorCode.NOT_A_BUNDLE in codes


def test_exhaustive_flips_with_a_recomputed_checksum(
    small_bundle: bytes, keyring: dict[bytes, KnownKey]
) -> None:
    """An attacker can fix the checksum; then signatures and hashes must still hold the content.

    Only unsigned bundle metadata (its id and creation time) may change; the items and blobs
    that come out are always exactly what alice signed, or the bundle is rejected.
    """
    good = verify_bundle(small_bundle, keyring)
    accepted_at: set[int] = set()
    for i in range(len(small_bundle) - 32):
        for mask in (1, 128, 255):
            bad = bytearray(small_bundle)
            bad[i] ^= mask
            try:
                vb = verify_bundle(reseal(bytes(bad)), keyring)
            except RemoteProtocolError:
                continue
            assert [v.signed for v in vb.items] == [v.signed for v in good.items]
            assert vb.blobs == good.blobs
            accepted_at.add(i)
    header_end = PREFIX_BYTES + read_header(small_bundle).header_bytes
    assert all(PREFIX_BYTES <= i < header_end for i in accepted_at)


def test_truncated_at_every_length(small_bundle: bytes, keyring: dict[bytes, KnownKey]) -> None:
    """Also the byte-at-a-time view: no prefix of a bundle is mistaken for a whole one."""
    for n in range(len(small_bundle)):
        with pytest.raises(RemoteProtocolError) as e:
            verify_bundle(small_bundle[:n], keyring)
        if n == 0:
            assert e.value.code is ErrorCode.NOT_A_BUNDLE
        else:
            assert e.value.code is ErrorCode.TRUNCATED, n
        if n >= PREFIX_BYTES:
            assert str(e.value) == f"bundle truncated at byte {n} of {len(small_bundle)}"


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=100))
def test_trailing_garbage_refused(small_bundle: bytes, keyring: dict[bytes, KnownKey], extra: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(small_bundle + extra, keyring)
    assert e.value.code is ErrorCode.TRAILING_DATA
    assert f"{len(extra)} unexpected bytes" in str(e.value)


@settings(deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_remote_errors(keyring: dict[bytes, KnownKey], data: bytes) -> None:
    for candidate in (data, b"ORBP" + data, b"ORBP\x00\x01" + struct.pack(">Q", len(data) + 6) + data):
        with pytest.raises(RemoteProtocolError):
            verify_bundle(candidate, keyring)


@settings(max_examples=300, deadline=None)
@given(msgpack_values, st.lists(st.binary(max_size=50), max_size=3))
def test_arbitrary_headers_raise_only_remote_errors(
    keyring: dict[bytes, KnownKey], header: object, sections: list[bytes]
) -> None:
    # Checksum and lengths are right, so the fuzzing reaches the header decoder and beyond.
    with pytest.raises(RemoteProtocolError):
        verify_bundle(assemble(header, sections), keyring)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_header_fields_raise_only_remote_errors(
    small_bundle: bytes, keyring: dict[bytes, KnownKey], data: st.DataObject
) -> None:
    h = read_header(small_bundle)
    head = unpack(small_bundle[PREFIX_BYTES : PREFIX_BYTES + h.header_bytes], what="h", max_bytes=10**6)
    sections = [small_bundle[PREFIX_BYTES + h.header_bytes : -32]]
    path = data.draw(
        st.sampled_from(
            [(0,), (1,), (2, 0), (2, 1), (2, 2), (2, 3), (3, 0, 0), (3, 0, 1), (3, 0, 2), (3, 0, 3)]
        )
    )
    value = data.draw(msgpack_values | st.integers(min_value=-(2**63), max_value=2**64 - 1))
    target = head
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    try:
        vb = verify_bundle(assemble(head, sections), keyring)
    except RemoteProtocolError:
        return
    assert vb.blobs == {GIF_SHA: TINY_GIF}  # only the unsigned id/time can differ


def test_version_and_magic(small_bundle: bytes, keyring: dict[bytes, KnownKey]) -> None:
    newer = reseal(small_bundle[:4] + b"\x00\x04" + small_bundle[6:])
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(newer, keyring)
    assert e.value.code is ErrorCode.UNSUPPORTED_VERSION
    assert "version 4 is newer than this side reads (3); upgrade orbitpost" in str(e.value)
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(reseal(small_bundle[:4] + b"\x00\x00" + small_bundle[6:]), keyring)
    assert e.value.code is ErrorCode.MALFORMED
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(b"PK\x03\x04 a zip file", keyring)
    assert e.value.code is ErrorCode.NOT_A_BUNDLE and "not an orbitpost bundle" in str(e.value)


def _signed_posts(key: SigningKey, *posts_: Post) -> list:  # type: ignore[type-arg]
    return [sign_item(key, p) for p in posts_]


def test_shared_blob_travels_once(alice_key: SigningKey, keyring: dict[bytes, KnownKey]) -> None:
    items = _signed_posts(alice_key, small_post(n=1), small_post(n=2))
    data = build_bundle(
        bundle_id=BUNDLE_ID, created_ms=T0, items=items, blobs=[BlobPayload(sha256=GIF_SHA, raw=TINY_GIF)]
    )
    assert data.count(TINY_GIF) == 1
    assert verify_bundle(data, keyring).blobs == {GIF_SHA: TINY_GIF}
    with pytest.raises(LocalProtocolError, match="listed twice"):
        build_bundle(
            bundle_id=BUNDLE_ID,
            created_ms=T0,
            items=items,
            blobs=[BlobPayload(sha256=GIF_SHA, raw=TINY_GIF)] * 2,
        )
    with pytest.raises(LocalProtocolError, match="at least one item"):
        build_bundle(bundle_id=BUNDLE_ID, created_ms=T0, items=[])


def test_media_already_on_ground_need_not_travel(
    alice_key: SigningKey, keyring: dict[bytes, KnownKey]
) -> None:
    data = build_bundle(bundle_id=BUNDLE_ID, created_ms=T0, items=_signed_posts(alice_key, small_post()))
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(data, keyring)
    assert e.value.code is ErrorCode.MEDIA_MISSING
    assert verify_bundle(data, keyring, have_blob=lambda sha: sha == GIF_SHA).blobs == {}


def test_blob_not_matching_its_signed_hash(alice_key: SigningKey, keyring: dict[bytes, KnownKey]) -> None:
    other = bytearray(TINY_GIF)
    other[10] ^= 1
    data = build_bundle(
        bundle_id=BUNDLE_ID,
        created_ms=T0,
        items=_signed_posts(alice_key, small_post()),
        blobs=[BlobPayload(sha256=GIF_SHA, raw=bytes(other))],
    )
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(data, keyring)
    assert e.value.code is ErrorCode.MEDIA_HASH_MISMATCH


def test_blob_nobody_signed_for(alice_key: SigningKey, keyring: dict[bytes, KnownKey]) -> None:
    data = build_bundle(
        bundle_id=BUNDLE_ID,
        created_ms=T0,
        items=_signed_posts(alice_key, small_post(media=False)),
        blobs=[BlobPayload(sha256=GIF_SHA, raw=TINY_GIF)],
    )
    with pytest.raises(RemoteProtocolError, match="not referenced by any signed post"):
        verify_bundle(data, keyring)


def test_duplicate_item(alice_key: SigningKey, keyring: dict[bytes, KnownKey]) -> None:
    s = sign_item(alice_key, small_post(media=False))
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(build_bundle(bundle_id=BUNDLE_ID, created_ms=T0, items=[s, s]), keyring)
    assert e.value.code is ErrorCode.DUPLICATE_ITEM


def test_items_decompression_bomb(alice_key: SigningKey, keyring: dict[bytes, KnownKey]) -> None:
    s = sign_item(alice_key, small_post(media=False))
    raw = pack([s.to_wire()])
    data = build_bundle(
        bundle_id=BUNDLE_ID,
        created_ms=T0,
        items=[s],
        encode_items=lambda r: zstd_compress(r + bytes(50_000_000), level=1),
    )
    assert len(data) < 100_000 and read_header(data).items_raw_bytes == len(raw)
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(data, keyring)
    assert e.value.code is ErrorCode.DECOMPRESSION_BOMB


def _hand_header(items_desc: list[int], blobs: list[list[object]]) -> list[object]:
    return [ulid_to_bytes(BUNDLE_ID), T0, items_desc, blobs]


@pytest.mark.parametrize(
    ("header", "sections", "code"),
    [
        # A negative raw size once meant "decompress everything" (read(-1)): refused up front.
        (_hand_header([Codec.ZSTD, 0, -2, 1], []), [], ErrorCode.MALFORMED),
        (_hand_header([Codec.IDENTITY, -1, 1, 1], []), [], ErrorCode.MALFORMED),
        (_hand_header([Codec.IDENTITY, 0, 0, 0], []), [], ErrorCode.LIMIT_EXCEEDED),
        (_hand_header([Codec.IDENTITY, 0, 17 * 1024**2, 1], []), [], ErrorCode.LIMIT_EXCEEDED),
        (
            _hand_header([Codec.IDENTITY, 1, 1, 1], [[GIF_SHA, 0, 1, 0]]),
            [b"x", b"y"],
            ErrorCode.LIMIT_EXCEEDED,
        ),
        (_hand_header([Codec.IDENTITY, 1, 1, 1], [[GIF_SHA, -1, 1, 1]]), [b"x", b"y"], ErrorCode.MALFORMED),
        (_hand_header([Codec.IDENTITY, 1, 1, 1], [[GIF_SHA, 0, 1, 1]]), [b"x"], ErrorCode.MALFORMED),
        (_hand_header([99, 1, 1, 1], []), [b"x"], ErrorCode.UNKNOWN_CODEC),
        (_hand_header([Codec.IDENTITY, 1, 1, 1], []), [b"\xc1"], ErrorCode.MALFORMED),
        ([b"short", T0, [0, 1, 1, 1], []], [b"x"], ErrorCode.MALFORMED),
        (_hand_header([0, 1, 1, 1], [])[:3], [b"x"], ErrorCode.MALFORMED),
    ],
)
def test_hand_built_hostile_headers(
    keyring: dict[bytes, KnownKey], header: object, sections: list[bytes], code: ErrorCode
) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(assemble(header, sections), keyring)
    assert e.value.code is code


def test_limits_apply(small_bundle: bytes, keyring: dict[bytes, KnownKey]) -> None:
    for limits in (
        Limits(max_bundle_bytes=100),
        Limits(max_header_bytes=10),
        Limits(max_blob_bytes=10),
        Limits(max_items_bytes=10),
        Limits(max_blobs=0),
        Limits(max_items=0),
    ):
        with pytest.raises(RemoteProtocolError) as e:
            verify_bundle(small_bundle, keyring, limits=limits)
        assert e.value.code is ErrorCode.LIMIT_EXCEEDED, limits
