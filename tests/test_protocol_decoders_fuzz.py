"""Every decoder in protocol/ that takes a peer's bytes or values, fuzzed structure-aware.

Each module has its own tests; these reach *past* the first checks (a valid signature over a
hostile body, a right version over wrong fields) and assert the one property every decoder
shares: it decodes, or raises RemoteProtocolError — never anything else.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import msgpack_values

from protocol import RemoteProtocolError, SigningKey
from protocol.canonical import pack
from protocol.capabilities import Capabilities
from protocol.dictionary import decode_items
from protocol.keys import key_id
from protocol.rangeset import RangeSet
from protocol.receipts import RECEIPTS_DOMAIN, verify_receipts
from protocol.transfer_wire import decode_request, decode_response

GROUND = SigningKey.from_seed(b"g" * 32)

# Values near the edges the decoders check (sizes, 64-bit ranges, the 16/32-byte ids).
edgy = st.one_of(
    msgpack_values,
    st.sampled_from([0, 1, 2, 3, 16, 17, 18, -1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), True, None]),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=32, max_size=32),
)


def _only_remote_errors(fn: Any, *args: Any, **kw: Any) -> None:
    try:
        fn(*args, **kw)
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 20), st.lists(edgy, max_size=10))
def test_transfer_frames(frame_type: int, fields: list[Any]) -> None:
    data = pack([1, frame_type, 7, *fields])
    _only_remote_errors(decode_request, data)
    _only_remote_errors(decode_response, data)


@settings(max_examples=200, deadline=None)
@given(st.lists(edgy, max_size=4), st.lists(st.lists(edgy, max_size=9), max_size=3))
def test_receipts_with_a_valid_signature_over_a_hostile_body(head: list[Any], entries: list[Any]) -> None:
    # Signed by the pinned key, so decoding gets past the signature check to the body.
    body = pack([*head[:2], entries, *head[2:]])
    doc = pack([body, key_id(GROUND.public_key), GROUND.sign(RECEIPTS_DOMAIN + body)])
    _only_remote_errors(verify_receipts, doc, GROUND.public_key)


@settings(deadline=None)
@given(st.lists(st.integers(0, 10), max_size=3), st.lists(st.lists(edgy, max_size=8), max_size=3))
def test_receipt_entries_shaped_like_real_ones(kinds: list[int], tails: list[list[Any]]) -> None:
    entries = [[k, *t] for k, t in zip(kinds, tails, strict=False)]
    body = pack([1, 1_790_000_000_000, entries])
    doc = pack([body, key_id(GROUND.public_key), GROUND.sign(RECEIPTS_DOMAIN + body)])
    _only_remote_errors(verify_receipts, doc, GROUND.public_key)


@settings(deadline=None)
@given(st.one_of(edgy, st.lists(st.integers(-5, 300), max_size=12)))
def test_rangeset_from_wire(value: Any) -> None:
    _only_remote_errors(RangeSet.from_wire, value, size_bytes=256, max_ranges=4)


@settings(deadline=None)
@given(st.text(max_size=80))
def test_capability_tokens(token: str) -> None:
    _only_remote_errors(Capabilities.from_token, token)


@settings(deadline=None)
@given(st.binary(max_size=200), st.integers(-3, 5000))
def test_dictionary_decoder(stored: bytes, raw_size: int) -> None:
    # Starting from a real frame header makes the fuzz reach the frame walker.
    _only_remote_errors(decode_items, stored, raw_size)
    _only_remote_errors(decode_items, bytes.fromhex("28b52ffd230100706f") + stored, raw_size)
