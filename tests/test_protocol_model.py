"""Item bodies (docs/PROTOCOL.md §3): Post/Cancel/Retract round trips and hostile bodies."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import TRICKY_TEXT, items, msgpack_values, posts

from protocol import Cancel, LocalProtocolError, MediaRef, Post, RemoteProtocolError, Retract
from protocol.canonical import pack
from protocol.errors import ErrorCode
from protocol.ids import new_ulid, ulid_to_bytes
from protocol.limits import Limits
from protocol.model import BODY_VERSION, MAX_TIME_MS, check_item, decode_item, encode_item

ID = new_ulid(1_790_000_000_000, bytes(10))
TARGET = new_ulid(1_790_000_000_001, bytes(10))


def post(**kw: object) -> Post:
    fields: dict[str, object] = {
        "id": ID,
        "author": "alice",
        "created_ms": 1_790_000_000_000,
        "text": "hello",
        "targets": ("archive:alice",),
    }
    fields.update(kw)
    return Post(**fields)  # type: ignore[arg-type]


@settings(deadline=None)
@given(items())
def test_round_trip(item: Post | Cancel | Retract) -> None:
    body = encode_item(item)
    assert decode_item(body) == item
    assert encode_item(decode_item(body)) == body


@pytest.mark.parametrize("text", TRICKY_TEXT)
def test_text_is_carried_byte_exact(text: str) -> None:
    # No normalisation anywhere: NFD stays NFD, CRLF stays CRLF, a BOM stays.
    back = decode_item(encode_item(post(text=text)))
    assert isinstance(back, Post)
    assert back.text.encode() == text.encode()


def test_nfc_and_nfd_are_different_posts() -> None:
    nfd = unicodedata.normalize("NFD", "Café")
    nfc = unicodedata.normalize("NFC", "Café")
    assert encode_item(post(text=nfd)) != encode_item(post(text=nfc))


def test_known_body_bytes() -> None:
    # The exact layout: [version, kind, id, author, created_ms, text, media, targets, publish_at].
    body = encode_item(post(text="hi"))
    assert body == pack(
        [1, 1, ulid_to_bytes(ID), "alice", 1_790_000_000_000, "hi", [], ["archive:alice"], None]
    )
    assert body.hex() == (
        "990101c410"
        + ulid_to_bytes(ID).hex()
        + "a5616c696365cf000001a0c4506c00a26869"
        + "9091ad617263686976653a616c696365c0"
    )
    cancel = encode_item(Cancel(id=ID, author="alice", created_ms=5, target_id=TARGET))
    assert cancel == pack([1, 2, ulid_to_bytes(ID), "alice", 5, ulid_to_bytes(TARGET)])


@settings(deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_remote_error(data: bytes) -> None:
    try:
        decode_item(data)
    except RemoteProtocolError:
        pass


@settings(deadline=None)
@given(st.lists(msgpack_values, max_size=10))
def test_arbitrary_arrays_decode_or_raise_remote_error(fields: list[object]) -> None:
    try:
        decode_item(pack(fields))
    except RemoteProtocolError:
        pass


@settings(deadline=None)
@given(posts(), st.integers(min_value=0, max_value=8), msgpack_values)
def test_any_field_replaced_decodes_or_raises_remote_error(p: Post, index: int, value: object) -> None:
    from protocol.canonical import unpack

    fields = unpack(encode_item(p), what="body", max_bytes=10**6)
    fields[index] = value
    try:
        decode_item(pack(fields))
    except RemoteProtocolError:
        pass


@settings(deadline=None)
@given(items())
def test_every_truncation_refused(item: Post | Cancel | Retract) -> None:
    body = encode_item(item)
    for n in range(len(body)):
        with pytest.raises(RemoteProtocolError):
            decode_item(body[:n])


@settings(deadline=None)
@given(items(), st.binary(min_size=1, max_size=5))
def test_trailing_garbage_refused(item: Post | Cancel | Retract, extra: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_item(encode_item(item) + extra)


def body(*fields: object) -> bytes:
    return pack(list(fields))


RAW_ID = ulid_to_bytes(ID)
GOOD = [BODY_VERSION, 1, RAW_ID, "alice", 1, "hi", [], ["archive:alice"], None]


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ([3, *GOOD[1:]], ErrorCode.UNSUPPORTED_VERSION, "item body version 3 is not supported"),
        ([1, 9, *GOOD[2:]], ErrorCode.MALFORMED, "unknown item kind 9"),
        ([*GOOD[:2], b"short", *GOOD[3:]], ErrorCode.MALFORMED, "item id must be 16 bytes"),
        ([*GOOD[:3], "", *GOOD[4:]], ErrorCode.MALFORMED, "author name"),
        ([*GOOD[:4], -1, *GOOD[5:]], ErrorCode.MALFORMED, "created time -1"),
        ([*GOOD[:4], MAX_TIME_MS + 1, *GOOD[5:]], ErrorCode.MALFORMED, "created time"),
        ([*GOOD[:5], "", [], *GOOD[7:]], ErrorCode.MALFORMED, "neither text nor media"),
        ([*GOOD[:7], [], None], ErrorCode.MALFORMED, "target list"),
        ([*GOOD[:7], ["nocolon"], None], ErrorCode.MALFORMED, "platform:account"),
        ([*GOOD[:8], 2**64 - 1], ErrorCode.MALFORMED, "publish time"),
        ([*GOOD[:8], "soon"], ErrorCode.MALFORMED, "publish time"),
        ([*GOOD, None], ErrorCode.MALFORMED, "post body"),
        (GOOD[:8], ErrorCode.MALFORMED, "post body"),
        ([*GOOD[:6], [[b"x" * 32, 10, "text/html", ""]], *GOOD[7:]], ErrorCode.MALFORMED, "media type"),
        ([*GOOD[:6], [[b"x" * 31, 10, "image/png", ""]], *GOOD[7:]], ErrorCode.MALFORMED, "sha256"),
        ([*GOOD[:6], [[b"x" * 32, 0, "image/png", ""]], *GOOD[7:]], ErrorCode.LIMIT_EXCEEDED, "media size 0"),
        ([*GOOD[:6], [[b"x" * 32, True, "image/png", ""]], *GOOD[7:]], ErrorCode.MALFORMED, "boolean"),
        ([1, 2, RAW_ID, "alice", 1], ErrorCode.MALFORMED, "command body"),
        ([1, 3, RAW_ID, "alice", 1, b"x"], ErrorCode.MALFORMED, "command target id"),
        (["1", *GOOD[1:]], ErrorCode.MALFORMED, "item version"),
        (GOOD[:4], ErrorCode.MALFORMED, "item body must be an array"),
    ],
)
def test_bad_bodies_get_specific_errors(fields: list[object], code: ErrorCode, words: str) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        decode_item(pack(fields))
    assert e.value.code is code
    assert words in str(e.value)


def test_limits_are_enforced_when_decoding() -> None:
    small = Limits(max_text_bytes=4, max_media_per_post=1, max_targets_per_post=1, max_alt_bytes=2)
    with pytest.raises(RemoteProtocolError, match="text exceeds 4 bytes"):
        decode_item(encode_item(post(text="hello")), small)
    m = MediaRef(sha256=bytes(32), size_bytes=5, media_type="image/png", alt="abc")
    with pytest.raises(RemoteProtocolError, match="alt text exceeds 2 bytes"):
        decode_item(encode_item(post(text="", media=(m,))), small)
    m = MediaRef(sha256=bytes(32), size_bytes=5, media_type="image/png")
    with pytest.raises(RemoteProtocolError, match="media list"):
        decode_item(encode_item(post(text="", media=(m, m))), small)
    with pytest.raises(RemoteProtocolError, match="target list"):
        decode_item(encode_item(post(text="", media=(m,), targets=("a:b", "a:c"))), small)


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"text": "", "media": ()}, "needs text or at least one photo"),
        ({"targets": ()}, "at least one target"),
        ({"targets": ("nocolon",)}, "platform:account"),
        ({"author": ""}, "author name"),
        ({"created_ms": -1}, "created time"),
        ({"created_ms": 2**64}, "created time"),
        ({"publish_at_ms": 2**63}, "publish time"),
        ({"text": "bad \udcff byte"}, "post text is not valid Unicode"),
        ({"targets": ("archive:\ud800",)}, "target is not valid Unicode"),
        ({"id": "not-an-id"}, "not a post id"),
        ({"media": (MediaRef(sha256=b"x", size_bytes=1, media_type="image/png"),)}, "sha256 must be 32"),
        ({"media": (MediaRef(sha256=bytes(32), size_bytes=0, media_type="image/png"),)}, "photo is 0 bytes"),
        ({"media": (MediaRef(sha256=bytes(32), size_bytes=1, media_type="text/plain"),)}, "media type"),
        (
            {"media": (MediaRef(sha256=bytes(32), size_bytes=1, media_type="image/png", alt="\udc80"),)},
            "alt text is not valid Unicode",
        ),
    ],
)
def test_encoding_an_impossible_post_is_a_local_error(kw: dict[str, object], words: str) -> None:
    with pytest.raises(LocalProtocolError, match=words):
        encode_item(post(**kw))


def test_command_with_bad_target_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="not a post id"):
        encode_item(Retract(id=ID, author="alice", created_ms=1, target_id="nope"))
    with pytest.raises(LocalProtocolError, match="author name"):
        check_item(Cancel(id=ID, author="\udcff", created_ms=1, target_id=TARGET))
