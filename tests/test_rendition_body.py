"""Body version 2: the signed rendition consent (docs/PROTOCOL.md §3.1).

Properties: every post with a consent round-trips through body version 2 and back; a post
without one is still written as version 1, byte for byte as before; every refusal is the
protocol's remote error with its own code, never anything else.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import msgpack_values, posts, rendition_posts

from protocol import LocalProtocolError, Post, RemoteProtocolError, SigningKey
from protocol.canonical import pack, unpack
from protocol.capabilities import Capabilities
from protocol.compact_items import decode_compact_items, encode_compact_items
from protocol.errors import ErrorCode
from protocol.ids import new_ulid, ulid_to_bytes
from protocol.keys import KnownKey, key_id
from protocol.model import (
    BODY_VERSION,
    BODY_VERSION_RENDITIONS,
    Cancel,
    check_item,
    decode_item,
    derived_id,
    encode_item,
    with_derived_id,
)
from protocol.receipts import PublicationReceipt, RenditionNote, sign_receipts, verify_receipts

ID = new_ulid(1_790_000_000_000, bytes(10))
RAW_ID = ulid_to_bytes(ID)


def post(**kw: object) -> Post:
    fields: dict[str, object] = {
        "id": ID,
        "author": "alice",
        "created_ms": 1_790_000_000_000,
        "text": "hi",
        "targets": ("x:alice", "bluesky:alice.test"),
    }
    fields.update(kw)
    return Post(**fields)  # type: ignore[arg-type]


@settings(deadline=None)
@given(rendition_posts())
def test_round_trip_v2(p: Post) -> None:
    body = encode_item(p)
    assert unpack(body, what="body", max_bytes=10**6)[0] == BODY_VERSION_RENDITIONS
    back = decode_item(body)
    assert back == p
    assert encode_item(back) == body


@settings(deadline=None)
@given(posts())
def test_no_consent_stays_version_1(p: Post) -> None:
    # The default: the exact 9-field body of before, so old vectors and derived ids hold.
    fields = unpack(encode_item(p), what="body", max_bytes=10**6)
    assert fields[0] == BODY_VERSION == 1
    assert len(fields) == 9


@settings(deadline=None)
@given(rendition_posts())
def test_consent_changes_the_derived_id(p: Post) -> None:
    # The consent is signed content: the same post without it is another post.
    assert derived_id(p) != derived_id(replace(p, renditions=()))


def test_known_v2_bytes() -> None:
    body = encode_item(post(renditions=("x:alice",)))
    assert body == pack(
        [
            2,
            1,
            RAW_ID,
            "alice",
            1_790_000_000_000,
            "hi",
            [],
            ["x:alice", "bluesky:alice.test"],
            None,
            ["x:alice"],
        ]
    )
    assert body[:3] == bytes([0x9A, 0x02, 0x01])  # array of 10, version 2, kind post


V2 = [2, 1, RAW_ID, "alice", 1, "hi", [], ["x:alice", "bluesky:alice.test"], None, ["x:alice"]]


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ([*V2[:9], ["mastodon:alice"]], ErrorCode.RENDITION_NOT_A_TARGET, "not one of the post's targets"),
        ([*V2[:9], ["x:Alice"]], ErrorCode.RENDITION_NOT_A_TARGET, "'x:Alice'"),
        ([*V2[:9], ["x:alice", "x:alice"]], ErrorCode.RENDITION_DUPLICATE, "twice"),
        ([*V2[:9], []], ErrorCode.MALFORMED, "write it as version 1"),
        ([*V2[:9], "x:alice"], ErrorCode.MALFORMED, "rendition list"),
        ([*V2[:9], [b"x:alice"]], ErrorCode.MALFORMED, "rendition target"),
        ([*V2[:9], [7]], ErrorCode.MALFORMED, "rendition target"),
        ([*V2[:9], None], ErrorCode.MALFORMED, "rendition list"),
        (V2[:9], ErrorCode.MALFORMED, "version-2 post body"),
        ([*V2, []], ErrorCode.MALFORMED, "version-2 post body"),
        ([1, *V2[1:]], ErrorCode.MALFORMED, "version-1 post body"),
        ([3, *V2[1:]], ErrorCode.UNSUPPORTED_VERSION, "item body version 3 is not supported"),
        ([2, 2, RAW_ID, "alice", 1, RAW_ID], ErrorCode.MALFORMED, "command body is version 1"),
    ],
)
def test_bad_v2_bodies(fields: list[object], code: ErrorCode, words: str) -> None:
    with pytest.raises(RemoteProtocolError) as err:
        decode_item(pack(fields))
    assert err.value.code == code
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("renditions", "words"),
    [(("mastodon:alice",), "not one of the post's targets"), (("x:alice", "x:alice"), "twice")],
)
def test_encoder_refuses_what_the_decoder_would(renditions: tuple[str, ...], words: str) -> None:
    with pytest.raises(LocalProtocolError, match=words):
        check_item(post(renditions=renditions))
    with pytest.raises(LocalProtocolError, match=words):
        encode_item(post(renditions=renditions))


@settings(deadline=None)
@given(rendition_posts(), msgpack_values)
def test_any_rendition_list_decodes_or_raises_remote_error(p: Post, value: object) -> None:
    fields = unpack(encode_item(p), what="body", max_bytes=10**6)
    fields[9] = value
    try:
        back = decode_item(pack(fields))
    except RemoteProtocolError:
        return
    assert isinstance(back, Post) and back.renditions and set(back.renditions) <= set(back.targets)


@settings(deadline=None)
@given(rendition_posts(), st.text(min_size=1, max_size=20))
def test_a_foreign_target_is_always_refused(p: Post, foreign: str) -> None:
    stranger = f"zz{foreign}:nobody"
    fields = unpack(encode_item(p), what="body", max_bytes=10**6)
    fields[9] = [*fields[9], stranger]
    with pytest.raises(RemoteProtocolError) as err:
        decode_item(pack(fields))
    assert err.value.code in (ErrorCode.RENDITION_NOT_A_TARGET, ErrorCode.MALFORMED, ErrorCode.LIMIT_EXCEEDED)
    if stranger not in p.targets and len(fields[9]) <= 64:
        assert err.value.code == ErrorCode.RENDITION_NOT_A_TARGET


def test_commands_are_never_version_2() -> None:
    body = encode_item(Cancel(id=ID, author="alice", created_ms=5, target_id=ID))
    assert body[1] == 1


def test_formats_2_and_3_carry_a_consent_in_their_15th_field() -> None:
    # The list travels in the rendition field (§14.8), never dropped: the rebuilt body is the
    # signed version-2 body. More in tests/test_rendition_compact.py.
    key = SigningKey.from_seed(bytes(32))
    it = with_derived_id(post(renditions=("x:alice",)))
    ring = {key_id(key.public_key): KnownKey(astronaut="alice", public_key=key.public_key, revoked=False)}
    for fmt in (2, 3):
        raw = encode_compact_items([it], {"alice": key}, format_version=fmt)
        (got,) = decode_compact_items(raw, 1, ring, format_version=fmt)
        assert got.item == it and got.signed.body == encode_item(it)


def test_capability_token_carries_body_versions() -> None:
    caps = Capabilities(codecs=frozenset({0, 1}), bodies=frozenset({1, 2}))
    assert caps.to_token() == "codecs=0,1;dicts=;formats=1;bodies=1,2"
    assert Capabilities.from_token(caps.to_token()) == caps
    assert caps.reads_body(2)
    old = Capabilities.from_token("codecs=0,1;dicts=;formats=1,2")
    assert old.bodies == {1} and not old.reads_body(2)
    # A ground that says nothing new writes the token of before.
    assert Capabilities(codecs=frozenset({0, 1})).to_token() == "codecs=0,1;dicts=;formats=1"
    with pytest.raises(RemoteProtocolError, match="body version"):
        Capabilities.from_token("codecs=0,1;bodies=two")


# -- the publication receipt's renditions (docs/PROTOCOL.md §9.2) ------------------------------

notes = st.builds(
    RenditionNote,
    photo=st.integers(min_value=1, max_value=16),
    original_sha256=st.binary(min_size=32, max_size=32),
    sha256=st.binary(min_size=32, max_size=32),
    recipe=st.sampled_from(["rendition/v1", "rendition/v2"]),
    width=st.integers(min_value=1, max_value=2**40),
    height=st.integers(min_value=1, max_value=2**40),
)
GROUND = SigningKey.from_seed(bytes(range(32)))


def receipt(renditions: tuple[RenditionNote, ...]) -> PublicationReceipt:
    return PublicationReceipt(
        item_id=ID, account="x:alice", state="published", url="https://x.com/a/status/1", error=None,
        seq=7, remote_id="1", renditions=renditions,
    )  # fmt: skip


@settings(deadline=None)
@given(st.lists(notes, min_size=0, max_size=16))
def test_receipt_renditions_round_trip(made: list[RenditionNote]) -> None:
    doc = verify_receipts(sign_receipts(GROUND, 1, [receipt(tuple(made))]), GROUND.public_key)
    assert doc.receipts == (receipt(tuple(made)),)


def test_receipt_without_renditions_is_the_8_field_entry_of_before() -> None:
    doc = sign_receipts(GROUND, 1, [receipt(())])
    body = unpack(unpack(doc, what="doc", max_bytes=10**6)[0], what="body", max_bytes=10**6)
    assert len(body[2][0]) == 8


@pytest.mark.parametrize(
    "bad",
    [
        [],  # present means at least one
        [[0, bytes(32), bytes(32), "rendition/v1", 1, 1]],  # photo numbers start at 1
        [[1, bytes(31), bytes(32), "rendition/v1", 1, 1]],
        [[1, bytes(32), bytes(32), "rendition/v1", 0, 1]],
        [[1, bytes(32), bytes(32), 7, 1, 1]],
        [[1, bytes(32), bytes(32), "rendition/v1", 1]],
    ],
)
def test_bad_receipt_renditions_are_malformed(bad: list[object]) -> None:
    from protocol.canonical import pack as pk
    from protocol.keys import key_id
    from protocol.receipts import RECEIPTS_DOMAIN

    entry = [1, RAW_ID, "x:alice", "published", None, None, 7, None, bad]
    body = pk([2, 1, [entry]])
    doc = pk([body, key_id(GROUND.public_key), GROUND.sign(RECEIPTS_DOMAIN + body)])
    with pytest.raises(RemoteProtocolError) as err:
        verify_receipts(doc, GROUND.public_key)
    assert err.value.code == ErrorCode.MALFORMED
