"""Varints of bundle format 2's columns (protocol/varints.py, docs/PROTOCOL.md §14.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import RemoteProtocolError
from protocol.varints import read_varints, varint, zigzag_varint

UNSIGNED = st.integers(min_value=0, max_value=2**56 - 1)
SIGNED = st.integers(min_value=-(2**55), max_value=2**55 - 1)


@pytest.mark.parametrize(
    ("value", "encoded"), [(0, "00"), (21, "15"), (127, "7f"), (128, "8001"), (300, "ac02")]
)
def test_documented_examples(value: int, encoded: str) -> None:
    assert varint(value).hex() == encoded
    assert read_varints(bytes.fromhex(encoded), 1, "x") == [value]


@given(st.lists(UNSIGNED, max_size=20))
def test_unsigned_round_trip(values: list[int]) -> None:
    assert read_varints(b"".join(varint(v) for v in values), len(values), "x") == values


@given(st.lists(SIGNED, max_size=20))
def test_zigzag_round_trip(values: list[int]) -> None:
    data = b"".join(zigzag_varint(v) for v in values)
    assert read_varints(data, len(values), "x", signed=True) == values


@given(st.binary(max_size=24), st.integers(min_value=0, max_value=6))
def test_any_bytes_decode_or_raise_remote_protocol_error(data: bytes, count: int) -> None:
    try:
        out = read_varints(data, count, "x")
    except RemoteProtocolError:
        return
    assert b"".join(varint(v) for v in out) == data  # whatever decodes has exactly this one form


@pytest.mark.parametrize(
    ("data", "count", "words"),
    [
        ("8000", 1, "shortest form"),
        ("8100", 1, "shortest form"),
        ("80", 1, "ends inside entry 0"),
        ("0000", 1, "1 bytes after its 1 entries"),
        ("ffffffffffffffff01", 1, "longer than 8 bytes"),
        ("", 1, "ends inside entry 0"),
    ],
)
def test_refused(data: str, count: int, words: str) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        read_varints(bytes.fromhex(data), count, "x")
    assert words in str(e.value)
