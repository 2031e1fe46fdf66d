"""JPEG XL lossless JPEG transcoding: the photo transport codec (docs/PROTOCOL.md §10).

libjxl can store a JPEG's own DCT coefficients plus a "JPEG bitstream reconstruction"
box and later rebuild the original file bit for bit, ~15 % smaller. This module holds the
codec itself; onboard uses ``transcode`` before packing, and ground's bounded decoder child
(ground/jxl.py) uses ``rebuild``.

Backends, best first (``backends()``):

- ``imagecodecs``: libjxl in-process through the imagecodecs wheel (a project dependency).
  Chosen over pylibjxl, pillow-jxl-plugin and jxlpy: same libjxl 0.11 underneath as the
  first two, plain bytes-in/bytes-out calls with an output-size cap, and the longest-kept
  of the four; jxlpy has no JPEG reconstruction at all.
- ``cli``: Debian's libjxl-tools (``cjxl --lossless_jpeg=1`` / ``djxl``) through temporary
  files, for a machine where the imagecodecs wheel cannot be installed.

The transcoder never trusts the codec: a photo is sent as JPEG XL only when rebuilding it
here gave back the very same bytes; anything else (not a JPEG, corrupt, CMYK that libjxl
cannot represent, no backend, no gain) travels as-is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

JPEG_MAGIC = b"\xff\xd8\xff"
# Photos beyond this many pixels travel as-is: ground rebuilds JPEGs in a child process
# with a memory cap, and libjxl holds every DCT coefficient (~6 bytes a pixel for 4:4:4).
# 100 MP is several times what any platform accepts.
MAX_PIXELS = 100_000_000
# Bytes read from a photo's start to judge it before loading it whole: room for EXIF, ICC
# and thumbnails (several 64 KiB segments) ahead of the frame header that gives its size.
HEAD_BYTES = 1024 * 1024
# A JPEG is entropy-coded samples: even quality 100 with no chroma subsampling stays well
# under this many bytes a pixel (~1 typical). A file far larger than its pixels could fill
# carries something else (trailing data, or not a photo at all); it travels as-is rather
# than being loaded whole for a transcode that cannot gain.
MAX_BYTES_PER_PIXEL = 8
# A CLI backend call that takes longer than this is stuck (a 64 MiB JPEG takes seconds).
CLI_TIMEOUT_S = 120.0


class JxlError(Exception):
    """The codec could not transcode or rebuild these bytes (the caller decides what follows)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backend:
    """One implementation of the codec: ``encode(jpeg)`` and ``decode(jxl, max_bytes)``."""

    name: str
    version: str
    encode: Callable[[bytes], bytes]
    decode: Callable[[bytes, int], bytes]


def _imagecodecs_backend(threads: int | None) -> Backend | None:
    try:
        import imagecodecs
    except ImportError:
        return None
    if not getattr(getattr(imagecodecs, "JPEGXL", None), "available", False):
        return None
    thread_kw: dict[str, int] = {"numthreads": threads} if threads else {}

    def encode(jpeg: bytes) -> bytes:
        try:
            # The container is required: the reconstruction data lives in its jbrd box.
            return bytes(imagecodecs.jpegxl_encode_jpeg(jpeg, usecontainer=True, **thread_kw))
        except Exception as exc:  # imagecodecs raises JpegxlError, ValueError, MemoryError...
            raise JxlError(f"libjxl cannot transcode this JPEG: {exc}") from exc

    def decode(jxl: bytes, max_bytes: int) -> bytes:
        try:
            # out=max_bytes: libjxl writes into a buffer of that size and fails past it.
            return bytes(imagecodecs.jpegxl_decode_jpeg(jxl, out=max_bytes, **thread_kw))
        except Exception as exc:
            raise JxlError(f"libjxl cannot rebuild a JPEG from this data: {exc}") from exc

    return Backend(
        name="imagecodecs", version=f"imagecodecs {imagecodecs.__version__}", encode=encode, decode=decode
    )


def _cli_backend(threads: int | None) -> Backend | None:
    cjxl, djxl = shutil.which("cjxl"), shutil.which("djxl")
    if not cjxl or not djxl:
        return None
    thread_args = [f"--num_threads={threads}"] if threads else []

    def run(args: list[str]) -> None:
        try:
            r = subprocess.run(args, capture_output=True, timeout=CLI_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise JxlError(f"{Path(args[0]).name} failed: {exc}") from exc
        if r.returncode != 0:
            why = r.stderr.decode("utf-8", "replace").strip().splitlines()
            raise JxlError(f"{Path(args[0]).name} exited {r.returncode}: {why[-1] if why else ''}")

    def encode(jpeg: bytes) -> bytes:
        with tempfile.TemporaryDirectory(prefix="orbitpost-jxl-") as d:
            src, dst = Path(d, "in.jpg"), Path(d, "out.jxl")
            src.write_bytes(jpeg)
            run([cjxl, str(src), str(dst), "--lossless_jpeg=1", "--quiet", *thread_args])
            return dst.read_bytes()

    def decode(jxl: bytes, max_bytes: int) -> bytes:
        with tempfile.TemporaryDirectory(prefix="orbitpost-jxl-") as d:
            src, dst = Path(d, "in.jxl"), Path(d, "out.jpg")
            src.write_bytes(jxl)
            run([djxl, str(src), str(dst), "--quiet", *thread_args])
            size = dst.stat().st_size
            if size > max_bytes:
                raise JxlError(f"djxl rebuilt {size} bytes, more than the {max_bytes} allowed")
            return dst.read_bytes()

    # Not `djxl --version`: probing must stay cheap (ground's decoder child probes every time).
    return Backend(name="cli", version=f"libjxl-tools ({djxl})", encode=encode, decode=decode)


@cache
def backends(threads: int | None = None) -> tuple[Backend, ...]:
    """Every backend available on this machine, best first (may be empty)."""
    found = (_imagecodecs_backend(threads), _cli_backend(threads))
    return tuple(b for b in found if b is not None)


def default_backend(threads: int | None = None) -> Backend | None:
    """The backend to use, or None if this machine has no JPEG XL codec.

    ``ORBITPOST_JXL=none|imagecodecs|cli`` picks one (operators and tests; "none" turns the
    codec off, e.g. to send to a ground that lacks it).
    """
    want = os.environ.get("ORBITPOST_JXL", "").strip().lower()
    if want == "none":
        return None
    for b in backends(threads):
        if not want or b.name == want:
            return b
    return None


def codec_present() -> bool:
    """Whether a backend is installed (honouring ``ORBITPOST_JXL``), without loading it.

    The laptop client asks this, not default_backend(): loading imagecodecs brings numpy and
    libjxl into its process (~12 MiB resident for nothing, issue 18), while the encoder child
    (photocodec/child.py) finds out for sure and sends the photo as-is if the codec fails.
    """
    want = os.environ.get("ORBITPOST_JXL", "").strip().lower()
    if want == "none":
        return False
    wheel = importlib.util.find_spec("imagecodecs") is not None
    tools = shutil.which("cjxl") is not None and shutil.which("djxl") is not None
    return {"": wheel or tools, "imagecodecs": wheel, "cli": tools}.get(want, False)


def is_jpeg(data: bytes) -> bool:
    return data.startswith(JPEG_MAGIC)


def pixel_count(jpeg: bytes) -> int | None:
    """Width × height from the JPEG header (Pillow reads only the header), or None."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns past ~89 MP; we only read the header and apply MAX_PIXELS ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(jpeg)) as im:
                w, h = im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
    return int(w) * int(h)


def worth_transcoding(head: bytes, size_bytes: int) -> bool:
    """From a photo's first ``HEAD_BYTES`` and its size: is a transcode attempt worthwhile?

    False (send as-is, without reading the whole file) for anything that is not a JPEG,
    whose frame header is unreadable, too many pixels, or far more bytes than its pixels.
    """
    return codec_present() and plausible_jpeg(head, size_bytes)


def plausible_jpeg(head: bytes, size_bytes: int) -> bool:
    """Is this a JPEG worth a lossless transcode by any codec: a readable frame header, at most
    ``MAX_PIXELS``, and not far more bytes than its pixels (from its first ``HEAD_BYTES``)."""
    if not is_jpeg(head):
        return False
    pixels = pixel_count(head)
    if pixels is None or pixels > MAX_PIXELS:
        return False
    return size_bytes <= pixels * MAX_BYTES_PER_PIXEL + HEAD_BYTES


def transcode(jpeg: bytes, backend: Backend | None = None) -> bytes | None:
    """JPEG XL bytes proven to rebuild ``jpeg`` exactly, or None: send the photo as-is.

    Proof is a full round trip here, byte-compared, before the result is returned.
    """
    b = backend if backend is not None else default_backend()
    if b is None or not is_jpeg(jpeg):
        return None
    pixels = pixel_count(jpeg)
    if pixels is None or pixels > MAX_PIXELS:
        return None
    try:
        jxl = b.encode(jpeg)
        if len(jxl) >= len(jpeg):
            return None
        back = b.decode(jxl, len(jpeg))
    except JxlError:
        return None
    return jxl if back == jpeg else None


def rebuild(jxl: bytes, raw_size: int, backend: Backend | None = None) -> bytes:
    """The JPEG stored in ``jxl``, at most ``raw_size`` bytes; JxlError if it cannot be had.

    Runs in this process with no memory or time bound: ground calls it only inside its
    limited child (ground/jxl.py); onboard on its own output.
    """
    b = backend if backend is not None else default_backend()
    if b is None:
        raise JxlError("no JPEG XL codec here: install imagecodecs (pip) or libjxl-tools (apt)")
    return b.decode(jxl, raw_size)
