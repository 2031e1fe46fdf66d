"""Lepton lossless JPEG recompression: the second photo transport codec (docs/PROTOCOL.md §10.5).

Lepton (Dropbox's format; ``lepton_jpeg_python``, Microsoft's Rust port, Apache-2.0) codes a
JPEG's own DCT coefficients with an arithmetic coder and keeps every other byte (headers,
padding, trailing data) so the original file comes back bit for bit, ~22 % smaller. Unlike
libjxl's JPEG recompression (~330 MiB for a 12-MP photo, photocodec/child.py) it needs about
2 bytes a coefficient: ~54 MiB resident for the same photo, encode and check included.

The transcoder never trusts the codec: a photo is sent as Lepton only when decoding it here
gave back the very same bytes. Ground reads the size and frame header *before* decoding
(``declared_jpeg_size``, ``declared_frame``) to refuse a bomb cheaply; ground/lepton.py holds
its bounded decoder child.

Lepton file layout (lepton_jpeg_rust ``lib/src/structs/lepton_header.rs``): a 28-byte fixed
header — magic ``CF 84``, version 1, ``Z`` (baseline) or ``X`` (progressive), ..., the original
JPEG's size (u32 little-endian at 20), the compressed header's size (u32 LE at 24) — then a
zlib stream holding ``HDR``, a u32 LE length and the JPEG's own header segments (after SOI,
through the first SOS), then the coded coefficients.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any

MAGIC = b"\xcf\x84\x01"
FIXED_HEADER_BYTES = 28
_TYPES = (b"Z", b"X")
# A JPEG's header segments (tables, EXIF, ICC, thumbnails) are at most a few MiB; a Lepton
# file claiming more to get at its frame size is not one worth reading.
MAX_HEADER_BYTES = 16 * 1024 * 1024
# One thread: predictable memory and CPU (onboard encodes one photo at a time, ground decodes
# one blob at a time); the output is the same bytes whatever the thread count.
_THREADS = "single"


class LeptonError(Exception):
    """Lepton could not encode or decode these bytes (the caller decides what follows)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """What a JPEG's frame header (SOFn) says: size, and each component's sampling factors."""

    width: int
    height: int
    sampling: tuple[tuple[int, int], ...]
    progressive: bool = False

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def coefficients(self) -> int:
        """DCT coefficients the frame holds: 64 for each 8×8 block of each component."""
        hmax = max(h for h, _ in self.sampling)
        vmax = max(v for _, v in self.sampling)
        mcu_cols = -(-self.width // (8 * hmax))
        mcu_rows = -(-self.height // (8 * vmax))
        return sum(64 * mcu_cols * h * mcu_rows * v for h, v in self.sampling)


def codec_present() -> bool:
    """Whether lepton_jpeg_python is installed (``ORBITPOST_LEPTON=none`` turns it off), unloaded."""
    if os.environ.get("ORBITPOST_LEPTON", "").strip().lower() == "none":
        return False
    return importlib.util.find_spec("lepton_jpeg_python") is not None


def _lib() -> Any:
    if not codec_present():
        raise LeptonError("no Lepton codec here: pip install lepton_jpeg_python")
    import lepton_jpeg_python

    return lepton_jpeg_python


def encode(jpeg: bytes) -> bytes:
    """The Lepton form of ``jpeg`` (unchecked); LeptonError if Lepton cannot code it (CMYK, not a JPEG...)."""
    lib = _lib()
    try:
        return bytes(lib.compress_bytes(jpeg, {"threads": _THREADS}))
    except BaseException as exc:  # RuntimeError, or pyo3's PanicException (a BaseException)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise LeptonError(f"Lepton cannot code this JPEG: {_first_line(exc)}") from exc


def decode(data: bytes, max_bytes: int) -> bytes:
    """The JPEG stored in ``data``, refused (LeptonError) if it declares more than ``max_bytes``.

    No memory or time bound: ground calls it only inside its limited child (ground/lepton.py).
    """
    lib = _lib()
    config = {"threads": _THREADS, "max_jpeg_file_size": max(1, min(max_bytes, 0xFFFFFFFF))}
    try:
        out = bytes(lib.decompress_bytes(data, config))
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise LeptonError(f"Lepton cannot rebuild a JPEG from this data: {_first_line(exc)}") from exc
    if len(out) > max_bytes:
        raise LeptonError(f"Lepton rebuilt {len(out)} bytes, more than the {max_bytes} allowed")
    return out


def _first_line(exc: BaseException) -> str:
    # The library appends a Rust source backtrace ("at .../lepton_file_reader.rs:421:28").
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def transcode(jpeg: bytes) -> bytes | None:
    """Lepton bytes proven to rebuild ``jpeg`` exactly and smaller than it, or None: send it otherwise."""
    if not jpeg.startswith(b"\xff\xd8\xff") or not codec_present():
        return None
    try:
        coded = encode(jpeg)
        if len(coded) >= len(jpeg):
            return None
        back = decode(coded, len(jpeg))
    except LeptonError:
        return None
    return coded if back == jpeg else None


def declared_jpeg_size(data: bytes) -> int | None:
    """The original JPEG's size from a Lepton file's fixed header, or None if it is not Lepton."""
    if len(data) < FIXED_HEADER_BYTES or not data.startswith(MAGIC) or data[3:4] not in _TYPES:
        return None
    return int(struct.unpack_from("<I", data, 20)[0])


def declared_frame(data: bytes) -> Frame | None:
    """The frame header the Lepton file's JPEG header declares (no coefficient decoded), or None.

    Inflates at most ``MAX_HEADER_BYTES`` of the compressed header; None when that header is
    missing, corrupt, cut short or has no frame header before its first scan.
    """
    if declared_jpeg_size(data) is None:
        return None
    size = int(struct.unpack_from("<I", data, 24)[0])
    inflater = zlib.decompressobj()
    try:
        head = inflater.decompress(data[FIXED_HEADER_BYTES : FIXED_HEADER_BYTES + size], MAX_HEADER_BYTES + 7)
    except zlib.error:
        return None
    if len(head) < 7 or head[:3] != b"HDR":
        return None
    length = int(struct.unpack_from("<I", head, 3)[0])
    return jpeg_frame(head[7 : 7 + length])


# SOF0-SOF15 but DHT (C4), JPG (C8) and DAC (CC), which share the range.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01, 0xD8}


def jpeg_frame(segments: bytes) -> Frame | None:
    """Walk JPEG header segments (from just after SOI) to the frame header; None if there is none."""
    pos = 0
    while pos + 4 <= len(segments):
        if segments[pos] != 0xFF:
            return None
        marker = segments[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == 0xDA:  # a scan before any frame header
            return None
        (length,) = struct.unpack_from(">H", segments, pos + 2)
        body = segments[pos + 4 : pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            return None
        if marker in _SOF:
            return _frame(body, progressive=marker in _PROGRESSIVE)
        pos += 2 + length
    return None


def _frame(body: bytes, *, progressive: bool) -> Frame | None:
    if len(body) < 6:
        return None
    height, width, count = struct.unpack_from(">HHB", body, 1)
    if count == 0 or len(body) < 6 + 3 * count:
        return None
    sampling = tuple((body[7 + 3 * i] >> 4, body[7 + 3 * i] & 0x0F) for i in range(count))
    if width == 0 or height == 0 or any(h == 0 or v == 0 for h, v in sampling):
        return None
    return Frame(width=width, height=height, sampling=sampling, progressive=progressive)
