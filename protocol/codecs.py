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
    LEPTON = 4  # Lepton lossless JPEG recompression, rebuilt bit-exact on ground (§10.5)


# A decoder takes the stored bytes and the declared raw size and returns the raw bytes.
Decoder = Callable[[bytes, int], bytes]


def zstd_compress(data: bytes, level: int = 19) -> bytes:
    """One zstd frame with its content size and checksum recorded."""
    return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True).compress(data)


def bounded_zstd_decode(
    stored: bytes, raw_size: int, dict_data: zstandard.ZstdCompressionDict | None = None
) -> bytes:
    """Decompress exactly one whole zstd frame of ``raw_size`` bytes; anything else is a protocol error.

    Never produces more than ``raw_size`` bytes; a truncated frame, a bad checksum or bytes
    after the frame are refused so each section has one stored form.
    """
    if raw_size < 0:
        # read(-1) would mean "read everything": an unbounded decompression.
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"section declares a negative raw size {raw_size}")
    dctx = zstandard.ZstdDecompressor(dict_data=dict_data) if dict_data else zstandard.ZstdDecompressor()
    try:
        declared = zstandard.get_frame_parameters(stored).content_size
    except zstandard.ZstdError as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"zstd data is corrupt: {exc}") from exc
    if declared == zstandard.CONTENTSIZE_UNKNOWN:
        # No size in the frame: stream at most raw_size + 1 bytes to tell a bomb from a short frame.
        try:
            with dctx.stream_reader(io.BytesIO(stored), read_across_frames=False) as reader:
                out = reader.read(raw_size + 1)
        except zstandard.ZstdError as exc:
            raise RemoteProtocolError(ErrorCode.MALFORMED, f"zstd data is corrupt: {exc}") from exc
        declared = len(out)
    if declared > raw_size:
        raise RemoteProtocolError(
            ErrorCode.DECOMPRESSION_BOMB,
            f"section decompresses beyond its declared {raw_size} bytes (decompression bomb?)",
        )
    if declared < raw_size:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"section decompresses to {declared} bytes, header says {raw_size}"
        )
    # Bounded: the frame's own size (or what we streamed) is raw_size at most.
    return exactly(
        raw_size, lambda: dctx.decompress(stored, max_output_size=max(raw_size, 1), allow_extra_data=False)
    )


def exactly(raw_size: int, decompress: Callable[[], bytes]) -> bytes:
    """What ``decompress()`` (a bounded zstd call) gives, which must be ``raw_size`` bytes.

    Raises RemoteProtocolError MALFORMED for corrupt zstd data or any other size.
    """
    try:
        out = decompress()
    except zstandard.ZstdError as exc:
        raise RemoteProtocolError(ErrorCode.MALFORMED, f"zstd data is corrupt: {exc}") from exc
    if len(out) != raw_size:
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
