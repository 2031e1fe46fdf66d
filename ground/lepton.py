"""Rebuild JPEGs from Lepton on ground, bounded in memory, time and output (docs/PROTOCOL.md §10.5).

The stored Lepton bytes are not signed (only the original JPEG's sha256 is), so they are hostile
until rebuilt and hashed. They are decoded in a child process, ``python -m ground.lepton
RAW_SIZE MEMORY_BYTES CPU_S MAX_PIXELS`` (run by ground/jxl.py's ``run_decoder_child``, as
JPEG XL is), that caps its own address space and CPU time before loading the codec, uses one
thread, and is killed with its process group at a wall-clock deadline.

Before a coefficient is decoded, the child reads the Lepton file's fixed header and its JPEG
header (photocodec/lepton.py ``declared_jpeg_size``, ``declared_frame``: a bounded inflate, no
codec involved) and refuses:

- a file that is not Lepton, whose JPEG header is unreadable or whose declared JPEG size is
  not the signed size (exit 2, ``malformed``);
- a frame no honest photo of the signed size could be (ground/jxl.py ``check_dimensions``: too
  wide or high for a JPEG, more than ``MAX_PIXELS``, more pixels than ``raw_size`` JPEG bytes
  can code) (exit 4, ``decompression_bomb``).

Lepton itself is then told the signed size as its output limit. verify_bundle (or the live
link's commit) checks the result against the signed size and sha256.
"""

from __future__ import annotations

import sys

from ground.jxl import (
    _EXIT_CORRUPT,
    _EXIT_NO_CODEC,
    MAX_PIXELS,
    decode_within,
    limit_child,
    run_decoder_child,
)

# Address-space cap for the child: Python and the Lepton library map ~0.2 GiB; decoding holds
# 2-4 bytes a DCT coefficient, so a 100 MP 4:4:4 progressive photo (the ceiling) ~1.2 GiB.
CHILD_MEMORY_BYTES = 2 * 1024**3


def available() -> bool:
    """Whether this ground decodes Lepton (lepton_jpeg_python installed; ``ORBITPOST_LEPTON=none`` says no)."""
    from photocodec.lepton import codec_present

    return codec_present()


def decode_jpeg(
    stored: bytes,
    raw_size: int,
    *,
    memory_bytes: int = CHILD_MEMORY_BYTES,
    timeout_s: float | None = None,
    max_pixels: int = MAX_PIXELS,
) -> bytes:
    """Decoder for Codec.LEPTON: exactly ``raw_size`` bytes rebuilt in a limited child.

    Raises RemoteProtocolError: MALFORMED for data that is not Lepton, declares another size or
    whose JPEG header cannot be read; DECOMPRESSION_BOMB for a frame larger than the signed JPEG
    can hold (checked before decoding) and for a child that ran out of time or memory or
    crashed; UNKNOWN_CODEC if this ground has no Lepton codec.
    """
    return run_decoder_child(
        "ground.lepton", "Lepton", stored, raw_size,
        memory_bytes=memory_bytes, timeout_s=timeout_s, max_pixels=max_pixels,
    )  # fmt: skip


def _child_main(argv: list[str]) -> int:
    """The limited child: argv RAW_SIZE MEMORY_BYTES CPU_S MAX_PIXELS; stdin Lepton, stdout the JPEG."""
    raw_size, max_pixels = limit_child(argv)

    from photocodec import lepton

    if not lepton.codec_present():
        sys.stderr.write("no Lepton codec here: pip install lepton_jpeg_python\n")
        return _EXIT_NO_CODEC
    stored = sys.stdin.buffer.read()
    declared = lepton.declared_jpeg_size(stored)
    if declared is None:
        sys.stderr.write("not a Lepton file (no CF 84 01 header)\n")
        return _EXIT_CORRUPT
    if declared != raw_size:
        sys.stderr.write(f"it declares a {declared}-byte JPEG; the photo signed is {raw_size} bytes\n")
        return _EXIT_CORRUPT
    frame = lepton.declared_frame(stored)
    if frame is None:
        sys.stderr.write("its JPEG header is corrupt, cut short or has no frame header\n")
        return _EXIT_CORRUPT
    dims = (frame.width, frame.height)
    return decode_within(
        dims, raw_size, max_pixels, lambda: lepton.decode(stored, raw_size), lepton.LeptonError
    )


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
