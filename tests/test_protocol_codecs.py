"""Section codecs (docs/PROTOCOL.md §5): exact round trips, bounded output, clear errors."""

from __future__ import annotations

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import RemoteProtocolError
from protocol.codecs import DEFAULT_DECODERS, Codec, bounded_zstd_decode, decode_section, zstd_compress
from protocol.errors import ErrorCode


@settings(deadline=None)
@given(st.binary(max_size=5000))
def test_zstd_round_trip(data: bytes) -> None:
    assert bounded_zstd_decode(zstd_compress(data), len(data)) == data
    assert decode_section(Codec.ZSTD, zstd_compress(data, level=3), len(data), DEFAULT_DECODERS, "s") == data
    assert decode_section(Codec.IDENTITY, data, len(data), DEFAULT_DECODERS, "s") == data


@settings(deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=-3, max_value=10_000))
def test_arbitrary_bytes_decode_or_raise_remote_error(stored: bytes, raw_size: int) -> None:
    for codec in (Codec.IDENTITY, Codec.ZSTD):
        try:
            out = decode_section(codec, stored, raw_size, DEFAULT_DECODERS, "section")
        except RemoteProtocolError:
            continue
        assert len(out) == raw_size


@settings(deadline=None)
@given(st.binary(min_size=1, max_size=2000))
def test_zstd_truncations_refused(data: bytes) -> None:
    frame = zstd_compress(data)
    for n in range(0, len(frame), max(1, len(frame) // 50)):
        with pytest.raises(RemoteProtocolError):
            bounded_zstd_decode(frame[:n], len(data))


def test_decompression_bomb_stops_at_the_declared_size() -> None:
    big = bytes(50_000_000)
    with_size = zstd_compress(big, level=1)
    # A frame without its content size must be streamed, and the stream must stop early.
    without_size = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(big)
    for bomb in (with_size, without_size):
        assert len(bomb) < 100_000  # a few KB that would expand to 50 MB
        with pytest.raises(RemoteProtocolError) as e:
            bounded_zstd_decode(bomb, 1000)
        assert e.value.code is ErrorCode.DECOMPRESSION_BOMB
        assert "beyond its declared 1000 bytes" in str(e.value)


@settings(deadline=None)
@given(st.binary(max_size=2000))
def test_frames_without_content_size(data: bytes) -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False, write_checksum=True).compress(data)
    assert bounded_zstd_decode(frame, len(data)) == data
    for bad in (frame[:-1], frame + b"\x00"):
        with pytest.raises(RemoteProtocolError):
            bounded_zstd_decode(bad, len(data))


@pytest.mark.parametrize("raw_size", [-1, -2, -1000])
def test_negative_declared_size_never_means_unbounded(raw_size: int) -> None:
    # read(-1) reads everything: a negative size must be refused before decompressing.
    with pytest.raises(RemoteProtocolError) as e:
        bounded_zstd_decode(zstd_compress(bytes(1_000_000), level=1), raw_size)
    assert e.value.code is ErrorCode.MALFORMED


def test_short_output_is_an_error() -> None:
    with pytest.raises(RemoteProtocolError, match="decompresses to 3 bytes, header says 4"):
        bounded_zstd_decode(zstd_compress(b"abc"), 4)
    with pytest.raises(RemoteProtocolError, match="differs from its raw size"):
        decode_section(Codec.IDENTITY, b"abc", 4, DEFAULT_DECODERS, "s")


def test_frame_needing_a_dictionary_we_do_not_have() -> None:
    d = zstandard.train_dictionary(2048, [f"sample text {i} from orbit".encode() * 3 for i in range(200)])
    frame = zstandard.ZstdCompressor(dict_data=d).compress(b"sample text 7 from orbit")
    with pytest.raises(RemoteProtocolError) as e:
        bounded_zstd_decode(frame, 24)
    assert e.value.code is ErrorCode.MALFORMED


@pytest.mark.parametrize("codec", [4, 99, 2**32])
def test_unknown_codec(codec: int) -> None:
    with pytest.raises(RemoteProtocolError) as e:
        decode_section(codec, b"x", 1, DEFAULT_DECODERS, "blob abc")
    assert e.value.code is ErrorCode.UNKNOWN_CODEC
    assert f"blob abc uses codec {codec}" in str(e.value)
