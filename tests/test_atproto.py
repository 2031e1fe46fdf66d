"""Pure AT Protocol helpers: record keys (TIDs) from post ids, facets by UTF-8 byte offsets,
aspect ratio from the photo header, the post record."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ground.platforms.atproto import (
    TID_RE,
    aspect_ratio,
    datetime_ms,
    facets,
    find_spans,
    post_record,
    tid_for_post,
    tid_from_int,
)
from protocol.ids import new_ulid

ulids = st.builds(
    new_ulid, st.integers(min_value=0, max_value=2**48 - 1), st.binary(min_size=10, max_size=10)
)


@given(ulids)
def test_tid_is_valid_and_deterministic(post_id: str) -> None:
    tid = tid_for_post(post_id)
    assert TID_RE.match(tid), tid
    assert tid == tid_for_post(post_id) == tid_for_post(post_id.lower())


@given(st.integers(min_value=0, max_value=2**63 - 1), st.integers(min_value=0, max_value=2**63 - 1))
def test_tid_encoding_sorts_like_its_value(a: int, b: int) -> None:
    ta, tb = tid_from_int(a), tid_from_int(b)
    assert len(ta) == 13 and TID_RE.match(ta)
    assert (ta < tb) == (a < b) and (ta == tb) == (a == b)


def test_tid_keeps_the_post_time() -> None:
    # 2026-11-27T00:00:00Z; the TID's microseconds start with the post's milliseconds.
    ms = 1_795_737_600_000
    a, b = new_ulid(ms, b"\x00" * 10), new_ulid(ms + 1, b"\x00" * 10)
    assert tid_for_post(a) < tid_for_post(b)
    assert datetime_ms(ms) == "2026-11-27T00:00:00.000Z" and datetime_ms(ms + 7) == "2026-11-27T00:00:00.007Z"


def test_facets_use_utf8_byte_offsets() -> None:
    text = "Café 👩‍🚀 @bob.test → https://example.org/x?y=1. #Orbit #日本 #123 mail@x.org"
    raw = text.encode()
    spans = find_spans(text)
    got = [(s.kind, raw[s.byte_start : s.byte_end].decode(), s.value) for s in spans]
    assert got == [
        ("mention", "@bob.test", "bob.test"),
        ("link", "https://example.org/x?y=1", "https://example.org/x?y=1"),
        ("tag", "#Orbit", "Orbit"),
        ("tag", "#日本", "日本"),
    ]
    fs = facets(spans, {"bob.test": "did:plc:bob"})
    assert fs[0] == {
        "index": {"byteStart": spans[0].byte_start, "byteEnd": spans[0].byte_end},
        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": "did:plc:bob"}],
    }
    # An unresolved handle is left as plain text, never altered.
    assert [f["features"][0]["$type"] for f in facets(spans, {})] == [
        "app.bsky.richtext.facet#link",
        "app.bsky.richtext.facet#tag",
        "app.bsky.richtext.facet#tag",
    ]


def test_a_fragment_inside_a_link_is_not_a_hashtag() -> None:
    spans = find_spans("see https://example.org/page#section now")
    assert [s.kind for s in spans] == ["link"]


@given(st.text(max_size=200))
def test_spans_always_slice_valid_utf8_inside_the_text(text: str) -> None:
    raw = text.encode("utf-8", "surrogatepass")
    last_end = 0
    for s in find_spans(text):
        assert last_end <= s.byte_start < s.byte_end <= len(raw)
        piece = raw[s.byte_start : s.byte_end].decode("utf-8", "surrogatepass")
        assert piece in text
        last_end = s.byte_end


def test_aspect_ratio_from_header_with_exif_rotation(sample_jpegs: list[Path]) -> None:
    data = sample_jpegs[0].read_bytes()
    w, h = Image.open(io.BytesIO(data)).size
    assert aspect_ratio(data) == {"width": w, "height": h}
    buf = io.BytesIO()
    img = Image.new("RGB", (40, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotated 90° clockwise: displayed 10 × 40
    img.save(buf, "JPEG", exif=exif)
    assert aspect_ratio(buf.getvalue()) == {"width": 10, "height": 40}
    assert aspect_ratio(b"not an image") is None


def test_post_record_shape() -> None:
    blob = {"$type": "blob", "ref": {"$link": "bafk"}, "mimeType": "image/jpeg", "size": 3}
    rec = post_record("hi", 0, facet_list=[], images=[(blob, "alt", {"width": 2, "height": 1})])
    assert rec == {
        "$type": "app.bsky.feed.post",
        "text": "hi",
        "createdAt": "1970-01-01T00:00:00.000Z",
        "embed": {
            "$type": "app.bsky.embed.images",
            "images": [{"alt": "alt", "image": blob, "aspectRatio": {"width": 2, "height": 1}}],
        },
    }
