"""ground/decoded.py: what accepting decoded, publishing reuses — only for the very same bytes."""

from __future__ import annotations

import pytest
from publish_support import make_post

import ground.decoded as decoded
from protocol import SigningKey, decode_item, sign_item
from protocol.batch_tree import BatchInclusion


def test_a_remembered_body_gives_its_item_once_then_decodes_again(alice_key: SigningKey) -> None:
    post, _ = make_post("kept ✓", ["archive:alice"])
    body = sign_item(alice_key, post).body
    decoded.remember(body, post, None, None)
    assert decoded.item(body) is post
    again = decoded.item(body)  # used: dropped from the memo, decoded from the bytes
    assert again == post and again is not post
    other, _ = make_post("another", ["archive:alice"])
    assert (
        decoded.item(sign_item(alice_key, other).body)
        == other
        == decode_item(sign_item(alice_key, other).body)
    )


def test_the_memo_is_bounded_by_bytes(alice_key: SigningKey, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decoded, "MAX_BODY_BYTES", 1000)
    posts = [make_post(f"post {i} " + "x" * 200, ["archive:alice"])[0] for i in range(10)]
    bodies = [sign_item(alice_key, p).body for p in posts]
    for b, p in zip(bodies, posts, strict=True):
        decoded.remember(b, p, None, None)
    assert sum(len(b) for b in decoded._items) <= 1000
    assert [decoded.item(b) for b in bodies] == posts  # forgotten ones are decoded


def test_a_proof_is_the_parse_of_its_bytes(alice_key: SigningKey) -> None:
    post, _ = make_post("with a proof", ["archive:alice"])
    body = sign_item(alice_key, post).body
    inc = BatchInclusion.make(5, 2, [bytes(32), b"\x01" * 32, b"\x02" * 32])
    raw = inc.to_bytes()
    decoded.remember(body, post, raw, inc)
    assert decoded.inclusion(raw) is inc
    assert decoded.inclusion(raw) == inc  # parsed again from the bytes
    assert decoded.item(body) is post
