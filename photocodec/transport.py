"""Which lossless transport codec a JPEG gets: Lepton, JPEG XL, or none (docs/PROTOCOL.md §10).

Both codecs rebuild the original bytes exactly and are proven to here before a photo is sent
so. They differ in what they cost (docs/scale.md "The choice"): Lepton saves ~23 % on 12-MP
photos within ~55–95 MiB; libjxl saves about as much (more on some photos, less on most) but
needs ~330 MiB for a 12-MP photo. So every codec the receiving ground decodes and this side
has is tried, in ``PREFERENCE`` order, if its predicted peak fits the encoder's memory bound,
and the smallest proven result wins; a photo for which none fits or gains travels as-is.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from . import jxl, lepton

# protocol.codecs.Codec's ids and protocol.transfer_wire's CODED_BLOB header, restated (a test
# checks they are equal): importing `protocol` would cost the encoder child ~18 MiB of its
# memory bound for two numbers and a struct.
JPEG_XL = 3
LEPTON = 4
_CODED_HEADER = struct.Struct(">BQ")

# Lepton first: it fits the bound for every photo a phone makes; JPEG XL is tried as well
# when it fits (small photos), and wins when it is smaller.
PREFERENCE: tuple[int, ...] = (LEPTON, JPEG_XL)
NAMES = {LEPTON: "Lepton", JPEG_XL: "JPEG XL"}

MIB = 1024 * 1024
# Lepton's measured peak (lepton_jpeg_python 0.5.8, one thread; docs/scale.md): the interpreter
# and library, 2 bytes a DCT coefficient (4 for a progressive JPEG, whose scans are all held
# before coding), and the JPEG, its Lepton form and the checked copy. Rounded up so it
# over-predicts every measured photo.
_LEPTON_FIXED_BYTES = 20 * MIB
_LEPTON_BYTES_PER_COEFFICIENT = 2
_LEPTON_BYTES_PER_COEFFICIENT_PROGRESSIVE = 4
_LEPTON_BYTES_PER_JPEG_BYTE = 3


def present(codec: int) -> bool:
    """Whether this side can make ``codec`` (without loading it)."""
    if codec == LEPTON:
        return lepton.codec_present()
    if codec == JPEG_XL:
        return jxl.codec_present()
    return False


def usable(decodes: Callable[[int], bool]) -> tuple[int, ...]:
    """The photo codecs to try for a receiver that ``decodes`` them, best first (may be empty)."""
    return tuple(c for c in PREFERENCE if decodes(c) and present(c))


def worth_encoding(head: bytes, size_bytes: int, codecs: Iterable[int]) -> bool:
    """From a photo's first ``jxl.HEAD_BYTES`` and its size: is an attempt with ``codecs`` worthwhile?

    False (send as-is, without reading the whole file) when no codec is usable, or for anything
    that is not a JPEG, whose frame header is unreadable, has too many pixels, or far more bytes
    than its pixels (jxl.plausible_jpeg).
    """
    return bool(tuple(codecs)) and jxl.plausible_jpeg(head, size_bytes)


def lepton_peak_bytes(frame: lepton.Frame, size_bytes: int) -> int:
    """The encoder child's peak resident set to code a JPEG with ``frame`` as Lepton (an upper estimate)."""
    per = _LEPTON_BYTES_PER_COEFFICIENT_PROGRESSIVE if frame.progressive else _LEPTON_BYTES_PER_COEFFICIENT
    return _LEPTON_FIXED_BYTES + per * frame.coefficients() + _LEPTON_BYTES_PER_JPEG_BYTE * size_bytes


def predicted_peak_bytes(codec: int, head: bytes, size_bytes: int) -> int | None:
    """The encoder child's peak for ``codec`` on this photo, from its header; None if unreadable."""
    from .child import predicted_peak_bytes as jxl_peak

    if codec == LEPTON:
        frame = lepton.jpeg_frame(head[2:]) if jxl.is_jpeg(head) else None
        return lepton_peak_bytes(frame, size_bytes) if frame is not None else None
    pixels = jxl.pixel_count(head)
    return jxl_peak(pixels, size_bytes) if pixels is not None else None


def transcode(codec: int, jpeg: bytes) -> bytes | None:
    """``jpeg`` in ``codec``, proven here to rebuild it exactly and smaller; else None."""
    if codec == LEPTON:
        return lepton.transcode(jpeg)
    if codec == JPEG_XL:
        return jxl.transcode(jpeg)
    return None


def best(jpeg: bytes, codecs: Iterable[int]) -> tuple[int, bytes] | None:
    """(codec, stored bytes) of the smallest proven form among ``codecs``, or None (send as-is).

    In this process, unbounded: the encoder child (photocodec/child.py) calls it with only the
    codecs predicted to fit its bound.
    """
    found: tuple[int, bytes] | None = None
    for codec in codecs:
        coded = transcode(codec, jpeg)
        if coded is not None and (found is None or len(coded) < len(found[1])):
            found = (codec, coded)
    return found


def coded_header(codec: int, raw_size: int) -> bytes:
    """The live link's CODED_BLOB header (protocol.transfer_wire.pack_coded_blob) for a photo."""
    return _CODED_HEADER.pack(codec, raw_size)
