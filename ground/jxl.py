"""Rebuild JPEGs from JPEG XL on ground, bounded in memory, time and output (docs/PROTOCOL.md §10).

The stored JPEG XL bytes are not signed (only the original JPEG's sha256 is), so they are
hostile until rebuilt and hashed. libjxl's memory use grows with the image it is told about,
so decoding runs in a child process, ``python -m ground.jxl RAW_SIZE MEMORY_BYTES CPU_S
MAX_PIXELS`` (nothing else runs it), that caps its own address space and CPU time before
loading the codec (the caps are inherited by the ``jxlinfo``/``djxl`` it may run), may write
at most the declared raw size, and is killed with its process group at a wall-clock deadline.

Before a byte is decoded, the child reads the image's width and height from the codestream's
size header with libjxl's ``jxlinfo`` and refuses (exit 4) an image no honest photo of the
signed size could be: wider or higher than a JPEG can be, more pixels than ``MAX_PIXELS``, or
more pixels than ``raw_size`` JPEG bytes can code (``MAX_PIXELS_PER_JPEG_BYTE``). A ground
without ``jxlinfo`` cannot check, so it does not decode JPEG XL at all (it advertises no
JPEG XL codec, and onboard sends photos as they are).

verify_bundle (or the live link's commit) then checks the result against the signed size and
sha256, so nothing but the original bytes gets through.

Exit codes of the child: 0 rebuilt; 2 not a valid JPEG XL JPEG; 3 no codec on this machine;
4 the size header declares an image too large for the signed JPEG.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from protocol.capabilities import Capabilities
from protocol.codecs import DEFAULT_DECODERS, Codec, Decoder
from protocol.errors import ErrorCode, RemoteProtocolError

# Address-space cap for the child: Python + numpy + libjxl need ~0.5 GiB of mappings; a
# 100 MP photo (onboard's ceiling, photocodec/jxl.py MAX_PIXELS) needs ~1.5 GiB more.
CHILD_MEMORY_BYTES = 3 * 1024**3
# Wall clock: start-up (~0.2 s) plus a generous 2 s per MiB (libjxl does ~30 MiB/s here).
BASE_TIMEOUT_S = 10.0
TIMEOUT_S_PER_MIB = 2.0

# Pixels the child will rebuild: onboard's own ceiling (photocodec/jxl.py MAX_PIXELS), so
# no photo onboard would send as JPEG XL is refused.
MAX_PIXELS = 100_000_000
# A JPEG codes each 8×8 block of each component with at least one Huffman-coded bit (its DC
# difference): a grey JPEG of N bytes holds at most 64 × 8 × N pixels, a colour one fewer.
MAX_PIXELS_PER_JPEG_BYTE = 512
# A JPEG frame header holds its width and height in 16 bits.
MAX_JPEG_SIDE = 65_535

_EXIT_CORRUPT = 2
_EXIT_NO_CODEC = 3
_EXIT_TOO_LARGE = 4


def timeout_for(raw_size: int) -> float:
    return BASE_TIMEOUT_S + TIMEOUT_S_PER_MIB * raw_size / 1024**2


def decode_jpeg(
    stored: bytes,
    raw_size: int,
    *,
    memory_bytes: int = CHILD_MEMORY_BYTES,
    timeout_s: float | None = None,
    max_pixels: int = MAX_PIXELS,
) -> bytes:
    """Decoder for Codec.JPEG_XL: exactly ``raw_size`` bytes rebuilt in a limited child.

    Raises RemoteProtocolError: MALFORMED for data that is not a JPEG XL JPEG (or whose size
    header cannot be read), DECOMPRESSION_BOMB for a size header declaring more pixels than
    the signed JPEG can hold (checked before decoding) and for a child that ran out of time
    or memory or overshot the size, UNKNOWN_CODEC if this ground has no JPEG XL codec.
    """
    return run_decoder_child(
        "ground.jxl", "JPEG XL", stored, raw_size,
        memory_bytes=memory_bytes, timeout_s=timeout_s, max_pixels=max_pixels,
    )  # fmt: skip


def run_decoder_child(
    module: str,
    name: str,
    stored: bytes,
    raw_size: int,
    *,
    memory_bytes: int,
    timeout_s: float | None,
    max_pixels: int,
) -> bytes:
    """Run ``python -m MODULE RAW_SIZE MEMORY_BYTES CPU_S MAX_PIXELS`` on ``stored`` (a photo
    codec's decoder child, exit codes as above) and return exactly ``raw_size`` bytes, or raise
    RemoteProtocolError with the code each way of failing gets (``name``: the codec, for messages).
    """
    timeout_s = timeout_for(raw_size) if timeout_s is None else timeout_s
    argv = [
        sys.executable,
        "-m",
        module,
        str(raw_size),
        str(memory_bytes),
        str(int(timeout_s) + 1),
        str(max_pixels),
    ]
    try:
        # A session of its own, so a timeout kills the child's whole group (the CLI backend
        # runs djxl as a grandchild), not just the Python process.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_child_env(),
            start_new_session=True,
        )
    except OSError as exc:
        raise RemoteProtocolError(
            ErrorCode.UNKNOWN_CODEC, f"this ground cannot start its {name} decoder: {exc}"
        ) from exc
    try:
        stdout, stderr = proc.communicate(stored, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        raise RemoteProtocolError(
            ErrorCode.DECOMPRESSION_BOMB,
            f"{name} data did not rebuild within {timeout_s:.1f} s; refusing it",
        ) from exc
    except BaseException:
        _kill_group(proc)
        raise
    r = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
    why = r.stderr.decode("utf-8", "replace").strip()[-300:]
    if r.returncode == _EXIT_CORRUPT:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED,
            f"{name} data is corrupt (or needs more than the decoder's memory limit): {why}",
        )
    if r.returncode == _EXIT_TOO_LARGE:
        raise RemoteProtocolError(ErrorCode.DECOMPRESSION_BOMB, f"{name} data refused before decoding: {why}")
    if r.returncode == _EXIT_NO_CODEC:
        raise RemoteProtocolError(ErrorCode.UNKNOWN_CODEC, f"this ground cannot decode {name}: {why}")
    if r.returncode != 0:
        # Killed by its limits (negative: signal; MemoryError in Python: 1) or crashed.
        raise RemoteProtocolError(
            ErrorCode.DECOMPRESSION_BOMB,
            f"{name} decoder stopped (exit {r.returncode}) rebuilding a {raw_size}-byte JPEG: "
            f"{why or 'killed by its memory or CPU limit'}",
        )
    if len(r.stdout) != raw_size:
        raise RemoteProtocolError(
            ErrorCode.MALFORMED, f"{name} data rebuilt {len(r.stdout)} bytes, header says {raw_size}"
        )
    return r.stdout


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    # A second communicate() never closes stdin: after a timeout mid-write (a photo larger
    # than the pipe's buffer) it would stay open until garbage-collected.
    if proc.stdin is not None:
        proc.stdin.close()
    proc.communicate()  # reap it and close the other pipes


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import this very checkout's code, whatever the working directory.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def available() -> bool:
    """Whether this ground decodes JPEG XL: a codec, and ``jxlinfo`` to check sizes first."""
    from photocodec.jxl import default_backend

    return default_backend() is not None and shutil.which("jxlinfo") is not None


class ImageTooLarge(Exception):
    """The size header declares an image that the signed JPEG cannot be (child exit 4)."""


_DIMENSIONS = re.compile(rb"^JPEG XL (?:image|animation), (\d+)x(\d+)", re.MULTILINE)


def declared_dimensions(stored: bytes, jxlinfo: str) -> tuple[int, int] | None:
    """Width and height from the codestream's size header, read by libjxl's ``jxlinfo``.

    jxlinfo parses headers only (no pixel is decoded); it runs under the caller's resource
    limits. None if it cannot find them (not JPEG XL, or truncated before the image header).
    """
    with tempfile.TemporaryDirectory(prefix="orbitpost-jxlinfo-") as d:
        path = Path(d, "in.jxl")
        path.write_bytes(stored)
        r = subprocess.run([jxlinfo, str(path)], capture_output=True, check=False)
    m = _DIMENSIONS.search(r.stdout)
    return (int(m[1]), int(m[2])) if m else None


def check_dimensions(width: int, height: int, raw_size: int, max_pixels: int) -> None:
    """Raise ImageTooLarge unless a ``raw_size``-byte JPEG could be ``width`` × ``height``."""
    pixels = width * height
    if max(width, height) > MAX_JPEG_SIDE:
        raise ImageTooLarge(f"it declares {width}×{height} pixels; a JPEG is at most {MAX_JPEG_SIDE} a side")
    if pixels > max_pixels:
        raise ImageTooLarge(
            f"it declares {width}×{height} pixels ({pixels:,}), more than the {max_pixels:,} ground rebuilds"
        )
    if pixels > raw_size * MAX_PIXELS_PER_JPEG_BYTE:
        raise ImageTooLarge(
            f"it declares {width}×{height} pixels ({pixels:,}); a {raw_size}-byte JPEG holds at most "
            f"{raw_size * MAX_PIXELS_PER_JPEG_BYTE:,}"
        )


def capabilities() -> Capabilities:
    """What this ground decodes, for onboard (``ground capabilities``, the live link's token)."""
    from ground import lepton, window
    from protocol.bundle import FORMATS
    from protocol.compact_items import COMPACT_BODY_VERSIONS
    from protocol.dictionary import shipped_ids
    from protocol.model import BODY_VERSIONS
    from protocol.receipts import RECEIPTS_VERSIONS

    codecs = set(DEFAULT_DECODERS) | {Codec.ZSTD_DICT}
    if available():
        codecs.add(Codec.JPEG_XL)
    if lepton.available():
        codecs.add(Codec.LEPTON)
    return Capabilities(
        codecs=frozenset(codecs),
        dictionaries=shipped_ids(),
        formats=FORMATS,
        bodies=BODY_VERSIONS,
        compact_bodies=COMPACT_BODY_VERSIONS,
        receipts=RECEIPTS_VERSIONS,
        link=window.link_versions(),
    )


def _decoders() -> Mapping[int, Decoder]:
    from ground import lepton

    found: dict[int, Decoder] = {Codec.JPEG_XL: decode_jpeg} if available() else {}
    if lepton.available():
        found[Codec.LEPTON] = lepton.decode_jpeg
    return found


def __getattr__(name: str) -> Mapping[int, Decoder]:
    # ``DECODERS`` (merged in by ground/ingest.py; JPEG XL and Lepton, ground/lepton.py) is
    # computed on first use, not at import, so the decoder child does not probe for codecs
    # before it has capped itself. A codec missing here is refused as UNKNOWN_CODEC.
    if name == "DECODERS":
        return _decoders()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def limit_child(argv: list[str]) -> tuple[int, int]:
    """In a decoder child: apply argv's MEMORY_BYTES and CPU_S limits; return (RAW_SIZE, MAX_PIXELS)."""
    import resource

    raw_size, memory_bytes, cpu_s, max_pixels = (int(a) for a in argv[:4])
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return raw_size, max_pixels


def decode_within(
    dims: tuple[int, int],
    raw_size: int,
    max_pixels: int,
    decode: Callable[[], bytes],
    errors: type[Exception] | tuple[type[Exception], ...],
) -> int:
    """In a decoder child: refuse a frame too large for the signed size, else decode to stdout; the exit code."""
    try:
        check_dimensions(*dims, raw_size, max_pixels)
    except ImageTooLarge as exc:
        sys.stderr.write(f"{exc}\n")
        return _EXIT_TOO_LARGE
    try:
        out = decode()
    except errors as exc:
        sys.stderr.write(f"{exc}\n")
        return _EXIT_CORRUPT
    # One byte past the signed size is enough for the parent to see a wrong length.
    sys.stdout.buffer.write(out[: raw_size + 1])
    sys.stdout.buffer.flush()
    return 0


def _child_main(argv: list[str]) -> int:
    """The limited child: argv RAW_SIZE MEMORY_BYTES CPU_S MAX_PIXELS; stdin JPEG XL, stdout the JPEG."""
    raw_size, max_pixels = limit_child(argv)

    from photocodec.jxl import JxlError, default_backend, rebuild

    # One thread: predictable memory and CPU; ground decodes bundles one blob at a time.
    backend = default_backend(threads=1)
    if backend is None:
        sys.stderr.write("no JPEG XL codec here: install imagecodecs (pip) or libjxl-tools (apt)\n")
        return _EXIT_NO_CODEC
    jxlinfo = shutil.which("jxlinfo")
    if jxlinfo is None:
        sys.stderr.write(
            "no jxlinfo here to check a JPEG XL's size before decoding: install libjxl-tools (apt)\n"
        )
        return _EXIT_NO_CODEC
    stored = sys.stdin.buffer.read()
    dims = declared_dimensions(stored, jxlinfo)
    if dims is None:
        sys.stderr.write("not JPEG XL, or its size header is unreadable\n")
        return _EXIT_CORRUPT
    return decode_within(dims, raw_size, max_pixels, lambda: rebuild(stored, raw_size, backend), JxlError)


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
