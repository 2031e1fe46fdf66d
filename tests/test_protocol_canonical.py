"""Canonical msgpack (docs/PROTOCOL.md §2): one byte form per value, everything else refused."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import msgpack_values

from protocol import RemoteProtocolError
from protocol.canonical import expect, expect_list, pack, unpack
from protocol.errors import ErrorCode

BIG = 10**6


@settings(deadline=None)
@given(msgpack_values)
def test_round_trip(value: object) -> None:
    data = pack(value)
    assert unpack(data, what="v", max_bytes=BIG) == value
    assert pack(unpack(data, what="v", max_bytes=BIG)) == data


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_remote_error(data: bytes) -> None:
    try:
        value = unpack(data, what="v", max_bytes=BIG)
    except RemoteProtocolError as exc:
        assert exc.code in (ErrorCode.MALFORMED, ErrorCode.LIMIT_EXCEEDED)
        return
    assert pack(value) == data  # whatever decodes is canonical


@settings(deadline=None)
@given(msgpack_values, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_refused(value: object, extra: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="trailing bytes|not valid|not in canonical"):
        unpack(pack(value) + extra, what="v", max_bytes=BIG)


@settings(deadline=None)
@given(msgpack_values)
def test_every_truncation_refused(value: object) -> None:
    data = pack(value)
    for n in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            unpack(data[:n], what="v", max_bytes=BIG)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"\xcc\x01", "1 as uint8 instead of fixint"),
        (b"\xcd\x00\x01", "1 as uint16"),
        (b"\xd0\x01", "1 as int8"),
        (b"\xd9\x01a", "'a' as str8 instead of fixstr"),
        (b"\xc5\x00\x01a", "b'a' as bin16 instead of bin8"),
        (b"\xdc\x00\x01\xc0", "[None] as array16"),
        (b"\xca" + struct.pack(">f", 1.5), "1.5 as float32"),
        (b"\x82\xa1a\x01\xa1a\x02", "map with a duplicate key"),
        (b"\xa1\xff", "invalid UTF-8 in a str"),
        (b"\x81\x01\x02", "non-string map key"),
        (b"\xc1", "never-used type byte"),
        (b"\x91" * 2000 + b"\xc0", "nesting deeper than the decoder's stack"),
    ],
)
def test_non_canonical_forms_refused(data: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        unpack(data, what="thing", max_bytes=BIG)
    assert e.value.code is ErrorCode.MALFORMED, why
    assert str(e.value).startswith("thing ")


def test_size_limit_checked_before_decoding() -> None:
    with pytest.raises(RemoteProtocolError) as e:
        unpack(pack(b"x" * 100), what="header", max_bytes=50)
    assert e.value.code is ErrorCode.LIMIT_EXCEEDED
    assert "header is 102 bytes, limit 50" in str(e.value)


def test_nan_is_canonical_too() -> None:
    assert math.isnan(unpack(pack(float("nan")), what="v", max_bytes=BIG))


@settings(deadline=None)
@given(msgpack_values)
def test_expect_helpers_raise_only_remote_errors(value: object) -> None:
    for kind in (int, str, bytes, list, bool):
        try:
            expect(value, kind, what="field")
        except RemoteProtocolError:
            pass
    try:
        expect_list(value, what="field", min_len=1, max_len=3)
    except RemoteProtocolError:
        pass


def test_bool_is_not_an_int() -> None:
    with pytest.raises(RemoteProtocolError, match="must not be a boolean"):
        expect(True, int, what="size")
