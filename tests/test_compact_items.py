"""Bundle format 2's compact, batch-signed items section (protocol/compact_items.py, docs/PROTOCOL.md §14).

Examples pin the layout of §14.4; properties check the round trip (every item and body rebuilt
exactly), that every single-byte corruption of a section is refused with RemoteProtocolError
and nothing else, and that corrupted format-2 bundles are refused.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable
from dataclasses import replace

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    Cancel,
    ErrorCode,
    Item,
    KnownKey,
    LocalProtocolError,
    MediaRef,
    Post,
    RemoteProtocolError,
    Retract,
    SigningKey,
    build_bundle,
    encode_item,
    key_id,
    verify_bundle,
)
from protocol.bundle import CompactItems
from protocol.canonical import pack
from protocol.codecs import Codec
from protocol.compact_items import decode_compact_items, encode_compact_items
from protocol.ids import new_ulid, ulid_to_bytes
from protocol.limits import DEFAULT_LIMITS
from protocol.model import derived_id, with_derived_id
from protocol.signing import BATCH_DOMAIN, batch_statement, check_signature
from tests import strategies as sx

T0 = 1_790_000_000_000
NAMES = ("alice", "bob", "chiara")
KEYS = {n: SigningKey.from_seed(hashlib.sha256(f"orbitpost test key {n}".encode()).digest()) for n in NAMES}
RING = {
    key_id(k.public_key): KnownKey(astronaut=n, public_key=k.public_key, revoked=False)
    for n, k in KEYS.items()
}
GIF = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")
PHOTO = MediaRef(
    sha256=hashlib.sha256(GIF).digest(), size_bytes=len(GIF), media_type="image/gif", alt="A dot"
)


def post(
    author: str,
    ms: int,
    text: str,
    *,
    media: tuple[MediaRef, ...] = (),
    targets: tuple[str, ...] = (),
    publish_at_ms: int | None = None,
) -> Post:
    """A post with its derived id (what onboard composes)."""
    return with_derived_id(
        Post(
            id=new_ulid(T0, bytes(10)),
            author=author,
            created_ms=T0 + ms,
            text=text,
            media=media,
            targets=targets or (f"archive:{author}",),
            publish_at_ms=publish_at_ms,
        )
    )


def example() -> list[Item]:
    """alice, bob, alice: a negative time delta, a photo, a schedule, an explicit id, a time
    with milliseconds, two commands."""
    a1 = post("alice", 5_000, "Hello from orbit 🌍")
    b1 = post(
        "bob",
        3_000,
        "Café\u0301 🚀",
        media=(PHOTO,),
        targets=("archive:bob", "mastodon:bob@x.social"),
        publish_at_ms=T0 + 3_600_000,
    )
    a2 = replace(post("alice", 9_250, "chosen id"), id=new_ulid(T0 + 9, b"\x07" * 10))
    c = with_derived_id(Cancel(id=a1.id, author="alice", created_ms=T0 + 10_000, target_id=a2.id))
    r = with_derived_id(Retract(id=a1.id, author="bob", created_ms=T0 + 11_000, target_id=b1.id))
    return [a1, b1, a2, c, r]


def fields(raw: bytes) -> list[object]:
    return msgpack.unpackb(raw, raw=False)  # type: ignore[no-any-return]


def decode(raw: bytes, count: int) -> list[Item]:
    return [v.item for v in decode_compact_items(raw, count, RING)]


def refused(raw: bytes, count: int, code: ErrorCode = ErrorCode.MALFORMED) -> str:
    with pytest.raises(RemoteProtocolError) as e:
        decode_compact_items(raw, count, RING)
    assert e.value.code is code, str(e.value)
    return str(e.value)


def repack(raw: bytes, index: int, value: object) -> bytes:
    f = fields(raw)
    f[index] = value
    return pack(f)


# -- examples ----------------------------------------------------------------------------------


def test_example_layout_is_the_documented_one() -> None:
    items = example()
    raw = encode_compact_items(items, KEYS)
    f = fields(raw)
    assert len(f) == 14
    assert f[0] == T0 // 1000 + 5  # base: item 0's time in whole seconds
    assert [s[0] for s in f[1]] == [key_id(KEYS["alice"].public_key), key_id(KEYS["bob"].public_key)]
    assert f[2] == [["archive:alice"], ["archive:bob", "mastodon:bob@x.social"]]
    assert f[3] == bytes([1, 1, 1, 2, 3])  # kinds
    assert f[4] == bytes([0, 1, 0, 0, 1])  # signer_of
    assert f[5] == bytes([0, 3, 12, 2, 2])  # deltas in seconds 0, -2, +6, +1, +1 zigzagged
    assert f[6] == bytes([0, 1, 0])  # target set per post
    assert f[7] == bytes([len("Hello from orbit 🌍".encode()), len("Café\u0301 🚀".encode()), 9])
    assert f[8] == "Hello from orbit 🌍Café\u0301 🚀chosen id"
    assert f[9] == [[2, ulid_to_bytes(items[2].id)]]  # only the id that is not derived
    assert f[10] == [[1, [[PHOTO.sha256, PHOTO.size_bytes, PHOTO.media_type, PHOTO.alt]]]]
    assert f[11] == [[1, T0 + 3_600_000]]
    assert f[12] == ulid_to_bytes(items[2].id) + ulid_to_bytes(items[1].id)
    assert f[13] == [[2, 250]]  # the one time with milliseconds


def test_example_round_trip_rebuilds_bodies_and_proofs() -> None:
    items = example()
    raw = encode_compact_items(items, KEYS)
    verified = decode_compact_items(raw, len(items), RING)
    assert [v.item for v in verified] == items
    assert [v.signed.body for v in verified] == [encode_item(it) for it in items]
    for v in verified:
        assert v.astronaut == v.item.author
        mine = [encode_item(it) for it in items if it.author == v.item.author]
        assert v.signed.statement == batch_statement(mine)
        assert KEYS[v.astronaut].public_key and check_signature(v.signed, KEYS[v.astronaut].public_key)
        # A statement proves only its own bodies: another astronaut's body is not in it.
        other = next(encode_item(it) for it in items if it.author != v.item.author)
        assert not check_signature(replace(v.signed, body=other), KEYS[v.astronaut].public_key)


def test_derived_id_ignores_the_id_and_covers_everything_signed() -> None:
    p = example()[0]
    assert derived_id(replace(p, id=new_ulid(1, b"\x01" * 10))) == derived_id(p) == p.id
    assert derived_id(p)[:10] == new_ulid(p.created_ms, bytes(10))[:10]  # the time part
    for changed in (
        replace(p, text=p.text + " "),
        replace(p, author="bob"),
        replace(p, created_ms=p.created_ms + 1),
        replace(p, targets=("archive:bob",)),
        replace(p, publish_at_ms=T0),
        replace(p, media=(PHOTO,)),
    ):
        assert derived_id(changed) != derived_id(p)


def test_one_signature_per_astronaut_over_the_statement() -> None:
    items = example()
    f = fields(encode_compact_items(items, KEYS))
    for (kid, sig), name in zip(f[1], ("alice", "bob"), strict=True):  # type: ignore[misc]
        statement = batch_statement([encode_item(it) for it in items if it.author == name])
        assert kid == key_id(KEYS[name].public_key)
        assert sig == KEYS[name].sign(BATCH_DOMAIN + statement)


def test_encoder_refuses_what_it_cannot_sign() -> None:
    with pytest.raises(LocalProtocolError):
        encode_compact_items([], KEYS)
    with pytest.raises(LocalProtocolError, match="no signing key"):
        encode_compact_items([post("dora", 1, "hi")], KEYS)


def test_big_times_and_lengths_use_longer_varints() -> None:
    items = [post("alice", 0, "x" * 300), post("alice", -700_000, "y"), post("alice", 10**12, "z")]
    raw = encode_compact_items(items, KEYS)
    f = fields(raw)
    assert f[7] == bytes([0xAC, 0x02, 1, 1])  # 300 = ac 02
    # -700 s: zigzag 1399, 2 bytes; +10**9 + 700 s: zigzag ~2**31, 5 bytes
    assert f[5][:1] == b"\x00" and len(f[5]) == 1 + 2 + 5 and f[13] == []
    assert decode(raw, 3) == items


@pytest.mark.parametrize(
    ("what", "change", "message"),
    [
        (
            "signer order",
            lambda f: (f.__setitem__(1, f[1][::-1]), f.__setitem__(4, bytes(1 - s for s in f[4]))),
            "order",
        ),
        ("unused signer", lambda f: f.__setitem__(4, bytes(len(f[4]))), "order"),
        ("signer index", lambda f: f.__setitem__(4, b"\x02" + f[4][1:]), "signer 2"),
        ("signer twice", lambda f: f.__setitem__(1, [f[1][0], f[1][0]]), "twice"),
        ("target list twice", lambda f: f.__setitem__(2, [f[2][0], f[2][0]]), "twice"),
        (
            "target order",
            lambda f: (f.__setitem__(2, f[2][::-1]), f.__setitem__(6, bytes(1 - t for t in f[6]))),
            "order",
        ),
        ("unused target list", lambda f: f.__setitem__(2, [*f[2], ["archive:x"]]), "order"),
        ("first delta", lambda f: f.__setitem__(5, b"\x02" + f[5][1:]), "base time"),
        ("overlong varint", lambda f: f.__setitem__(5, b"\x80\x00" + f[5][1:]), "shortest"),
        ("varint too long", lambda f: f.__setitem__(7, b"\x80" * 8 + b"\x01" + f[7][1:]), "8 bytes"),
        ("varint cut", lambda f: f.__setitem__(7, f[7][:-1]), "ends inside"),
        ("varint extra", lambda f: f.__setitem__(7, f[7] + b"\x00"), "after its"),
        ("text lengths sum", lambda f: f.__setitem__(7, bytes([f[7][0] - 1]) + f[7][1:]), "add up"),
        ("utf-8 split", lambda f: f.__setitem__(7, bytes([f[7][0] - 1, f[7][1] + 1]) + f[7][2:]), "UTF-8"),
        ("sparse order", lambda f: f.__setitem__(11, [[1, T0], [1, T0]]), "increase"),
        ("publish_at on a command", lambda f: f.__setitem__(11, [[3, T0]]), "not a post"),
        ("media on a command", lambda f: f.__setitem__(10, [[4, f[10][0][1]]]), "not a post"),
        ("empty media list", lambda f: f.__setitem__(10, [[1, []]]), "media list"),
        (
            "explicit derived id",
            lambda f: f.__setitem__(9, [[0, ulid_to_bytes(example()[0].id)], *f[9]]),
            "derives",
        ),
        ("short explicit id", lambda f: f.__setitem__(9, [[2, b"\x01" * 15]]), "16 bytes"),
        ("unknown kind", lambda f: f.__setitem__(3, f[3][:3] + b"\x04" + f[3][4:]), "kind"),
        ("command targets", lambda f: f.__setitem__(12, f[12][:-1]), "command targets"),
        ("field count", lambda f: f.extend([[[0, ["archive:alice"]]], 0]), "14..15"),
        # The rendition field (§14.8): present only when some post allows one, on posts only.
        ("empty rendition field", lambda f: f.append([]), "leave it out"),
        ("rendition on a command", lambda f: f.append([[3, ["archive:alice"]]]), "not a post"),
        ("empty rendition list", lambda f: f.append([[0, []]]), "rendition list"),
        ("rendition list not a list", lambda f: f.append([[0, "archive:alice"]]), "rendition list"),
        ("rendition order", lambda f: f.append([[2, ["archive:alice"]], [0, ["archive:alice"]]]), "increase"),
        ("zero milliseconds", lambda f: f.__setitem__(13, [[0, 0]]), "1..999"),
        ("a whole second as milliseconds", lambda f: f.__setitem__(13, [[0, 1000]]), "1..999"),
        ("millisecond order", lambda f: f.__setitem__(13, [[2, 250], [1, 5]]), "increase"),
        ("negative base", lambda f: f.__setitem__(0, -1), "base time"),
        ("time out of range", lambda f: f.__setitem__(0, 2**48 - 2), "outside"),
    ],
)
def test_non_canonical_sections_are_malformed(what: str, change: object, message: str) -> None:
    f = fields(encode_compact_items(example(), KEYS))
    change(f)  # type: ignore[operator]
    got = refused(pack(f), 5)
    assert message in got, (what, got)


def test_keys_and_signatures() -> None:
    items = example()
    raw = encode_compact_items(items, KEYS)
    ring = {k: v for k, v in RING.items() if v.astronaut != "bob"}
    with pytest.raises(RemoteProtocolError) as e:
        decode_compact_items(raw, 5, ring)
    assert e.value.code is ErrorCode.UNKNOWN_KEY and "enroll" in str(e.value)
    revoked = {k: replace(v, revoked=v.astronaut == "bob") for k, v in RING.items()}
    with pytest.raises(RemoteProtocolError) as e:
        decode_compact_items(raw, 5, revoked)
    assert e.value.code is ErrorCode.REVOKED_KEY
    altered = repack(raw, 8, fields(raw)[8].replace("Hello", "Jello"))  # type: ignore[union-attr]
    assert "alice" in refused(altered, 5, ErrorCode.BAD_SIGNATURE)
    # bob's key claiming alice's items: the rebuilt author is bob, so alice's signature fails.
    f = fields(raw)
    f[1][0][0] = f[1][1][0]  # type: ignore[index]
    f[1][1][0] = key_id(KEYS["alice"].public_key)  # type: ignore[index]
    refused(pack(f), 5, ErrorCode.BAD_SIGNATURE)


def test_text_over_the_limit_is_limit_exceeded_as_in_format_1() -> None:
    big = "x" * (DEFAULT_LIMITS.max_text_bytes + 1)
    raw = encode_compact_items([post("alice", 0, "x")], KEYS)
    f = fields(raw)
    f[7], f[8] = bytes([0x81, 0x80, 0x04]), big
    refused(pack(f), 1, ErrorCode.LIMIT_EXCEEDED)


def test_a_receiver_that_raised_a_limit_reads_format_2_as_it_reads_format_1() -> None:
    raised = replace(DEFAULT_LIMITS, max_alt_bytes=16 * 1024)
    photo = replace(PHOTO, alt="a" * 10 * 1024)  # over the default 8 KiB, under the raised one
    item = Post(
        id=new_ulid(T0, bytes(10)),
        author="alice",
        created_ms=T0,
        text="",
        media=(photo,),
        targets=("archive:alice",),
    )
    item = replace(item, id=derived_id(item, raised))
    raw = encode_compact_items([item], KEYS, raised)
    (v,) = decode_compact_items(raw, 1, RING, raised)
    assert v.item == item
    with pytest.raises(RemoteProtocolError) as e:
        decode_compact_items(raw, 1, RING)
    assert e.value.code is ErrorCode.LIMIT_EXCEEDED


def _corruptions_are_refused(values_at: Callable[[int, int], Iterable[int]]) -> None:
    items = example()[:2] + example()[3:4]  # two astronauts, a photo, a command
    raw = encode_compact_items(items, KEYS)
    assert decode(raw, 3) == items
    for i in range(len(raw)):
        for value in values_at(i, raw[i]):
            if value == raw[i]:
                continue
            bad = raw[:i] + bytes([value]) + raw[i + 1 :]
            with pytest.raises(RemoteProtocolError):
                decode_compact_items(bad, 3, RING)


def test_single_byte_corruptions_are_refused() -> None:
    """Every position, with the values that change type tags, lengths and varint continuation
    bits (every single-bit flip, 0x00, 0xff) plus eight seeded random ones: the exhaustive sweep's
    likeliest failures at a fifteenth of its cost."""
    rng = random.Random(20261202)

    def values(_: int, byte: int) -> list[int]:
        return [byte ^ (1 << b) for b in range(8)] + [0x00, 0xFF] + [rng.randrange(256) for _ in range(8)]

    _corruptions_are_refused(values)


@pytest.mark.slow
def test_every_single_byte_corruption_is_refused() -> None:
    """Exhaustive on a small section: every position, every other byte value."""
    _corruptions_are_refused(lambda _i, _b: range(256))


def test_truncated_and_extended_sections_are_refused() -> None:
    raw = encode_compact_items(example(), KEYS)
    for n in range(len(raw)):
        with pytest.raises(RemoteProtocolError):
            decode_compact_items(raw[:n], 5, RING)
    for extra in (b"\x00", b"\xc0", raw):
        refused(raw + extra, 5)
    for count in (1, 4, 6, 300):
        refused(raw, count)


# -- whole bundles -------------------------------------------------------------------------------


def bundle(items: list[Item], codec: int = Codec.IDENTITY) -> bytes:
    section = CompactItems(raw=encode_compact_items(items, KEYS), count=len(items))
    return build_bundle(bundle_id=new_ulid(T0, b"\x05" * 10), created_ms=T0, items=section, items_codec=codec)


def test_format_2_bundle_verifies_and_every_resealed_flip_is_judged() -> None:
    items = [it for it in example() if not (isinstance(it, Post) and it.media)]
    data = bundle(items)
    assert data[4:6] == b"\x00\x02"
    vb = verify_bundle(data, RING)
    assert [v.item for v in vb.items] == items and vb.header.format_version == 2
    header_end = 18 + vb.header.header_bytes
    # The bundle id and created time are not signed (§6.1): bytes of the header that may change.
    unsigned = range(18 + 1 + 2, 18 + 1 + 2 + 16 + 9)
    for i in range(len(data) - 32):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= mask
            with pytest.raises(RemoteProtocolError) as e:
                verify_bundle(bytes(bad), RING)
            assert e.value.code is ErrorCode.CHECKSUM_MISMATCH or i < 18
            resealed = sx.reseal(bytes(bad))
            if i in unsigned:  # accepted with the same items, or a malformed header
                try:
                    assert [v.item for v in verify_bundle(resealed, RING).items] == items
                except RemoteProtocolError as exc:
                    assert exc.code is ErrorCode.MALFORMED
                continue
            with pytest.raises(RemoteProtocolError):
                verify_bundle(resealed, RING)
            if i >= header_end:
                # In the items section, the code comes from §14.5.
                with pytest.raises(RemoteProtocolError):
                    decode_compact_items(bytes(bad[header_end:-32]), len(items), RING)


def test_duplicate_derived_ids_and_media_in_bundles() -> None:
    a1 = example()[0]
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(bundle([a1, a1]), RING)
    assert e.value.code is ErrorCode.DUPLICATE_ITEM
    photo_post = example()[1]
    with pytest.raises(RemoteProtocolError) as e:
        verify_bundle(bundle([photo_post]), RING)
    assert e.value.code is ErrorCode.MEDIA_MISSING
    assert verify_bundle(bundle([photo_post]), RING, have_blob=lambda _s: True).items[0].item == photo_post


# -- properties --------------------------------------------------------------------------------


@st.composite
def item_batches(draw: st.DrawFn) -> list[Item]:
    """1-12 posts and commands by 1-3 astronauts, times in any order, derived or explicit ids."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True))
    out: list[Item] = []
    for _ in range(draw(st.integers(min_value=1, max_value=12))):
        author = draw(st.sampled_from(names))
        it = draw(st.one_of(sx.posts(author), sx.commands(author)))
        offset_s = draw(st.integers(min_value=-(10**6), max_value=10**6))
        ms = draw(st.sampled_from([0, 0, 0, 1, 999]) | st.integers(min_value=0, max_value=999))
        it = replace(it, created_ms=T0 + 1000 * offset_s + ms)
        if draw(st.booleans()):
            it = with_derived_id(it)
        out.append(it)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item_batches())
def test_round_trip_rebuilds_every_item_and_body(items: list[Item]) -> None:
    raw = encode_compact_items(items, KEYS)
    verified = decode_compact_items(raw, len(items), RING)
    assert [v.item for v in verified] == items
    assert [v.signed.body for v in verified] == [encode_item(it) for it in items]
    assert all(check_signature(v.signed, KEYS[v.astronaut].public_key) for v in verified)
    # Canonical: decoding then encoding again gives the very same bytes.
    assert encode_compact_items([v.item for v in verified], KEYS) == raw
    # The derived ids cost nothing on the wire.
    assert len(fields(raw)[9]) == sum(it.id != derived_id(it) for it in items)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item_batches(), st.data())
def test_mutated_sections_decode_only_to_remote_errors(items: list[Item], data: st.DataObject) -> None:
    raw = bytearray(encode_compact_items(items, KEYS))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        i = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        raw[i] = data.draw(st.integers(min_value=0, max_value=255).filter(lambda v, old=raw[i]: v != old))
    try:
        decoded = decode(bytes(raw), len(items))
    except RemoteProtocolError:
        return
    # Accepted only if the bytes are unchanged after all (two changes that cancel out).
    assert decoded == items and bytes(raw) == encode_compact_items(items, KEYS)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=20))
def test_random_bytes_raise_only_remote_errors(raw: bytes, count: int) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_compact_items(raw, count, RING)


@settings(max_examples=100, deadline=None)
@given(st.lists(sx.msgpack_values, min_size=13, max_size=13), st.integers(min_value=1, max_value=5))
def test_random_structures_raise_only_remote_errors(value: list[object], count: int) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_compact_items(pack(value), count, RING)
