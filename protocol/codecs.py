"""Section codecs: how the items section and each blob are stored inside a bundle.

Every codec must give back the exact original bytes; the verifier checks the result
against the signed sha256 anyway, so a codec can never change what gets published.
Decoding is always bounded by the declared raw size (decompression-bomb guard).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from enum import IntEnum

import zstandard

from .errors import ErrorCode, RemoteProtocolError


class Codec(IntEnum):
    IDENTITY = 0
    ZSTD = 1
    ZSTD_DICT = 2  # zstd with the shipped text dictionary (docs/PROTOCOL.md §5)
    JPEG_XL = 3  # lossless JPEG transcode, rebuilt bit-exact on ground


# A decoder takes the stored bytes and the declared raw size and returns the raw bytes.
Decoder = Callable[[bytes, int], bytes]


def zstd_compress(data: bytes, level: int = 19) -> bytes:
    """One zstd frame with its content size and checksum recorded."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True).compress(data)


def bounded_zstd_decode(
    stored: bytes, raw_size: int, dict_data: zstandard.ZstdCompressionDict | None = None
) -> bytes:
    """Decompress at most ``raw_size`` bytes; more, or fewer, is a protocol error."""
    dctx = zstandard.ZstdDecompressor(dict_data=dict_data) if dict_data else zstandard.ZstdDecompressor()
    try:
        with dctx.stream_reader(io.BytesIO(stored), read_across_frames=False) as reader:
            out = reader.read(raw_size + 1)
    except zstandard.ZstdError as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"zstd data is corrupt: {exc}") from exc
    if len(out) > raw_size:
        raise RemoteProtocolError(
            ErrorCode.DECOMPRESSION_BOMB,
            f"section decompresses beyond its declared {raw_size} bytes (decompression bomb?)",
        )
    if len(out) < raw_size:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"section decompresses to {len(out)} bytes, header says {raw_size}"
        )
    return out


def _identity(stored: bytes, raw_size: int) -> bytes:
    if len(stored) != raw_size:
        raise RemoteProtocolError(ErrorCode.MALFORMED, "uncompressed section size differs from its raw size")
    return bytes(stored)


DEFAULT_DECODERS: Mapping[int, Decoder] = {
    Codec.IDENTITY: _identity,
    Codec.ZSTD: bounded_zstd_decode,
}


def decode_section(
    codec: int, stored: bytes, raw_size: int, decoders: Mapping[int, Decoder], what: str
) -> bytes:
    """Decode one section with the decoder registered for ``codec``."""
    decoder = decoders.get(codec)
    if decoder is None:
        raise RemoteProtocolError(
            ErrorCode.UNKNOWN_CODEC, f"{what} uses codec {codec}, which this side cannot decode"
        )
    return decoder(stored, raw_size)
