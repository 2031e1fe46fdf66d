"""ULIDs: round trips, ordering, and what bad input raises (docs/PROTOCOL.md §3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import LocalProtocolError, RemoteProtocolError
from protocol.errors import ErrorCode
from protocol.ids import new_ulid, ulid_from_bytes, ulid_time_ms, ulid_to_bytes

ms = st.integers(min_value=0, max_value=2**48 - 1)
entropy = st.binary(min_size=10, max_size=10)


def test_known_value() -> None:
    # The all-zero and all-one ids, and one with a known time, pin the alphabet and bit order.
    assert ulid_from_bytes(bytes(16)) == "0" * 26
    assert ulid_from_bytes(b"\xff" * 16) == "7" + "Z" * 25
    # The ULID spec's README: ulid(1469918176385) starts with 01ARYZ6S41.
    assert new_ulid(1469918176385, bytes(10)) == "01ARYZ6S41" + "0" * 16
    assert ulid_time_ms("01ARYZ6S41TSV4RRFFQ69G5FAV") == 1469918176385


@settings(deadline=None)
@given(ms, entropy)
def test_round_trip_and_time(now_ms: int, rnd: bytes) -> None:
    u = new_ulid(now_ms, rnd)
    assert len(u) == 26
    assert ulid_to_bytes(u) == now_ms.to_bytes(6, "big") + rnd
    assert ulid_to_bytes(u.lower()) == ulid_to_bytes(u)
    assert ulid_time_ms(u) == now_ms


@settings(deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_every_16_bytes_round_trip(raw: bytes) -> None:
    assert ulid_to_bytes(ulid_from_bytes(raw)) == raw


@settings(deadline=None)
@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_text_order_is_byte_order(a: bytes, b: bytes) -> None:
    # Sorting ids as text (SQLite, file names) sorts them by creation time.
    assert (ulid_from_bytes(a) < ulid_from_bytes(b)) == (a < b)


@settings(deadline=None)
@given(st.binary().filter(lambda b: len(b) != 16))
def test_wrong_length_bytes_are_remote_errors(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        ulid_from_bytes(raw)
    assert e.value.code is ErrorCode.MALFORMED


@settings(deadline=None)
@given(st.text(max_size=30))
def test_text_decodes_or_raises_local_error(text: str) -> None:
    # ulid_to_bytes parses ids typed by a person (`onboard cancel ID`): a local error.
    try:
        raw = ulid_to_bytes(text)
    except LocalProtocolError:
        return
    assert len(raw) == 16 and ulid_from_bytes(raw) == text.upper()


@pytest.mark.parametrize("bad", ["", "0" * 25, "0" * 27, "8" + "0" * 25, "U" * 26, "0" * 25 + "!"])
def test_bad_ids_named_in_message(bad: str) -> None:
    with pytest.raises(LocalProtocolError, match="not a post id"):
        ulid_to_bytes(bad)


@pytest.mark.parametrize(("now_ms", "rnd"), [(-1, bytes(10)), (2**48, bytes(10)), (0, bytes(9))])
def test_new_ulid_refuses_bad_arguments(now_ms: int, rnd: bytes) -> None:
    with pytest.raises(LocalProtocolError):
        new_ulid(now_ms, rnd)
